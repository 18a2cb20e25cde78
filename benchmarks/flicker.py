"""Where the flicker is: frame-to-frame error change by position in the latent frame's group.

    python benchmarks/flicker.py CLIP [CLIP ...] [--quality Q] [--model SPEC]

Encodes and decodes each clip with the real pipeline, then splits the bench's flicker metric
(mean |e_t - e_(t-1)| of the error e = decoded - source, 8-bit levels) by the transition's
place in the model's temporal groups: a causal VAE with temporal factor 4 decodes latent
frame 0 to pixel frame 0 and latent frame k >= 1 to frames 4k-3 .. 4k, so the transitions
4k -> 4k+1 cross a latent-frame boundary and the other three stay inside one latent frame.
The issue asks for no flicker at latent-frame boundaries: boundary transitions above the
others are that flicker. Also prints PSNR by position in the group.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from vaecodec import metrics
from vaecodec.codec import Codec
from vaecodec.video import VideoReader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--model", default="tiny")
    args = ap.parse_args()
    codec = Codec(args.model, quality=args.quality)
    for clip in args.clips:
        with tempfile.TemporaryDirectory() as tmp:
            vlat = Path(tmp) / "clip.vlat"
            codec.encode(clip, vlat, overwrite=True)
            with VideoReader(clip) as r:  # the bench's own per-frame scores, streamed
                q = metrics.score(r.chunks(), codec.decode_frames(vlat), with_ssim=False)
        tf = codec.model.temporal
        psnr = np.array(q.per_frame_psnr)
        flicker = np.array(q.per_frame_temporal_error)  # [i]: transition i -> i+1
        # frame i >= 1 is at position (i - 1) % tf of its group (frame 0 is a group of its own,
        # counted as a last position); transition i -> i+1 crosses a latent-frame boundary when
        # frame i is its group's last
        pos = (np.arange(len(psnr)) - 1) % tf
        last = tf - 1
        boundary = pos[:-1] == last
        print(json.dumps({
            "clip": clip.name, "frames": len(psnr), "psnr": round(q.psnr, 2),
            "flicker": round(q.temporal_error, 3),
            "flicker_at_latent_boundaries": round(float(flicker[boundary].mean()), 3),
            "flicker_inside_latent_frames": round(float(flicker[~boundary].mean()), 3),
            # [k]: transitions from a frame at position k of its group; the last is the boundary
            "flicker_from_position": [round(float(flicker[pos[:-1] == k].mean()), 3) for k in range(tf)],
            "psnr_by_position": [round(float(psnr[1:][pos[1:] == k].mean()), 2) for k in range(tf)],
        }))

if __name__ == "__main__":
    main()

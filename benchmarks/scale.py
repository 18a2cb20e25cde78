"""Rate/quality of coding a smaller or larger picture (``--scale``) against source-size coding.

    .venv/bin/python benchmarks/scale.py CLIP [CLIP ...] --scales 1,0.75,0.5 --qualities 1,2,3,4,5,6
    .venv/bin/python benchmarks/scale.py CLIP [CLIP ...] --scales 1.5,1.75,2 --tables 3,4,5,6,8
    .venv/bin/python benchmarks/scale.py CLIP [CLIP ...] --scales default --deadzones default,0,0.1
    .venv/bin/python benchmarks/scale.py CLIP [CLIP ...] --scales default --motion on,off
    .venv/bin/python benchmarks/scale.py CLIP [CLIP ...] --scales default --camera off,default

Each (scale, quality) point is a real ``Codec.encode`` to a .vlat and a real decode back to
the source size. bpp counts the latent chunks' bytes (so a clip's audio does not hide the
video's rate); PSNR and flicker (the bench's frame-to-frame error) are against the source.
For each scale below 1 it also prints the *ceiling*: the PSNR of the source itself shrunk
and enlarged the way the codec does, the best any model could do at that scale. ``default``
as a scale or deadzone means the encoder's per-quality default (qualities are rungs of the
quality ladder, ``quant.LADDER``; ``--tables 5,6,7`` sweeps the coder's table sets instead, at
the scales given, ``default`` being 1); ``--motion on,off`` codes every
point with and without motion-compensated prediction, ``--camera on,off`` with and without a
steadied canvas (the views' bytes in the chunks' meta are counted).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from vaecodec import metrics
from vaecodec.codec import Codec
from vaecodec.container import VlatReader
from vaecodec.resample import coded_size, resize_frames, to_uint8_frames
from vaecodec.video import VideoReader


def ceiling(src: np.ndarray, scale: float) -> float:
    """PSNR of the source shrunk and enlarged back, with no coding in between."""
    n, h, w = src.shape[:3]
    cw, ch = coded_size(w, h, scale)
    small = torch.from_numpy(resize_frames(src, cw, ch)).permute(3, 0, 1, 2).float().div(127.5).sub(1)
    return metrics.score([src], [to_uint8_frames(small, ch, cw, (w, h))], with_ssim=False).psnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--scales", default="1,0.5")
    ap.add_argument("--deadzones", default="default")
    ap.add_argument("--qualities", default="1,2,3,4,5,6")
    ap.add_argument("--tables", default=None, help="comma list of the coder's table sets, instead of --qualities")
    ap.add_argument("--motion", default="on", help="comma list of on/off")
    ap.add_argument("--camera", default="default", help="comma list of default/on/off (camera motion compensation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="tiny")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    scales = [None if v == "default" else float(v) for v in a.scales.split(",")]
    deadzones = [None if v == "default" else float(v) for v in a.deadzones.split(",")]
    # (level, tables): a rung of the ladder, or level 5's picture size with another table set
    qualities = ([(None, int(v)) for v in a.tables.split(",")] if a.tables
                 else [(int(v), None) for v in a.qualities.split(",")])
    motions = [{"on": True, "off": False}[v] for v in a.motion.split(",")]
    cameras = [{"default": None, "on": True, "off": False}[v] for v in a.camera.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for clip in a.clips:
            with VideoReader(clip) as r:
                src = np.concatenate(list(r.chunks()))
            n, h, w = src.shape[:3]
            for scale, deadzone in ((s, d) for s in scales for d in deadzones):
                if scale is not None and scale < 1 and deadzone == deadzones[0]:
                    print(json.dumps({"clip": clip.name, "scale": scale, "ceiling_psnr": round(ceiling(src, scale), 2)}))
                for (quality, tables), motion, camera in ((q, m, c) for c in cameras for m in motions for q in qualities):
                    codec = Codec(a.model, device="cpu", quality=quality, tables=tables, scale=scale, deadzone=deadzone,
                                  motion=motion, camera=camera)
                    path = Path(tmp) / "x.vlat"
                    codec.encode(clip, path, overwrite=True)
                    with VlatReader(path) as f:  # the views of a steadied file travel in the chunks' meta
                        latent_bytes = sum(c.stored_size + len(c.meta.get("camera", "")) for c in f.chunks_of("latent"))
                    out = np.concatenate(list(codec.decode_frames(path)))
                    q = metrics.score([src], [out], with_ssim=False)
                    print(json.dumps({"clip": clip.name, "scale": scale or "default", "deadzone": deadzone, "motion": motion,
                                      "camera": camera,
                                      "quality": quality, "tables": tables,
                                      "bpp": round(8 * latent_bytes / (w * h * n), 5), "psnr": round(q.psnr, 2),
                                      "flicker": round(q.temporal_error, 2)}), flush=True)


if __name__ == "__main__":
    main()

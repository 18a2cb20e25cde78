"""Whole-file throughput of the real pipeline on one clip (docs/BENCHMARKS.md, "On a GPU").

    python benchmarks/gpu_pipeline.py CLIP [--device cuda] [--dtypes bf16 fp16] [--workers 0 8] [--loop N]

For each dtype: encode CLIP to a .vlat, then decode it:

- ``frames``: to uint8 frames through the Python API (``LatentFile.iter_frames``), the
  issue's "decode fps": entropy decoding + model + uint8 copy to the host, once per
  ``--workers`` count of entropy-coding processes (0 = in the parent), best of 3 passes over
  one open file after a warm-up pass, each timed to the last frame on the host;
- ``mp4``: ``Codec.decode`` to an H.264 file as ``vaecodec decode`` does (video writing on
  the CPU included);
- ``encode_refined``: the encode again with ``--refine N`` (``--refine 0`` skips it), for
  the speed and memory of latent refinement on the device.

``--loop N`` first writes a clip that plays CLIP N times (forwards, backwards, ...: no cut) and
measures that instead. Entropy workers decode whole chunks (256 frames by default), so a
short clip's decode time is mostly the wait for its first chunk; a long one shows throughput.
``--no-mp4`` skips the mp4 decode (its H.264 writing runs on the CPU at about 60 fps).

One JSON line per measurement; encode and ``mp4`` are single passes (the encode warms the
model up). Needs PyAV, unlike ``python -m vaecodec.train speed``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from vaecodec.codec import Codec
from vaecodec.video import VideoReader, VideoWriter


def _frames_fps(codec: Codec, vlat: Path, repeats: int = 3) -> tuple[int, float, dict[str, float]]:
    """Best of ``repeats`` passes over one open file, after a warm-up pass (cuDNN autotuning,
    worker start-up: a file keeps its entropy workers between passes), and that pass's seconds
    per stage (unpack, model_decode, view: where a GPU decode's time goes)."""
    with codec.open(vlat) as f:
        best, stages = float("inf"), {}
        for i in range(repeats + 1):
            timings: dict[str, float] = {}
            start = time.perf_counter()
            n = sum(frames.shape[0] for frames in f.iter_frames(timings=timings))
            elapsed = time.perf_counter() - start
            if i and elapsed < best:
                best, stages = elapsed, timings
    return n, n / best, stages


def _looped(clip: Path, times: int, out: Path) -> Path:
    """``clip`` played ``times`` times, every other time backwards, as near-lossless H.264."""
    with VideoReader(clip) as reader:
        info = reader.info
        frames = np.concatenate(list(reader.chunks()))
    with VideoWriter(out, info.width, info.height, info.fps, codec="h264", crf=10, preset="veryfast") as w:
        for k in range(times):
            for i in range(0, len(frames), 16):
                w.write(np.ascontiguousarray((frames if k % 2 == 0 else frames[::-1])[i : i + 16]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 8], help="entropy worker processes")
    ap.add_argument("--refine", type=int, default=20, help="refinement steps for the refined encode (0: skip)")
    ap.add_argument("--loop", type=int, default=1, help="measure a clip that plays CLIP this many times")
    ap.add_argument("--mp4", action=argparse.BooleanOptionalAction, default=True, help="also decode to an mp4")
    ap.add_argument("--qualities", type=int, nargs="+", default=[5, 8], help="quality levels (6-10 code a larger picture)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vlat, back = Path(tmp) / "clip.vlat", Path(tmp) / "back.mp4"
        if args.loop > 1:
            args.clip = _looped(args.clip, args.loop, Path(tmp) / "looped.mp4")
        for dtype, quality in ((d, q) for d in args.dtypes for q in args.qualities):
            head = {"dtype": dtype, "quality": quality}
            for what, refine in (("encode_refined", args.refine), ("encode", 0)):  # the plain .vlat is decoded below
                if what == "encode_refined" and not refine:
                    continue
                enc = Codec(device=args.device, dtype=dtype, quality=quality, refine=refine).encode(
                    args.clip, vlat, overwrite=True)
                print(json.dumps({**head, "what": what, "refine": refine, "scale": enc.scale, "frames": enc.frames,
                                  "bpp": round(enc.bpp, 4), "fps": round(enc.fps_processed, 1), "timings": enc.timings,
                                  "peak_gpu_mib": enc.peak_gpu_bytes and round(enc.peak_gpu_bytes / 2**20)}), flush=True)
            for workers in args.workers:
                n, fps, stages = _frames_fps(Codec(device=args.device, dtype=dtype, entropy_workers=workers), vlat)
                print(json.dumps({**head, "what": "frames", "entropy_workers": workers, "frames": n,
                                  "fps": round(fps, 1), "timings": {k: round(v, 3) for k, v in stages.items()}}))
            if not args.mp4:
                continue
            codec = Codec(device=args.device, dtype=dtype)
            dec = codec.decode(vlat, back, overwrite=True)
            print(json.dumps({**head, "what": "mp4", "entropy_workers": codec.entropy_workers,
                              "frames": dec.frames, "fps": round(dec.fps_processed, 1), "timings": dec.timings,
                              "peak_gpu_mib": dec.peak_gpu_bytes and round(dec.peak_gpu_bytes / 2**20)}), flush=True)


if __name__ == "__main__":
    main()

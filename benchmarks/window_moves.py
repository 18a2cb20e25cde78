"""Rate and quality of steadied files whose canvas window moves: bytes, PSNR, worst frame,
the bench's flicker metric and the moves, per clip and quality, for the tree on PYTHONPATH.

The "before" columns of docs/MODEL.md, "The memory moves with the window", come from running
this against a checkout of the commit before the change (PYTHONPATH=that/checkout), the
"after" columns from this tree; one JSON line per clip and quality.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/window_moves.py CLIP [CLIP ...] --quality 1,3,5,8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import vaecodec
from vaecodec.codec import Codec
from vaecodec.metrics import score
from vaecodec.video import VideoReader


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--quality", default="1,3,5,8")
    ap.add_argument("--tile-px", type=int, default=None, help="bound the canvas and the spatial tile (Codec tile_px)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "x.vlat"
        for clip in args.clips:
            with VideoReader(clip) as reader:
                src = np.concatenate(list(reader.chunks()))
            for q in map(int, args.quality.split(",")):
                r = Codec(device="cpu", quality=q, tile_px=args.tile_px).encode(clip, dst, overwrite=True)
                with vaecodec.open(dst, device="cpu") as f:
                    t = time.perf_counter()
                    out = f.frames_tensor().numpy()
                    seconds = time.perf_counter() - t
                    # moves the memory follows (absent before the change) and moves it does not
                    moves = len(getattr(f, "_shifts", {})) + len(f._moved)
                print(json.dumps({
                    "clip": clip.name, "quality": q, "canvas": r.canvas, "bytes": r.file_bytes, "bpp": round(r.bpp, 5),
                    "psnr": round(_psnr(out, src), 3), "worst": round(min(_psnr(a, b) for a, b in zip(out, src)), 2),
                    "flicker": round(score([src], [out], with_ssim=False).temporal_error, 3), "moves": moves,
                    "encode_fps": round(len(src) / r.seconds, 1), "decode_fps": round(len(src) / seconds, 1)}),
                    flush=True)


if __name__ == "__main__":
    main()

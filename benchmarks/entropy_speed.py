"""Entropy coding alone: bytes and one-core time of each model's coder on the same latents.

    .venv/bin/python benchmarks/entropy_speed.py CLIP [CLIP ...] --weights A.safetensors B.safetensors

Each clip's first 49 frames (padded to a multiple of 8) go through the first model's encoder
once; per quality, every weights file's coder then quantizes those latents with its own steps
(the encoder's motion search and deadzone, as files get) and codes them as one chunk; the
table gives the chunk's bytes and the best of 5 encodes and decodes in milliseconds on one
thread. Models with the same network (e.g. tiny-v6 and tiny-v7) thus compare their entropy
coders alone (chunk version 4 against 5).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vaecodec import motion as mc
from vaecodec.models.tiny import load
from vaecodec.quant import default_deadzone
from vaecodec.video import VideoReader


def best_ms(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--qualities", default="1,3,5,8")
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = [load(w, torch.device("cpu"), torch.float32) for w in args.weights]
    print("| clip | quality | " + " | ".join(f"{m.model_id} bytes / enc ms / dec ms" for m in models) + " |")
    print("|---|---:|" + "---:|" * len(models))
    for clip in args.clips:
        with VideoReader(clip, chunk_frames=49) as r:
            frames = next(r.chunks())[:49]  # [T, H, W, 3] uint8
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        keep = 1 + (x.shape[2] - 1) // 4 * 4
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x[:, :, :keep], (0, -w % 8, 0, -h % 8, 0, 0), mode="replicate")
        with torch.inference_mode():
            mean = models[0].encode(x)[0][0]
        for quality in map(int, args.qualities.split(",")):
            cells = []
            for m in models:
                coder = m.entropy_coder
                q, mv = mc.quantize(mean / coder.step(quality).view(-1, 1, 1, 1), default_deadzone(quality), coder.block)
                data = coder.encode(q, quality, mv)
                assert (coder.decode(data, q.shape, quality) == q).all()
                cells.append(f"{len(data)} / {best_ms(lambda: coder.encode(q, quality, mv)):.1f} / "
                             f"{best_ms(lambda: coder.decode(data, q.shape, quality)):.1f}")
            print(f"| {clip.name} | {quality} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

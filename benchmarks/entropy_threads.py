"""Does entropy decoding scale with threads? (docs/BENCHMARKS.md, GPU section, quotes it)

    python benchmarks/entropy_threads.py [--threads 1 2 4 8 16] [--device cuda]

Encodes one 45-frame 856x480 tile (a 12-latent tile, what 480p gets) of smooth synthetic
content with the embedded model at its default quality, then decodes 4N copies of that
chunk on a pool of N threads. The chunks are independent, so perfect scaling would be N
times the 1-thread rate; what is missing is time spent holding the GIL. On a GPU machine
this says whether the CPU-side coder can keep up with the model.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vaecodec.models.tiny import load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = load(None, torch.device(args.device), torch.float32)
    coder = model.entropy_coder
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 45, 30, 53, generator=g) * 2 - 1,
                                        size=(45, 480, 856), mode="trilinear")
    with torch.inference_mode():
        mean = model.encode(x.to(args.device))[0].cpu()
    q = torch.round(mean / coder.step(coder.default_quality).view(1, -1, 1, 1, 1))[0].numpy().astype(np.int32)
    data = coder.encode(q, coder.default_quality)

    def decode(_: int) -> np.ndarray:
        return coder.decode(data, q.shape, coder.default_quality)

    for n in args.threads:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(decode, range(n)))  # warm-up
            t0 = time.perf_counter()
            list(pool.map(decode, range(4 * n)))
            dt = time.perf_counter() - t0
        print(json.dumps({"threads": n, "entropy_decode_fps": round(4 * n * 45 / dt, 1), "bytes": len(data)}))


if __name__ == "__main__":
    main()

"""Does entropy decoding scale with threads, and with worker processes? (docs/BENCHMARKS.md)

    python benchmarks/entropy_threads.py [--threads 1 2 4 8 16] [--processes 1 2 4 8] [--device cuda]

Encodes one 45-frame 856x480 tile (a 12-latent tile, what 480p gets) of smooth synthetic
content with the embedded model at its default quality, then decodes 4N copies of that
chunk on a pool of N threads, and on N ``vaecodec.workers`` processes (what
``--entropy-workers N`` uses; their start-up is not timed). The chunks are independent, so
perfect scaling would be N times the 1-thread rate; threads lose what the coder spends
holding the GIL, processes what it costs to ship symbols back. On a GPU machine this says
whether the CPU-side coder can keep up with the model.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vaecodec.models.tiny import load
from vaecodec.workers import CoderPool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--processes", type=int, nargs="*", default=[1, 2, 4, 8])
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
    for n in args.processes:
        pool = CoderPool(n, coder)
        try:
            for copies in (n, 4 * n):  # warm-up (worker start-up), then the timed run
                t0 = time.perf_counter()
                done = 0
                for _ in range(copies):
                    if not pool.idle:
                        pool.result()
                        done += 1
                    pool.decode(data, q.shape, coder.default_quality)
                while done < copies:
                    assert np.array_equal(pool.result(), q)
                    done += 1
                dt = time.perf_counter() - t0
        finally:
            pool.close()
        print(json.dumps({"processes": n, "entropy_decode_fps": round(4 * n * 45 / dt, 1), "bytes": len(data)}))


if __name__ == "__main__":
    main()

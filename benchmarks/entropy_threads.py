"""Does entropy coding scale with threads, and with worker processes? (docs/BENCHMARKS.md)

    python benchmarks/entropy_threads.py [--threads 1 2 4 8 16] [--processes 1 2 4 8] [--device cuda]

Encodes one 45-frame 856x480 tile (a 12-latent tile, what 480p gets) of smooth synthetic
content with the embedded model at its default quality, then decodes (and encodes) 4N
copies of that chunk on a pool of N threads, and on N ``vaecodec.workers`` processes (what
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

    quality = coder.default_quality
    jobs = {  # what one job does in this process, and how the worker pool is asked for it
        "decode": (lambda: coder.decode(data, q.shape, quality), lambda pool: pool.decode(data, q.shape, quality)),
        "encode": (lambda: coder.encode(q, quality), lambda pool: pool.encode(q, quality)),
    }
    for n in args.threads:
        row = {"threads": n}
        with ThreadPoolExecutor(n) as pool:
            for name, (run, _) in jobs.items():
                list(pool.map(lambda _: run(), range(n)))  # warm-up
                t0 = time.perf_counter()
                list(pool.map(lambda _: run(), range(4 * n)))
                row[f"entropy_{name}_fps"] = round(4 * n * 45 / (time.perf_counter() - t0), 1)
        print(json.dumps({**row, "bytes": len(data)}))
    for n in args.processes:
        row = {"processes": n}
        pool = CoderPool(n, coder)
        try:
            for name, (_, ask) in jobs.items():
                for copies in (n, 4 * n):  # warm-up (worker start-up), then the timed run
                    t0 = time.perf_counter()
                    results = []
                    for _ in range(copies):
                        if not pool.idle:
                            results.append(pool.result())
                        ask(pool)
                    while len(results) < copies:
                        results.append(pool.result())
                    dt = time.perf_counter() - t0
                expected = q if name == "decode" else data
                assert all(np.array_equal(r, q) if name == "decode" else r == expected for r in results)
                row[f"entropy_{name}_fps"] = round(4 * n * 45 / dt, 1)
        finally:
            pool.close()
        print(json.dumps({**row, "bytes": len(data)}))

if __name__ == "__main__":
    main()

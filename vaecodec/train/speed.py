"""Throughput of the tiny model incl. quantization and entropy coding (for docs/MODEL.md).

Measures one temporal tile the way the pipeline runs it: encode = model.encode + quantize +
EntropyCoder.encode; decode = EntropyCoder.decode + dequantize + model.decode. Each stage is
timed on its own too, so a GPU figure says whether the model or the (CPU) entropy coder limits it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from vaecodec.device import keep_freed_memory, pick_device, pick_dtype
from vaecodec.models.tiny import load


@torch.inference_mode()
def measure(weights: str | Path | None, threads: int = 2, frames: int = 33, height: int = 480,
            width: int = 856, repeats: int = 2, quality: int | None = None, seed: int = 0,
            device: str = "cpu", dtype: str = "fp32") -> dict:
    """Best-of-``repeats`` frames per second for encode and decode of a smooth random clip."""
    dev, dt = pick_device(device), pick_dtype(dtype)
    keep_freed_memory()  # as the pipeline does
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    model = load(weights, dev, dt)
    coder = model.entropy_coder
    quality = coder.default_quality if quality is None else quality
    g = torch.Generator().manual_seed(seed)
    # smooth content (upsampled noise) so the coder sees realistic symbol statistics
    x = torch.nn.functional.interpolate(torch.rand(1, 3, frames, height // 16, width // 16, generator=g) * 2 - 1,
                                        size=(frames, height, width), mode="trilinear")
    x = x.to(dev, dt)
    step = coder.step(quality).view(1, -1, 1, 1, 1)

    def sync() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter()

    stages = ("model_encode", "entropy_encode", "entropy_decode", "model_decode")
    times: dict[str, list[float]] = {k: [] for k in stages}
    nbytes = 0
    for _ in range(repeats):
        t0 = sync()
        mean = model.encode(x)[0].float().cpu()
        t1 = sync()
        q = torch.round(mean / step)[0].numpy().astype(np.int32)
        data = coder.encode(q, quality)
        t2 = time.perf_counter()
        q2 = coder.decode(data, q.shape, quality)
        t3 = time.perf_counter()
        model.decode((torch.from_numpy(q2)[None].float() * step).to(dev, dt)).cpu()
        t4 = sync()
        for k, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[k].append(seconds)
        nbytes = len(data)
    best = {k: min(v) for k, v in times.items()}
    out = {"device": str(dev), "dtype": dtype, "threads": threads, "frames": frames, "size": f"{width}x{height}",
           "quality": quality,
           "encode_fps": round(frames / (best["model_encode"] + best["entropy_encode"]), 2),
           "decode_fps": round(frames / (best["entropy_decode"] + best["model_decode"]), 2),
           **{f"{k}_fps": round(frames / v, 1) for k, v in best.items()},
           "bytes": nbytes}
    if dev.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
    return out

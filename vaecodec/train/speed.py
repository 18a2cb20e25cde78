"""Throughput of the tiny model incl. quantization and entropy coding (for docs/MODEL.md).

Measures one temporal tile the way the pipeline runs it: encode = model.encode + quantize +
EntropyCoder.encode; decode = EntropyCoder.decode + dequantize + model.decode + the uint8 frames
on the host (converted on the device, as the decoder does). Each stage is
timed on its own too, so a GPU figure says whether the model or the (CPU) entropy coder limits it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vaecodec.device import keep_freed_memory, pick_device, pick_dtype
from vaecodec.models.tiny import load
from vaecodec.quant import Quantizer
from vaecodec.resample import to_uint8_frames


def _setup(weights: str | Path | None, threads: int, frames: int, height: int, width: int, seed: int,
           device: str, dtype: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model as the pipeline loads it and a smooth random clip [1, 3, frames, height, width]."""
    dev, dt = pick_device(device), pick_dtype(dtype)
    keep_freed_memory()  # as the pipeline does
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    model = load(weights, dev, dt)
    g = torch.Generator().manual_seed(seed)
    # smooth content (upsampled noise) so the coder sees realistic symbol statistics
    x = torch.nn.functional.interpolate(torch.rand(1, 3, frames, height // 16, width // 16, generator=g) * 2 - 1,
                                        size=(frames, height, width), mode="trilinear")
    return model, x.to(dev, dt)


@torch.inference_mode()
def profile(weights: str | Path | None, threads: int = 2, frames: int = 33, height: int = 480,
            width: int = 856, seed: int = 0, device: str = "cpu", dtype: str = "fp32", rows: int = 20) -> str:
    """torch.profiler tables (self time per op, device time on a GPU) of one model encode and
    one model decode of the tile ``measure`` times, after a warm-up: where a slow stage goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model, x = _setup(weights, threads, frames, height, width, seed, device, dtype)
    on_gpu = x.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    key = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    z = model.encode(x)[0]
    model.decode(z)  # warm-up (cuDNN autotuning, allocator)
    tables = []
    for name, run in (("model encode", lambda: model.encode(x)), ("model decode", lambda: model.decode(z))):
        with torch_profile(activities=activities) as prof:
            run()
            if on_gpu:
                torch.cuda.synchronize(x.device)
        tables.append(f"{name}, {frames} frames {width}x{height}, {dtype} on {x.device}\n"
                      + prof.key_averages().table(sort_by=key, row_limit=rows))
    return "\n".join(tables)


@torch.inference_mode()
def measure(weights: str | Path | None, threads: int = 2, frames: int = 33, height: int = 480,
            width: int = 856, repeats: int = 2, quality: int | None = None, seed: int = 0,
            device: str = "cpu", dtype: str = "fp32") -> dict:
    """Best-of-``repeats`` frames per second for encode and decode of a smooth random clip."""
    model, x = _setup(weights, threads, frames, height, width, seed, device, dtype)
    dev, dt = x.device, x.dtype
    coder = model.entropy_coder
    quality = coder.default_quality if quality is None else quality
    step = coder.step(quality).view(1, -1, 1, 1, 1)
    quant = Quantizer("entropy", quality=quality, coder=coder)

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
        q, motion = quant.symbols(mean[0])  # as files are made: deadzone, motion vectors
        data = coder.encode(q, quality, motion)
        t2 = time.perf_counter()
        q2 = coder.decode(data, q.shape, quality)
        t3 = time.perf_counter()
        to_uint8_frames(model.decode((torch.from_numpy(q2)[None].float() * step).to(dev, dt))[0], height, width)
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

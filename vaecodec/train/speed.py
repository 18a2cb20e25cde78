"""CPU throughput of the tiny model incl. quantization and entropy coding (for docs/MODEL.md).

Measures one temporal tile the way the pipeline runs it: encode = model.encode + quantize +
EntropyCoder.encode; decode = EntropyCoder.decode + dequantize + model.decode.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from vaecodec.models.tiny import load


@torch.inference_mode()
def measure(weights: str | Path | None, threads: int = 2, frames: int = 33, height: int = 480,
            width: int = 856, repeats: int = 2, quality: int | None = None, seed: int = 0) -> dict:
    """Best-of-``repeats`` frames per second for encode and decode of a smooth random clip."""
    from vaecodec.codec import keep_freed_memory

    keep_freed_memory()  # as the pipeline does
    torch.set_num_threads(threads)
    model = load(weights, torch.device("cpu"), torch.float32)
    coder = model.entropy_coder
    quality = coder.default_quality if quality is None else quality
    g = torch.Generator().manual_seed(seed)
    # smooth content (upsampled noise) so the coder sees realistic symbol statistics
    x = torch.nn.functional.interpolate(torch.rand(1, 3, frames, height // 16, width // 16, generator=g) * 2 - 1,
                                        size=(frames, height, width), mode="trilinear")
    step = coder.step(quality).view(1, -1, 1, 1, 1)
    enc_t, dec_t, nbytes = [], [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        mean, _ = model.encode(x)
        q = torch.round(mean / step)[0].numpy().astype(np.int32)
        data = coder.encode(q, quality)
        t1 = time.perf_counter()
        q2 = coder.decode(data, q.shape, quality)
        model.decode(torch.from_numpy(q2)[None].float() * step)
        t2 = time.perf_counter()
        enc_t.append(t1 - t0)
        dec_t.append(t2 - t1)
        nbytes = len(data)
    return {"threads": threads, "frames": frames, "size": f"{width}x{height}", "quality": quality,
            "encode_fps": round(frames / min(enc_t), 2), "decode_fps": round(frames / min(dec_t), 2),
            "bytes": nbytes}

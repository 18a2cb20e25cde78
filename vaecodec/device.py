"""Where the work runs: the device and dtype a user names, and the host allocator setting.

Kept apart from the pipeline so the trainer and the speed tool can use them without PyAV.
"""

from __future__ import annotations

import ctypes
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def keep_freed_memory() -> None:
    """Let glibc reuse freed tile-sized buffers instead of handing them back to the kernel.

    glibc serves blocks over 32 MiB with fresh mmap pages and unmaps them on free, so every
    tile's activations were page-faulted in again: on 480p decode a quarter of the wall time
    went to the kernel. Raising the mmap and trim thresholds keeps those blocks in the heap.
    Memory stays bounded by the tile; the process keeps its high-water mark until it exits.
    Called by every ``Codec`` (idempotent); a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, 1 << 30)


def pick_device(name: str) -> torch.device:
    """``auto`` prefers CUDA, then MPS, then CPU; an explicit unavailable device is a usage error."""
    mps = getattr(torch.backends, "mps", None)
    has = {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available()), "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if name not in has:
        raise UsageError(f"--device must be auto, cuda, mps or cpu, got {name!r}")
    if not has[name]:
        raise UsageError(f"device {name!r} is not available on this machine")
    return torch.device(name)


def pick_dtype(name: str) -> torch.dtype:
    """``fp32``/``fp16``/``bf16`` -> torch dtype; anything else is a usage error."""
    if name not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run in hardware here, not emulated: CUDA from Ampere on, and
    x86 CPUs with AVX512-BF16 or AMX (the probes are torch's; an older torch without them says no)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(probe is not None and probe() for probe in probes)
    return False


def codec_dtypes(name: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """The (encode, decode) dtypes for ``--dtype``: a named one for both, or ``auto``.

    ``auto`` encodes in fp32, because the encoder's latents set the bits (bf16 latents cost 0-3 %
    more at the same picture), and decodes in bf16 where the hardware has it: the decoder only
    makes pixels, the same to a few hundredths of a dB, 1.3-1.6x faster (docs/BENCHMARKS.md).
    """
    if name == "auto":
        return torch.float32, torch.bfloat16 if native_bf16(device) else torch.float32
    if name not in DTYPES:
        raise UsageError(f"--dtype must be one of auto, {', '.join(DTYPES)}, got {name!r}")
    if device.type == "cpu" and not _native_on_cpu(name):
        warnings.warn(f"{name} has no hardware support on this CPU: torch emulates it, about 10x slower than "
                      "--dtype auto (fp16 decoded a 480p pan at 4 fps where auto ran at 37)", stacklevel=3)
    return DTYPES[name], DTYPES[name]


def _native_on_cpu(name: str) -> bool:
    """Whether this CPU computes ``name`` convolutions in hardware (torch's probes)."""
    if name == "fp16":
        probe = getattr(torch.cpu, "_is_amx_fp16_supported", None)
        return probe is not None and probe()
    return name == "fp32" or native_bf16(torch.device("cpu"))


@contextmanager
def autotuned_convs(device: torch.device) -> Iterator[None]:
    """Let cuDNN time its convolution algorithms once per tile shape (a video has only a few:
    the full tile and its last, shorter one) and keep the fastest; the flag is restored after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before

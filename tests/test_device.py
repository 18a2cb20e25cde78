"""Device and dtype choice, and the cuDNN autotuning scope (flags only: no GPU needed)."""

from __future__ import annotations

import warnings

import pytest
import torch

from pathlib import Path

from vaecodec.device import autotuned_convs, codec_dtypes, native_bf16, pick_device, pick_dtype
from vaecodec.errors import UsageError


def test_cudnn_autotuning_is_on_inside_cuda_work_only_and_restored():
    before = torch.backends.cudnn.benchmark
    with autotuned_convs(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    with autotuned_convs(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark == before
    with pytest.raises(RuntimeError), autotuned_convs(torch.device("cuda")):
        raise RuntimeError("a failing tile")
    assert torch.backends.cudnn.benchmark == before


def test_names_are_checked():
    assert pick_device("cpu").type == "cpu" and pick_dtype("bf16") is torch.bfloat16
    with pytest.raises(UsageError):
        pick_device("tpu")
    with pytest.raises(UsageError):
        pick_dtype("fp8")


def test_auto_dtype_follows_the_cpus_bf16_instructions():
    """``auto`` encodes in fp32 and decodes in bf16 only where the CPU runs it natively (the
    kernel's flags say so on Linux); a named dtype is used both ways."""
    cpu = torch.device("cpu")
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    if flags is not None and torch.backends.cpu.get_cpu_capability().startswith("AVX"):
        assert native_bf16(cpu) == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert codec_dtypes("auto", cpu) == (torch.float32, torch.bfloat16 if native_bf16(cpu) else torch.float32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert codec_dtypes("fp16", cpu) == (torch.float16, torch.float16)
        assert codec_dtypes("fp32", cpu) == (torch.float32, torch.float32)
        assert codec_dtypes("bf16", cpu) == (torch.bfloat16, torch.bfloat16)
    # a half dtype the CPU does not run natively is emulated, about 10x slower: the user is told
    emulated = {"fp16"} if flags is None or "amx_fp16" not in flags else set()
    if not native_bf16(cpu):
        emulated.add("bf16")
    assert {str(w.message).split()[0] for w in seen} == emulated
    assert not native_bf16(torch.device("meta"))
    with pytest.raises(UsageError, match="auto, fp32"):
        codec_dtypes("int8", cpu)

"""Device and dtype choice, and the cuDNN autotuning scope (flags only: no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from vaecodec.device import autotuned_convs, pick_device, pick_dtype
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

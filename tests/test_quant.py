"""Quantization: error bounds, bit packing, and strict checks on damaged payloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaecodec.errors import FormatError, UsageError
from vaecodec.quant import Quantizer, _pack_bits, _unpack_bits


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_uniform_error_is_at_most_half_a_step(bits):
    torch.manual_seed(bits)
    z = torch.randn(6, 3, 5, 7) * torch.tensor([0.1, 1, 3, 10, 0.5, 2]).view(-1, 1, 1, 1) + 4
    q = Quantizer("uniform", bits=bits)
    p = q.pack(z)
    back = q.unpack(p.payload, p.meta, tuple(z.shape))
    step = (z.reshape(6, -1).amax(1) - z.reshape(6, -1).amin(1)) / (2**bits - 1)
    err = (back - z).abs().reshape(6, -1).amax(1)
    assert torch.all(err <= step / 2 * (1 + 1e-4) + 1e-6)
    assert len(p.payload) == (z.numel() * bits + 7) // 8  # dense bit packing


def test_constant_channel_round_trips_exactly():
    z = torch.full((2, 1, 3, 3), 1.25)
    q = Quantizer("uniform", bits=6)
    p = q.pack(z)
    assert torch.equal(q.unpack(p.payload, p.meta, (2, 1, 3, 3)), z)


@pytest.mark.parametrize("bits", [4, 5, 7])
def test_bit_packing_is_lossless(bits):
    rng = np.random.default_rng(bits)
    levels = rng.integers(0, 2**bits, size=1001, dtype=np.uint8)
    assert np.array_equal(_unpack_bits(_pack_bits(levels, bits), bits, levels.size), levels)


def test_damaged_payload_and_meta_are_reported():
    q = Quantizer("uniform", bits=8)
    p = q.pack(torch.randn(2, 1, 4, 4))
    with pytest.raises(FormatError, match="expected 32"):
        q.unpack(p.payload[:-1], p.meta, (2, 1, 4, 4))
    with pytest.raises(FormatError, match="offset"):
        q.unpack(p.payload, {"scale": p.meta["scale"]}, (2, 1, 4, 4))
    with pytest.raises(FormatError, match="channels"):
        q.unpack(p.payload, p.meta, (4, 1, 2, 4))


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="between 4 and 8"):
        Quantizer("uniform", bits=3)
    with pytest.raises(UsageError, match="entropy coder"):
        Quantizer("entropy", quality=1, coder=None)
    with pytest.raises(FormatError):
        Quantizer("magic", bits=8)

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


def _drifting_latents(seed: int = 0) -> torch.Tensor:
    """[C, t, h, w] latents that drift slowly, as a panned photo's do: sub-step changes per frame."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, 1, 16, 16, generator=g) * 3
    drift = torch.cumsum(torch.randn(4, 7, 16, 16, generator=g) * 0.15, dim=1)
    return base + drift


@pytest.fixture(scope="module")
def coder():
    from vaecodec.entropy import EntropyCoder, latent_histograms

    means = torch.stack([_drifting_latents(s) for s in range(1, 7)]).numpy()
    steps = np.array([1.0, 0.5], np.float32)
    return EntropyCoder.from_histograms(steps, *latent_histograms(means, steps), (1, 2), default_quality=1)


def test_deadzone_zero_is_plain_rounding(coder):
    z = _drifting_latents()
    for motion in (False, True):  # motion changes only the coding reference, never plain rounding
        q, _ = Quantizer("entropy", quality=2, coder=coder, deadzone=0.0, motion=motion).symbols(z)
        assert np.array_equal(q, torch.round(z / 0.5).to(torch.int32).numpy())


@pytest.mark.parametrize("deadzone", [0.1, 0.25, 0.45])
def test_deadzone_holds_symbols_and_bounds_the_error(coder, deadzone):
    z = _drifting_latents()
    x = (z / 0.5).numpy()
    q, motion = Quantizer("entropy", quality=2, coder=coder, deadzone=deadzone, motion=False).symbols(z)
    assert motion is None
    assert np.array_equal(q[:, 0], np.round(x[:, 0]))  # a chunk's first frame is plain rounding
    assert np.abs(q - x).max() <= 0.5 + deadzone + 1e-6
    for t in range(1, x.shape[1]):  # held within 0.5 + deadzone of the previous symbol, else rounded
        near = np.abs(x[:, t] - q[:, t - 1]) <= 0.5 + deadzone
        assert np.array_equal(q[:, t][near], q[:, t - 1][near])
        assert np.array_equal(q[:, t][~near], np.round(x[:, t][~near]))
    plain = np.round(x)
    assert np.count_nonzero(np.diff(q, axis=1)) < 0.7 * np.count_nonzero(np.diff(plain, axis=1))


def test_deadzone_saves_bits_and_round_trips(coder):
    z = _drifting_latents(9)
    sizes = []
    for dz in (0.0, 0.2):
        quant = Quantizer("entropy", quality=2, coder=coder, deadzone=dz, motion=False)
        p = quant.pack(z)
        back = quant.unpack(p.payload, p.meta, tuple(z.shape))
        assert torch.equal(back, torch.from_numpy(quant.symbols(z)[0]).float() * 0.5)  # decoder: q * step
        sizes.append(len(p.payload))
    assert sizes[1] < 0.9 * sizes[0]


def test_deadzone_is_recorded_and_checked(coder):
    q = Quantizer("entropy", quality=2, coder=coder, deadzone=0.3)
    assert q.describe()["deadzone"] == 0.3
    assert Quantizer("uniform", bits=8).deadzone is None
    with pytest.raises(UsageError, match="deadzone"):
        Quantizer("uniform", bits=8, deadzone=0.1)
    for bad in (-0.1, 0.5, 2.0):
        with pytest.raises(UsageError, match="deadzone"):
            Quantizer("entropy", quality=2, coder=coder, deadzone=bad)

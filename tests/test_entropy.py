"""The entropy coder: lossless for any int32 input, deterministic, and actually compressing."""

from __future__ import annotations

import numpy as np
import pytest

from vaecodec.entropy import ALPHABET, K, TABLE_TOTAL, EntropyCoder, counts_to_table, latent_histograms
from vaecodec.errors import FormatError, UsageError

C = 16
STEPS = np.array([1.0, 0.5, 0.25], np.float32)


@pytest.fixture(scope="module")
def coder() -> EntropyCoder:
    """Tables fitted to a random-walk latent source (temporally correlated, Laplacian)."""
    rng = np.random.default_rng(1)
    means = rng.laplace(0, 1.5, (6, C, 5, 8, 8))
    means[:, :, 1:] = means[:, :, :1] + rng.laplace(0, 0.2, (6, C, 4, 8, 8))  # mostly static
    intra, inter = latent_histograms(means, STEPS)
    return EntropyCoder.from_histograms(STEPS, intra, inter, (1, 2, 3), default_quality=2)


def _laplace_q(rng, shape, scale=2.0) -> np.ndarray:
    return np.round(rng.laplace(0, scale, shape)).astype(np.int32)


@pytest.mark.parametrize("shape", [(C, 1, 4, 5), (C, 3, 7, 9), (C, 9, 2, 33), (C, 2, 0, 4), (C, 1, 1, 1)])
def test_roundtrip_shapes(coder, shape):
    q = _laplace_q(np.random.default_rng(0), shape)
    data = coder.encode(q, 2)
    out = coder.decode(data, shape, 2)
    assert out.dtype == np.int32 and out.shape == shape
    np.testing.assert_array_equal(out, q)


def test_roundtrip_any_int32_values(coder):
    """Values far outside the tables (and the int32 extremes) go through the escape list."""
    rng = np.random.default_rng(2)
    q = _laplace_q(rng, (C, 4, 6, 6))
    q[0, 0, 0, 0] = np.iinfo(np.int32).max
    q[0, 1, 0, 0] = np.iinfo(np.int32).min  # residual to the previous frame overflows int32
    q[3, 2] = rng.integers(-(2**31), 2**31 - 1, (6, 6), dtype=np.int64).astype(np.int32)
    q[5, :, 1, 1] = [K, K + 1, -K, -K - 1]
    for quality in (1, 2, 3):
        np.testing.assert_array_equal(coder.decode(coder.encode(q, quality), q.shape, quality), q)


def test_deterministic_and_survives_serialisation(coder):
    q = _laplace_q(np.random.default_rng(3), (C, 3, 8, 8))
    a = coder.encode(q, 3)
    b = coder.encode(q.copy(), 3)
    again = EntropyCoder.from_tensors(coder.to_tensors())
    assert a == b == again.encode(q, 3)
    np.testing.assert_array_equal(again.decode(a, q.shape, 3), q)


def test_static_content_is_cheap(coder):
    """Repeating a latent frame costs far less than fresh frames (inter mode is used)."""
    rng = np.random.default_rng(4)
    frame = _laplace_q(rng, (C, 1, 16, 16))
    static = np.repeat(frame, 5, axis=1)
    fresh = _laplace_q(rng, (C, 5, 16, 16))
    assert len(coder.encode(static, 2)) < 0.5 * len(coder.encode(fresh, 2))


def test_rate_matches_table_entropy(coder):
    """The range coder spends within 1% + a few words of the ideal code length."""
    rng = np.random.default_rng(5)
    probs = coder._intra[1, 0].astype(np.float64) / TABLE_TOTAL
    sym = rng.choice(ALPHABET - 1, size=(1, 1, 64, 64), p=probs[:-1] / probs[:-1].sum())
    q = np.zeros((C, 1, 64, 64), np.int32)
    q[0] = sym - K
    ideal = -np.log2(coder._intra[1][np.arange(C)[:, None, None, None], q + K] / TABLE_TOTAL).sum()
    assert len(coder.encode(q, 2)) * 8 < ideal * 1.01 + 32 * 4 + 8 * 8


def test_tables_are_exact_integers():
    hist = np.zeros((2, 3, ALPHABET), np.int64)
    hist[0, 0, K] = 10**9  # one huge count must not starve the others
    hist[1, 2, :5] = 3
    t = counts_to_table(hist)
    assert t.dtype == np.int32 and (t >= 1).all() and (t.sum(-1) == TABLE_TOTAL).all()


def test_step_per_quality(coder):
    s = [coder.step(q) for q in coder.qualities]
    assert all(x.shape == (C,) for x in s)
    assert float(s[0][0]) == 1.0 and float(s[2][0]) == 0.25


def test_errors(coder):
    q = _laplace_q(np.random.default_rng(6), (C, 2, 4, 4))
    data = coder.encode(q, 2)
    with pytest.raises(UsageError):
        coder.encode(q, 9)
    with pytest.raises(UsageError):
        coder.encode(q.astype(np.float32), 2)
    with pytest.raises(UsageError):
        coder.encode(q[:4], 2)
    with pytest.raises(FormatError):
        coder.decode(data[:3], q.shape, 2)
    with pytest.raises(FormatError):
        coder.decode(b"\x07" + data[1:], q.shape, 2)
    with pytest.raises(FormatError):
        EntropyCoder.from_tensors({"steps": coder.to_tensors()["steps"]})

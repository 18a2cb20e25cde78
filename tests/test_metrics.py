"""Metric code against known values and independent reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaecodec.errors import InputError
from vaecodec.metrics import (
    QualityMeter,
    bd_psnr,
    bd_rate,
    bits_per_pixel,
    luma,
    psnr_from_mse,
    ssim,
)


def _photo_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real photograph (skimage 'astronaut', 128x128 crop) and a blurred + noisy copy."""
    from skimage import data
    from skimage.filters import gaussian

    img = data.astronaut()[100:228, 150:278]  # uint8 [128, 128, 3]
    rng = np.random.default_rng(7)
    blurred = gaussian(img, sigma=1.2, channel_axis=-1, preserve_range=True)
    noisy = np.clip(blurred + rng.normal(0, 6, img.shape), 0, 255).round().astype(np.uint8)
    return img, noisy


def test_identical_frames_give_infinite_psnr_and_unit_ssim():
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 40, 3), dtype=np.uint8)
    meter = QualityMeter()
    threads = torch.get_num_threads()
    meter.update(frames, frames.copy())
    assert torch.get_num_threads() == threads  # the one-thread scoring mode is undone
    q = meter.result()
    assert q.frames == 3
    assert math.isinf(q.psnr) and math.isinf(q.psnr_y) and math.isinf(q.psnr_min)
    assert q.ssim_y == pytest.approx(1.0, abs=1e-6)
    assert q.temporal_error == 0.0


def test_known_noise_level_gives_hand_computed_psnr():
    # Alternating +-4 on every sample: MSE is exactly 16 in RGB and in luma (weights sum to 1).
    ref = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
    sign = np.where((np.indices((16, 16)).sum(0) % 2) == 0, 4, -4)[None, :, :, None]
    dist = (ref.astype(int) + sign).astype(np.uint8)
    meter = QualityMeter()
    meter.update(ref, dist)
    q = meter.result()
    expected = 10 * math.log10(255**2 / 16)
    assert q.psnr == pytest.approx(expected, abs=1e-9)
    assert q.psnr_y == pytest.approx(expected, abs=1e-4)
    assert q.psnr_global == pytest.approx(expected, abs=1e-9)


def test_worst_frame_mean_and_streaming_equal_one_shot():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (5, 24, 20, 3), dtype=np.uint8)
    noise = rng.integers(-1, 2, ref.shape) * np.arange(1, 6)[:, None, None, None]  # frame k: +-k
    dist = np.clip(ref.astype(int) + noise, 0, 255).astype(np.uint8)
    whole, parts = QualityMeter(), QualityMeter()
    whole.update(ref, dist)
    for a, b in ((0, 2), (2, 3), (3, 5)):  # uneven chunks, as a reader would hand them over
        parts.update(ref[a:b], dist[a:b])
    qw, qp = whole.result(), parts.result()
    assert qp.per_frame_psnr == qw.per_frame_psnr
    assert qp.per_frame_temporal_error == pytest.approx(qw.per_frame_temporal_error)
    assert qw.psnr_min == min(qw.per_frame_psnr) == qw.per_frame_psnr[4]
    assert qw.psnr == pytest.approx(np.mean(qw.per_frame_psnr))
    per_frame = [psnr_from_mse(np.mean((dist[i].astype(float) - ref[i]) ** 2)) for i in range(5)]
    assert qw.per_frame_psnr == pytest.approx(per_frame, abs=1e-9)


def test_temporal_error_sees_flicker_but_not_static_error():
    ref = np.full((4, 16, 16, 3), 128, dtype=np.uint8)
    static = ref + 3  # same error every frame
    flicker = ref + 3
    flicker[1::2] -= 6  # error alternates +3 / -3: |e_t - e_t-1| = 6
    m_static, m_flicker = QualityMeter(), QualityMeter()
    m_static.update(ref, static)
    m_flicker.update(ref, flicker)
    q_static, q_flicker = m_static.result(), m_flicker.result()
    assert q_static.temporal_error == 0.0
    assert q_flicker.temporal_error == pytest.approx(6.0)
    assert q_flicker.temporal_error_max == pytest.approx(6.0)
    # Identical per-frame PSNR, so PSNR alone could not tell these apart.
    assert q_static.per_frame_psnr == pytest.approx(q_flicker.per_frame_psnr)


def test_ssim_matches_pytorch_msssim():
    from pytorch_msssim import ssim as ref_ssim

    img, noisy = _photo_pair()
    y1 = luma(torch.from_numpy(img).double())[None]  # [1, H, W]
    y2 = luma(torch.from_numpy(noisy).double())[None]
    ours = ssim(y1, y2).item()
    theirs = ref_ssim(y1[:, None], y2[:, None], data_range=255, size_average=True).item()
    assert 0.3 < ours < 0.95  # a real, non-trivial distortion
    assert ours == pytest.approx(theirs, abs=1e-5)  # its window is built in float32


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    img, noisy = _photo_pair()
    y1 = luma(torch.from_numpy(img).double())
    y2 = luma(torch.from_numpy(noisy).double())
    ours = ssim(y1[None], y2[None]).item()
    # skimage pads by reflection and crops (win-1)/2 = 5 px; our valid conv drops the same border.
    theirs = structural_similarity(
        y1.numpy(), y2.numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ours == pytest.approx(theirs, abs=1e-3)


def test_mismatched_shapes_raise_input_error():
    meter = QualityMeter()
    with pytest.raises(InputError, match="do not match"):
        meter.update(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 10, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        meter.update(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="no frames"):
        QualityMeter().result()


def test_bits_per_pixel():
    assert bits_per_pixel(1000, 100, 10, 8) == pytest.approx(1.0)


RATES = [100.0, 180.0, 320.0, 600.0, 1100.0]
PSNRS = [30.1, 32.4, 34.2, 36.5, 38.0]


def test_bd_rate_of_curve_against_itself_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_scaled_curve_gives_known_percentage():
    # Same PSNR at 80% of the rate everywhere: exactly -20%.
    test_rates = [r * 0.8 for r in RATES]
    assert bd_rate(RATES, PSNRS, test_rates, PSNRS) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(test_rates, PSNRS, RATES, PSNRS) == pytest.approx(25.0, abs=1e-9)
    # +0.5 dB everywhere at equal rate.
    assert bd_psnr(RATES, PSNRS, RATES, [p + 0.5 for p in PSNRS]) == pytest.approx(0.5, abs=1e-9)


def test_bd_matches_bjontegaard_package_on_irregular_curves():
    bjontegaard = pytest.importorskip("bjontegaard")
    rates_t = [90.0, 150.0, 260.0, 500.0]
    psnr_t = [30.8, 32.0, 34.9, 36.1]
    for ours, theirs in (
        (bd_rate, bjontegaard.bd_rate),
        (bd_psnr, bjontegaard.bd_psnr),
    ):
        expected = theirs(RATES, PSNRS, rates_t, psnr_t, method="pchip", require_matching_points=False, min_overlap=0)
        assert ours(RATES, PSNRS, rates_t, psnr_t) == pytest.approx(expected, abs=1e-6)


def test_bd_without_overlap_is_nan():
    assert math.isnan(bd_rate([1, 2], [30, 31], [1, 2], [40, 41]))


def test_score_pairs_differently_chunked_streams_and_checks_frame_count():
    from vaecodec.metrics import score

    rng = np.random.default_rng(3)
    ref = rng.integers(0, 256, (7, 12, 12, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(int) + rng.integers(-3, 4, ref.shape), 0, 255).astype(np.uint8)
    meter = QualityMeter()
    meter.update(ref, dist)
    q = score([ref[:3], ref[3:]], [dist[:1], dist[1:6], dist[6:]], batch=2)
    assert q.frames == 7
    assert q.per_frame_psnr == meter.result().per_frame_psnr
    with pytest.raises(InputError, match="fewer frames"):
        score([ref], [dist[:5]])
    with pytest.raises(InputError, match="more frames"):
        score([ref[:6]], [dist])

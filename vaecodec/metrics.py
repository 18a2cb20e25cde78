"""Quality and rate figures shared by `vaecodec bench` and every baseline.

Every codec (ours and the classic ones) is scored by the same code against the same
original RGB frames, so a difference in the numbers is a difference in the codecs.
Scoring streams: ``QualityMeter.update`` takes one chunk at a time and keeps only
per-frame scalars plus the previous frame's error (for the temporal measure).

Conventions: frames are uint8 RGB ``[n, H, W, 3]``; PSNR peak is 255; luma is
BT.601 (``Y = 0.299 R + 0.587 G + 0.114 B`` on the full 0..255 scale, as in the
reference SSIM code); SSIM uses an 11-tap Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03 and "valid" borders (no padding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vaecodec.errors import InputError


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run metric ops on one CPU thread, restoring the caller's setting afterwards.

    They are small memory-bound passes: extra threads buy little, and on a shared machine
    oversubscribed threads made them 4-5x slower (0.43 vs 0.10 s per 480p frame measured).
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

PEAK = 255.0
LUMA_601 = (0.299, 0.587, 0.114)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def as_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A uint8 ``[n, H, W, 3]`` tensor from an array or tensor (one ``[H, W, 3]`` frame allowed)."""
    t = torch.as_tensor(frames)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3 or t.dtype != torch.uint8:
        raise InputError(f"expected uint8 RGB frames [n, H, W, 3], got {t.dtype} {tuple(t.shape)}")
    return t


def psnr_from_mse(mse: float, peak: float = PEAK) -> float:
    """PSNR in dB; identical signals (mse 0) give +inf."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """float ``[..., 3]`` RGB on 0..255 -> ``[...]`` BT.601 luma on 0..255."""
    w = torch.tensor(LUMA_601, dtype=rgb.dtype, device=rgb.device)
    return rgb @ w


def _gaussian_taps(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]``; SSIM's window is its outer product (separable)."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = PEAK) -> torch.Tensor:
    """Mean SSIM of each image pair: float ``[n, H, W]`` x2 -> ``[n]``.

    Window shrinks (odd, >= 3) for images smaller than 11 px so tiny test inputs still score.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise InputError(f"SSIM needs two [n, H, W] stacks of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n, h, w = a.shape
    size = min(SSIM_WINDOW, h - (1 - h % 2), w - (1 - w % 2))
    if size < 3:
        raise InputError(f"frames of {w}x{h} are too small for SSIM")
    g = _gaussian_taps(size, SSIM_SIGMA, a.dtype).to(a.device)
    c = 5 * n
    gh = g.view(1, 1, 1, size).expand(c, 1, 1, size)  # filters along W, one per channel
    gv = g.view(1, 1, size, 1).expand(c, 1, size, 1)  # filters along H
    # Five local statistics of every image as channels of one grouped (depthwise) conv, which
    # is several times faster on CPU than a 1-channel conv: [1, 5n, H, W] -> [5n, H-size+1, W-size+1]
    stack = torch.cat([a, b, a * a, b * b, a * b]).unsqueeze(0)
    stats = F.conv2d(F.conv2d(stack, gh.contiguous(), groups=c), gv.contiguous(), groups=c)[0]
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(n)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    # (2 mu_a mu_b + c1)(2 cov + c2) / ((mu_a^2 + mu_b^2 + c1)(var_a + var_b + c2))
    num = (2 * mu_ab + c1) * (2 * (e_ab - mu_ab) + c2)
    den = (mu_aa + mu_bb + c1) * (e_aa + e_bb - mu_aa - mu_bb + c2)
    return (num / den).flatten(1).mean(1)


@dataclass
class Quality:
    """Scores of one decoded video against its original; per-frame lists are in frame order.

    ``psnr``/``psnr_y`` are means of per-frame PSNR (the usual codec-comparison average);
    ``psnr_global`` is PSNR of the mean RGB MSE, which stays finite if one frame is exact.
    ``temporal_error`` is the mean over consecutive frame pairs of mean |e_t - e_(t-1)|,
    e = decoded - original in 8-bit levels: static error scores 0, error that flickers
    (tile seams moving, per-tile drift) scores high.
    """

    frames: int
    psnr: float
    psnr_y: float
    psnr_min: float
    psnr_y_min: float
    psnr_global: float
    ssim_y: float
    ssim_y_min: float
    temporal_error: float
    temporal_error_max: float
    per_frame_psnr: list[float] = field(repr=False)
    per_frame_psnr_y: list[float] = field(repr=False)
    per_frame_ssim_y: list[float] = field(repr=False)
    per_frame_temporal_error: list[float] = field(repr=False)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class QualityMeter:
    """Streams frame pairs in, keeps only per-frame scalars and the last frame's error."""

    def __init__(self, device: torch.device | str = "cpu", *, with_ssim: bool = True) -> None:
        """``with_ssim=False`` skips SSIM (its nan in the result) where only PSNR is needed."""
        self.device = torch.device(device)
        self.with_ssim = with_ssim
        self._mse: list[float] = []
        self._mse_y: list[float] = []
        self._ssim: list[float] = []
        self._flicker: list[float] = []
        self._prev_err: torch.Tensor | None = None
        self._shape: tuple[int, int] | None = None

    @property
    def frames(self) -> int:
        return len(self._mse)

    def update(self, ref: np.ndarray | torch.Tensor, dist: np.ndarray | torch.Tensor) -> None:
        """Score a chunk: ``ref`` and ``dist`` uint8 ``[n, H, W, 3]`` of equal shape."""
        ref_t, dist_t = as_frames(ref), as_frames(dist)
        if ref_t.shape != dist_t.shape:
            raise InputError(f"decoded frames {tuple(dist_t.shape)} do not match the original {tuple(ref_t.shape)}")
        if self._shape is None:
            self._shape = tuple(ref_t.shape[1:3])
        elif tuple(ref_t.shape[1:3]) != self._shape:
            raise InputError(f"frame size changed mid-stream: {tuple(ref_t.shape[1:3])} after {self._shape}")
        with _one_cpu_thread(self.device):
            for r8, d8 in zip(ref_t, dist_t):  # one frame at a time: a 1080p chunk in float is GBs
                self._update_frame(r8, d8)

    def _update_frame(self, r8: torch.Tensor, d8: torch.Tensor) -> None:
        """Score one uint8 [H, W, 3] pair."""
        r = r8.to(self.device, torch.float32)  # [H, W, 3]
        d = d8.to(self.device, torch.float32)
        err = d - r
        self._mse.append(err.double().square().mean().item())
        ry, dy = luma(r), luma(d)  # [H, W]
        self._mse_y.append((dy - ry).double().square().mean().item())
        self._ssim.append(ssim(ry[None], dy[None]).item() if self.with_ssim else math.nan)
        if self._prev_err is not None:
            self._flicker.append((err - self._prev_err).abs().mean().item())
        self._prev_err = err

    def result(self) -> Quality:
        if not self._mse:
            raise InputError("no frames were scored")
        psnr = [psnr_from_mse(m) for m in self._mse]
        psnr_y = [psnr_from_mse(m) for m in self._mse_y]
        flicker = self._flicker or [0.0]
        return Quality(
            frames=len(psnr),
            psnr=float(np.mean(psnr)),
            psnr_y=float(np.mean(psnr_y)),
            psnr_min=min(psnr),
            psnr_y_min=min(psnr_y),
            psnr_global=psnr_from_mse(float(np.mean(self._mse))),
            ssim_y=float(np.mean(self._ssim)),
            ssim_y_min=min(self._ssim),
            temporal_error=float(np.mean(flicker)),
            temporal_error_max=max(flicker),
            per_frame_psnr=psnr,
            per_frame_psnr_y=psnr_y,
            per_frame_ssim_y=list(self._ssim),
            per_frame_temporal_error=list(self._flicker),
        )


def _frames(chunks: Iterable[np.ndarray | torch.Tensor]) -> Iterator[torch.Tensor]:
    for chunk in chunks:
        yield from as_frames(chunk)


def score(
    ref_chunks: Iterable[np.ndarray | torch.Tensor],
    dist_chunks: Iterable[np.ndarray | torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    batch: int = 8,
    with_ssim: bool = True,
) -> Quality:
    """Score two chunk streams frame by frame; their chunkings may differ, frame counts may not."""
    meter = QualityMeter(device, with_ssim=with_ssim)
    ref_it, dist_it = _frames(ref_chunks), _frames(dist_chunks)
    done = False
    while not done:
        refs: list[torch.Tensor] = []
        dists: list[torch.Tensor] = []
        while len(refs) < batch:
            r, d = next(ref_it, None), next(dist_it, None)
            if r is None or d is None:
                if (r is None) != (d is None):
                    n = meter.frames + len(refs)
                    which = "fewer" if d is None else "more"
                    raise InputError(f"decoded video has {which} frames than the original (they agree up to frame {n})")
                done = True
                break
            refs.append(r)
            dists.append(d)
        if refs:
            meter.update(torch.stack(refs), torch.stack(dists))
    return meter.result()


def bits_per_pixel(file_bytes: int, width: int, height: int, frames: int) -> float:
    """Whole-file rate: 8 * bytes / (W * H * frames)."""
    return 8.0 * file_bytes / (width * height * frames)


def raw_rgb_bytes(width: int, height: int, frames: int) -> int:
    """Size of the same video as raw 8-bit RGB, the denominator of the compression ratio."""
    return width * height * 3 * frames


# --- Bjontegaard deltas -------------------------------------------------------------------
# Piecewise cubic Hermite (PCHIP, Fritsch-Carlson slopes) through the points, integrated
# exactly over the overlap of the two curves; matches bjontegaard's method="pchip".


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shape-preserving derivatives at each knot (monotone data stays monotone)."""
    h = np.diff(x)
    m = np.diff(y) / h
    if len(x) == 2:
        return np.array([m[0], m[0]])
    d = np.zeros_like(x)
    for k in range(1, len(x) - 1):
        if m[k - 1] * m[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])

    def edge(h0: float, h1: float, m0: float, m1: float) -> float:
        e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(e) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(e) > 3 * abs(m0):
            return 3 * m0
        return e

    d[0] = edge(h[0], h[1], m[0], m[1])
    d[-1] = edge(h[-1], h[-2], m[-1], m[-2])
    return d


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral over [lo, hi] (inside [x0, xn]) of the PCHIP curve through (x, y)."""
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        m = (y[k + 1] - y[k]) / h
        c2 = (3 * m - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * m) / (h * h)

        def prim(s: float) -> float:
            return y[k] * s + d[k] * s**2 / 2 + c2 * s**3 / 3 + c3 * s**4 / 4

        total += prim(b - x[k]) - prim(a - x[k])
    return total


def _curve(xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by x; x must be distinct (two encodes at one rate/quality is no curve)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError("a rate-distortion curve needs at least two (rate, psnr) points")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("rate-distortion points must be finite")
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError("rate-distortion points need distinct values along the integration axis")
    return x, y


def _bd_average(x_a, y_a, x_t, y_t) -> float:
    """Mean of (test - anchor) over the overlap of the two x ranges; nan without overlap."""
    xa, ya = _curve(x_a, y_a)
    xt, yt = _curve(x_t, y_t)
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if hi <= lo:
        return math.nan
    return (_pchip_integral(xt, yt, lo, hi) - _pchip_integral(xa, ya, lo, hi)) / (hi - lo)


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float:
    """Bjontegaard delta rate in percent: average bitrate change of test vs anchor at equal PSNR.

    Negative means the test codec needs fewer bits. Integrated only over the PSNR range both
    curves cover; nan when they do not overlap.
    """
    avg = _bd_average(psnr_anchor, np.log10(rate_anchor), psnr_test, np.log10(rate_test))
    return (10.0**avg - 1.0) * 100.0


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float:
    """Bjontegaard delta PSNR in dB: average PSNR gain of test vs anchor at equal rate (log scale)."""
    return _bd_average(np.log10(rate_anchor), psnr_anchor, np.log10(rate_test), psnr_test)

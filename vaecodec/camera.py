"""Camera motion compensation: code a steadied canvas instead of the moving picture.

A video VAE's encoder is not shift-equivariant below its stride, so a camera pan makes every
latent frame new content: on our 480p pans each later latent frame cost a fifth to a third of
the first, where a still picture costs almost nothing after its first. So the encoder
estimates the camera's motion (a zoom and a shift per frame), warps each frame into the
coordinates of a reference frame, and codes that nearly still *canvas*, a little larger than
the picture. Each frame's view-to-canvas transform travels in its latent chunk's meta; the
decoder cuts every frame out of the decoded canvas with it (docs/FORMAT.md, "Camera motion";
docs/MODEL.md, "Camera motion compensation").

A zoom that strays too far starts a new reference, which costs what a cut costs. A view
about to leave the canvas moves the window instead: by whole latent cells, which the coder's
block motion predicts almost exactly. Canvas pixels a frame does not cover hold what
was seen there last, or show what will be seen there first, so they stay still too.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
import zstandard

from vaecodec.errors import FormatError

FRAC_ZOOM = 1 << 20  # zoom in 2^-20 (0.004 px at 4,096 px from the origin)
FRAC_SHIFT = 1 << 8  # shifts in 1/256 px
# A view's scale stays within these of its reference's (a frame -> reference scale from
# 1 - MAX_ZOOM to 1 + MAX_ZOOM_OUT), else a new reference starts. Zoomed in, a canvas at the
# reference's scale blurs the frames it is enlarged for: on 4 s zooms of 1.5x a limit of 0.3
# cost 10-13 % BD-rate against 0.2 (0.1: +58-88 %, new references too often). Zoomed out, the
# frames are shrunk from a finer canvas, and 0.3 saved 26-31 % against 0.2; 0.4 and 0.5 gave
# the same files as 0.3, the view leaving the canvas first (docs/MODEL.md).
MAX_ZOOM = 0.2
MAX_ZOOM_OUT = 0.3
CELL = 8  # a moved window moves by whole latent cells of this many pixels
MAX_MARGIN = 0.25  # the canvas is at most 25 % wider and taller than the picture
LOOKAHEAD = 33  # frames that decide whether a file gets a canvas, and how large
MAX_SEGMENT = 65  # frames per segment at most (1 + 16 latent frames of 4)
SEGMENT_BUFFER_BYTES = 256 << 20  # the encoder holds a segment's frames
MIN_SIDE = 64  # smaller pictures are coded as they are
MIN_SPEED = 0.5  # px per frame a corner of the picture must move on average to be steadied
PATCH = 128  # phase-correlation patches (shifts up to half of it between frames)
SMALLEST = 16  # pixels on the shorter side below which no camera motion is estimated (nor worth it)
LK_SAMPLES = 50_000  # luma samples the sub-pixel refinement fits on, about


_BT601 = torch.tensor([0.299, 0.587, 0.114])


def _luma(frame: np.ndarray, k: int) -> torch.Tensor:
    """float32 [h/k, w/k] BT.601 luma of a uint8 RGB frame, box-shrunk by k."""
    h, w = frame.shape[:2]
    y = torch.mv(torch.from_numpy(frame).reshape(-1, 3).float(), _BT601).view(h, w)  # (NumPy's: 2x the time)
    return F.avg_pool2d(y[None, None], k)[0, 0] if k > 1 else y


@functools.cache
def _window(p: int) -> torch.Tensor:
    """float32 [p, p] Hann window of the phase-correlation patches."""
    return torch.from_numpy(np.outer(np.hanning(p), np.hanning(p)).astype(np.float32))


class Patches:
    """A frame's luma (at most 540 rows high, box-shrunk by ``k``), for the sub-pixel
    refinement, and its patches on an overlapping grid, transformed for phase correlation."""

    def __init__(self, frame: np.ndarray) -> None:
        self.k = k = max(1, math.ceil(frame.shape[0] / 540))
        self.luma = y = _luma(frame, k)  # [h, w]
        h, w = y.shape
        self.tiny = min(h, w) < SMALLEST  # too small to correlate: ``estimate`` says no motion is known
        if self.tiny:
            return
        self.p = p = min(PATCH, 1 << int(math.log2(min(h, w) // 2)))
        ys = np.linspace(0, h - p, max(2, min(4, round(1.25 * h / p)))).astype(int)
        xs = np.linspace(0, w - p, max(2, min(6, round(1.25 * w / p)))).astype(int)
        # patch centres in full-frame pixels: shrunk centre q is full-frame k q + (k - 1) / 2
        self.centres = np.array([(k * (x + p / 2 - 0.5) + (k - 1) / 2, k * (y + p / 2 - 0.5) + (k - 1) / 2)
                                 for y in ys for x in xs])
        patches = torch.stack([y[r : r + p, c : c + p] for r in ys for c in xs])  # [n, p, p]
        patches -= patches.mean(dim=(1, 2), keepdim=True)
        self.textured = (patches.square().mean(dim=(1, 2)) > 4).numpy()  # standard deviation over 2 levels
        self.spectra = torch.fft.rfft2(patches.mul_(_window(p)))


def estimate(prev: Patches, cur: Patches) -> np.ndarray | None:
    """The zoom-and-shift M (2x3, full-frame pixels) with ``cur(M p) ~ prev(p)``, from phase
    correlation of patches; None where the patches do not agree on one such motion (a cut, a
    picture without texture, or motion that no camera move describes)."""
    if prev.tiny or cur.tiny:
        return None
    p, n = prev.p, len(prev.centres)
    cross = (cur.spectra * prev.spectra.conj()).sgn()  # unit magnitude (x / |x| took 4x the time)
    r = torch.fft.irfft2(cross, s=(p, p)).numpy()  # [n, p, p], peak at the shift
    iy, ix = np.divmod(r.reshape(n, -1).argmax(axis=1), p)
    i = np.arange(n)

    def vertex(minus: np.ndarray, mid: np.ndarray, plus: np.ndarray) -> np.ndarray:  # parabola's peak
        den = minus - 2 * mid + plus
        return np.where(den < 0, 0.5 * (minus - plus) / np.where(den < 0, den, -1), 0.0)

    c0 = r[i, iy, ix]
    dy = iy + vertex(r[i, (iy - 1) % p, ix], c0, r[i, (iy + 1) % p, ix])
    dx = ix + vertex(r[i, iy, (ix - 1) % p], c0, r[i, iy, (ix + 1) % p])
    shifts = prev.k * np.stack([np.where(dx > p / 2, dx - p, dx), np.where(dy > p / 2, dy - p, dy)], axis=1)
    ok = prev.textured & cur.textured & (c0 > 0.08)
    keep = ok
    for _ in range(3):  # least squares, then again on the patches that agree with it
        if keep.sum() < max(3, ok.sum() // 2, n // 3):
            return None
        m = _fit(prev.centres[keep], shifts[keep])
        err = np.linalg.norm(prev.centres @ m[:, :2].T + m[:, 2] - prev.centres - shifts, axis=1)
        keep = ok & (err < max(0.75 * prev.k, 2.5 * float(np.median(err[ok]))))
    # the peaks' sub-pixel parts are biased (see _refine), so agreement is judged loosely here
    if keep.sum() < max(3, ok.sum() // 2, n // 3) or float(np.median(err[keep])) > 0.5 * prev.k:
        return None
    return _refine(prev, cur, m)


def _refine(prev: Patches, cur: Patches, m: np.ndarray, steps: int = 3) -> np.ndarray:
    """Gauss-Newton steps on zoom and shift, minimising sum (cur(M p) - prev(p))^2 over about
    ``LK_SAMPLES`` luma pixels (robustly weighted, so moving objects count less). Phase
    correlation's peak interpolation is biased towards whole pixels (a 0.37 px shift reads as
    about 0.2); this brings the estimate to hundredths of a pixel, which a canvas meant to
    stand still needs. Fitted on every second luma pixel of a half-size luma, the first version
    left a 480x320 pan at 1.5x (quality 8) with 70 % more bits; this sampling saved 6-11 % of the
    bits on the LadyBird pan (qualities 5, 8). Inverse compositional (Baker and Matthews): the
    Jacobian is prev's gradient at the samples, made once, so a step reads cur alone at the
    samples (the forward form read cur's gradient too, made over the whole luma each frame:
    twice the time)."""
    k = prev.k
    a, b = prev.luma, cur.luma
    h, w = a.shape
    n = max(1, round(math.sqrt(h * w / LK_SAMPLES)))  # every n-th row and column of prev
    ys = torch.arange(1, h - 1, n, dtype=torch.float32).view(-1, 1) * k + (k - 1) / 2  # full-frame pixel centres
    xs = torch.arange(1, w - 1, n, dtype=torch.float32).view(1, -1) * k + (k - 1) / 2  # (away from the edges)
    target = a[1 : h - 1 : n, 1 : w - 1 : n]
    gx = (a[1 : h - 1 : n, 2::n] - a[1 : h - 1 : n, : w - 2 : n]) / (2 * k)  # prev's gradient per full-frame pixel
    gy = (a[2::n, 1 : w - 1 : n] - a[: h - 2 : n, 1 : w - 1 : n]) / (2 * k)
    jac = torch.stack([gx * xs + gy * ys, gx, gy]).flatten(1)  # d prev(W(p; dz, dt)) / d(dz, dtx, dty), [3, samples]
    s, tx, ty = m[0, 0], m[0, 2], m[1, 2]
    for _ in range(steps):
        qx, qy = (s * xs + tx - (k - 1) / 2) / k, (s * ys + ty - (k - 1) / 2) / k  # samples in cur's luma pixels
        grid = torch.stack(torch.broadcast_tensors((2 * qx + 1) / w - 1, (2 * qy + 1) / h - 1), -1)
        warped = F.grid_sample(b[None, None], grid[None], mode="bilinear", align_corners=False)[0, 0]
        inside = (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)  # samples outside weigh nothing
        e = (warped - target).flatten()
        jw = jac * (inside.flatten() / torch.clamp(e.abs() / 8, min=1))  # Huber-like weights
        hess, rhs = (jw @ jac.T).double().numpy(), (jw @ e).double().numpy()
        try:
            dz, dtx, dty = np.linalg.solve(hess, rhs)  # prev warped by W(dz, dt) best matches cur(M p)
        except np.linalg.LinAlgError:  # a flat picture: keep the coarse estimate
            break
        # M <- M o W^-1: p -> M((p - dt) / (1 + dz))
        s, tx, ty = s / (1 + dz), tx - s * dtx / (1 + dz), ty - s * dty / (1 + dz)
        if abs(dtx) + abs(dty) < 0.005:
            break
    return np.array([[s, 0, tx], [0, s, ty]])


def _fit(p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Least-squares zoom and shift [[s, 0, tx], [0, s, ty]] moving points p by d."""
    x, y = p[:, 0], p[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows = np.concatenate([np.stack([x, one, zero], 1), np.stack([y, zero, one], 1)])
    z, tx, ty = np.linalg.lstsq(rows, np.concatenate([d[:, 0], d[:, 1]]), rcond=None)[0]
    return np.array([[1 + z, 0, tx], [0, 1 + z, ty]])


_STILL = np.eye(2, 3)  # no motion


def _then(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The 2x3 transform p -> second(first(p))."""
    return np.hstack([second[:, :2] @ first[:, :2], second[:, :2] @ first[:, 2:] + second[:, 2:]])


def _inverse(m: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(m[:, :2])
    return np.hstack([inv, -inv @ m[:, 2:]])


def _corners(width: int, height: int) -> np.ndarray:
    """The centres of a picture's corner pixels, [4, 2]."""
    return np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], dtype=np.float64)


def _bbox(views: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """[x0, y0, x1, y1] of the pixel centres of every frame's view under views (view -> ref)."""
    corners = _corners(width, height)
    pts = np.concatenate([corners @ v[:, :2].T + v[:, 2] for v in views])
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def _speed(steps: list[np.ndarray | None], width: int, height: int) -> float:
    """How far a corner of the picture moves per frame step, on average over the known steps."""
    corners = _corners(width, height)
    known = [np.abs(corners @ (s[:, :2] - np.eye(2)).T + s[:, 2]).max() for s in steps if s is not None]
    return float(np.mean(known)) if known else 0.0


def _zoom_fits(views: list[np.ndarray]) -> bool:
    """Whether every view's scale stays within ``MAX_ZOOM`` (in) and ``MAX_ZOOM_OUT`` of the reference's."""
    return all(1 - MAX_ZOOM <= v[0, 0] <= 1 + MAX_ZOOM_OUT for v in views)


def to_params(m: np.ndarray) -> np.ndarray:
    """int64 [zoom, tx, ty] of a view -> canvas transform ``[[s, 0, tx], [0, s, ty]]``, as stored."""
    return np.array([round((m[0, 0] - 1) * FRAC_ZOOM), round(m[0, 2] * FRAC_SHIFT), round(m[1, 2] * FRAC_SHIFT)],
                    dtype=np.int64)


def _lines(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale s, tx, ty (float64 [n] each) of stored params [n, 3]."""
    p = params.astype(np.float64)
    return 1 + p[:, 0] / FRAC_ZOOM, p[:, 1] / FRAC_SHIFT, p[:, 2] / FRAC_SHIFT


def pack(params: np.ndarray) -> str:
    """Chunk-meta text of per-frame params [n, 3]: int32 differences from the previous frame
    (the first from zero), little-endian, zstd, base64."""
    diff = np.diff(params.astype(np.int64), axis=0, prepend=np.zeros((1, 3), np.int64))
    return base64.b64encode(zstandard.ZstdCompressor(level=19).compress(diff.astype("<i4").tobytes())).decode()


def unpack(text: object, most: int) -> np.ndarray:
    """The params [n, 3] of ``pack``'s text, 1 <= n <= ``most``; FormatError if it is not that."""
    if not isinstance(text, str):
        raise FormatError("camera motion is missing")
    try:
        data = base64.b64decode(text, validate=True)
        size = zstandard.frame_content_size(data)  # checked before anything is allocated for it
        if not 0 <= size <= 12 * most:
            raise ValueError(f"it declares {size} bytes")
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=12 * most)
    except (ValueError, zstandard.ZstdError) as e:
        raise FormatError(f"camera motion is not valid ({e})") from None
    if not 12 <= len(raw) <= 12 * most or len(raw) % 12:
        raise FormatError(f"camera motion holds {len(raw) / 12:g} frames, the chunk covers {most}")
    params = np.cumsum(np.frombuffer(raw, "<i4").astype(np.int64).reshape(-1, 3), axis=0)
    if (np.abs(params[:, 0]) > FRAC_ZOOM // 2).any() or (np.abs(params) >= 2**31).any():
        raise FormatError("camera motion is out of range")
    return params


def _cubic(d: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel at distances d (``a`` broadcast against d)."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _taps(pos: torch.Tensor, size: int, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and weights [taps, n, L] that read n lines of ``size`` pixels at positions
    ``pos`` [n, L] (pixel centres at integers, edges repeated), line i's outputs ``step[i]``
    input pixels apart: PyTorch's bicubic kernel (a = -0.75, 4 taps) where that is at most 1,
    else its antialiased one (a = -0.5, widened by the step), as ``resample.resize`` shrinks
    a picture. Lines that need fewer taps than the widest get zero weights at the far ends."""
    widen = step.clamp(min=1.0)[:, None]  # [n, 1]
    half = math.ceil(2 * float(widen.max()))
    base = pos.floor().long()
    offsets = torch.arange(1 - half, half + 1)[:, None, None]
    w = _cubic((base[None] + offsets - pos[None]) / widen, torch.where(widen == 1, -0.75, -0.5))
    w = torch.where(widen > 1, w / w.sum(dim=0, keepdim=True), w)
    return (base[None] + offsets).clamp_(0, size - 1), w


PIECE_FLOATS = 1 << 18  # on the CPU the second pass makes its lines in bands of about this
#                         many values, so that its temporaries stay in cache


def _pass(src: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Rows of ``src`` [R, K] mixed by taps: [m, K] = sum_k weight[k] * src[index[k]]
    (``index``, ``weight``: [taps, m]); selecting whole rows is the fast way on every device."""
    out = src.index_select(0, index[0]).mul_(weight[0, :, None])
    for i, w in zip(index[1:], weight[1:]):
        out.addcmul_(src.index_select(0, i), w[:, None])
    return out


def _resample(src: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor],
              second: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor, at_once: bool | None = None) -> None:
    """Separable resampling (zoom and shift are separable): writes into ``out`` [n, b, a, C]
    the frames ``src`` [n, A, B, C] (float) read along A with the taps ``first`` (indices and
    weights [taps, n, a], from ``_taps``), then along B with ``second`` ([taps, n, b]); rounded
    and clamped to 0..255 if ``out`` holds integers. ``at_once`` (default: on a GPU) takes all
    frames in one pass, the kernels' launches being what costs there; else frame by frame,
    each pass in bands of lines that stay in cache (a 2x canvas frame at once took 33 ms on 2
    CPU cores, with the second pass in bands 6; the first in bands too took a quarter off a
    480p frame's warp and cut-out)."""
    n, A, B, C = src.shape
    (i1, w1), (i2, w2) = first, second
    a, b = i1.shape[2], i2.shape[2]
    i1, i2 = i1.to(src.device), i2.to(src.device)  # taps are made in float64 on the CPU
    w1, w2 = w1.to(src.device, src.dtype), w2.to(src.device, src.dtype)  # (MPS has no float64)
    cpu = not at_once if at_once is not None else src.device.type == "cpu"
    for f0, f1 in [(f, f + 1) for f in range(n)] if cpu else [(0, n)]:
        nf = f1 - f0
        frame = torch.arange(nf, device=src.device)[:, None]
        rows = src[f0:f1].reshape(nf * A, B * C)
        if cpu:  # each band written straight into its place among the other side's lines
            t = src.new_empty(B, a, C)
            band = max(1, PIECE_FLOATS // max(1, B * C))
            for a0 in range(0, a, band):
                a1 = min(a, a0 + band)
                t[:, a0:a1] = _pass(rows, i1[:, f0, a0:a1], w1[:, f0, a0:a1]).view(a1 - a0, B, C).transpose(0, 1)
            t = t.view(B, a * C)
        else:
            t = _pass(rows, (i1[:, f0:f1] + frame * A).flatten(1), w1[:, f0:f1].flatten(1))
            t = t.view(nf, a, B, C).transpose(1, 2).reshape(nf * B, a * C)  # the other side's lines become rows
        band = max(1, PIECE_FLOATS // max(1, a * C)) if cpu else b
        for b0 in range(0, b, band):
            b1 = min(b, b0 + band)
            o = _pass(t, (i2[:, f0:f1, b0:b1] + frame * B).flatten(1), w2[:, f0:f1, b0:b1].flatten(1))
            o = o.view(nf, b1 - b0, a, C)
            if not out.dtype.is_floating_point:
                o = o.round_().clamp_(0, 255)
            out[f0:f1, b0:b1].copy_(o)


def unwarp(x: torch.Tensor, params: np.ndarray, width: int, height: int,
           coded: tuple[int, int] | None = None) -> torch.Tensor:
    """Decoded canvas frames [3, n, H, W] -> the views [3, n, height, width] that ``params``
    [n, 3] cut out of them. ``coded``: the (width, height) the views were coded at, when the
    output is to be another size (a resampled file): the resize then happens in the same pass,
    antialiased where it shrinks, instead of in a second one."""
    cw, ch = coded or (width, height)
    fx, fy = cw / width, ch / height  # coded pixels per output pixel
    _, n, H, W = x.shape
    shift, rest = np.divmod(params[:, 1:], FRAC_SHIFT)
    if (fx, fy) == (1, 1) and not params[:, 0].any() and not rest.any() \
            and (shift >= 0).all() and (shift[:, 0] <= W - width).all() and (shift[:, 1] <= H - height).all():
        # whole-pixel views of a camera left alone: what resampling gives, cut out
        return torch.stack([x[:, i, dy : dy + height, dx : dx + width] for i, (dx, dy) in enumerate(shift)], 1).float()
    scale, tx, ty = (torch.from_numpy(a)[:, None] for a in _lines(params))
    planes = x.float().reshape(3 * n, H, W, 1)  # float32: bf16/fp16 kernel weights would be off by up to a level
    out = planes.new_empty(3, n, width, height)  # columns of each colour plane, as the passes end
    # output pixel u is coded pixel (u + 1/2) f - 1/2, which is canvas pixel s (that) + t
    ys = scale * fy * torch.arange(height, dtype=torch.float64) + ty + scale * (fy - 1) / 2
    xs = scale * fx * torch.arange(width, dtype=torch.float64) + tx + scale * (fx - 1) / 2
    rows, cols = _taps(ys, H, scale[:, 0] * fy), _taps(xs, W, scale[:, 0] * fx)
    _resample(planes, tuple(t.repeat(1, 3, 1) for t in rows), tuple(t.repeat(1, 3, 1) for t in cols),
              out.view(3 * n, width, height, 1))  # each colour plane as a frame
    return out.transpose(2, 3)


def _to_coded(m: np.ndarray | None, fx: float, fy: float) -> np.ndarray | None:
    """A zoom and shift between source frames as the same motion of a picture coded ``fx`` x
    ``fy`` times their size (pixel centres: coded c = (p + 1/2) f - 1/2)."""
    if m is None or (fx, fy) == (1, 1):
        return m
    z = m[0, 0]
    return np.array([[z, 0, fx * m[0, 2] + (1 - z) * (fx - 1) / 2], [0, z, fy * m[1, 2] + (1 - z) * (fy - 1) / 2]])


def estimate_path(frames: np.ndarray, coded: tuple[int, int] | None = None) -> list[np.ndarray | None]:
    """``estimate`` between each pair of consecutive frames [n, h, w, 3] (n - 1 entries), as
    motion of the picture resized to ``coded`` (width, height) if given."""
    fx, fy = (coded[0] / frames.shape[2], coded[1] / frames.shape[1]) if coded else (1, 1)
    patches = [Patches(f) for f in frames]
    return [_to_coded(estimate(a, b), fx, fy) for a, b in zip(patches, patches[1:])]


def plan_canvas(frames: np.ndarray, most: int | None, path: list[np.ndarray | None] | None = None,
                coded: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Canvas size (multiples of 8; sides at most ``most``, if given, where the picture's are) for a video
    whose first frames are ``frames`` [n, h, w, 3], coded at ``coded`` (width, height; default
    their own size; ``path``: their ``estimate_path`` if known), or None when their motion
    cannot be followed. A zoom past ``MAX_ZOOM`` among them gets one too: each new reference
    it starts is predicted through the zoom (coded as they are instead, 1-2 s zooms of 2x cost
    1.2-3.4x the bytes and 0.3-1.6 dB: docs/MODEL.md, "Fast zooms get a canvas"). A camera
    still or slow in them gets a canvas with the least margin, which ``Steadier`` fills with
    the frames as they are until the camera moves, so that a pan starting later is steadied too."""
    n = len(frames)
    w, h = coded or (frames.shape[2], frames.shape[1])
    if n < 2 or min(h, w) < MIN_SIDE:
        return None
    path = estimate_path(frames, coded) if path is None else path
    known = [step for step in path if step is not None]
    if len(known) < 0.75 * len(path):
        return None  # the motion cannot be followed: a canvas would cost margin for nothing
    views, m = [_STILL], _STILL
    for step in path:
        m = m if step is None else _then(step, m)  # ref -> the next frame (unknown: as still)
        views.append(_inverse(m))
    box = _bbox(views, w, h)
    grow_w, grow_h = box[2] - box[0] + 1 - w, box[3] - box[1] + 1 - h
    sides = []
    for side, grow in ((w, grow_w), (h, grow_h)):
        want = -(-math.ceil(side + min(MAX_MARGIN * side, 1.25 * grow + 8)) // 8) * 8
        sides.append(want if most is None or side > most else max(-(-side // 8) * 8, min(want, most // 8 * 8)))
    return sides[0], sides[1]


# a segment of canvas frames: (frames uint8 [m, H, W, 3], params int64 [m, 3], moved, shift, zoom)
Segment = tuple[np.ndarray, np.ndarray, bool, tuple[int, int] | None, np.ndarray | None]


class Steadier:
    """Turns the picture's frames into canvas frames, segment by segment (encoder side).

    ``push`` takes uint8 frames [n, h, w, 3] in order (at ``source`` (width, height), resized
    to the coded ``width`` x ``height`` in the same pass as the warp) and yields finished segments as
    (canvas frames uint8 [m, H, W, 3], params int64 [m, 3], moved, shift, zoom): ``moved`` tells
    whether the canvas's content moved before the segment's first frame (the window moved, or a
    new reference followed another), ``shift`` by how many whole pixels (dx, dy) when the window
    moved (the content of canvas pixel p went to p + shift), else None, and ``zoom`` where a new
    reference followed another: the 2x3 transform from its canvas pixels to where the same
    point of the scene was in the canvas before (a zoom and a shift), else None; ``finish``
    yields the last one.

    Views map each frame into the coordinates of a *reference*: the first frame, or the
    first after the zoom strayed past ``MAX_ZOOM`` (in) or ``MAX_ZOOM_OUT`` from it. A segment
    is a window of those coordinates at a fixed place in the canvas; when the view would leave the
    canvas, the next segment moves the window by whole latent cells (``CELL`` pixels), so the
    canvas content moves by whole cells, which the coder's block motion predicts almost
    exactly, and what the canvas showed before is carried along. Only a new reference costs
    what a cut costs (a frame pair whose motion is unknown, a cut for instance, counts as
    still). Memory: one segment of frames (at most ``MAX_SEGMENT``, fewer for big
    frames) and one canvas frame.
    """

    def __init__(self, width: int, height: int, canvas: tuple[int, int], temporal: int, device: torch.device,
                 path: list[np.ndarray | None] | None = None, source: tuple[int, int] | None = None) -> None:
        self.width, self.height = width, height
        self.source = source or (width, height)
        self.fx, self.fy = width / self.source[0], height / self.source[1]  # coded pixels per source pixel
        self.canvas_w, self.canvas_h = canvas
        self.temporal, self.device = temporal, device
        self.max_frames = max(1 + temporal, min(MAX_SEGMENT, SEGMENT_BUFFER_BYTES // (3 * self.source[0] * self.source[1])))
        self.frames: list[np.ndarray] = []  # the open segment's frames
        self.views: list[np.ndarray] = []  # their frame -> reference transforms
        self.group: list[np.ndarray] = []  # frames of the latent frame being gathered
        self.seen = 0  # frames pushed
        self.prev: np.ndarray | None = None  # the frame before it
        self.last: Patches | None = None  # and its patches, when made
        self.known = list(path or [])  # estimates already made between the first frames
        self.fresh = True  # the open segment starts a new reference
        self.offset: np.ndarray | None = None  # where the last segment put the reference
        self.canvas: torch.Tensor | None = None  # the last segment's last canvas frame [H, W, 3]
        # a camera slow at first (under MIN_SPEED) is left alone until it moves: steadying a slow
        # drift cost more bits than it saved (docs/MODEL.md, "Varied motion")
        self.steady = not path or _speed(path, width, height) >= MIN_SPEED
        self.alone = 0  # frames taken while the camera was left alone (they come first)
        self.jumped = False  # whether the open segment's reference follows another one
        self.jump: np.ndarray | None = None  # then: its first frame -> the canvas before, 2x3
        self.closed = 0  # frames of the segments closed so far

    def push(self, frames: np.ndarray) -> Iterator[Segment]:
        for frame in frames:
            self.group.append(frame)
            self.seen += 1
            if self.seen == 1 or (self.seen - 1) % self.temporal == 0:  # a latent frame is complete
                yield from self._add_group()

    def finish(self) -> Iterator[Segment]:
        if self.group:
            yield from self._add_group()
        if self.frames:
            yield self._close()

    def _steps(self, group: list[np.ndarray]) -> list[np.ndarray | None]:
        """The motion into each frame of the group from the frame before it (None: unknown)."""
        steps = []
        for i, frame in enumerate(group, start=self.seen - len(group)):  # i: the frame's number
            if 0 < i <= len(self.known):  # made by plan_canvas already
                steps.append(self.known[i - 1])
                self.last = None
            elif i > 0:
                cur = Patches(frame)
                steps.append(_to_coded(estimate(self.last or Patches(self.prev), cur), self.fx, self.fy))
                self.last = cur
            else:
                steps.append(None)
            self.prev = frame
        return steps

    def _jump(self, group: list[np.ndarray]) -> tuple[np.ndarray | None, Patches | None]:
        """The motion from the frame before the group to its last frame, and that frame's
        patches if made: one estimate for the whole group (or the path's steps composed), so
        that a camera left alone costs a quarter of the estimation."""
        first = self.seen - len(group)
        if first + len(group) - 1 <= len(self.known):
            m = _STILL
            for s in self.known[first - 1 : first - 1 + len(group)]:
                m = m if s is None else _then(s, m)
            return m, None
        last = Patches(group[-1])
        return _to_coded(estimate(self.last or Patches(self.prev), last), self.fx, self.fy), last

    def _add_group(self) -> Iterator[Segment]:
        group, self.group = self.group, []
        last = None
        if not self.steady and self.seen > len(group):  # has the camera left alone started to move?
            jump, last = self._jump(group)
            self.steady = jump is not None and _speed([jump], self.width, self.height) >= MIN_SPEED * len(group)
        if self.steady:
            steps = self._steps(group)
        else:  # as the frames are: still, at whole pixels where the first one stood
            steps = [None] * len(group)
            self.prev, self.last = group[-1], last
            self.alone += len(group)
        # where the motion cannot be estimated (a cut, a fade, a flash) the frame is taken as
        # still: a new reference would cost what an intra frame costs, and a false alarm that
        # (LadyBird-like training clips with a fade: 1.45x the bytes), a wrong guess a one-off jump
        steps = [_STILL if s is None and i + len(self.frames) > 0 else s for i, s in enumerate(steps)]
        if self.frames:
            m, views = _inverse(self.views[-1]), []  # reference -> the last frame
            for s in steps:
                m = _then(s, m)
                views.append(_inverse(m))
            if _zoom_fits(views):
                if self._fits(self.views + views, slack=0 if self.fresh else CELL) \
                        and len(self.frames) + len(group) <= self.max_frames:
                    self.frames += group
                    self.views += views
                    return
                if self._fits(views, slack=CELL):  # the same reference, the window moved
                    yield self._close()
                    self.frames, self.views, self.fresh = list(group), views, False
                    return
        # where the group's first frame lies in the reference before (its steps after the last frame's)
        first = _inverse(_then(steps[0], _inverse(self.views[-1]))) if self.frames else None
        if self.frames:
            yield self._close()
        self.jump = None if first is None else np.hstack([first[:, :2], first[:, 2:] + self.offset[:, None]])
        self.offset = self.canvas = None  # a new reference: its first frame
        views, m = [_STILL], _STILL
        for s in steps[1:]:
            m = _then(s, m)
            views.append(_inverse(m))
        # a reference after another (the zoom strayed too far) moves the canvas's content, which
        # the causal decoder's memory of it spoils in its first frame (4 dB on a zoom), as a
        # window move does: listed with those
        self.jumped = self.closed > 0
        if not self._fits(views, slack=0):  # faster than the canvas holds: this latent frame as it is
            views, self.jumped, self.jump = [_STILL] * len(group), False, None
        self.frames, self.views, self.fresh = list(group), views, True

    def _fits(self, views: list[np.ndarray], slack: int) -> bool:
        """Whether the views fit in the canvas with ``slack`` pixels to spare on each axis."""
        box = _bbox(views, self.width, self.height)
        return box[2] - box[0] + 1 + slack <= self.canvas_w and box[3] - box[1] + 1 + slack <= self.canvas_h

    def _close(self) -> Segment:
        """Warp the open segment into the canvas, centred if it starts a reference, else
        moved from the last segment's place by the fewest whole cells; returns its frames and
        params."""
        box = _bbox(self.views, self.width, self.height)
        centred = np.array([(self.canvas_w - 1 - box[2] - box[0]) / 2, (self.canvas_h - 1 - box[3] - box[1]) / 2])
        if self.fresh:
            off = np.round(centred)  # whole pixels, so a still segment is copied exactly
            shift = None
        else:
            # the least move by whole cells that holds every view: moving further ahead, so that
            # the next move comes later, cost 15-60 % more bits on 2 s pans (moves of 2 or 4 cells)
            lo = np.ceil((np.array([-box[0], -box[1]]) - self.offset) / CELL)
            hi = np.floor((np.array([self.canvas_w - 1 - box[2], self.canvas_h - 1 - box[3]]) - self.offset) / CELL)
            cells = np.clip(0, lo, hi)
            off = self.offset + CELL * cells
            shift = (CELL * cells).astype(int)
        self.offset = off
        params = np.stack([to_params(np.hstack([v[:, :2], v[:, 2:] + off[:, None]])) for v in self.views])
        frames, self.frames, self.views = self.frames, [], []
        alone, self.closed = max(0, self.alone - self.closed), self.closed + len(frames)
        # a reference after another: new canvas pixel Q is its first frame's pixel Q - off
        zoom = None if not self.jumped or self.jump is None else np.hstack(
            [self.jump[:, :2], self.jump[:, 2:] - self.jump[:, :2] @ off[:, None]])
        moved, self.jumped, self.jump = self.jumped or (shift is not None and bool(shift.any())), False, None
        pictures = self._warp(np.stack(frames), params, shift, alone)
        return pictures, params, moved, (int(shift[0]), int(shift[1])) if moved and shift is not None else None, zoom

    def _warp(self, frames: np.ndarray, params: np.ndarray, shift: np.ndarray | None, alone: int) -> np.ndarray:
        """Canvas frames of a segment: each frame where it reaches, else what the canvas held
        there before (the last segment's canvas moved by ``shift``, if the reference goes on),
        or, where nothing was yet, what the segment will show there first. The first ``alone``
        frames (a camera left alone) fill the whole canvas, their edges repeated: the canvas
        beyond them shows no part of the scene, and holding their first frame's edges there
        cost a fade-in from black 11 % more bytes and 0.9 dB (a black frame around the picture)."""
        n, H, W = len(frames), self.canvas_h, self.canvas_w
        out = torch.empty(n, H, W, 3, dtype=torch.uint8, device=self.device)
        held = None if shift is None else _moved(self.canvas, int(shift[0]), int(shift[1]), (0, H), (0, W))
        seen = []  # where the segment's frames up to each have reached, when nothing was held
        fx, fy = self.fx, self.fy
        for i, (frame, scale, tx, ty) in enumerate(zip(frames, *_lines(params))):
            # canvas pixel Q shows coded pixel c = (Q - t) / s, which is source pixel (c + 1/2) / f - 1/2;
            # the frame reaches the canvas pixels whose c lies within the coded picture
            y0, y1 = reach_y = _reach(H, ty, scale, self.height)
            x0, x1 = reach_x = _reach(W, tx, scale, self.width)
            before = out[i - 1] if i else held
            if before is None or i < alone:  # the whole canvas, the edges repeated beyond the frame
                y0, y1, x0, x1 = 0, H, 0, W
            else:
                out[i].copy_(before)  # hold what was seen
            src = torch.from_numpy(frame).to(self.device)
            if scale == 1 and tx == round(tx) and ty == round(ty) and (fx, fy) == (1, 1):  # a whole-pixel move
                out[i, y0:y1, x0:x1] = _moved(src, round(tx), round(ty), (y0, y1), (x0, x1))
            else:
                src = src.transpose(0, 1).contiguous().float()[None]  # [1, w, h, 3] (transposed as bytes: 1.5x faster)
                sx, sy = 1 / (scale * fx), 1 / (scale * fy)
                xs = sx * torch.arange(x0, x1, dtype=torch.float64) + (0.5 - tx / scale) / fx - 0.5
                ys = sy * torch.arange(y0, y1, dtype=torch.float64) + (0.5 - ty / scale) / fy - 0.5
                apart = torch.tensor([[sx], [sy]], dtype=torch.float64)  # source pixels between outputs
                _resample(src, _taps(xs[None], src.shape[1], apart[0]), _taps(ys[None], src.shape[2], apart[1]),
                          out[i, y0:y1, x0:x1][None])
            if held is None:
                seen.append(seen[-1].clone() if seen else torch.zeros(H, W, 1, dtype=torch.bool, device=self.device))
                seen[-1][(slice(None), slice(None)) if i < alone else (slice(*reach_y), slice(*reach_x))] = True
        if held is None:
            for i in range(n - 2, -1, -1):  # and show, before, what will be seen
                # (by index: the pixels not reached yet are a strip, a tenth of the canvas on a pan;
                # a whole-frame ``where`` was a tenth of the camera stage on a 2 s 480p pan)
                ahead = (~seen[i]).view(-1).nonzero().squeeze(1)
                out[i].view(-1, 3)[ahead] = out[i + 1].view(-1, 3)[ahead]
        self.canvas = out[-1]
        return out.cpu().numpy()


def _reach(size: int, t: float, scale: float, picture: int) -> tuple[int, int]:
    """The canvas pixels [start, stop) along a side of ``size`` that show coded pixels
    (Q - t) / scale within a picture side of ``picture`` pixels (centres -1/2 .. picture - 1/2)."""
    c = (np.arange(size, dtype=np.float64) - t) / scale
    inside = np.flatnonzero((c >= -0.5) & (c <= picture - 0.5))
    return (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)


def _moved(x: torch.Tensor, dx: int, dy: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Rows [rows) and columns [cols) of [H, W, C] ``x`` moved by whole pixels (content at p
    goes to p + (dx, dy)), its edges repeated beyond it."""
    h, w = x.shape[:2]
    iy = (torch.arange(*rows, device=x.device) - dy).clamp_(0, h - 1)
    ix = (torch.arange(*cols, device=x.device) - dx).clamp_(0, w - 1)
    return x.index_select(0, iy).index_select(1, ix)

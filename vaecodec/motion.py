"""Motion-compensated prediction of latent frames (the inter reference of chunk version 4).

A camera pan moves the picture by a fraction of a latent cell from one latent frame to the
next, so the residual to the previous frame *at the same place* is busy although the frame
is little more than the previous one, shifted. Each block of a latent frame (all channels
together) therefore carries a motion vector ``(dy, dx)`` in eighths of a cell, and its
prediction is the previous frame's symbols moved by that vector: bilinear interpolation with
integer weights and one rounding (edges repeat), so encoder and decoder compute it bit for
bit on any machine.

The encoder picks the vectors (``search``): the sum of absolute differences between its
float latents and the prediction, over a block's cells and channels, at whole-cell shifts up
to ``SEARCH`` cells each way, then refined by half, quarter and eighth cells around each
block's best. It then holds symbols against the prediction (``quantize``): the temporal deadzone of
``quant.hold_symbols`` along the motion, and whole blocks of a channel whose residual the coder
prices above what its error is worth (``_hold_cheap_blocks``), which the coder then sends as
blocks with no symbols.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

PRECISION = 8  # vector units per latent cell (eighths)
SEARCH = 3  # whole cells searched each way (24 pixels per latent frame at 8x)
MV_MAX = 63  # largest |component| a chunk may hold, in eighths of a cell
_PAD = MV_MAX // PRECISION + 2  # edge padding that every legal vector's window stays inside
_SPAN = 2 * MV_MAX + 1  # values a legal vector component takes
# whole-cell shifts in search order, nearest first: a search keeps the first of equal scores
WHOLE_CELLS = sorted(((a, b) for a in range(-SEARCH, SEARCH + 1) for b in range(-SEARCH, SEARCH + 1)),
                     key=lambda v: (abs(v[0]) + abs(v[1]), v))
REFINE = (4, 2, 1)  # half, quarter, then eighth cells around the best so far
# Squared latent error (steps^2, summed over a block) the encoder accepts per bit it saves by
# holding a whole block at its prediction. 0.05 on the two 480p held-out pans (docs/MODEL.md):
# BD-rate -7.7 % (smooth) and -0.4 % (busy); 0.1 gave -16 % but +0.8 % on the busy one.
ZERO_LAMBDA = 0.05
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _padded(ref: np.ndarray) -> np.ndarray:
    """[C, h, w] -> [C, h + 2P, w + 2P] with repeated edges: out-of-frame cells read the border.
    (Five slice copies: ``np.pad(mode="edge")`` costs several times more on these small planes.)"""
    c, h, w = ref.shape
    out = np.empty((c, h + 2 * _PAD, w + 2 * _PAD), np.int64)
    out[:, _PAD:_PAD + h, _PAD:_PAD + w] = ref
    out[:, :_PAD, _PAD:_PAD + w] = ref[:, :1]
    out[:, _PAD + h:, _PAD:_PAD + w] = ref[:, -1:]
    out[:, :, :_PAD] = out[:, :, _PAD:_PAD + 1]
    out[:, :, _PAD + w:] = out[:, :, _PAD + w - 1:_PAD + w]
    return out


def _round_mix(total, weight: int):
    """Integer blend: the weighted sum of neighbours divided by the weights' sum, rounded."""
    return (total + weight // 2) // weight


def _float_mix(total, weight: int):
    """The same blend without rounding, differentiable (refinement's rate term)."""
    return total / weight


def _window(pad, y0: int, y1: int, x0: int, x1: int, dy: int, dx: int, mix: Callable = _round_mix):
    """Prediction of cells [y0:y1, x0:x1] moved by (dy, dx) eighths of a cell, from symbols
    padded by ``_PAD`` repeated edges (numpy or torch, [C, h + 2P, w + 2P]): bilinear between
    the four neighbouring cells, with integer weights in 64ths and one rounding."""
    (iy, fy), (ix, fx) = divmod(dy, PRECISION), divmod(dx, PRECISION)  # whole cells (floor), eighths
    win = pad[:, y0 + _PAD + iy:y1 + _PAD + iy + 1, x0 + _PAD + ix:x1 + _PAD + ix + 1]
    if not (fy or fx):
        return win[:, :-1, :-1]
    gy, gx = PRECISION - fy, PRECISION - fx
    total = (win[:, :-1, :-1] * (gy * gx) + win[:, :-1, 1:] * (gy * fx)
             + win[:, 1:, :-1] * (fy * gx) + win[:, 1:, 1:] * (fy * fx))
    return mix(total, PRECISION * PRECISION)


ZOOM_BITS = 16  # a zoom's map from new to old latent cells, in 2^-16 cells (chunk meta "camera_zoom")
Zooms = dict[int, tuple[int, int, int]]  # a chunk's latent frame j -> the zoom (a, bx, by) before it
_ZOOM_FRAC = 6  # the bilinear weights of ``resample``, in 64ths of a cell


def resample(prev: np.ndarray, zoom: tuple[int, int, int]) -> np.ndarray:
    """The previous frame's symbols [C, h, w] carried through a zoom of the canvas (a new
    reference that follows another): new cell (y, x) reads old cell ``((a x + bx) / 2^16,
    (a y + by) / 2^16)`` for ``zoom = (a, bx, by)``, bilinear with integer weights in 64ths and
    one rounding, edges repeated, so encoder and decoder compute it bit for bit (int64)."""
    return _resampled(prev.astype(np.int64, copy=False), zoom, _round_mix)


def resample_float(u: torch.Tensor, zoom: tuple[int, int, int]) -> torch.Tensor:
    """Float latents ``u`` [C, h, w] carried through a zoom like ``resample`` carries symbols,
    without rounding and differentiable: refinement's rate term after a zoom."""
    return _resampled(u, zoom, _float_mix)


def _resampled(src, zoom: tuple[int, int, int], mix: Callable):
    """``resample``'s bilinear blend of ``src`` (int64 numpy or float torch, [C, h, w])."""
    a, bx, by = (int(v) for v in zoom)
    _, h, w = src.shape

    def taps(n: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = a * np.arange(n, dtype=np.int64) + b  # in 2^-16 cells
        whole = pos >> ZOOM_BITS
        frac = (pos >> (ZOOM_BITS - _ZOOM_FRAC)) & ((1 << _ZOOM_FRAC) - 1)
        return np.clip(whole, 0, n - 1), np.clip(whole + 1, 0, n - 1), frac

    y0, y1, fy = taps(h, by)
    x0, x1, fx = taps(w, bx)
    one = 1 << _ZOOM_FRAC
    gy, gx, fy, fx = (one - fy)[:, None], (one - fx)[None], fy[:, None], fx[None]
    weights = [gy * gx, gy * fx, fy * gx, fy * fx]
    if isinstance(src, torch.Tensor):
        y0, y1, x0, x1 = (torch.from_numpy(i).to(src.device) for i in (y0, y1, x0, x1))
        weights = [torch.from_numpy(v).to(src) for v in weights]
    total = (src[:, y0[:, None], x0[None]] * weights[0] + src[:, y0[:, None], x1[None]] * weights[1]
             + src[:, y1[:, None], x0[None]] * weights[2] + src[:, y1[:, None], x1[None]] * weights[3])
    return mix(total, one * one)


def reference(prev: np.ndarray, zoom: tuple[int, int, int] | None) -> np.ndarray:
    """What a latent frame is predicted from: the previous frame's symbols, resampled where the
    chunk lists a zoom before this frame."""
    return prev if zoom is None else resample(prev, zoom)


def _block_edges(n: int, block: int) -> list[tuple[int, int]]:
    return [(a, min(a + block, n)) for a in range(0, n, block)]


def _moved(pad, out, mv: np.ndarray, block: int, mix: Callable):
    """Fill ``out`` [C, h, w] block by block with ``_window`` at each block's vector."""
    _, h, w = out.shape
    for by, (y0, y1) in enumerate(_block_edges(h, block)):
        for bx, (x0, x1) in enumerate(_block_edges(w, block)):
            out[:, y0:y1, x0:x1] = _window(pad, y0, y1, x0, x1, int(mv[by, bx, 0]), int(mv[by, bx, 1]), mix)
    return out


def predict(prev: np.ndarray, mv: np.ndarray, block: int) -> np.ndarray:
    """The prediction [C, h, w] (int64) of a latent frame from the previous frame's symbols
    ``prev`` [C, h, w] and one vector per block ``mv`` [nby, nbx, 2] (dy, dx; eighths of a cell)."""
    if not mv.any():
        return prev.astype(np.int64)
    return _moved(_padded(prev), np.empty(prev.shape, np.int64), mv, block, _round_mix)


def shift(u: torch.Tensor, mv: np.ndarray, block: int) -> torch.Tensor:
    """Float latents ``u`` [C, h, w] moved like ``predict`` moves symbols, without rounding and
    differentiable: what refinement's rate term compares the next latent frame with."""
    if not mv.any():
        return u
    pad = F.pad(u[None], (_PAD,) * 4, mode="replicate")[0]
    return _moved(pad, torch.empty_like(u), mv, block, _float_mix)


def _block_sums(d: np.ndarray, block: int) -> np.ndarray:
    """[..., h, w] -> [..., nby, nbx] sums over each block's cells."""
    h, w = d.shape[-2:]
    rows = np.add.reduceat(d, np.arange(0, h, block), axis=-2)
    return np.add.reduceat(rows, np.arange(0, w, block), axis=-1)


def _floor_mix(total, weight: int):
    """``_round_mix`` in float arithmetic: exact while every blend stays below 2^24."""
    return np.floor((total + weight // 2) * (1.0 / weight))


def _rectangles(need: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Block rectangles (by0, by1, bx0, bx1) that cover the True blocks of ``need`` [nby, nbx]:
    their bounding box when at least half of it is needed (a pan: the whole frame), else each
    block row's runs of needed blocks, so no block is computed that no candidate needs."""
    rows, cols = np.nonzero(need)
    by0, by1, bx0, bx1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if 2 * len(rows) >= (by1 - by0) * (bx1 - bx0):
        return [(by0, by1, bx0, bx1)]
    out = []
    for r in np.unique(rows):
        c = cols[rows == r]
        gaps = np.flatnonzero(np.diff(c) > 1)
        out += [(r, r + 1, a, b + 1) for a, b in zip(np.r_[c[0], c[gaps + 1]], np.r_[c[gaps], c[-1]])]
    return out


def search(x: np.ndarray, prev: np.ndarray, block: int) -> np.ndarray:
    """One vector per block [nby, nbx, 2] (int16, eighths of a cell) that best predicts the float
    latents ``x`` [C, h, w] (in steps) from the symbols ``prev`` [C, h, w]. Ties keep the
    shorter vector, so still content keeps (0, 0).

    Each refinement step scores every block's eight neighbours of its best so far. Blocks mostly
    share their vectors (a steadied canvas: nearly all (0, 0)), so each distinct candidate vector
    is scored in one pass over the rectangles of the blocks that try it, not block by block."""
    c, h, w = x.shape
    x = x.astype(np.float32, copy=False)
    pad = _padded(prev)
    padf = pad.astype(np.float32)  # whole-cell shifts need no rounding: stay in float32
    scores = np.stack([
        _block_sums(np.abs(x - padf[:, _PAD + a:_PAD + a + h, _PAD + b:_PAD + b + w]).sum(0), block)
        for a, b in WHOLE_CELLS
    ])
    mv = np.array(WHOLE_CELLS, np.int64)[scores.argmin(0)] * PRECISION  # [nby, nbx, 2]
    best = scores.min(0)
    exact = np.abs(prev).max(initial=0) < 1 << 18  # blends of 64ths below 2^24: float32 is exact
    ref, mix = (padf, _floor_mix) if exact else (pad, _round_mix)
    offsets = np.array(NEIGHBOURS)[:, None, None]  # [8, 1, 1, 2]
    for d in REFINE:
        cands = mv[None] + d * offsets  # [8, nby, nbx, 2], tried in NEIGHBOURS order
        legal = np.abs(cands).max(-1) <= MV_MAX
        keys = np.where(legal, (cands[..., 0] + MV_MAX) * _SPAN + cands[..., 1] + MV_MAX, -1)  # one int per vector
        found = np.full(keys.shape, np.inf, np.float32)
        for key in np.unique(keys[legal]):
            dy, dx = (int(k) - MV_MAX for k in divmod(key, _SPAN))
            hit = keys == key  # [8, nby, nbx]
            for by0, by1, bx0, bx1 in _rectangles(hit.any(0)):
                y0, y1, x0, x1 = by0 * block, min(by1 * block, h), bx0 * block, min(bx1 * block, w)
                sad = _block_sums(np.abs(x[:, y0:y1, x0:x1] - _window(ref, y0, y1, x0, x1, dy, dx, mix)).sum(0), block)
                area = found[:, by0:by1, bx0:bx1]
                np.copyto(area, sad, where=hit[:, by0:by1, bx0:bx1])
        every = np.concatenate([best[None], found])  # the centre first: it wins ties
        k = every.argmin(0)
        best = np.take_along_axis(every, k[None], 0)[0]
        mv = np.where((k > 0)[..., None], np.take_along_axis(cands, np.maximum(k - 1, 0)[None, ..., None], 0)[0], mv)
    return mv.astype(np.int16)


def _hold_cheap_blocks(x: np.ndarray, q: np.ndarray, ref: np.ndarray, block: int,
                       rate: Callable[[np.ndarray], np.ndarray]) -> None:
    """In place: each channel's block of ``q`` [C, h, w] whose residual to the prediction
    ``ref`` costs ``rate`` bits worth more than the squared error (in steps^2, against the
    latents ``x``) that taking the prediction adds, at ``ZERO_LAMBDA`` per bit, takes the
    prediction: a block with no symbols at all for the coder."""
    h, w = q.shape[-2:]
    res = q - ref
    added = _block_sums((x - ref) ** 2 - (x - q) ** 2, block)  # [C, nby, nbx]
    take = (_block_sums(res != 0, block) > 0) & (added < ZERO_LAMBDA * rate(res))
    cells = take.repeat(block, axis=1).repeat(block, axis=2)[:, :h, :w]
    q[cells] = ref[cells]


def quantize(x: torch.Tensor, deadzone: float, block: int,
             rate: Callable[[np.ndarray], np.ndarray] | None = None,
             zooms: Zooms | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Latents in steps ``x`` [C, t, h, w] -> (symbols int32 [C, t, h, w], vectors int16
    [t, nby, nbx, 2]; frame 0's are zero). Frame 0 is rounded; every later frame is rounded
    and then, with a deadzone, holds its motion-compensated prediction wherever the latent is
    within ``0.5 + deadzone`` steps of it, and, given the coder's ``rate`` (residual [C, h, w]
    -> bits per channel and block [C, nby, nbx]), in every block whose residual costs more
    than it is worth (``_hold_cheap_blocks``). A frame that ``zooms`` lists is predicted from
    the frame before resampled (``reference``)."""
    x = x.float().cpu().numpy()
    c, t, h, w = x.shape
    q = np.round(x).astype(np.int64)
    mv = np.zeros((t, -(-h // block), -(-w // block), 2), np.int16)
    for j in range(1, t if h and w else 1):  # an empty frame has nothing to search
        prev = reference(q[:, j - 1], zooms.get(j) if zooms else None)
        mv[j] = search(x[:, j], prev, block)
        if deadzone:
            ref = predict(prev, mv[j], block)
            q[:, j] = np.where(np.abs(x[:, j] - ref) <= 0.5 + deadzone, ref, q[:, j])
            if rate is not None:
                _hold_cheap_blocks(x[:, j], q[:, j], ref, block, rate)
    return q.astype(np.int32), mv

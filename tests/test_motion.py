"""Motion-compensated prediction: exact integer prediction, a search that finds real motion,
holding along the motion, and chunk version 4 (lossless, smaller on pans, strict on damage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vaecodec import motion as mc
from vaecodec.entropy import BLOCK, EntropyCoder, latent_histograms
from vaecodec.errors import UsageError
from vaecodec.quant import Quantizer, entropy_symbols

C, H, W = 8, 40, 56  # 3 x 4 blocks of 16 cells, the last row and column partial


def _field(seed: int, c: int = C, h: int = H + 24, w: int = W + 24) -> torch.Tensor:
    """A smooth random latent field [c, h, w] (features larger than a cell, as a photo's are)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, h // 4, w // 4, generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)[0] * 6


def _pan(seed: int, frames: int, vy: float, vx: float) -> torch.Tensor:
    """[C, frames, H, W]: a window moving over ``_field`` by (vy, vx) cells per frame (sub-cell
    moves by bilinear resampling), plus a little noise, in step units."""
    big = _field(seed)[None]
    g = torch.Generator().manual_seed(seed + 100)
    out = []
    for t in range(frames):
        ys = torch.arange(H) + 12 + vy * t
        xs = torch.arange(W) + 12 + vx * t
        gy = (ys + 0.5) / big.shape[2] * 2 - 1
        gx = (xs + 0.5) / big.shape[3] * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
        out.append(F.grid_sample(big, grid, mode="bilinear", align_corners=False)[0])
    return torch.stack(out, 1) + 0.05 * torch.randn(C, frames, H, W, generator=g)


def _reference_predict(prev: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Independent statement of the rule: edge-clamped neighbours, integer bilinear weights in
    64ths, one rounding (floor of (sum + 32) / 64)."""
    c, h, w = prev.shape
    ys, xs = np.arange(h) * 8 + dy, np.arange(w) * 8 + dx
    y0, x0 = np.floor_divide(ys, 8), np.floor_divide(xs, 8)
    fy, fx = (ys - 8 * y0)[:, None], (xs - 8 * x0)[None, :]
    p = prev.astype(np.int64)
    at = lambda y, x: p[:, np.clip(y, 0, h - 1)][:, :, np.clip(x, 0, w - 1)]
    total = (at(y0, x0) * (8 - fy) * (8 - fx) + at(y0, x0 + 1) * (8 - fy) * fx
             + at(y0 + 1, x0) * fy * (8 - fx) + at(y0 + 1, x0 + 1) * fy * fx)
    return np.floor_divide(total + 32, 64)


@pytest.mark.parametrize("vec", [(0, 0), (8, -16), (-3, 5), (4, 2), (-63, 63), (1, -27), (-9, 0)])
def test_prediction_is_the_stated_integer_rule(vec):
    prev = np.random.default_rng(0).integers(-40, 40, (C, H, W)).astype(np.int32)
    nby, nbx = -(-H // BLOCK), -(-W // BLOCK)
    mv = np.zeros((nby, nbx, 2), np.int16)
    mv[1, 2] = vec  # one block moves; the others copy
    out = mc.predict(prev, mv, BLOCK)
    want = prev.astype(np.int64).copy()
    want[:, 16:32, 32:48] = _reference_predict(prev, *vec)[:, 16:32, 32:48]
    np.testing.assert_array_equal(out, want)


def test_float_shift_is_the_prediction_without_rounding_and_differentiable():
    prev = np.random.default_rng(1).integers(-40, 40, (C, H, W)).astype(np.int32)
    mv = np.random.default_rng(2).integers(-24, 25, (3, 4, 2)).astype(np.int16)
    u = torch.from_numpy(prev).double().requires_grad_(True)
    moved = mc.shift(u, mv, BLOCK)
    exact = torch.from_numpy(mc.predict(prev, mv, BLOCK)).double()
    assert (moved - exact).abs().max() <= 0.5  # one rounding
    whole = (mv // mc.PRECISION) * mc.PRECISION  # whole-cell vectors: no blend, no rounding
    assert torch.equal(mc.shift(u, whole, BLOCK), torch.from_numpy(mc.predict(prev, whole, BLOCK)).double())
    moved.sum().backward()  # every output is a convex blend of inputs: the gradient sums to one per cell
    assert u.grad.sum().item() == pytest.approx(C * H * W)
    assert (u.grad >= 0).all()


@pytest.mark.parametrize("vy,vx", [(0.0, 1.0), (-0.75, 0.5), (1.25, -2.0)])
def test_search_finds_the_pan(vy, vx):
    x = _pan(1, 2, vy, vx).numpy()
    prev = np.round(x[:, 0]).astype(np.int32)
    mv = mc.search(x[:, 1], prev, BLOCK)
    assert mv.shape == (3, 4, 2) and mv.dtype == np.int16
    # frame 1 at cell p shows frame 0 at p + v: the vector points to where the content was
    want = (round(vy * mc.PRECISION), round(vx * mc.PRECISION))
    inner = mv[:2, :3].reshape(-1, 2)  # whole blocks (the partial ones see the edge)
    assert (np.abs(inner - want) <= 2).all(), inner  # within a quarter cell


def _reference_search(x: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """The search rule stated block by block, every candidate's prediction from
    ``_reference_predict``: whole cells nearest first, then half, quarter and eighth cells
    around each block's best, a candidate taken only when strictly better."""
    _, h, w = x.shape
    nby, nbx = -(-h // BLOCK), -(-w // BLOCK)
    errors: dict[tuple[int, int], np.ndarray] = {}

    def sad(v: tuple[int, int], by: int, bx: int) -> float:
        if v not in errors:
            errors[v] = np.abs(x - _reference_predict(prev, *v))
        return errors[v][:, by * BLOCK:(by + 1) * BLOCK, bx * BLOCK:(bx + 1) * BLOCK].sum()

    mv = np.zeros((nby, nbx, 2), np.int64)
    for by in range(nby):
        for bx in range(nbx):
            best, v = min(((sad(w, by, bx), w) for w in [(8 * a, 8 * b) for a, b in mc.WHOLE_CELLS]),
                          key=lambda sv: sv[0])  # min keeps the first of equal scores: the nearest
            for d in mc.REFINE:
                cy, cx = v
                for oy, ox in mc.NEIGHBOURS:
                    cand = (cy + d * oy, cx + d * ox)
                    if max(abs(cand[0]), abs(cand[1])) <= mc.MV_MAX and (s := sad(cand, by, bx)) < best:
                        best, v = s, cand
            mv[by, bx] = v
    return mv


@pytest.mark.parametrize("motion", ["pan", "scattered", "mostly still", "every third column", "huge values"])
def test_search_is_the_block_by_block_rule(motion):
    """The search scores each candidate vector for all the blocks that try it at once (their
    bounding box, or each row's runs of them when they are sparse); it must pick exactly what
    the rule, block by block, picks. Latents in quarter steps keep every sum exact, so equal
    scores are equal in both and ties break the same way."""
    h, w = 88, 120  # 6 x 8 blocks, the last row and column partial
    rng = np.random.default_rng(len(motion))
    prev = np.round(_field(7, h=h, w=w).numpy()).astype(np.int32)
    nby, nbx = -(-h // BLOCK), -(-w // BLOCK)
    true = {"pan": np.broadcast_to([5, -11], (nby, nbx, 2)),
            "scattered": rng.integers(-30, 31, (nby, nbx, 2)),
            "mostly still": np.where(rng.random((nby, nbx, 1)) < 0.2, rng.integers(-12, 13, (nby, nbx, 2)), 0),
            "every third column": np.where((np.arange(nbx) % 3 == 0)[:, None], [-6, 9], 0)[None].repeat(nby, 0),
            "huge values": rng.integers(-20, 21, (nby, nbx, 2))}[motion]
    noise = rng.integers(-3, 4, (C, h, w)) / 4
    if motion == "huge values":  # past 2^18 a float32 blend is not exact: the integer path
        prev += 1 << 23
        noise = np.round(noise)  # whole steps: float32 holds no quarter steps up there
    x = mc.predict(prev, true.astype(np.int16), BLOCK) + noise
    want = _reference_search(x, prev)
    got = mc.search(x.astype(np.float32), prev, BLOCK)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want.reshape(-1, 2), axis=0)) > (nby * nbx // 2 if motion == "scattered" else 1 if motion != "pan" else 0)


def test_still_content_keeps_zero_vectors():
    x = _field(2, h=H, w=W).numpy()
    q = np.round(x).astype(np.int32)
    assert not mc.search(q.astype(np.float32), q, BLOCK).any()


@pytest.mark.parametrize("deadzone", [0.0, 0.1, 0.3])
def test_quantize_holds_along_the_motion_and_bounds_the_error(deadzone):
    x = _pan(3, 6, 0.25, 0.5)
    q, mv = mc.quantize(x, deadzone, BLOCK)
    xn = x.numpy()
    assert q.dtype == np.int32 and mv.shape == (6, 3, 4, 2) and not mv[0].any()
    np.testing.assert_array_equal(q[:, 0], np.round(xn[:, 0]))
    assert np.abs(q - xn).max() <= 0.5 + deadzone + 1e-5
    for t in range(1, 6):
        ref = mc.predict(q[:, t - 1], mv[t], BLOCK)
        near = np.abs(xn[:, t] - ref) <= 0.5 + deadzone
        if deadzone:
            np.testing.assert_array_equal(q[:, t][near], ref[near])
        np.testing.assert_array_equal(q[:, t][~near], np.round(xn[:, t][~near]))
    if deadzone:  # along the motion, more symbols repeat their prediction than held in place
        in_place = np.count_nonzero(np.diff(entropy_symbols(x, deadzone).numpy(), axis=1))
        moved = sum(np.count_nonzero(q[:, t] != mc.predict(q[:, t - 1], mv[t], BLOCK)) for t in range(1, 6))
        assert moved < 0.7 * in_place, (moved, in_place)


@pytest.fixture(scope="module")
def coder() -> EntropyCoder:
    means = torch.stack([_pan(s, 5, 0.0, 0.0) for s in range(10, 14)]).numpy()  # still clips: in-place tables
    steps = np.array([1.0, 0.5], np.float32)
    return EntropyCoder.from_histograms(steps, *latent_histograms(means, steps), (1, 2), default_quality=1)


def test_version_4_round_trips_and_saves_bits_on_a_pan(coder):
    x = _pan(4, 8, 0.5, -0.75)
    q, mv = mc.quantize(x, 0.1, BLOCK)
    assert mv[1:].any()
    data = coder.encode(q, 1, mv)
    assert data[:2] == bytes([4, BLOCK])
    np.testing.assert_array_equal(coder.decode(data, q.shape, 1), q)
    assert coder.encode(q, 1, mv) == data  # deterministic
    without = coder.encode(q, 1)  # the same symbols, coded against the frame in place
    assert without[0] == 3
    np.testing.assert_array_equal(coder.decode(without, q.shape, 1), q)
    assert len(data) < 0.7 * len(without), (len(data), len(without))


@pytest.mark.parametrize("shape", [(C, 3, 1, 1), (C, 2, 0, 4), (C, 4, 17, 33), (C, 1, 5, 5)])
def test_quantize_and_version_4_take_any_shape(coder, shape):
    x = torch.from_numpy(np.random.default_rng(7).normal(0, 3, shape).astype(np.float32))
    q, mv = mc.quantize(x, 0.1, BLOCK)
    assert q.shape == shape and mv.shape == (shape[1], -(-shape[2] // BLOCK), -(-shape[3] // BLOCK), 2)
    np.testing.assert_array_equal(coder.decode(coder.encode(q, 1, mv), shape, 1), q)


def test_version_4_round_trips_any_vectors_and_values(coder):
    rng = np.random.default_rng(6)
    q = rng.integers(-200, 200, (C, 5, H, W)).astype(np.int32)
    q[2, 3, 5, 5] = np.iinfo(np.int32).max
    q[4, 1, 0, 0] = np.iinfo(np.int32).min
    mv = rng.integers(-mc.MV_MAX, mc.MV_MAX + 1, (5, 3, 4, 2)).astype(np.int16)
    mv[0] = 0
    np.testing.assert_array_equal(coder.decode(coder.encode(q, 2, mv), q.shape, 2), q)


def test_bad_vectors_are_refused(coder):
    q = np.zeros((C, 3, H, W), np.int32)
    mv = np.zeros((3, 3, 4, 2), np.int16)
    for bad in (mv[:2], mv.astype(np.float32)):
        with pytest.raises(UsageError, match="motion vectors"):
            coder.encode(q, 1, bad)
    for where in ((0, 0, 0, 0), (1, 2, 3, 1)):
        m = mv.copy()
        m[where] = 1 if where[0] == 0 else mc.MV_MAX + 1
        with pytest.raises(UsageError, match="motion vectors"):
            coder.encode(q, 1, m)


def test_quantizer_records_motion_and_packs_version_4(coder):
    x = _pan(5, 6, 0.0, 0.75)
    quant = Quantizer("entropy", quality=2, coder=coder)
    assert quant.motion and quant.describe()["motion"] is True
    p = quant.pack(x * 0.5)
    assert p.payload[0] == 4
    q, _ = quant.symbols(x * 0.5)
    assert torch.equal(quant.unpack(p.payload, p.meta, tuple(x.shape)), torch.from_numpy(q).float() * 0.5)
    off = Quantizer("entropy", quality=2, coder=coder, motion=False)
    assert off.describe()["motion"] is False and off.pack(x * 0.5).payload[0] == 3
    for motion, flag in ((True, "--motion"), (False, "--no-motion")):  # either way a choice uniform quantization lacks
        with pytest.raises(UsageError, match=flag):
            Quantizer("uniform", bits=8, motion=motion)
    assert Quantizer("uniform", bits=8).motion is False


# ---- training's batched copy of the search and the shift (vaecodec.train.rate)

def test_training_shift_is_the_coders_float_shift():
    from vaecodec.train.rate import shift

    u = _field(3, h=H, w=W)[None].repeat(3, 1, 1, 1).requires_grad_(True)  # [3, C, H, W]
    mv = np.random.default_rng(4).integers(-mc.MV_MAX, mc.MV_MAX + 1, (3, 3, 4, 2)).astype(np.int16)
    moved = shift(u, torch.from_numpy(mv), BLOCK)
    want = torch.stack([mc.shift(u[i].detach(), mv[i], BLOCK) for i in range(3)])
    assert (moved - want).abs().max() < 1e-4
    moved.sum().backward()  # convex blends: one unit of gradient per output cell
    assert u.grad.sum().item() == pytest.approx(3 * C * H * W, rel=1e-5)


def test_training_search_finds_the_coders_vectors():
    from vaecodec.train.rate import search

    pans = [_pan(5 + i, 2, vy, vx) for i, (vy, vx) in enumerate([(0.0, 1.0), (-0.75, 0.5), (1.25, -2.0), (0, 0)])]
    x = torch.stack([p[:, 1] for p in pans])  # [4, C, H, W]
    prev = torch.round(torch.stack([p[:, 0] for p in pans]))
    got = search(x, prev, BLOCK).numpy()
    want = np.stack([mc.search(x[i].numpy(), prev[i].numpy().astype(np.int32), BLOCK) for i in range(4)])
    assert got.shape == want.shape == (4, 3, 4, 2)
    assert (got == want).all(axis=-1).mean() >= 0.9  # float ties may break differently
    q = torch.round(_field(2, h=H, w=W))[None]
    assert not search(q, q, BLOCK).any()  # still content keeps zero vectors


def test_motion_rate_prior_charges_a_pan_less():
    from vaecodec.train.rate import RatePrior

    torch.manual_seed(0)
    flat, moving = RatePrior(C), RatePrior(C, motion_block=BLOCK)
    moving.load_state_dict(flat.state_dict())  # the same densities: only the reference differs
    s = torch.tensor([1.0])
    pan = _pan(6, 3, 0.5, -1.25)[None]  # [1, C, 3, H, W] in steps (s = 1)
    still = _pan(6, 1, 0, 0)[None].repeat(1, 1, 3, 1, 1)
    with torch.no_grad():
        assert moving(pan, s, noise=False) < 0.8 * flat(pan, s, noise=False)
        assert moving(still, s, noise=False) == flat(still, s, noise=False)
        noisy = moving(pan, s)
    assert torch.isfinite(noisy).all()
    y = pan.clone().requires_grad_(True)
    moving(y, s).sum().backward()  # the training proxy gives the encoder a gradient
    assert y.grad.abs().sum() > 0


def test_blocks_whose_residual_is_not_worth_its_bits_hold_the_prediction(coder):
    """A still frame where two cells of one channel's block drift 0.6 steps (past the 0.05
    deadzone, so rounding flips them): their residual costs more bits than the 0.4 steps^2
    of error that holding adds is worth, so with the coder's prices the block keeps the
    prediction (a zero block). A channel whose block moved by 3 steps everywhere keeps its new
    symbols, and without prices nothing is held beyond the deadzone."""
    x = torch.from_numpy(np.random.default_rng(3).normal(0, 2, (C, 1, H, W))).float().round().repeat(1, 2, 1, 1)
    x[0, 1, 3, 4] += 0.6
    x[0, 1, 9, 2] -= 0.6
    x[1, 1, :16, :16] += 3.0
    held, mv = mc.quantize(x, 0.05, BLOCK, coder.residual_bits(1))
    plain, _ = mc.quantize(x, 0.05, BLOCK)
    assert not mv.any()
    np.testing.assert_array_equal(held[0, 1], held[0, 0])  # the drift was not worth its bits
    assert (plain[0, 1] != plain[0, 0]).sum() == 2
    np.testing.assert_array_equal(held[1], plain[1])  # a real change is kept
    assert (held[1, 1, :16, :16] - held[1, 0, :16, :16] == 3).all()
    np.testing.assert_array_equal(held[2:], plain[2:])


def test_held_blocks_are_coded_as_zero_blocks_and_cost_less(coder):
    """On a noisy still clip the blocks held at their prediction cost fewer bytes, decode to
    the held symbols, and stay within a step or so of the latents."""
    x = torch.from_numpy(np.random.default_rng(4).normal(0, 2, (C, 1, H, W))).float().repeat(1, 4, 1, 1)
    x = x + 0.15 * torch.from_numpy(np.random.default_rng(5).normal(0, 1, x.shape)).float()
    held, mv = mc.quantize(x, 0.05, BLOCK, coder.residual_bits(1))
    plain, _ = mc.quantize(x, 0.05, BLOCK)
    a, b = coder.encode(held, 1, mv), coder.encode(plain, 1, mv)
    np.testing.assert_array_equal(coder.decode(a, held.shape, 1), held)
    first = len(coder.encode(held[:, :1], 1, mv[:1]))  # frame 0, the same in both
    assert len(a) - first < 0.95 * (len(b) - first), (len(a), len(b), first)  # measured: 0.90
    assert np.abs(held - x.numpy()).max() < 2


def test_banks_fitted_with_prices_count_the_held_blocks(coder):
    """Export refits the banks on what the encoder stores: given an earlier coder's prices,
    ``latent_histograms`` quantizes with held blocks, so its inter tables see more zero
    residuals on a noisy still clip than without prices, from the same number of cells."""
    from vaecodec.entropy import K

    x = torch.from_numpy(np.random.default_rng(4).normal(0, 2, (C, 1, H, W))).float().repeat(1, 4, 1, 1)
    x = x + 0.15 * torch.from_numpy(np.random.default_rng(5).normal(0, 1, x.shape)).float()
    steps = np.array([1.0], np.float32)
    plain = latent_histograms(x[None].numpy(), steps, deadzones=[0.05], motion=True)
    priced = latent_histograms(x[None].numpy(), steps, deadzones=[0.05], motion=True, rates=[coder.residual_bits(1)])
    zeros = [h[..., K].sum() for h in (plain[1], priced[1])]
    assert zeros[1] > zeros[0] and priced[1].sum() == plain[1].sum(), zeros


def _reference_resample(prev: np.ndarray, a: int, bx: int, by: int) -> np.ndarray:
    """Independent statement of the zoom's rule, cell by cell: new cell (y, x) reads the old
    position ((a x + bx) / 2^16, (a y + by) / 2^16) from its floor cell and the next (edges
    clamped), weighted by the position's 64ths, with one rounding (floor of (sum + 2048) / 4096)."""
    c, h, w = prev.shape
    p, out = prev.astype(np.int64), np.empty(prev.shape, np.int64)
    for y in range(h):
        y0, fy = divmod(a * y + by, 1 << 16)
        fy //= 1 << 10
        for x in range(w):
            x0, fx = divmod(a * x + bx, 1 << 16)
            fx //= 1 << 10
            ys, xs = np.clip([y0, y0 + 1], 0, h - 1), np.clip([x0, x0 + 1], 0, w - 1)
            total = (p[:, ys[0], xs[0]] * (64 - fy) * (64 - fx) + p[:, ys[0], xs[1]] * (64 - fy) * fx
                     + p[:, ys[1], xs[0]] * fy * (64 - fx) + p[:, ys[1], xs[1]] * fy * fx)
            out[:, y, x] = (total + 2048) // 4096
    return out


@pytest.mark.parametrize("zoom", [(52700, 581929, 287563), (80000, -300000, 123457), (98304, -7, 99999),
                                  (65536, 40000, -70000)])
def test_a_zoom_resamples_by_the_stated_integer_rule(zoom):
    prev = np.random.default_rng(3).integers(-60, 60, (C, H, W)).astype(np.int32)
    np.testing.assert_array_equal(mc.resample(prev, zoom), _reference_resample(prev, *zoom))
    np.testing.assert_array_equal(mc.resample(prev, (1 << 16, 0, 0)), prev)  # no zoom, no shift: a copy
    # a zoom of 1 by whole cells is the block motion's whole-cell move (content from 2 cells right, 1 up)
    np.testing.assert_array_equal(mc.resample(prev, (1 << 16, 2 << 16, -1 << 16)), _reference_predict(prev, -8, 16))


@pytest.mark.parametrize("zoom", [(52700, 581929, 287563), (80000, -300000, 123457)])
def test_a_zoom_resamples_float_latents_as_it_resamples_symbols(zoom):
    """Refinement's rate term after a zoom: the float resampling is the integer rule before
    its one rounding (within half a step of it on symbols), and carries the gradient."""
    prev = np.random.default_rng(4).integers(-60, 60, (C, H, W))
    u = torch.from_numpy(prev).double().requires_grad_(True)
    out = mc.resample_float(u, zoom)
    assert np.abs(out.detach().numpy() - mc.resample(prev, zoom)).max() <= 0.5
    assert not np.array_equal(out.detach().numpy(), prev)
    out.sum().backward()
    assert u.grad is not None and abs(float(u.grad.sum()) - out.numel()) < 1e-6  # each output's weights sum to 1


def _zoomed(x: torch.Tensor, zoom: tuple[int, int, int]) -> torch.Tensor:
    """Float latents [C, h, w] resampled as ``mc.resample`` reads them (bilinear, in float)."""
    a, bx, by = (v / (1 << 16) for v in zoom)
    _, h, w = x.shape
    gy = (2 * (a * torch.arange(h) + by) + 1) / h - 1
    gx = (2 * (a * torch.arange(w) + bx) + 1) / w - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].float()
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def test_a_frame_after_a_zoom_is_coded_against_the_frame_before_resampled(coder):
    """The latents of a zoomed picture are close to the old ones resampled by the zoom: listed
    in ``zooms``, that frame's residual is small and the chunk much smaller, and it decodes
    exactly only with the same zooms (the prediction depends on them); workers code and decode
    the same bytes."""
    from vaecodec.quant import chunk_symbols
    from vaecodec.workers import CoderPool

    zoom = (54613, 120000, 90000)  # 1.2x in, about (3, 2) cells off the corner
    f0 = _field(7)[:, 12:12 + H, 12:12 + W]
    g = torch.Generator().manual_seed(8)
    x = torch.stack([f0, _zoomed(f0, zoom) + 0.05 * torch.randn(C, H, W, generator=g)], 1)  # [C, 2, H, W]
    plain = chunk_symbols(x, 0.1, BLOCK, coder, 2)
    q, mv = chunk_symbols(x, 0.1, BLOCK, coder, 2, {1: zoom})
    without, data = coder.encode(plain[0], 2, plain[1]), coder.encode(q, 2, mv, {1: zoom})
    assert len(data) < 0.75 * len(without), (len(data), len(without))
    np.testing.assert_array_equal(coder.decode(data, q.shape, 2, {1: zoom}), q)
    assert not np.array_equal(coder.decode(data, q.shape, 2), q)
    assert np.abs(q - x.round().numpy()).max() <= 1  # held within the deadzone, as without a zoom
    pool = CoderPool(1, coder)
    try:
        pool.quantize(x, 2, 0.1, BLOCK, {1: zoom})
        assert pool.result() == data
        pool.decode(data, q.shape, 2, {1: zoom})
        np.testing.assert_array_equal(pool.result(), q)
    finally:
        pool.close()

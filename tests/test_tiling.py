"""Tiling arithmetic: tiled runs of an analytic model must equal an untiled run exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vaecodec import tiling
from vaecodec.models.base import Tiling
from vaecodec.models.tiny import Arch, TinyVAE
from vaecodec.tiling import (CausalEncoder, Move, StreamingDecoder, StreamingEncoder, TileRunner, _spans, check_tiling,
                             decoder_for, encoder_for, temporal_tiles)

from conftest import PoolVAE


def runner_for(model: PoolVAE) -> TileRunner:
    return TileRunner(lambda x: model.encode(x.float())[0], model.decode, model.spatial, model.tiling)


def stream_encode(runner: TileRunner, video: torch.Tensor, step: int) -> torch.Tensor:
    """Feed [3,T,H,W] in pieces of ``step`` frames and concatenate what comes out."""
    enc = StreamingEncoder(runner, 4)
    outs = []
    for i in range(0, video.shape[1], step):
        outs += list(enc.push(video[:, i : i + step]))
    outs += list(enc.finish())
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("n_latents", [1, 2, 5, 8, 9, 13, 30])
@pytest.mark.parametrize("L,O", [(4, 1), (4, 0), (6, 2), (3, 2)])
def test_temporal_plan_covers_every_latent_once_in_order(n_latents, L, O):
    tiles = temporal_tiles(n_latents, Tiling(L, O, 64, 8))
    assert tiles[0].start == 0 and tiles[-1].end == n_latents - 1
    for a, b in zip(tiles, tiles[1:]):
        assert b.start == a.start + L - O  # constant stride
        assert a.end - b.start == O  # b's first useful latent is b.start + 1: no gap, O shared
    assert all(t.length <= L for t in tiles)


@pytest.mark.parametrize("frames", [1, 2, 5, 17, 23, 40])
@pytest.mark.parametrize("step", [1, 7, 64])
def test_streaming_encode_equals_untiled(frames, step):
    torch.manual_seed(0)
    model = PoolVAE(Tiling(latent_frames=3, overlap_latents=1, tile_px=16, overlap_px=4))
    video = torch.rand(3, frames, 24, 20) * 2 - 1
    k = -(-(frames - 1) // 4)
    padded = torch.cat([video, video[:, -1:].expand(-1, 1 + 4 * k - frames, -1, -1)], dim=1)
    full = model.encode(padded[None])[0][0]
    tiled = stream_encode(runner_for(model), video, step)
    assert tiled.shape == full.shape
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_latents", [1, 2, 4, 7, 12])
def test_streaming_decode_equals_untiled_and_supports_ranges(n_latents):
    torch.manual_seed(1)
    model = PoolVAE(Tiling(latent_frames=3, overlap_latents=1, tile_px=16, overlap_px=8))
    z = torch.randn(3, n_latents, 6, 5)
    full = model.decode(z[None])[0]  # [3, 1+(n-1)*4, 24, 20]
    dec = StreamingDecoder(runner_for(model), 4, n_latents)
    got = []
    for i in range(n_latents):
        got += [x for _, x in dec.push(z[:, i : i + 1])]
    tiled = torch.cat(got, dim=1)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)
    # any frame range decodes from the tiles that cover it, identical to the full decode
    n_frames = full.shape[1]
    for start, stop in [(0, 1), (n_frames // 2, n_frames), (max(0, n_frames - 3), n_frames)]:
        dec = StreamingDecoder(runner_for(model), 4, n_latents)
        first, end = dec.tiles_for_frames(start, stop)
        lat0 = dec.skip_to(first)
        parts = [(f0, x) for f0, x in dec.push(z[:, lat0 : dec.plan[end - 1].end + 1])]
        frames = torch.cat([x for _, x in parts], dim=1)
        f0 = parts[0][0]
        torch.testing.assert_close(frames[:, start - f0 : stop - f0], full[:, start:stop], atol=1e-5, rtol=0)


def tiny_runner(model, tiling: Tiling) -> TileRunner:
    return TileRunner(None, None, 8, tiling, lambda x, st: model.encode_step(x, st), lambda z, st: model.decode_step(z, st))


@torch.inference_mode()
def test_a_moved_state_is_the_state_of_the_moved_content():
    """A steadied canvas whose window moves by whole cells before latent frame j: the streams
    move their state with it (``CausalEncoder.move``, ``CausalDecoder``'s moves). In one spatial
    tile the latents and frames from j on are then, away from the edges the move uncovers,
    exactly those of a stream that saw the moved content all along, wherever the move falls in
    a temporal tile; without the move they are not. With spatial tiles the state is moved on
    the whole picture, each tile taking what crosses its edge from its neighbour: closer to the
    untiled stream than moving each tile's state on its own (its edges repeated) or not at all."""
    torch.manual_seed(0)
    model = TinyVAE(Arch()).eval()
    j, dx, dy = 2, 2, -1  # cells; the content of cell p goes to p + (dx, dy)
    f = 4 * j - 3  # latent j's first frame
    wide = torch.rand(3, 1 + 4 * 5, 8 * 34, 8 * 44, generator=torch.Generator().manual_seed(6)) * 2 - 1
    def window(x: torch.Tensor, cx: int, cy: int, s: int) -> torch.Tensor:  # 24 x 36 cells of the scene
        return x[..., s * cy : s * (cy + 24), s * cx : s * (cx + 36)]
    new = window(wide, 4 - dx, 4 - dy, 8)  # the old window's content moved by (dx, dy)
    seen = torch.cat([window(wide, 4, 4, 8)[:, :f], new[:, f:]], 1)
    def encoded(x: torch.Tensor, L: int, tile: int, move: bool) -> torch.Tensor:
        enc = CausalEncoder(tiny_runner(model, Tiling(latent_frames=L, overlap_latents=0, tile_px=tile, overlap_px=64)), 4)
        if move:
            enc.move(j, Move.by_cells(dx, dy))
        return torch.cat(list(enc.push(x)) + list(enc.finish()), 1)[:, j:]
    exact, inner = encoded(new, 2, 896, False), (..., slice(11, 13), slice(11, 25))  # cells far from every edge
    for L in (1, 3):  # the move at a temporal tile's first latent frame, then inside one (the call is cut there)
        torch.testing.assert_close(encoded(seen, L, 896, True)[inner], exact[inner], rtol=0, atol=1e-4)
        assert (encoded(seen, L, 896, False)[inner] - exact[inner]).abs().max() > 1e-2
    away = (..., slice(3, 21), slice(3, 33))
    err = {how: (encoded(seen, 2, 128, how != "still") - exact)[away].abs().mean().item() for how in ("whole", "still")}
    with pytest.MonkeyPatch.context() as mp:  # each spatial tile's state moved on its own
        mp.setattr(tiling, "move_states", lambda states, move, unit=1: states.update(
            {k: [tiling.moved(t, move) for t in v] for k, v in states.items()}))
        err["each tile"] = (encoded(seen, 2, 128, True) - exact)[away].abs().mean().item()
    assert err["whole"] < err["each tile"] < err["still"], err

    z = torch.randn(16, 9, 34, 44, generator=torch.Generator().manual_seed(7))
    lat = torch.cat([window(z, 4, 4, 1)[:, :j], window(z, 4 - dx, 4 - dy, 1)[:, j:]], 1)
    def decoded(latents: torch.Tensor, L: int, moves: dict | None, frames: tuple[int, int] = (0, 33)) -> torch.Tensor:
        dec = decoder_for(tiny_runner(model, Tiling(latent_frames=L, overlap_latents=0, tile_px=896, overlap_px=64)),
                          4, latents.shape[1], model.reach, moves)
        a, b = dec.seek(*frames)
        parts = [(f0, x) for f0, x in dec.push(latents[:, a:b])]
        return torch.cat([x for _, x in parts], 1)[:, frames[0] - parts[0][0] : frames[1] - parts[0][0]]
    exact, px = decoded(window(z, 4 - dx, 4 - dy, 1), 2, None)[:, f:], (..., slice(8 * 11, 8 * 13), slice(8 * 11, 8 * 25))
    for L in (1, 3):
        torch.testing.assert_close(decoded(lat, L, {j: Move.by_cells(dx, dy)})[:, f:][px], exact[px], rtol=0, atol=1e-4)
        assert (decoded(lat, L, None)[:, f:][px] - exact[px]).abs().max() > 1e-2
    # a seek whose cold start falls on the move's latent frame decodes what the full decode gives
    full = decoded(lat, 1, {j: Move.by_cells(dx, dy)})
    torch.testing.assert_close(decoded(lat, 1, {j: Move.by_cells(dx, dy)}, (21, 25)), full[:, 21:25], rtol=0, atol=1e-5)


@pytest.mark.parametrize("L", [1, 2, 5])
def test_causal_streams_equal_one_call_and_seek_bit_for_bit(L):
    """A streaming model's tiles (here the embedded model, spatially tiled too) carry state:
    any tile length and any feeding gives the whole-clip latents and frames, and a seek gives
    exactly the frames the full stream decode gives."""
    torch.manual_seed(4)
    model = TinyVAE(Arch(latent=16, refine=True, blocks8=1)).eval()
    tiling = Tiling(latent_frames=L, overlap_latents=0, tile_px=32, overlap_px=16)
    runner = tiny_runner(model, tiling)
    video = torch.rand(3, 30, 40, 48) * 2 - 1  # 30 frames: padded to 33 = 9 latent frames
    padded = torch.cat([video, video[:, -1:].expand(-1, 3, -1, -1)], dim=1)
    with torch.inference_mode():
        whole = TileRunner(lambda x: model.encode(x)[0], model.decode, 8, tiling)
        mean = whole.encode(padded[None])[0]
        enc = encoder_for(runner, 4)
        latents = torch.cat([z for i in range(0, 30, 7) for z in enc.push(video[:, i : i + 7])] + list(enc.finish()), 1)
        torch.testing.assert_close(latents, mean, rtol=0, atol=1e-5)
        full = whole.decode(mean[None])[0]
        dec = decoder_for(runner, 4, 9, model.reach)
        assert dec.seek(0, 33) == (0, 9)
        stream = torch.cat([x for i in range(9) for _, x in dec.push(mean[:, i : i + 1])], 1)
        torch.testing.assert_close(stream, full, rtol=0, atol=1e-5)
        for start, stop in [(0, 1), (9, 14), (20, 33), (32, 33)]:
            dec = decoder_for(runner, 4, 9, model.reach)
            lo, hi = dec.seek(start, stop)
            assert lo <= max(0, -(-start // 4) - model.reach) and hi >= -(-(stop - 1) // 4) + 1
            out = {f0 + i: x[:, i] for f0, x in dec.push(mean[:, lo:hi]) for i in range(x.shape[1])}
            assert dec.done and torch.equal(torch.stack([out[f] for f in range(start, stop)], 1), stream[:, start:stop])


def test_spatial_tiles_blend_to_the_untiled_result():
    torch.manual_seed(2)
    model = PoolVAE(Tiling(latent_frames=8, overlap_latents=1, tile_px=16, overlap_px=8))
    runner = runner_for(model)
    x = torch.rand(1, 3, 5, 44, 36) * 2 - 1  # 44x36 is split into 16 px tiles
    torch.testing.assert_close(runner.encode(x), model.encode(x)[0], atol=1e-5, rtol=0)
    z = torch.randn(1, 3, 2, 11, 9)
    torch.testing.assert_close(runner.decode(z), model.decode(z), atol=1e-5, rtol=0)


@pytest.mark.parametrize("total,tile,overlap,unit", [(984, 896, 64, 8), (1840, 896, 64, 8), (1088, 896, 64, 8),
                                                     (123, 112, 8, 1), (230, 112, 8, 1), (113, 112, 8, 1),
                                                     (992, 128, 32, 32), (1024, 160, 32, 32), (97, 16, 0, 1), (40, 40, 8, 8)])
def test_spatial_tiles_are_equal_and_no_more_than_needed(total, tile, overlap, unit):
    """Equal tiles, as few as the tile size allows, each pair sharing at least the overlap, on
    the model's cell grid: a picture just over one tile no longer computes nearly two."""
    spans = _spans(total, tile, overlap, unit)
    starts, sizes = [s for s, _ in spans], {n for _, n in spans}
    assert len(sizes) == 1 and (size := sizes.pop()) <= tile and size % unit == 0
    assert starts[0] == 0 and starts[-1] + size == total and all(s % unit == 0 for s in starts)
    assert all(0 < b - a <= size - overlap for a, b in zip(starts, starts[1:]))  # each pair shares >= overlap
    fewer = len(spans) - 1  # one tile fewer, even at full size, cannot reach across
    assert fewer * tile - max(fewer - 1, 0) * overlap < total
    if len(spans) > 1:  # equal tiles waste at most a unit per tile beyond the overlaps they need
        assert len(spans) * size - (len(spans) - 1) * overlap < total + len(spans) * unit


def test_blending_weights_hide_a_tile_offset():
    """Tiles that disagree by a constant are cross-faded, never cut: no step larger than the ramp step."""
    model = PoolVAE(Tiling(latent_frames=5, overlap_latents=2, tile_px=64, overlap_px=8))
    calls = []

    def biased_encode(x):
        calls.append(None)
        return model.encode(x.float())[0] + len(calls)  # each tile is off by its index

    runner = TileRunner(biased_encode, model.decode, 4, model.tiling)
    z = stream_encode(runner, torch.zeros(3, 49, 8, 8), 49)  # 13 latents -> 4 tiles
    means = z.mean(dim=(0, 2, 3))
    assert len(calls) == 4 and means[-1] == 4
    assert (means[1:] - means[:-1]).abs().max() <= 1 / 3 + 1e-6  # ramp of 2 latents: steps of 1/3


def test_bad_tilings_are_rejected():
    """Each message names the option that sets the field and the range it allows (the CLI shows it)."""
    with pytest.raises(ValueError, match=r"--tile-frames must be at least 1, got 0"):
        check_tiling(Tiling(0, 0, 64, 8), 8)
    with pytest.raises(ValueError, match=r"--tile-overlap must be from 0 to 3 .*got 4"):
        check_tiling(Tiling(4, 4, 64, 8), 8)
    with pytest.raises(ValueError, match=r"--tile-px must be a positive multiple of 8, got 60"):
        check_tiling(Tiling(4, 1, 60, 8), 8)
    with pytest.raises(ValueError, match=r"--tile-px must be a positive multiple of 8, got 0"):
        check_tiling(Tiling(4, 1, 0, 0), 8)
    for overlap in (64, -8, 12):
        with pytest.raises(ValueError, match=rf"--tile-overlap-px must be a multiple of 8 from 0 to 56 .*got {overlap}"):
            check_tiling(Tiling(4, 1, 64, overlap), 8)
    check_tiling(Tiling(4, 3, 64, 56), 8)  # the largest overlaps allowed


def test_streaming_holds_one_tile_whatever_the_length():
    """Frames and latents held by the streaming coders never exceed one tile plus one input chunk."""
    model = PoolVAE(Tiling(latent_frames=3, overlap_latents=1, tile_px=16, overlap_px=4))
    runner = runner_for(model)
    for frames in (41, 401):
        enc, held, n_lat = StreamingEncoder(runner, 4), 0, 0
        for i in range(0, frames, 5):
            n_lat += sum(z.shape[1] for z in enc.push(torch.zeros(3, min(5, frames - i), 8, 8)))
            held = max(held, len(enc.frames))
        n_lat += sum(z.shape[1] for z in enc.finish())
        assert n_lat == 1 + -(-(frames - 1) // 4)
        assert held <= 1 + 3 * 4 + 5
        dec, held = StreamingDecoder(runner, 4, n_lat), 0
        for i in range(n_lat):
            list(dec.push(torch.zeros(3, 1, 2, 2)))
            held = max(held, len(dec.latents))
        assert held <= 3 + 1


def test_causal_streams_hold_one_tile_whatever_the_length():
    """The same bound for a streaming model's coders: pending frames and latents stay within
    one tile plus one input chunk, and the carried state is one frame per memory block."""
    model = TinyVAE(Arch()).eval()
    runner = tiny_runner(model, Tiling(latent_frames=3, overlap_latents=0, tile_px=64, overlap_px=0))
    for frames in (41, 401):
        enc, held, n_lat = encoder_for(runner, 4), 0, 0
        with torch.inference_mode():
            for i in range(0, frames, 5):
                n_lat += sum(z.shape[1] for z in enc.push(torch.zeros(3, min(5, frames - i), 16, 16)))
                held = max(held, len(enc.frames))
            n_lat += sum(z.shape[1] for z in enc.finish())
            assert n_lat == 1 + -(-(frames - 1) // 4) and held <= 1 + 3 * 4 + 5
            assert [tuple(s.shape) for s in enc.states[(0, 0)]] == [(1, 64, 2, 2)] * 4
            dec, held = decoder_for(runner, 4, n_lat, model.reach), 0
            for i in range(n_lat):
                list(dec.push(torch.zeros(16, 1, 2, 2)))
                held = max(held, len(dec.latents))
            assert held <= 3 + 1 and dec.done


def test_a_state_follows_a_zoom():
    """``moved`` reads each cell where a move says its content was: by whole cells exactly as
    ``shifted``, through a zoom bilinearly (against a statement cell by cell), and in float32
    for bf16 states too (a bf16 grid gave NaN on the CPU). A stream whose memory is resampled
    through a zoom before latent frame j then encodes that frame much closer to a stream that
    saw the zoomed content all along than one whose memory stayed where it was."""
    f = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(3))
    assert torch.equal(tiling.moved(f, Move.by_cells(2, -1)), tiling.shifted(f, 2, -1))
    a, bx, by = 0.8, 1.3, -0.4
    want = torch.empty_like(f)
    for y in range(9):
        for x in range(11):
            py, px = min(max(a * y + by, 0), 8), min(max(a * x + bx, 0), 10)  # edges repeat
            y0, x0 = min(int(py), 7), min(int(px), 9)
            wy, wx = py - y0, px - x0
            want[..., y, x] = ((1 - wy) * ((1 - wx) * f[..., y0, x0] + wx * f[..., y0, x0 + 1])
                               + wy * ((1 - wx) * f[..., y0 + 1, x0] + wx * f[..., y0 + 1, x0 + 1]))
    torch.testing.assert_close(tiling.moved(f, Move(a, bx, by)), want, rtol=0, atol=1e-5)
    half = tiling.moved(f.bfloat16(), Move(a, bx, by))
    assert half.dtype == torch.bfloat16 and (half.float() - want).abs().max() < 0.05

    torch.manual_seed(0)
    model = TinyVAE(Arch()).eval()
    j, z, cx, cy = 2, 1.2, 170.0, 120.0  # a 1.2x zoom about pixel (cx, cy) before latent frame j
    scene = F.interpolate(torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(6)), size=(192, 256),
                          mode="bicubic", align_corners=False)[0] * 2 - 1
    def view(zoom: float) -> torch.Tensor:  # [3, 192, 256]: the scene zoomed by ``zoom`` about (cx, cy)
        xs, ys = cx + (torch.arange(256) - cx) / zoom, cy + (torch.arange(192) - cy) / zoom
        grid = torch.stack(torch.meshgrid((2 * ys + 1) / 192 - 1, (2 * xs + 1) / 256 - 1, indexing="ij")[::-1], -1)
        return F.grid_sample(scene[None], grid[None].float(), mode="bicubic", padding_mode="border",
                             align_corners=False)[0]
    f0 = 4 * j - 3
    old, new = view(1.0)[:, None].expand(-1, f0, -1, -1), view(z)[:, None].expand(-1, 1 + 4 * 3 - f0, -1, -1)
    # new pixel X shows old pixel X / z + c (1 - 1 / z), so new cell c lies where old cell a c + b lay
    move = Move(1 / z, ((1 / z - 1) * 3.5 + cx * (1 - 1 / z)) / 8, ((1 / z - 1) * 3.5 + cy * (1 - 1 / z)) / 8)
    backwards = Move(z, -z * move.bx, -z * move.by)  # the inverse zoom
    def encoded(x: torch.Tensor, how: Move | None) -> torch.Tensor:
        enc = CausalEncoder(tiny_runner(model, Tiling(latent_frames=1, overlap_latents=0, tile_px=896, overlap_px=64)), 4)
        if how is not None:
            enc.move(j, how)
        return torch.cat(list(enc.push(x)) + list(enc.finish()), 1)[:, j]
    exact = encoded(new[:, :1].expand(-1, 1 + 4 * 3, -1, -1), None)  # the zoomed content all along
    inner = (..., slice(4, 20), slice(4, 28))
    err = {name: (encoded(torch.cat([old, new], 1), how) - exact)[inner].abs().mean().item()
           for name, how in (("zoom", move), ("stayed", None), ("backwards", backwards))}
    assert err["zoom"] < 0.7 * min(err["stayed"], err["backwards"]), err

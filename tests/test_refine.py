"""Encoder-side latent refinement: better pictures from the same decoder, ordinary files."""

from __future__ import annotations

import pytest
import torch

import vaecodec
from vaecodec import motion as mc
from vaecodec.codec import Codec
from vaecodec.models.base import Tiling
from vaecodec.models.tiny import Arch, TinyVAE
from vaecodec.quant import entropy_symbols
from vaecodec.refine import LatentRefiner, RefineSettings
from vaecodec.tiling import TileRunner, decoder_for, encoder_for

from conftest import PoolVAE, make_video, psnr, read_all
from test_codec import photo_clip  # noqa: F401  (a module fixture: 25 frames of a real photo panning)

STEP, DEADZONE = 0.25, 0.05


class SkewedPool(PoolVAE):
    """PoolVAE whose encoder is off (70 % of the right latents): there is something to find."""

    def encode(self, x):
        z, _ = super().encode(x)
        return 0.7 * z, None


def pool_runner(model: PoolVAE) -> TileRunner:
    return TileRunner(lambda x: model.encode(x.float() / 127.5 - 1)[0], model.decode, model.spatial, model.tiling)


def refine_stream(model: PoolVAE, video: torch.Tensor, steps: int, piece: int, motion_block: int | None = None,
                  rate_weight: float = 0.0, runner: TileRunner | None = None) -> torch.Tensor:
    """Encode uint8 ``video`` [3, T, H, W] with the model's encode stream, refine, concatenate."""
    runner = runner or pool_runner(model)
    enc = encoder_for(runner, model.temporal)
    ref = LatentRefiner(runner, model.temporal, torch.full((model.latent_channels,), STEP), DEADZONE,
                        RefineSettings(steps, rate_weight=rate_weight, lr=0.05),
                        (12, video.shape[3]), motion_block)  # the bottom rows are padding: not scored
    out = []
    for i in range(0, video.shape[1], piece):
        x = video[:, i : i + piece]
        ref.add_frames(x)
        for z in enc.push(x):
            out += list(ref.push(z))
    for z in enc.finish():
        out += list(ref.push(z))
    out += list(ref.finish())
    return torch.cat(out, dim=1)


def decoded(model: PoolVAE, z: torch.Tensor, runner: TileRunner | None = None) -> torch.Tensor:
    """What a decoder shows for latents [C, T, h, w]: the decode stream's frames."""
    dec = decoder_for(runner or pool_runner(model), model.temporal, z.shape[1], model.reach)
    with torch.no_grad():
        return torch.cat([x for _, x in dec.push(z)], dim=1)


@pytest.mark.parametrize("motion_block", [None, 2])
@pytest.mark.parametrize("frames,piece", [(1, 1), (6, 4), (23, 5), (33, 40)])
def test_refined_latents_are_whole_symbols_that_decode_closer(frames, piece, motion_block):
    """Every latent comes out exactly once, as a multiple of the step that the quantizer stores
    unchanged wherever a chunk starts (in place or along motion vectors), and the decoded
    picture (through the decoder's own tiles and cross-fades) is closer to the source than
    plain rounding of the same latents."""
    torch.manual_seed(3)
    model = SkewedPool(Tiling(latent_frames=3, overlap_latents=1, tile_px=64, overlap_px=8))
    blocks = (torch.rand(3, 1, 4, 5) * 200 + 20).expand(-1, frames, -1, -1)  # what pooling represents, plus noise
    video = (blocks.repeat_interleave(4, 2).repeat_interleave(4, 3) + torch.randn(3, frames, 16, 20) * 8).round().clamp(0, 255).to(torch.uint8)
    plain = refine_stream(model, video, 0, piece, motion_block)
    better = refine_stream(model, video, 30, piece, motion_block, rate_weight=0.05 if motion_block else 0.0)
    n_lat = 1 + -(-(frames - 1) // 4)
    assert plain.shape == better.shape == (3, n_lat, 4, 5)
    q = better / STEP
    torch.testing.assert_close(q, q.round(), atol=1e-5, rtol=0)
    for start in range(n_lat):  # a chunk may start anywhere: its symbols must survive requantization
        again = entropy_symbols(q[:, start:], DEADZONE) if motion_block is None else \
            torch.from_numpy(mc.quantize(q[:, start:], DEADZONE, motion_block)[0]).float()
        torch.testing.assert_close(again, q[:, start:].round(), atol=0, rtol=0)
    target = video.float()[:, :, :12] / 127.5 - 1  # the scored (visible) rows
    err = {name: (decoded(model, z)[:, :frames, :12] - target).square().mean().item()
           for name, z in (("plain", plain), ("better", better))}
    assert err["better"] < 0.9 * err["plain"], err


class SkewedTiny(TinyVAE):
    """A random embedded model whose encoder is off (70 % of its latents), streaming."""

    def encode_step(self, x, state):
        z, state = super().encode_step(x, state)
        return 0.7 * z, state


@pytest.mark.parametrize("frames,piece", [(1, 1), (9, 4), (23, 5), (21, 21), (50, 7), (13, 2)])
def test_streamed_refinement_decodes_closer_through_the_causal_decoder(frames, piece):
    """A streaming model's refiner decodes each tile from the state the final latents before
    it left, as the causal decoder will: every latent comes out once, as whole symbols, and
    the frames the causal decoder gives are closer to the source than plain rounding."""
    torch.manual_seed(5)
    model = SkewedTiny(Arch(latent=4)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    runner = TileRunner(None, None, 8, Tiling(latent_frames=2, overlap_latents=0, tile_px=64, overlap_px=0),
                        lambda x, st: model.encode_step(x.float() / 127.5 - 1, st), model.decode_step)
    with torch.no_grad():  # a picture this random decoder can make: its own decode of some latents
        n = 1 + 4 * -(-(frames - 1) // 4)
        z = TinyVAE.encode(model, torch.rand(1, 3, n, 16, 24) * 2 - 1)[0] + torch.randn(1, 4, 1 + (n - 1) // 4, 2, 3)
        video = (model.decode(z)[0, :, :frames] * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    plain = refine_stream(model, video, 0, piece, runner=runner)
    better = refine_stream(model, video, 30, piece, runner=runner)
    assert plain.shape == better.shape == (4, 1 + -(-(frames - 1) // 4), 2, 3)
    torch.testing.assert_close(better / STEP, (better / STEP).round(), atol=1e-5, rtol=0)
    target = video.float()[:, :, :12] / 127.5 - 1
    err = {name: (decoded(model, z, runner)[:, :frames, :12] - target).square().mean().item()
           for name, z in (("plain", plain), ("better", better))}
    assert err["better"] < 0.9 * err["plain"], err


@pytest.mark.parametrize("streamed", [False, True])
def test_gradient_through_spatial_tiles_is_the_true_one(streamed):
    """Refining a big frame backpropagates through checkpointed spatial tiles one at a time
    (and the tiny decoder's checkpointed per-frame stage); the gradient must be the true one,
    also when each spatial tile continues its own stream from a carried state. Checked by
    central differences along random directions (a float64 model; the runner's float32 output
    limits agreement to about 1 %, while a dropped tile or a wrong blend weight is off by far more)."""
    torch.manual_seed(4)
    model = TinyVAE().double().eval()  # eval: the decoder checkpoints its per-frame stage too
    for p in model.parameters():
        p.requires_grad_(False)
        p.add_(torch.randn_like(p) * 0.05)  # zero-initialised residuals would hide paths
    runner = TileRunner(lambda x: x, model.decode, 8, Tiling(latent_frames=3, overlap_latents=1, tile_px=32, overlap_px=16),
                        None, model.decode_step)
    z = torch.randn(1, 16, 2, 7, 9, dtype=torch.float64)
    states = None
    if streamed:  # the state three earlier latent frames leave in each spatial tile
        states = {}
        runner.decode(torch.randn(1, 16, 3, 7, 9, dtype=torch.float64), states=states)
        assert len(states) == 12  # 3 x 4 spatial tiles, each with its own carry
    target = torch.randn(1, 3, 8 if streamed else 5, 56, 72, dtype=torch.float64)

    def loss(v: torch.Tensor) -> torch.Tensor:
        return (runner.decode(v, grad=True, states=None if states is None else dict(states)) - target).square().mean()

    v = z.clone().requires_grad_(True)
    loss(v).backward()
    for _ in range(4):
        d = torch.randn_like(z)
        eps = 1e-4
        numeric = (loss(z + eps * d) - loss(z - eps * d)).item() / (2 * eps)
        assert abs((v.grad * d).sum().item() - numeric) < 0.03 * abs(numeric) + 1e-6


def test_refinement_finds_better_latents_for_the_embedded_model(photo_clip, tmp_path):  # noqa: F811
    """A real photo pan through the embedded model, with short temporal tiles so that tiles
    hand over to each other. Searching for distortion alone (rate weight 0) must give a clearly
    better picture than the encoder's own latents at a similar size; the default trade-off
    (rate weight 0.25) must not lose on both counts. The files are ordinary ones that any vaecodec
    decodes, and the header records how their symbols were chosen."""
    src = read_all(photo_clip)
    got = {}
    for name, refine in (("plain", 0), ("distortion", vaecodec.RefineSettings(12, rate_weight=0.0, lr=0.02)), ("default", 12)):
        r = Codec(device="cpu", quality=5, refine=refine, tile_frames=3, camera=False).encode(photo_clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            got[name] = (r.file_bytes, psnr(f.frames_tensor().numpy(), src), f.header["quantization"].get("refine"))
    assert got["plain"][2] is None
    assert got["distortion"][2] == {"steps": 12, "rate_weight": 0.0, "lr": 0.02}
    assert got["default"][2] == {"steps": 12, "rate_weight": 0.25, "lr": 0.01}
    (b0, p0, _), (b1, p1, _), (b2, p2, _) = got["plain"], got["distortion"], got["default"]
    assert p1 > p0 + 0.2 and b1 < 1.2 * b0, got
    assert p2 > p0 or b2 < b0, got


def test_refine_is_checked(tmp_path):
    from vaecodec.errors import UsageError

    with pytest.raises(UsageError, match="--refine"):
        Codec(device="cpu", refine=-1)
    with pytest.raises(UsageError, match="lr > 0"):
        Codec(device="cpu", refine=RefineSettings(5, lr=0.0))
    src = make_video(tmp_path / "c.mp4", size=(32, 32), frames=5)
    with pytest.raises(UsageError, match="--bits .* cannot be combined with --refine"):
        Codec(device="cpu", bits=8, refine=4).encode(src, tmp_path / "c.vlat")
    assert not (tmp_path / "c.vlat").exists()


def test_held_symbols_predict_a_frame_through_its_zoom_as_the_quantizer_does():
    """With a zoom before the first free latent frame, the refiner holds that frame's symbols
    against the frame before resampled, exactly as the quantizer will (same symbols and
    vectors as ``motion.quantize`` given the zoom at that frame), not in place."""
    from vaecodec.refine import held_symbols

    g = torch.Generator().manual_seed(5)
    zoom = (54613, 120000, 90000)
    prev = torch.randn(4, 12, 16, generator=g) * 6
    u = (mc.resample_float(prev.double(), zoom).float() + 0.3 * torch.randn(4, 12, 16, generator=g))[:, None]
    u = torch.cat([u, u + 0.2 * torch.randn(4, 1, 12, 16, generator=g)], dim=1)  # [C, 2, h, w]
    q, mv = held_symbols(u, prev.round(), 0.3, 4, zooms={0: zoom})
    want, want_mv = mc.quantize(torch.cat([prev.round()[:, None], u], 1), 0.3, 4, zooms={1: zoom})
    assert torch.equal(q, torch.from_numpy(want[:, 1:]).float()) and (mv == want_mv[1:]).all()
    in_place, _ = held_symbols(u, prev.round(), 0.3, 4)
    assert not torch.equal(in_place, q)

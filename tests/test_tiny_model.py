"""The embedded tiny VAE: contract shapes, causality, loading, and real compression quality."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from vaecodec.errors import ModelError
from vaecodec.models.base import VideoVAE
from vaecodec.models.tiny import WEIGHTS, Arch, TinyVAE, load, model_card

CPU = torch.device("cpu")
ARCHS = [Arch(), Arch(latent=24, refine=True, blocks8=1, enc_blocks=4)]  # v1's layout and the grown options


@pytest.fixture(scope="module", params=ARCHS, ids=lambda a: f"latent{a.latent}{'-refine' if a.refine else ''}")
def random_model(request) -> TinyVAE:
    torch.manual_seed(0)
    m = TinyVAE(request.param).eval()
    if m.decoder.refine is not None:  # new parts start at zero by design; randomise them
        torch.nn.init.normal_(m.decoder.refine.out.weight, std=0.1)
    for blk in m.decoder.frame_blocks:
        torch.nn.init.normal_(blk.b.weight, std=0.05)
    return m


@pytest.fixture(scope="module")
def shipped() -> TinyVAE:
    return load(None, CPU, torch.float32)


def _clip(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.inference_mode()
def test_contract_shapes(random_model):
    m = random_model
    assert isinstance(m, VideoVAE) and m.kind == "tiny"
    c = m.arch.latent
    assert (m.spatial, m.temporal, m.latent_channels) == (8, 4, c)
    for t in (1, 5, 9):
        x = _clip(t, 16, 24)
        mean, logvar = m.encode(x)
        assert mean.shape == logvar.shape == (1, c, m.latents_for_frames(t), 2, 3)
        y = m.decode(mean)
        assert y.shape == (1, 3, m.frames_for_latents(mean.shape[2]), 16, 24) == x.shape
    with pytest.raises(ValueError):
        m.encode(_clip(4, 16, 16))


@torch.inference_mode()
def test_encoder_and_decoder_are_causal(random_model):
    """Latent j sees only frames <= 4j; decoded frames <= 4j see only latents <= j."""
    m = random_model
    x = _clip(9, 16, 16)
    x2 = x.clone()
    x2[:, :, 5:] = -x2[:, :, 5:]  # change frames 5..8 = latent 2 only
    a, _ = m.encode(x)
    b, _ = m.encode(x2)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2])
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])
    z2 = a.clone()
    z2[:, :, 2] += 1.0
    ya, yb = m.decode(a), m.decode(z2)
    torch.testing.assert_close(ya[:, :, :5], yb[:, :, :5])
    assert not torch.allclose(ya[:, :, 5:], yb[:, :, 5:])


@torch.inference_mode()
def test_calls_are_self_contained(random_model):
    """No hidden state: encoding the same clip after another one gives identical latents."""
    m = random_model
    x = _clip(5, 16, 16, seed=1)
    first, _ = m.encode(x)
    m.encode(_clip(9, 16, 16, seed=2))
    again, _ = m.encode(x)
    torch.testing.assert_close(first, again, rtol=0, atol=0)


@torch.inference_mode()
def test_streamed_calls_equal_one_whole_clip_call(random_model):
    """The carried state is all a call needs: a clip encoded and decoded in any split into
    calls equals one whole-clip call, and a decode started cold at latent s is exact from
    latent s + reach on and not before (the reach is the decoder's real memory, no shorter)."""
    m = random_model
    x = _clip(1 + 4 * 9, 16, 24, seed=3)
    mean = m.encode(x)[0]
    full = m.decode(mean)
    for split in ([1, 4 * 9], [1 + 4 * 3, 4 * 2, 4 * 4], [1 + 4 * 9]):
        state, parts, pos = None, [], 0
        for n in split:
            z, state = m.encode_step(x[:, :, pos : pos + n], state)
            parts.append(z)
            pos += n
        torch.testing.assert_close(torch.cat(parts, 2), mean, rtol=0, atol=1e-5)
    for cuts in ([0, 1, 10], [0, 3, 4, 10], [0, 10]):
        state, parts = None, []
        for a, b in zip(cuts, cuts[1:]):
            y, state = m.decode_step(mean[:, :, a:b], state)
            parts.append(y)
        torch.testing.assert_close(torch.cat(parts, 2), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="4k frames"):
        m.encode_step(x[:, :, 1:4], m.encode_step(x[:, :, :1], None)[1])


@torch.inference_mode()
def test_a_cold_decode_is_exact_after_the_reach_and_not_before(shipped):
    """A decode started cold at latent s (a seek) is exact from latent s + reach on, and the
    reach is the decoder's real memory, no longer than it needs to be (the shipped weights:
    a random model's far memory is too faint to show)."""
    mean = shipped.encode(_clip(1 + 4 * 9, 32, 32, seed=5))[0]
    full = shipped.decode(mean)
    s = 2
    cold, _ = shipped.decode_step(mean[:, :, s:], None)  # latent s gives frame 4s, latent j > s frames 4j-3 .. 4j
    exact = s + shipped.reach
    torch.testing.assert_close(cold[:, :, 4 * exact - 3 - 4 * s :], full[:, :, 4 * exact - 3 :], rtol=0, atol=1e-5)
    before = 4 * (exact - 1) - 3  # the first frame of the latent before: still tied to the cold start
    assert (cold[:, :, before - 4 * s] - full[:, :, before]).abs().max() > 1e-3


def test_load_shipped_weights(shipped):
    assert WEIGHTS.stat().st_size < 10 * 2**20
    assert shipped.model_id.startswith("vaecodec-tiny-")
    assert shipped.weights_sha256 == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert not shipped.training
    card = model_card(shipped.metadata)
    assert card["model_id"] == shipped.model_id and card["train_steps"] > 0
    coder = shipped.entropy_coder
    assert coder is not None and coder.default_quality in coder.qualities
    assert coder.tables == card.get("entropy_tables", 1)
    steps = [float(coder.step(q)[0]) for q in coder.qualities]
    assert steps == sorted(steps, reverse=True)  # higher quality = finer step


def test_load_errors(tmp_path):
    with pytest.raises(ModelError):
        load(tmp_path / "missing.safetensors", CPU, torch.float32)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError):
        load(bad, CPU, torch.float32)


def test_architecture_travels_in_the_weights_file(tmp_path):
    """A file written with an Arch loads as that Arch (v1 files, without the key, as v1)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    m = TinyVAE(Arch(latent=24, refine=True, blocks8=1)).eval()
    path = tmp_path / "v2.safetensors"
    state = {f"model.{k}": v.contiguous() for k, v in m.state_dict().items()}
    save_file(state, str(path), metadata={"model_id": "t-v2", "arch": m.arch.to_meta()})
    loaded = load(path, CPU, torch.float32)
    assert loaded.arch == m.arch and loaded.latent_channels == 24
    x = _clip(5, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.decode(loaded.encode(x)[0]), m.decode(m.encode(x)[0]))
    save_file(state, str(path), metadata={"model_id": "t-v2"})  # arch key missing: read as v1
    with pytest.raises(ModelError, match="not a vaecodec tiny model"):
        load(path, CPU, torch.float32)
    for arch in ('{"latent": 24, "wings": 2}', '{"latent": -3}', '{"refine": "yes"}', "[1, 2]", "{"):
        save_file(state, str(path), metadata={"arch": arch})  # a newer vaecodec's, or damaged
        with pytest.raises(ModelError, match="unknown tiny architecture"):
            load(path, CPU, torch.float32)


@torch.inference_mode()
def test_warm_start_keeps_the_function(tmp_path):
    """Growing the shipped model (more latent channels, refine branch, decoder and encoder
    blocks) starts as the same codec,
    and the new latent channels carry signal (else training could never switch them on)."""
    from vaecodec.train.rate import RatePrior
    from vaecodec.train.train import warm_start

    small = load(None, CPU, torch.float32)
    big = TinyVAE(Arch(latent=small.arch.latent + 8, refine=True, blocks8=small.arch.blocks8 + 1,
                       enc_blocks=small.arch.enc_blocks + 2)).eval()
    warm_start(big, RatePrior(big.latent_channels), WEIGHTS)
    x = _clip(9, 32, 32, seed=3)
    m_small, m_big = small.encode(x)[0], big.encode(x)[0]
    c = small.arch.latent
    torch.testing.assert_close(m_big[:, :c], m_small)
    assert m_big[:, c:].std() > 0.1
    torch.testing.assert_close(big.decode(m_big), small.decode(m_small), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="latent channels"):
        warm_start(TinyVAE(Arch(latent=c - 8)), RatePrior(c - 8), WEIGHTS)


def _heldout_clip() -> torch.Tensor:
    """A slow pan over a held-out photo (scikit-image's chelsea, never trained on): [1,3,9,128,160]."""
    import skimage.data

    img = torch.from_numpy(skimage.data.chelsea().copy()).permute(2, 0, 1).float() / 127.5 - 1
    frames = [img[:, 60 + i: 188 + i, 100 + 2 * i: 260 + 2 * i] for i in range(9)]
    return torch.stack(frames, 1)[None]


@torch.inference_mode()
def test_shipped_model_compresses_heldout_video(shipped):
    """Full path (quantize, entropy-code, decode) on a held-out photo at three qualities:
    lossless coding, usable PSNR at the default, and the quality knob trading rate for PSNR."""
    x = _heldout_clip()
    coder = shipped.entropy_coder
    mean, _ = shipped.encode(x)
    result = {}
    for quality in (coder.qualities[0], coder.default_quality, coder.qualities[-1]):
        step = coder.step(quality).view(1, -1, 1, 1, 1)
        q = torch.round(mean / step)[0].numpy().astype(np.int32)
        data = coder.encode(q, quality)
        q2 = coder.decode(data, q.shape, quality)
        np.testing.assert_array_equal(q, q2)
        y = shipped.decode(torch.from_numpy(q2)[None].float() * step).clamp(-1, 1)
        mse = torch.mean(((y - x) / 2) ** 2).item()
        result[quality] = (10 * np.log10(1 / mse), len(data) * 8 / (9 * 128 * 160))
    psnr, bpp = result[coder.default_quality]
    assert psnr > 24.5 and bpp < 0.12, result  # v6: 26.2 dB at 0.059 bpp (v5: 26.1 at 0.058)
    (lo_psnr, lo_bpp), (hi_psnr, hi_bpp) = result[coder.qualities[0]], result[coder.qualities[-1]]
    assert hi_psnr > lo_psnr + 3 and hi_bpp > 5 * lo_bpp and lo_bpp < 0.03, result

def _naive_forward(m: TinyVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's definition written plainly (concatenations, pixel_(un)shuffle, replicate
    first): the optimised layout tricks in tiny.py must compute exactly this."""
    import torch.nn.functional as F

    def mem(blk, f, t):  # conv over [x_t, x_{t-1}] with zeros before the first frame
        f5 = f.reshape(-1, t, *f.shape[1:])
        prev = torch.cat((torch.zeros_like(f5[:, :1]), f5[:, :-1]), 1).reshape(f.shape)
        return f + blk.b(F.relu(blk.a(torch.cat((f, prev), 1))))

    e, d, c = m.encoder, m.decoder, m.arch.latent
    b, _, t, h, w = x.shape
    x = torch.cat((x[:, :, :1].repeat(1, 1, 3, 1, 1), x), 2)
    tp = t + 3
    f = F.pixel_unshuffle(x.transpose(1, 2).reshape(b * tp, 3, h, w), 4)
    f = F.relu(e.down(F.relu(e.stem(f))))
    f = F.relu(mem(e.mem, f, tp))
    f = F.relu(e.pool(f.reshape(b * tp // 4, -1, h // 8, w // 8)))
    for blk in e.blocks:
        f = F.relu(mem(blk, f, tp // 4))
    f = e.head(f).reshape(b, tp // 4, -1, h // 8, w // 8).transpose(1, 2)
    mean, logvar = f[:, :c], f[:, c:].clamp(-30, 20)
    g = F.relu(d.inp(mean.transpose(1, 2).reshape(b * tp // 4, c, h // 8, w // 8)))
    for blk in d.blocks:
        g = F.relu(mem(blk, g, tp // 4))
    g = F.relu(d.grow(g).reshape(b * tp, -1, h // 8, w // 8))
    g = F.relu(mem(d.mem, g, tp))
    g = g.reshape(b, tp, *g.shape[1:])[:, 3:].reshape(b * t, *g.shape[1:])
    for blk in d.frame_blocks:
        g = F.relu(g + blk.b(F.relu(blk.a(g))))
    g = F.relu(d.res(F.relu(F.pixel_shuffle(d.up(g), 2))))
    out = F.pixel_shuffle(d.out(g), 4)
    if d.refine is not None:  # 1/4 -> 1/2 resolution, two 3x3 convs, 1/2 -> full
        r = d.refine
        u = F.relu(r.mid(F.relu(F.pixel_shuffle(r.up(g), 2))))
        out = out + F.pixel_shuffle(r.out(u), 2)
    g = out
    y = g.reshape(b, t, 3, h, w).transpose(1, 2)
    return (mean, logvar), y


@pytest.mark.parametrize("channels_last", [False, True])
@torch.inference_mode()
def test_fast_layout_equals_plain_definition(random_model, channels_last):
    m = random_model
    if channels_last:
        m = TinyVAE(random_model.arch).eval()
        m.load_state_dict(random_model.state_dict())
        m = m.to(memory_format=torch.channels_last)
    x = torch.cat((_clip(9, 16, 24, seed=5), _clip(9, 16, 24, seed=6)))  # batch of 2
    (mean_ref, logvar_ref), y_ref = _naive_forward(m, x)
    mean, logvar = m.encode(x)
    torch.testing.assert_close(mean, mean_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logvar, logvar_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m.decode(mean_ref), y_ref, rtol=1e-4, atol=1e-4)


@torch.inference_mode()
def test_frame_chunks_do_not_change_the_result(random_model, monkeypatch):
    """CPU runs the per-frame stages a few frames at a time; the split must not show."""
    from vaecodec.models import tiny

    x = torch.cat((_clip(9, 16, 24, seed=7), _clip(9, 16, 24, seed=8)))  # batch of 2
    (mean, logvar), y = random_model.encode(x), random_model.decode(random_model.encode(x)[0])
    assert tiny.frames_per_chunk(16 * 24, CPU) >= 9  # so the call above ran in one chunk
    monkeypatch.setattr(tiny, "CPU_CHUNK_PIXELS", 2 * 16 * 24)  # two frames per chunk
    assert tiny.frames_per_chunk(16 * 24, CPU) == 2
    mean2, logvar2 = random_model.encode(x)
    torch.testing.assert_close(mean2, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logvar2, logvar, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(random_model.decode(mean), y, rtol=1e-5, atol=1e-5)

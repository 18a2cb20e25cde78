"""LTX-2 VAE: our implementation vs ltx-core (the reference), on small random-initialised configs.

The reference model is built from a small config that keeps the released block types, patch
size 4 and every compression stage, saved in the real checkpoint layout (``vae.`` prefixes,
config JSON in the safetensors metadata, extra statistics keys), and loaded through OUR loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vaecodec.errors import ModelError, UsageError
from vaecodec.models import ltx2
from vaecodec.models.ltx2 import LTX2Decoder, LTX2Encoder

vv = pytest.importorskip("ltx_core.model.video_vae")
from ltx_core.model.video_vae.model_configurator import (  # noqa: E402
    VideoDecoderConfigurator,
    VideoEncoderConfigurator,
)

TOL = 1e-4
CPU = torch.device("cpu")


def small_config(timestep: bool) -> dict:
    """The released LTX-2 structure (block types, patch 4, all stages) at tiny width and depth."""
    return {
        **ltx2.RELEASED_CONFIG,
        "latent_channels": 8,
        "decoder_base_channels": 8,
        "timestep_conditioning": timestep,
        "encoder_blocks": [
            ["res_x", {"num_layers": 1}],
            ["compress_space_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}],
            ["compress_time_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}],
            ["compress_all_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}],
            ["compress_all_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}],
        ],
        "decoder_blocks": [
            ["res_x", {"num_layers": 1, "inject_noise": False}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1, "inject_noise": True}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1, "inject_noise": False}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1, "inject_noise": False}],
        ],
    }


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter/buffer that default init leaves at 0/1/empty a random value.

    Zero scale-shift tables or noise scales would make the test blind to those code paths.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "timestep_scale_multiplier":
                t.fill_(1000.0)
            elif leaf == "std-of-means":
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif "weight" in leaf and t.dim() >= 2:
                continue  # keep kaiming init of convs / linears
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if "norm3.weight" in name else 0.0))


def build_reference(cfg: dict, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    enc = VideoEncoderConfigurator.from_config({"vae": cfg}).eval()
    dec = VideoDecoderConfigurator.from_config({"vae": cfg}).eval()
    randomize(enc, seed)
    randomize(dec, seed + 1)
    dec.per_channel_statistics.load_state_dict(enc.per_channel_statistics.state_dict())
    return enc, dec


def save_checkpoint(path: Path, enc, dec, cfg: dict | None, prefix: str = "vae.") -> None:
    """Write the reference weights in the released LTX-2 checkpoint layout."""
    sd = {}
    for part, mod in (("encoder.", enc), ("decoder.", dec)):
        for k, v in mod.state_dict().items():
            if not k.startswith("per_channel_statistics."):
                sd[prefix + part + k] = v.contiguous()
    for k, v in enc.per_channel_statistics.state_dict().items():
        sd[prefix + "per_channel_statistics." + k] = v.contiguous()
    c = sd[prefix + "per_channel_statistics.mean-of-means"].shape[0]
    sd[prefix + "per_channel_statistics.channel"] = torch.arange(c, dtype=torch.float32)
    sd[prefix + "per_channel_statistics.mean-of-stds"] = torch.ones(c)
    if prefix:
        sd["model.diffusion_model.dummy.weight"] = torch.zeros(2, 2)  # the full checkpoint holds other models
    meta = {"config": json.dumps({"vae": cfg, "transformer": {"num_layers": 48}})} if cfg is not None else None
    save_file(sd, str(path), metadata=meta)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "timestep"])
def pair(request, tmp_path_factory):
    cfg = small_config(request.param)
    enc, dec = build_reference(cfg, seed=3)
    path = tmp_path_factory.mktemp("ltx2") / "ltx-2-small.safetensors"
    save_checkpoint(path, enc, dec, cfg)
    ours = ltx2.load(path, CPU, torch.float32)
    return cfg, enc, dec, ours, path


def video(frames: int = 9, h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, h, w, generator=g) * 2 - 1


def test_encode_matches_reference(pair):
    _, enc, _, ours, _ = pair
    x = video()
    with torch.no_grad():
        ref = enc(x)
    mean, logvar = ours.encode(x)
    assert mean.shape == (1, 8, 2, 2, 3)
    assert logvar.shape == mean.shape
    assert (mean - ref).abs().max().item() <= TOL


def test_decode_matches_reference(pair):
    cfg, enc, dec, ours, _ = pair
    z = torch.randn(1, 8, 2, 2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = dec(z, generator=torch.Generator().manual_seed(7))
    out = ours.decode(z, generator=torch.Generator().manual_seed(7))
    assert out.shape == (1, 3, 9, 64, 96)
    assert (out - ref).abs().max().item() <= TOL
    # the default decode (no generator) is deterministic
    assert torch.equal(ours.decode(z), ours.decode(z))
    if cfg["timestep_conditioning"]:
        # noise-free decode == the reference fed the noise-free mix (1 - s) * z with its noise scale off
        dec.decode_noise_scale = 0.0
        for blk in dec.up_blocks:
            for rb in getattr(blk, "res_blocks", []):
                rb.inject_noise = False
        try:
            with torch.no_grad():
                ref0 = dec((1 - ltx2.LTX2VAE.decode_noise_scale) * z)
        finally:
            dec.decode_noise_scale = 0.025
            dec.up_blocks[2].res_blocks[0].inject_noise = True
        assert (ours.decode(z) - ref0).abs().max().item() <= TOL


def test_model_metadata(pair):
    _, _, _, ours, path = pair
    assert ours.kind == "ltx2" and ours.spatial == 32 and ours.temporal == 8
    assert ours.latent_channels == 8
    assert ours.model_id.startswith("ltx2-video-vae-")
    import hashlib

    assert ours.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not ours.training


def test_bare_keys_without_metadata_and_bf16(tmp_path):
    """A VAE-only file (bare keys) without metadata falls back to the released structure."""
    cfg = small_config(False)
    enc, dec = build_reference(cfg, seed=5)
    p = tmp_path / "bare.safetensors"
    save_checkpoint(p, enc, dec, None, prefix="")
    # without metadata the released (full-size) config is assumed, which this small file does not match
    with pytest.raises(ModelError, match=r"missing encoder\.down_blocks\.0\.res_blocks\.1\."):
        ltx2.load(p, CPU, torch.float32)
    p2 = tmp_path / "bare_meta.safetensors"
    save_checkpoint(p2, enc, dec, cfg, prefix="")
    m = ltx2.load(p2, CPU, torch.bfloat16)
    assert m.encoder.conv_in.conv.weight.dtype == torch.bfloat16
    assert m.per_channel_statistics.get_buffer("std-of-means").dtype == torch.float32
    x = video(seed=2)
    with torch.no_grad():
        ref = enc(x)
    mean, _ = m.encode(x)
    assert mean.dtype == torch.float32
    # bf16 weights: close to the fp32 reference, not equal
    assert (mean - ref).abs().max().item() < 0.25


def test_bad_checkpoints(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(p))
    with pytest.raises(ModelError, match="not an LTX-2 VAE checkpoint: missing encoder.conv_in.conv.weight"):
        ltx2.load(p, CPU, torch.float32)
    with pytest.raises(ModelError, match="not found"):
        ltx2.load(tmp_path / "nope.safetensors", CPU, torch.float32)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        ltx2.load(junk, CPU, torch.float32)
    with pytest.raises(UsageError, match="float32 or bfloat16, not float16"):
        ltx2.load(p, CPU, torch.float16)
    # a key missing from an otherwise valid checkpoint is named
    cfg = small_config(False)
    enc, dec = build_reference(cfg)
    full = tmp_path / "full.safetensors"
    save_checkpoint(full, enc, dec, cfg)
    from safetensors.torch import load_file

    sd = load_file(str(full))
    del sd["vae.decoder.conv_out.conv.bias"]
    cut = tmp_path / "cut.safetensors"
    save_file(sd, str(cut), metadata={"config": json.dumps({"vae": cfg})})
    with pytest.raises(ModelError, match="missing decoder.conv_out.conv.bias"):
        ltx2.load(cut, CPU, torch.float32)


OTHER_BLOCKS = {
    **ltx2.RELEASED_CONFIG,
    "latent_channels": 4,
    "decoder_base_channels": 4,
    "timestep_conditioning": True,
    "latent_log_var": "per_channel",
    "spatial_padding_mode": "zeros",
    "encoder_blocks": [
        ["res_x_y", {"multiplier": 2}],
        ["compress_time", 1],
        ["compress_space", 1],
        ["compress_all", 1],
        ["compress_all_x_y", {"multiplier": 2}],
        ["res_x", 1],
    ],
    "decoder_blocks": [
        ["res_x_y", {"multiplier": 2}],
        ["compress_time", {"multiplier": 2}],
        ["compress_space", {"multiplier": 1}],
        ["compress_all", {"multiplier": 2, "residual": False}],
        ["res_x", {"num_layers": 2, "inject_noise": True}],
    ],
}


def test_other_block_types_match_reference():
    """Blocks the released config does not use (ltx-core still supports them) agree too."""
    enc_ref, dec_ref = build_reference(OTHER_BLOCKS, seed=11)
    enc, dec = LTX2Encoder({**OTHER_BLOCKS}), LTX2Decoder({**OTHER_BLOCKS})
    enc.load_state_dict({k: v for k, v in enc_ref.state_dict().items() if not k.startswith("per_channel_statistics")})
    dec.load_state_dict({k: v for k, v in dec_ref.state_dict().items() if not k.startswith("per_channel_statistics")})
    x = video(frames=9, h=32, w=32, seed=4)
    with torch.no_grad():
        ref_mean = enc_ref(x)
        mean, logvar = enc(x)
        mu = enc_ref.per_channel_statistics.get_buffer("mean-of-means").view(1, -1, 1, 1, 1)
        sd = enc_ref.per_channel_statistics.get_buffer("std-of-means").view(1, -1, 1, 1, 1)
        assert ((mean - mu) / sd - ref_mean).abs().max().item() <= TOL
        assert logvar.shape == mean.shape
        z = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(2))
        t = torch.tensor([0.05])
        ref_out = dec_ref(z, t, torch.Generator().manual_seed(9))
        # the reference mixes the noise in before un-normalising; do the same by hand
        g = torch.Generator().manual_seed(9)
        noise = torch.randn(z.shape, generator=g) * 0.025
        zr = dec_ref.per_channel_statistics.un_normalize(noise + 0.975 * z)
        out = dec(zr, t, g)
        assert out.shape == ref_out.shape
        assert (out - ref_out).abs().max().item() <= TOL


def test_full_size_parameter_count_matches_reference():
    """The released config builds the same parameter set as ltx-core (counted on the meta device)."""
    with torch.device("meta"):
        ours = ltx2.LTX2VAE(ltx2.RELEASED_CONFIG)
        enc = VideoEncoderConfigurator.from_config({"vae": ltx2.RELEASED_CONFIG})
        dec = VideoDecoderConfigurator.from_config({"vae": ltx2.RELEASED_CONFIG})
    ref_shapes = {f"encoder.{k}": tuple(v.shape) for k, v in enc.state_dict().items()}
    ref_shapes |= {f"decoder.{k}": tuple(v.shape) for k, v in dec.state_dict().items()}
    # ltx-core keeps a copy of the statistics in each half; the checkpoint (and we) hold one
    ref_shapes = {k.replace("encoder.per_channel", "per_channel"): v for k, v in ref_shapes.items()}
    ref_shapes = {k: v for k, v in ref_shapes.items() if not k.startswith("decoder.per_channel_statistics")}
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_shapes == ref_shapes
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in dec.parameters())
    assert n_ours == n_ref
    assert n_ours > 100_000_000  # sanity: a real, large model


def test_model_id_names_the_architecture_not_its_spelling():
    """Metadata that spells the released network differently still gets the released id."""
    import copy

    cfg = copy.deepcopy(ltx2.RELEASED_CONFIG)
    for _, params in cfg["decoder_blocks"]:
        params.pop("inject_noise", None)
    cfg.pop("encoder_spatial_padding_mode")
    cfg["model_version"] = "2.0"
    assert ltx2._architecture(cfg) == ltx2._architecture(ltx2.RELEASED_CONFIG)
    cfg["timestep_conditioning"] = True
    assert ltx2._architecture(cfg) != ltx2._architecture(ltx2.RELEASED_CONFIG)


def test_codec_refuses_a_picture_below_two_latent_cells(pair, tmp_path):
    """LTX-2's decoder pads by reflection, which needs 2 latent rows and columns: a 32 px
    picture (one 32x32 cell) is refused when encoding, with nothing written, rather than
    written into a file no decoder can read; 64 px round-trips at its size."""
    from conftest import make_video

    import vaecodec
    from vaecodec.codec import Codec

    path = pair[4]
    codec = Codec(f"ltx2:{path}", device="cpu", bits=8)
    with pytest.raises(UsageError, match=r"1x1 latent cells; .* at least 2x2 \(64 px: raise --scale\)"):
        codec.encode(make_video(tmp_path / "s.mp4", size=(32, 32), frames=9), tmp_path / "s.vlat")
    assert list(tmp_path.glob("*.vlat")) == [] and list(tmp_path.glob(".*.part")) == []
    codec.encode(make_video(tmp_path / "m.mp4", size=(64, 64), frames=9), tmp_path / "m.vlat")
    with vaecodec.open(tmp_path / "m.vlat", model_path=path, device="cpu") as f:
        assert f.frames_tensor().shape == (9, 64, 64, 3)


@pytest.mark.parametrize("option", [{"quality": 5}, {"refine": 2}, {"deadzone": 0.1}, {"motion": False}])
def test_entropy_options_are_refused_before_the_weights_load(tmp_path, option):
    """LTX models have no entropy coder, which their kind says: an option only entropy coding
    takes is refused at once, not after loading (and hashing) gigabytes of weights; here the
    weights are not even valid, so a load would fail first with another error."""
    from conftest import make_video

    from vaecodec.codec import Codec

    bad = tmp_path / "ltx2-x.safetensors"
    bad.write_bytes(b"not a checkpoint")
    src = make_video(tmp_path / "a.mp4", size=(64, 64), frames=9)
    with pytest.raises(UsageError, match="needs a model with an entropy coder; this one takes --bits"):
        Codec(f"ltx2:{bad}", device="cpu", **option).encode(src, tmp_path / "o.vlat")

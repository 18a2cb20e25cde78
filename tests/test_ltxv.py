"""LTX-Video 0.9.x VAE: our implementation vs diffusers' AutoencoderKLLTXVideo (the reference).

Each released generation (0.9.0, 0.9.1, 0.9.5+) is built small with random weights, saved with
``save_pretrained`` (config.json + diffusion_pytorch_model.safetensors, the real layout) and loaded
through OUR loader.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from vaecodec.errors import ModelError, UsageError
from vaecodec.models import ltxv

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTXVideo  # noqa: E402

TOL = 1e-4
CPU = torch.device("cpu")

SMALL = {
    "0.9.0": {
        "latent_channels": 8,
        "block_out_channels": (8, 16, 32, 32),
        "decoder_block_out_channels": (8, 16, 32, 32),
        "layers_per_block": (1, 1, 1, 1, 1),
        "decoder_layers_per_block": (1, 1, 1, 1, 1),
        "scaling_factor": 1.5,
    },
    "0.9.1": {
        "latent_channels": 8,
        "block_out_channels": (8, 16, 32, 32),
        "decoder_block_out_channels": (16, 32, 64),
        "layers_per_block": (1, 1, 1, 1, 1),
        "decoder_layers_per_block": (1, 1, 1, 1),
        "decoder_spatio_temporal_scaling": (True, True, True),
        "decoder_inject_noise": (True, True, True, False),
        "upsample_residual": (True, True, True),
        "upsample_factor": (2, 2, 2),
        "timestep_conditioning": True,
    },
    "0.9.5": {
        "latent_channels": 8,
        "block_out_channels": (8, 16, 32, 64, 128),
        "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
        "decoder_block_out_channels": (16, 32, 64),
        "layers_per_block": (1, 1, 1, 1, 1),
        "decoder_layers_per_block": (1, 1, 1, 1),
        "spatio_temporal_scaling": (True, True, True, True),
        "decoder_spatio_temporal_scaling": (True, True, True),
        "decoder_inject_noise": (False, False, False, False),
        "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        "upsample_residual": (True, True, True),
        "upsample_factor": (2, 2, 2),
        "timestep_conditioning": True,
        "spatial_compression_ratio": 32,
        "temporal_compression_ratio": 8,
    },
}


def randomize(vae: torch.nn.Module, seed: int) -> None:
    """Random values for everything default init leaves at 0/1 (noise scales, norms, statistics)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in vae.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "latents_std":
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif leaf == "timestep_scale_multiplier" or ("weight" in leaf and t.dim() >= 2):
                continue
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if "norm3.weight" in name else 0.0))


@pytest.fixture(scope="module", params=list(SMALL))
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    ref = AutoencoderKLLTXVideo(**SMALL[request.param]).eval()
    randomize(ref, 1)
    folder = tmp_path_factory.mktemp("ltxv") / "vae"
    ref.save_pretrained(folder, safe_serialization=True)
    return request.param, ref, ltxv.load(folder, CPU, torch.float32), folder


def video(frames: int = 9, h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, h, w, generator=g) * 2 - 1


def _norm(ref) -> tuple[torch.Tensor, torch.Tensor, float]:
    v = (1, -1, 1, 1, 1)
    return ref.latents_mean.view(v), ref.latents_std.view(v), ref.config.scaling_factor


def test_encode_matches_reference(pair):
    _, ref, ours, _ = pair
    x = video()
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
    mu, sd, sf = _norm(ref)
    mean, logvar = ours.encode(x)
    assert mean.shape == (1, 8, 2, 2, 3)
    assert (mean - (dist.mean - mu) * sf / sd).abs().max().item() <= TOL
    assert (logvar - (dist.logvar + 2 * torch.log(sf / sd))).abs().max().item() <= TOL


def test_decode_matches_reference(pair):
    version, ref, ours, _ = pair
    z = torch.randn(1, 8, 2, 2, 3, generator=torch.Generator().manual_seed(3))
    mu, sd, sf = _norm(ref)
    raw = z * sd / sf + mu
    # the LTX pipeline's decode step: noise mixed into the raw latents, then decode at a timestep
    torch.manual_seed(5)
    with torch.no_grad():
        if ref.config.timestep_conditioning:
            mixed = (1 - ours.decode_noise_scale) * raw + ours.decode_noise_scale * torch.randn(z.shape)
            expect = ref.decode(mixed, torch.tensor([ours.decode_timestep])).sample
        else:
            expect = ref.decode(raw).sample
    torch.manual_seed(5)
    out = ours.decode(z, generator=torch.default_generator)
    assert out.shape == (1, 3, 9, 64, 96)
    assert (out - expect).abs().max().item() <= TOL
    assert torch.equal(ours.decode(z), ours.decode(z))  # no generator: deterministic


def test_model_identity(pair):
    version, _, ours, folder = pair
    assert ours.kind == "ltxv" and (ours.spatial, ours.temporal) == (32, 8)
    assert ours.latent_channels == 8
    assert ours.model_id.startswith("ltxv-vae-")  # small widths are not a released architecture
    weights = folder / "diffusion_pytorch_model.safetensors"
    assert ours.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    # the weights file itself and the parent of a vae/ folder are accepted too
    assert ltxv.load(weights, CPU, torch.float32).weights_sha256 == ours.weights_sha256
    assert ltxv.load(folder.parent, CPU, torch.float32).weights_sha256 == ours.weights_sha256


@pytest.mark.parametrize("version", list(ltxv.KNOWN))
def test_released_architectures_match_reference(version):
    """Full-size released configs build exactly diffusers' parameter set (on the meta device)."""
    cfg = {**ltxv.DEFAULTS, **ltxv.KNOWN[version]}
    with torch.device("meta"):
        ours = ltxv.LTXVideoVAE(cfg)
        ref = AutoencoderKLLTXVideo(**cfg)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ref.state_dict().items()
    }
    assert ltxv._model_id(ours.config) == f"ltxv-{version}-vae"


def test_bad_inputs(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        ltxv.load(tmp_path, CPU, torch.float32)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ModelError, match="no diffusion_pytorch_model.safetensors"):
        ltxv.load(tmp_path, CPU, torch.float32)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelError, match="_class_name is 'AutoencoderKL'"):
        ltxv.load(tmp_path, CPU, torch.float32)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTXVideo"}))
    with pytest.raises(ModelError, match="missing encoder.conv_in.conv.weight"):
        ltxv.load(tmp_path, CPU, torch.float32)
    with pytest.raises(UsageError, match="float32 or bfloat16, not float16"):
        ltxv.load(tmp_path, CPU, torch.float16)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        ltxv.load(tmp_path, CPU, torch.float32)


def test_config_weights_mismatch(pair, tmp_path):
    """A config.json that does not describe the weights is a ModelError, not a torch traceback."""
    _, ref, _, folder = pair
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layers_per_block"] = [2, 1, 1, 1, 1]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(
        (folder / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    with pytest.raises(ModelError, match="missing encoder.down_blocks.0.resnets.1"):
        ltxv.load(tmp_path, CPU, torch.float32)

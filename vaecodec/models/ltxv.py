"""LTX-Video 0.9.x VAE in the diffusers layout (``AutoencoderKLLTXVideo``), our implementation.

A diffusers model folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors``; one
config schema covers three generations, all 128 latent channels with 32x spatial and 8x temporal
compression:
  0.9.0  conv downsampling, plain decoder;
  0.9.1  timestep-conditioned decoder with noise injection and residual upsampling;
  0.9.5+ space-to-depth encoder stages ("LTXVideo095DownBlock3D"), timestep-conditioned decoder.
Latents are normalised with the stored ``latents_mean``/``latents_std`` (and ``scaling_factor``),
as the LTX pipelines do before handing them to the diffusion transformer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vaecodec.errors import ModelError
from vaecodec.models.base import sha256_file
from vaecodec.models.ltx_blocks import (
    CausalConv3d,
    DepthToSpaceUp,
    LTXFamilyVAE,
    MidBlock,
    ResBlock,
    SpaceToDepthDown,
    TimestepEmbedder,
    check_dtype,
    config_json,
    decoder_head,
    load_weights,
    patchify,
    pixel_norm,
    read_safetensors_header,
)

#: diffusers' constructor defaults, which a config.json may omit.
DEFAULTS: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["LTXVideoDownBlock3D"] * 4,
    "decoder_block_out_channels": [128, 256, 512, 512],
    "layers_per_block": [4, 3, 3, 3, 4],
    "decoder_layers_per_block": [4, 3, 3, 3, 4],
    "spatio_temporal_scaling": [True, True, True, False],
    "decoder_spatio_temporal_scaling": [True, True, True, False],
    "decoder_inject_noise": [False, False, False, False, False],
    "downsample_type": ["conv", "conv", "conv", "conv"],
    "upsample_residual": [False, False, False, False],
    "upsample_factor": [1, 1, 1, 1],
    "timestep_conditioning": False,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": False,
}

#: Released architectures (the config fields that shape the network), for readable model ids.
KNOWN: dict[str, dict] = {
    "0.9.0": {},
    "0.9.1": {
        "decoder_block_out_channels": [256, 512, 1024],
        "decoder_layers_per_block": [5, 6, 7, 8],
        "decoder_spatio_temporal_scaling": [True, True, True],
        "decoder_inject_noise": [True, True, True, False],
        "upsample_residual": [True, True, True],
        "upsample_factor": [2, 2, 2],
        "timestep_conditioning": True,
    },
    "0.9.5": {
        "block_out_channels": [128, 256, 512, 1024, 2048],
        "down_block_types": ["LTXVideo095DownBlock3D"] * 4,
        "decoder_block_out_channels": [256, 512, 1024],
        "layers_per_block": [4, 6, 6, 2, 2],
        "decoder_layers_per_block": [5, 5, 5, 5],
        "spatio_temporal_scaling": [True, True, True, True],
        "decoder_spatio_temporal_scaling": [True, True, True],
        "decoder_inject_noise": [False, False, False, False],
        "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
        "upsample_residual": [True, True, True],
        "upsample_factor": [2, 2, 2],
        "timestep_conditioning": True,
    },
}

_DOWN_STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}
_WEIGHTS = "diffusion_pytorch_model.safetensors"


def _res(cin: int, cout: int, cfg: dict, **kw) -> ResBlock:
    """A diffusers-style resnet (LayerNorm + kernel-1 conv skip when the width changes)."""
    return ResBlock(cin, cout, style="diffusers", eps=cfg["resnet_norm_eps"], **kw)


class _DownBlock(nn.Module):
    """``LTXVideoDownBlock3D`` / ``LTXVideo095DownBlock3D``: resnets, optional downsampler, optional widen."""

    def __init__(self, cin: int, cout: int, layers: int, scale: bool, kind: str, down: str, cfg: dict):
        super().__init__()
        self.resnets = nn.ModuleList(_res(cin, cin, cfg) for _ in range(layers))
        self.downsamplers: nn.ModuleList | None = None
        if scale:
            if kind == "LTXVideoDownBlock3D" or down == "conv":
                self.downsamplers = nn.ModuleList([CausalConv3d(cin, cin, 3, stride=(2, 2, 2))])
            elif down in _DOWN_STRIDES:
                self.downsamplers = nn.ModuleList([SpaceToDepthDown(cin, cout, _DOWN_STRIDES[down])])
            else:
                raise ModelError(f"unsupported LTX-Video downsample_type: {down}")
        self.conv_out = _res(cin, cout, cfg) if kind == "LTXVideoDownBlock3D" and cin != cout else None

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        for r in self.resnets:
            x = r(x, causal)
        if self.downsamplers is not None:
            d = self.downsamplers[0]
            x = d(x, causal)
        if self.conv_out is not None:
            x = self.conv_out(x, causal)
        return x


class _MidBlock(MidBlock):
    """``LTXVideoMidBlock3d``: same-width resnets, optionally timestep-conditioned."""

    def __init__(self, ch: int, layers: int, cfg: dict, inject_noise: bool = False, timestep: bool = False):
        blocks = [_res(ch, ch, cfg, inject_noise=inject_noise, timestep_conditioning=timestep) for _ in range(layers)]
        super().__init__(ch, blocks, "resnets", timestep)


class _UpBlock(_MidBlock):
    """``LTXVideoUpBlock3d``: optional narrowing resnet, optional depth-to-space upsampler, resnets."""

    def __init__(
        self, cin: int, cout: int, layers: int, scale: bool, noise: bool, residual: bool, factor: int, cfg: dict
    ):
        timestep = bool(cfg["timestep_conditioning"])
        super().__init__(cout, layers, cfg, noise, timestep)
        if timestep and cin != cout:
            raise ModelError("unsupported LTX-Video decoder: a timestep-conditioned block that changes width")
        self.conv_in = _res(cin, cout, cfg, inject_noise=noise) if cin != cout else None
        self.upsamplers = (
            nn.ModuleList([DepthToSpaceUp(cout * factor, (2, 2, 2), residual, factor)]) if scale else None
        )

    def forward(
        self, x: torch.Tensor, causal: bool, t: torch.Tensor | None = None, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x, causal, None, gen)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, causal)
        return super().forward(x, causal, t, gen)


class LTXVEncoder(nn.Module):
    """Pixels [B,3,1+8k,H,W] -> raw (mean, logvar) [B,C,1+k,H/32,W/32]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.patch = cfg["patch_size"]
        self.causal = bool(cfg["encoder_causal"])
        self.latent = cfg["latent_channels"]
        boc, types = list(cfg["block_out_channels"]), list(cfg["down_block_types"])
        is_095 = types[-1] == "LTXVideo095DownBlock3D"
        n = len(boc) - (1 if is_095 else 0)
        ch = boc[0]
        self.conv_in = CausalConv3d(cfg["in_channels"] * self.patch**2, ch, 3)
        self.down_blocks = nn.ModuleList()
        for i in range(n):
            cin = ch
            ch = boc[i + 1] if is_095 or i + 1 < n else boc[i]
            if types[i] not in ("LTXVideoDownBlock3D", "LTXVideo095DownBlock3D"):
                raise ModelError(f"unsupported LTX-Video down block type: {types[i]}")
            self.down_blocks.append(
                _DownBlock(
                    cin,
                    ch,
                    cfg["layers_per_block"][i],
                    cfg["spatio_temporal_scaling"][i],
                    types[i],
                    cfg["downsample_type"][i],
                    cfg,
                )
            )
        self.mid_block = _MidBlock(ch, cfg["layers_per_block"][-1], cfg)
        self.conv_out = CausalConv3d(ch, self.latent + 1, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv_in(patchify(x, self.patch), self.causal)
        for blk in self.down_blocks:
            h = blk(h, self.causal)
        h = self.mid_block(h, self.causal)
        h = self.conv_out(F.silu(pixel_norm(h)), self.causal)  # [B, C+1, t, h, w]
        mean = h[:, : self.latent]
        # one shared log-variance channel, clamped as diffusers' DiagonalGaussianDistribution does
        return mean, h[:, self.latent :].clamp(-30.0, 20.0).expand_as(mean)


class LTXVDecoder(nn.Module):
    """Raw latents [B,C,1+k,h,w] -> pixels [B,3,1+8k,32h,32w]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.patch = cfg["patch_size"]
        self.causal = bool(cfg["decoder_causal"])
        self.timestep = bool(cfg["timestep_conditioning"])
        rev = {k: list(reversed(cfg[k])) for k in _DECODER_LISTS}
        boc, factor = rev["decoder_block_out_channels"], rev["upsample_factor"]
        ch = boc[0]
        self.conv_in = CausalConv3d(cfg["latent_channels"], ch, 3)
        layers, noise = rev["decoder_layers_per_block"], rev["decoder_inject_noise"]
        self.mid_block = _MidBlock(ch, layers[0], cfg, noise[0], self.timestep)
        self.up_blocks = nn.ModuleList()
        for i in range(len(boc)):
            cin, ch = ch // factor[i], boc[i] // factor[i]
            self.up_blocks.append(
                _UpBlock(
                    cin,
                    ch,
                    layers[i + 1],
                    rev["decoder_spatio_temporal_scaling"][i],
                    noise[i + 1],
                    rev["upsample_residual"][i],
                    factor[i],
                    cfg,
                )
            )
        self.conv_out = CausalConv3d(ch, cfg["out_channels"] * self.patch**2, 3)
        if self.timestep:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.time_embedder = TimestepEmbedder(ch * 2)
            self.scale_shift_table = nn.Parameter(torch.zeros(2, ch))

    def forward(self, z: torch.Tensor, t: torch.Tensor | None, gen: torch.Generator | None) -> torch.Tensor:
        h = self.conv_in(z, self.causal)
        st = t.float() * self.timestep_scale_multiplier.float() if self.timestep else None  # [B]
        h = self.mid_block(h, self.causal, st, gen)
        for blk in self.up_blocks:
            h = blk(h, self.causal, st, gen)
        return decoder_head(
            h, st, getattr(self, "time_embedder", None), getattr(self, "scale_shift_table", None),
            self.conv_out, self.causal, self.patch,
        )


_DECODER_LISTS = (
    "decoder_block_out_channels",
    "decoder_spatio_temporal_scaling",
    "decoder_layers_per_block",
    "decoder_inject_noise",
    "upsample_residual",
    "upsample_factor",
)


def _compression(cfg: dict) -> tuple[int, int]:
    """(spatial, temporal) factors implied by the encoder config."""
    s, t = cfg["patch_size"], cfg["patch_size_t"]
    for i, scale in enumerate(cfg["spatio_temporal_scaling"]):
        if scale:
            st = _DOWN_STRIDES.get(cfg["downsample_type"][i], (2, 2, 2))
            t, s = t * st[0], s * st[1]
    return s, t


class LTXVideoVAE(LTXFamilyVAE):
    """LTX-Video 0.9.x VAE behind the :class:`VideoVAE` contract (normalised latent space)."""

    kind = "ltxv"
    noise_on_normalised = False  # diffusers mixes the noise into the raw latents

    def __init__(self, cfg: dict):
        super().__init__()
        cfg = {**DEFAULTS, **cfg}
        if cfg["patch_size_t"] != 1:
            raise ModelError("unsupported LTX-Video VAE: patch_size_t must be 1")
        if _compression(cfg) != (self.spatial, self.temporal):
            raise ModelError(f"LTX-Video VAE config compresses by {_compression(cfg)}, expected (32, 8)")
        self.config = cfg
        self.latent_channels = cfg["latent_channels"]
        self.scaling_factor = float(cfg["scaling_factor"])
        self.encoder = LTXVEncoder(cfg)
        self.decoder = LTXVDecoder(cfg)
        self.register_buffer("latents_mean", torch.zeros(self.latent_channels))
        self.register_buffer("latents_std", torch.ones(self.latent_channels))

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        v = (1, -1, 1, 1, 1)
        return self.latents_mean.float().view(v), self.latents_std.float().view(v) / self.scaling_factor


def _locate(path: Path) -> tuple[Path, Path]:
    """(config.json, weights file) for a model folder, its ``vae/`` subfolder, or the weights file."""
    if path.is_file():
        folder, weights = path.parent, path
    else:
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        weights = folder / _WEIGHTS
    config = folder / "config.json"
    if not config.is_file():
        raise ModelError(f"not an LTX-Video (diffusers) VAE: no config.json in {folder}")
    if not weights.is_file():
        if (folder / (_WEIGHTS + ".index.json")).is_file():
            raise ModelError(f"sharded LTX-Video VAE weights are not supported: {folder}")
        raise ModelError(f"not an LTX-Video (diffusers) VAE: no {_WEIGHTS} in {folder}")
    return config, weights


def _model_id(cfg: dict) -> str:
    shape = {k: v for k, v in cfg.items() if k in DEFAULTS and k not in ("scaling_factor",)}
    for version, over in KNOWN.items():
        known = {k: v for k, v in {**DEFAULTS, **over}.items() if k != "scaling_factor"}
        if json.loads(config_json(shape)) == json.loads(config_json(known)):
            return f"ltxv-{version}-vae"
    return "ltxv-vae-" + hashlib.sha256(config_json(shape).encode()).hexdigest()[:8]


def load(path: str | Path | None, device: torch.device, dtype: torch.dtype) -> LTXVideoVAE:
    """Load an LTX-Video VAE from a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    if path is None:
        raise ModelError("the ltxv model needs a weights folder (ltxv:PATH); see docs/MODELS.md")
    check_dtype(dtype, "the LTX-Video VAE")
    config_path, weights = _locate(Path(path))
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"unreadable LTX-Video VAE config {config_path}: {e}") from None
    if raw.get("_class_name", "AutoencoderKLLTXVideo") != "AutoencoderKLLTXVideo":
        raise ModelError(f"not an LTX-Video VAE config: _class_name is {raw.get('_class_name')!r} in {config_path}")
    cfg = {k: v for k, v in raw.items() if k in DEFAULTS}
    _, keys = read_safetensors_header(weights)
    if "encoder.conv_in.conv.weight" not in keys:
        raise ModelError(f"not an LTX-Video VAE checkpoint: missing encoder.conv_in.conv.weight in {weights}")
    with torch.device("meta"):
        model = LTXVideoVAE(cfg)
    load_weights(model, weights, "", device, dtype, "an LTX-Video VAE", owned=("encoder.", "decoder."))
    model.model_id = _model_id(model.config)
    model.weights_sha256 = sha256_file(weights)
    return model.eval()

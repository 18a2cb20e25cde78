"""LTX-2 video VAE (Lightricks), our implementation of ltx-core's ``model/video_vae``.

128 latent channels, 32x32 spatial and 8x temporal compression (patchify 4, then space-to-depth
stages), causal encoder, non-causal decoder. Weights come from the released LTX-2 checkpoint
(``vae.``-prefixed keys inside the full model file) or a VAE-only file (bare keys); the
architecture is read from the safetensors metadata ``config`` JSON (its ``vae`` entry), exactly
as ltx-core reads it, else the released LTX-2 config below is assumed.
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

#: The ``vae`` entry of the released LTX-2 checkpoint's metadata config.
RELEASED_CONFIG: dict = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": False,
    "normalize_latent_channels": False,
    "encoder_spatial_padding_mode": "zeros",
    "decoder_spatial_padding_mode": "reflect",
    "decoder_base_channels": 128,
}

_ENC_STRIDES = {
    "compress_time": (2, 1, 1),
    "compress_space": (1, 2, 2),
    "compress_all": (2, 2, 2),
    "compress_all_x_y": (2, 2, 2),
    "compress_time_res": (2, 1, 1),
    "compress_space_res": (1, 2, 2),
    "compress_all_res": (2, 2, 2),
}
_DEC_STRIDES = {"compress_time": (2, 1, 1), "compress_space": (1, 2, 2), "compress_all": (2, 2, 2)}
_LOGVAR_EXTRA = {"uniform": 1, "constant": 1, "per_channel": None}
_KEY = "encoder.conv_in.conv.weight"


def _blocks(cfg: dict, name: str) -> list[tuple[str, dict]]:
    """Normalise ``[[name, int | dict], ...]`` to ``[(name, dict)]`` (an int means num_layers)."""
    blocks = cfg.get(name) or []
    if not blocks:
        raise ModelError(f"LTX-2 VAE config has no {name}")
    return [(b, {"num_layers": p} if isinstance(p, int) else dict(p)) for b, p in blocks]


def _mid_block(ch: int, layers: int, pad: str, inject_noise: bool = False, timestep: bool = False) -> MidBlock:
    """ltx-core ``res_x``: a stack of same-width residual blocks, optionally timestep-conditioned."""
    blocks = [
        ResBlock(ch, ch, style="ltx2", padding_mode=pad, inject_noise=inject_noise, timestep_conditioning=timestep)
        for _ in range(layers)
    ]
    return MidBlock(ch, blocks, "res_blocks", timestep)


class LTX2Encoder(nn.Module):
    """Pixels [B,3,1+8k,H,W] -> raw (un-normalised) mean and logvar [B,C,1+k,H/32,W/32]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.patch = cfg.get("patch_size", 4)
        self.latent = cfg.get("latent_channels", 128)
        self.logvar_mode = cfg.get("latent_log_var", "uniform")
        if self.logvar_mode not in _LOGVAR_EXTRA:
            raise ModelError(f"unsupported LTX-2 latent_log_var: {self.logvar_mode}")
        pad = cfg.get("spatial_padding_mode", "zeros")
        ch = self.latent
        self.conv_in = CausalConv3d(cfg.get("in_channels", 3) * self.patch**2, ch, 3, padding_mode=pad)
        self.down_blocks = nn.ModuleList()
        for name, p in _blocks(cfg, "encoder_blocks"):
            if name == "res_x":
                block: nn.Module = _mid_block(ch, p["num_layers"], pad)
            elif name == "res_x_y":
                out = ch * p.get("multiplier", 2)
                block = ResBlock(ch, out, style="ltx2", padding_mode=pad)
                ch = out
            elif name in ("compress_time", "compress_space", "compress_all"):
                block = CausalConv3d(ch, ch, 3, stride=_ENC_STRIDES[name], padding_mode=pad)
            elif name == "compress_all_x_y":
                out = ch * p.get("multiplier", 2)
                block = CausalConv3d(ch, out, 3, stride=_ENC_STRIDES[name], padding_mode=pad)
                ch = out
            elif name in ("compress_time_res", "compress_space_res", "compress_all_res"):
                out = ch * p.get("multiplier", 2)
                block = SpaceToDepthDown(ch, out, _ENC_STRIDES[name], padding_mode=pad)
                ch = out
            else:
                raise ModelError(f"unsupported LTX-2 encoder block: {name}")
            self.down_blocks.append(block)
        extra = _LOGVAR_EXTRA[self.logvar_mode]
        self.conv_out = CausalConv3d(ch, self.latent * 2 if extra is None else self.latent + extra, 3, padding_mode=pad)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv_in(patchify(x, self.patch))  # [B, C0, T, H/4, W/4]
        for block in self.down_blocks:
            h = block(h, True)
        h = self.conv_out(F.silu(pixel_norm(h)))  # [B, C + extra, t, h, w]
        c = self.latent
        mean = h[:, :c]
        if self.logvar_mode == "per_channel":
            logvar = h[:, c:]
        elif self.logvar_mode == "uniform":
            logvar = h[:, c:].expand_as(mean)
        else:  # constant: ltx-core's fixed -30 (deterministic encoder)
            logvar = torch.full_like(mean, -30.0)
        return mean, logvar


class LTX2Decoder(nn.Module):
    """Un-normalised latents [B,C,1+k,h,w] -> pixels [B,3,1+8k,32h,32w]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.patch = cfg.get("patch_size", 4)
        self.causal = bool(cfg.get("causal_decoder", False))
        self.timestep = bool(cfg.get("timestep_conditioning", True))
        pad = cfg.get("spatial_padding_mode", "reflect")
        ch = cfg.get("decoder_base_channels", 128) * 8
        self.conv_in = CausalConv3d(cfg.get("latent_channels", 128), ch, 3, padding_mode=pad)
        self.up_blocks = nn.ModuleList()
        for name, p in reversed(_blocks(cfg, "decoder_blocks")):
            if name == "res_x":
                block: nn.Module = _mid_block(ch, p["num_layers"], pad, p.get("inject_noise", False), self.timestep)
            elif name == "res_x_y":
                out = ch // p.get("multiplier", 2)
                block = ResBlock(ch, out, style="ltx2", padding_mode=pad, inject_noise=p.get("inject_noise", False))
                ch = out
            elif name in _DEC_STRIDES:
                mult = p.get("multiplier", 1)
                residual = p.get("residual", False) if name == "compress_all" else False
                block = DepthToSpaceUp(ch, _DEC_STRIDES[name], residual, mult, padding_mode=pad)
                ch = ch // mult
            else:
                raise ModelError(f"unsupported LTX-2 decoder block: {name}")
            self.up_blocks.append(block)
        self.conv_out = CausalConv3d(ch, cfg.get("out_channels", 3) * self.patch**2, 3, padding_mode=pad)
        if self.timestep:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.last_time_embedder = TimestepEmbedder(ch * 2)
            self.last_scale_shift_table = nn.Parameter(torch.zeros(2, ch))

    def forward(self, z: torch.Tensor, t: torch.Tensor | None, gen: torch.Generator | None) -> torch.Tensor:
        h = self.conv_in(z, self.causal)
        st = t.float() * self.timestep_scale_multiplier.float() if self.timestep else None  # [B]
        for block in self.up_blocks:
            if isinstance(block, MidBlock):
                h = block(h, self.causal, st, gen)
            elif isinstance(block, ResBlock):
                h = block(h, self.causal, None, gen)
            else:
                h = block(h, self.causal)
        return decoder_head(
            h, st, getattr(self, "last_time_embedder", None), getattr(self, "last_scale_shift_table", None),
            self.conv_out, self.causal, self.patch,
        )


class _Stats(nn.Module):
    """Per-channel latent statistics: what the diffusion model sees is (raw - mean) / std."""

    def __init__(self, c: int):
        super().__init__()
        self.register_buffer("mean-of-means", torch.zeros(c))
        self.register_buffer("std-of-means", torch.ones(c))

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        view = (1, -1, 1, 1, 1)
        return self.get_buffer("mean-of-means").float().view(view), self.get_buffer("std-of-means").float().view(view)


def _compression(cfg: dict) -> tuple[int, int]:
    """(spatial, temporal) factors implied by the encoder blocks."""
    s, t = cfg.get("patch_size", 4), 1
    for name, _ in _blocks(cfg, "encoder_blocks"):
        st = _ENC_STRIDES.get(name, (1, 1, 1))
        t, s = t * st[0], s * st[1]
    return s, t


class LTX2VAE(LTXFamilyVAE):
    """LTX-2 video VAE behind the :class:`VideoVAE` contract (normalised latent space)."""

    kind = "ltx2"
    min_latent = 2  # the decoder's reflect padding needs 2 latent rows and columns (64 px)

    def __init__(self, cfg: dict):
        super().__init__()
        if cfg.get("dims", 3) != 3:
            raise ModelError(f"unsupported LTX-2 VAE dims: {cfg.get('dims')}")
        if cfg.get("norm_layer", "pixel_norm") != "pixel_norm":
            raise ModelError(f"unsupported LTX-2 norm_layer: {cfg.get('norm_layer')}")
        if _compression(cfg) != (self.spatial, self.temporal):
            raise ModelError(f"LTX-2 VAE config compresses by {_compression(cfg)}, expected (32, 8)")
        self.config = cfg
        self.latent_channels = cfg.get("latent_channels", 128)
        enc_cfg = {**cfg, "spatial_padding_mode": cfg.get("spatial_padding_mode", "zeros")}
        dec_cfg = {**cfg, "spatial_padding_mode": cfg.get("spatial_padding_mode", "reflect")}
        self.encoder = LTX2Encoder(enc_cfg)
        self.decoder = LTX2Decoder(dec_cfg)
        self.per_channel_statistics = _Stats(self.latent_channels)

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.per_channel_statistics.get()


def _architecture(cfg: dict) -> dict:
    """The fields that shape the network, with ltx-core's defaults filled in, for the model id.

    Released metadata spells the same network in several ways (``{"inject_noise": false}`` or
    nothing, extra bookkeeping keys), so ids compare this rather than the raw JSON.
    """
    blocks = {
        k: [[n, {pk: pv for pk, pv in p.items() if pv is not False}] for n, p in _blocks(cfg, k)]
        for k in ("encoder_blocks", "decoder_blocks")
    }
    return {
        **blocks,
        "latent_channels": cfg.get("latent_channels", 128),
        "patch_size": cfg.get("patch_size", 4),
        "decoder_base_channels": cfg.get("decoder_base_channels", 128),
        "latent_log_var": cfg.get("latent_log_var", "uniform"),
        "timestep_conditioning": bool(cfg.get("timestep_conditioning", True)),
        "causal_decoder": bool(cfg.get("causal_decoder", False)),
        "padding": [cfg.get("spatial_padding_mode", "zeros"), cfg.get("spatial_padding_mode", "reflect")],
    }


def _resolve(path: Path) -> tuple[dict, str]:
    """(vae config, key prefix) of a checkpoint, or a ModelError naming what is wrong."""
    meta, keys = read_safetensors_header(path)
    if "vae." + _KEY in keys:
        prefix = "vae."
    elif _KEY in keys:
        prefix = ""
    else:
        raise ModelError(f"not an LTX-2 VAE checkpoint: missing {_KEY} (nor vae.{_KEY}) in {path}")
    cfg = None
    if "config" in meta:
        try:
            cfg = json.loads(meta["config"]).get("vae")
        except (ValueError, AttributeError):
            raise ModelError(f"LTX-2 checkpoint metadata 'config' is not valid JSON: {path}") from None
    if cfg is None:
        cfg = dict(RELEASED_CONFIG)
        # without metadata, let the weights say whether the decoder is timestep-conditioned
        cfg["timestep_conditioning"] = f"{prefix}decoder.last_scale_shift_table" in keys
    return cfg, prefix


def load(path: str | Path | None, device: torch.device, dtype: torch.dtype) -> LTX2VAE:
    """Load an LTX-2 VAE from a safetensors file (full LTX-2 checkpoint or VAE-only)."""
    if path is None:
        raise ModelError("the ltx2 model needs a weights file (ltx2:PATH); see docs/MODELS.md")
    check_dtype(dtype, "the LTX-2 VAE")
    path = Path(path)
    cfg, prefix = _resolve(path)
    with torch.device("meta"):
        model = LTX2VAE(cfg)
    load_weights(model, path, prefix, device, dtype, "an LTX-2 VAE", owned=("encoder.", "decoder."))
    arch = _architecture(cfg)
    model.model_id = "ltx2-video-vae"
    if arch != _architecture(RELEASED_CONFIG):
        model.model_id += "-" + hashlib.sha256(config_json(arch).encode()).hexdigest()[:8]
    model.weights_sha256 = sha256_file(path)
    return model.eval()

"""Building blocks shared by the LTX-2 (ltx-core layout) and LTX-Video (diffusers layout) VAEs.

Both families use the same math -- causal 3D convolutions, RMS "pixel" norms, space-to-depth
downsampling, depth-to-space upsampling, timestep-modulated residual blocks -- but name their
parameters differently. The blocks here carry the parameter names both layouts agree on; the
two backends arrange them into their own module trees so the checkpoints load key for key.

Shapes: video tensors are [B, C, T, H, W] throughout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from vaecodec.errors import ModelError, UsageError
from vaecodec.models.base import Tiling, VideoVAE

Stride = tuple[int, int, int]


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """RMS norm over channels; the statistic is accumulated in fp32 so bf16 runs do not drift.

    Uses a fp32 *reduction* rather than a fp32 copy of ``x``, so bf16 decodes keep their memory.
    """
    # [B,C,T,H,W] -> [B,1,T,H,W] sum of squares in fp32
    sq = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32).square_()
    inv = torch.rsqrt(sq.div_(x.shape[1]).add_(eps))
    return x * inv.to(x.dtype)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B,C,T,H,W] -> [B,C*p*p,T,H/p,W/p], channel order (c, pw, ph) as both references use."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p)  # b c t h' ph w' pw
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: [B,C*p*p,T,h,w] -> [B,C,T,h*p,w*p]."""
    b, cpp, t, h, w = x.shape
    c = cpp // (p * p)
    x = x.reshape(b, c, p, p, t, h, w)  # b c pw ph t h w
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, t, h * p, w * p)


def space_to_depth(x: torch.Tensor, s: Stride) -> torch.Tensor:
    """[B,C,T,H,W] -> [B,C*st*sh*sw,T/st,H/sh,W/sw], channel order (c, st, sh, sw)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // s[0], s[0], h // s[1], s[1], w // s[2], s[2])
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * s[0] * s[1] * s[2], t // s[0], h // s[1], w // s[2])


def depth_to_space(x: torch.Tensor, s: Stride) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`."""
    b, cs, t, h, w = x.shape
    c = cs // (s[0] * s[1] * s[2])
    x = x.reshape(b, c, s[0], s[1], s[2], t, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, t * s[0], h * s[1], w * s[2])


class CausalConv3d(nn.Module):
    """Conv3d whose time axis is padded by repeating edge frames instead of zeros.

    Causal mode repeats the first frame k-1 times in front, so frame 0 depends on nothing
    later (the 1 + 8k rule); non-causal mode repeats both ends symmetrically. Space is padded
    inside the convolution with ``padding_mode`` (zeros or reflect, per checkpoint).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int | Stride = 1, padding_mode: str = "zeros"):
        super().__init__()
        self.time_kernel = kernel
        self.conv = nn.Conv3d(
            cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2), padding_mode=padding_mode
        )

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        k = self.time_kernel
        if k > 1:
            if causal:
                x = torch.cat([x[:, :, :1].expand(-1, -1, k - 1, -1, -1), x], dim=2)
            else:
                p = (k - 1) // 2
                x = torch.cat([x[:, :, :1].expand(-1, -1, p, -1, -1), x, x[:, :, -1:].expand(-1, -1, p, -1, -1)], dim=2)
        return self.conv(x)


class _TimestepMLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(256, dim)
        self.linear_2 = nn.Linear(dim, dim)


class TimestepEmbedder(nn.Module):
    """Sinusoidal (cos-first, 256 wide) timestep features -> 2-layer SiLU MLP (PixArt-alpha style)."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = _TimestepMLP(dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: [B] float -> [B, dim] in the MLP's dtype."""
        half = 128
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]  # [B,128]
        feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        mlp = self.timestep_embedder
        h = mlp.linear_1(feats.to(mlp.linear_1.weight.dtype))
        return mlp.linear_2(F.silu(h))


class ResBlock(nn.Module):
    """Pre-norm residual block: norm, [timestep scale/shift], SiLU, conv, [noise], twice, plus skip.

    ``style`` picks the skip path when channels change: "ltx2" (ltx-core: GroupNorm(1) over the
    whole clip + 1x1 Conv3d) or "diffusers" (LayerNorm over channels + kernel-1 causal conv).
    The two are different operations, so each backend must use its own.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        style: str,
        padding_mode: str = "zeros",
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.conv1 = CausalConv3d(cin, cout, 3, padding_mode=padding_mode)
        self.conv2 = CausalConv3d(cout, cout, 3, padding_mode=padding_mode)
        if inject_noise:
            self.per_channel_scale1 = nn.Parameter(torch.zeros(cin, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(cin, 1, 1))
        self.inject_noise = inject_noise
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.zeros(4, cin))
        self.timestep_conditioning = timestep_conditioning
        self.norm3: nn.Module | None = None
        self.conv_shortcut: nn.Module | None = None
        if cin != cout:
            if style == "ltx2":
                self.norm3 = nn.GroupNorm(1, cin, eps=eps)
                self.conv_shortcut = nn.Conv3d(cin, cout, 1)
            else:
                self.norm3 = nn.LayerNorm(cin, eps=eps)
                self.conv_shortcut = CausalConv3d(cin, cout, 1)

    @staticmethod
    def _noise(h: torch.Tensor, scale: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # one [H,W] noise image shared by all channels and frames, scaled per channel
        n = torch.randn(h.shape[-2:], generator=generator, device=h.device, dtype=h.dtype)[None]
        return h + (n * scale.to(h.dtype))[None, :, None]

    def forward(
        self,
        x: torch.Tensor,
        causal: bool,
        temb: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        h = pixel_norm(x)
        if self.timestep_conditioning:
            # temb [B, 4*C, 1, 1, 1] -> 4 x [B, C, 1, 1, 1]
            ada = self.scale_shift_table[None, :, :, None, None, None].to(h.dtype) + temb.reshape(
                h.shape[0], 4, -1, 1, 1, 1
            ).to(h.dtype)
            shift1, scale1, shift2, scale2 = ada.unbind(dim=1)
            h = h * (1 + scale1) + shift1
        # in-place SiLU / residual adds: h is always a fresh intermediate here, and at full
        # resolution every avoided temporary is ~1/7 of the activation peak
        h = self.conv1(F.silu(h, inplace=True), causal)
        if self.inject_noise and generator is not None:
            h = self._noise(h, self.per_channel_scale1, generator)
        h = pixel_norm(h)
        if self.timestep_conditioning:
            h = h * (1 + scale2) + shift2
        h = self.conv2(F.silu(h, inplace=True), causal)
        if self.inject_noise and generator is not None:
            h = self._noise(h, self.per_channel_scale2, generator)
        if self.norm3 is not None:
            if isinstance(self.norm3, nn.LayerNorm):
                x = self.norm3(x.movedim(1, -1)).movedim(-1, 1)
                x = self.conv_shortcut(x, causal)
            else:
                x = self.conv_shortcut(self.norm3(x))
        return h.add_(x)


class SpaceToDepthDown(nn.Module):
    """Downsample by ``stride``: conv then space-to-depth, plus a parameter-free averaged skip.

    A temporal stride first repeats frame 0 so 1 + 8k frames map to 1 + 4k (causal rule).
    """

    def __init__(self, cin: int, cout: int, stride: Stride, padding_mode: str = "zeros"):
        super().__init__()
        self.stride = stride
        prod = stride[0] * stride[1] * stride[2]
        self.group = cin * prod // cout
        self.conv = CausalConv3d(cin, cout // prod, 3, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        if self.stride[0] == 2:
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = space_to_depth(x, self.stride)  # [B, cin*prod, t, h, w]
        b, c, t, h, w = skip.shape
        skip = skip.reshape(b, c // self.group, self.group, t, h, w).mean(dim=2)
        return space_to_depth(self.conv(x, causal), self.stride) + skip


class DepthToSpaceUp(nn.Module):
    """Upsample by ``stride``: conv to prod(stride)x channels, depth-to-space, optional residual.

    A temporal stride drops the first output frame, mirroring the encoder's frame-0 repeat.
    """

    def __init__(self, cin: int, stride: Stride, residual: bool, reduction: int, padding_mode: str = "zeros"):
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.prod = stride[0] * stride[1] * stride[2]
        self.reduction = reduction
        self.conv = CausalConv3d(cin, self.prod * cin // reduction, 3, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        drop = 1 if self.stride[0] == 2 else 0
        h = depth_to_space(self.conv(x, causal), self.stride)[:, :, drop:]
        if self.residual:
            # the skip is the input tiled prod/reduction times along channels; add it through a
            # broadcast view instead of materialising the repeat
            skip = depth_to_space(x, self.stride)[:, :, drop:]  # [B, c, T, H, W]
            h.view(skip.shape[0], -1, *skip.shape[1:]).add_(skip[:, None])
        return h


class MidBlock(nn.Module):
    """Same-width residual blocks sharing one optional timestep embedding (both LTX VAEs' ``res_x``/mid block).

    ``list_name`` is the checkpoint's name for the block list (``res_blocks`` in ltx-core,
    ``resnets`` in diffusers), so state-dict keys match the released files.
    """

    def __init__(self, ch: int, blocks: list[nn.Module], list_name: str, timestep: bool = False):
        super().__init__()
        if timestep:
            self.time_embedder = TimestepEmbedder(ch * 4)
        self.timestep = timestep
        self.list_name = list_name
        setattr(self, list_name, nn.ModuleList(blocks))

    def forward(
        self, x: torch.Tensor, causal: bool, t: torch.Tensor | None = None, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        temb = self.time_embedder(t).reshape(x.shape[0], -1, 1, 1, 1) if self.timestep else None  # [B, 4C, 1, 1, 1]
        for blk in getattr(self, self.list_name):
            x = blk(x, causal, temb, gen)
        return x


def decoder_head(
    h: torch.Tensor,  # [B, C, T, H, W] last decoder features
    st: torch.Tensor | None,  # [B] scaled timestep, None for decoders without conditioning
    embedder: nn.Module | None,
    table: torch.Tensor | None,  # [2, C] learned shift/scale offsets
    conv_out: nn.Module,
    causal: bool,
    patch: int,
) -> torch.Tensor:
    """The last stage both LTX decoders share: pixel norm, timestep shift/scale, SiLU, conv, unpatchify."""
    h = pixel_norm(h)
    if st is not None:
        emb = embedder(st).reshape(h.shape[0], 2, -1, 1, 1, 1)
        shift, scale = (table[None, :, :, None, None, None] + emb).to(h.dtype).unbind(dim=1)
        h = h * (1 + scale) + shift
    return unpatchify(conv_out(F.silu(h), causal), patch)


class LTXFamilyVAE(VideoVAE):
    """What LTX-2 and LTX-Video share behind the :class:`VideoVAE` contract: 32x32x8 compression,
    a normalised latent space, and a decode that may be timestep-conditioned with a noise mix.

    Subclasses build ``encoder``/``decoder`` and implement ``_stats``; they differ in whether the
    decode noise is mixed into the normalised latents (LTX-2, as ltx-core) or the raw ones
    (LTX-Video, as diffusers), which ``noise_on_normalised`` selects.
    """

    spatial = 32
    temporal = 8
    latent_channels = 128
    # 65-frame (8 latent) temporal tiles blending over 2 latents; 768 px spatial tiles with 128 px
    # overlap: ~3.5 GiB of bf16 activation tensors per tile, leaving room under 24 GB even if
    # convolution workspace triples that (docs/MODELS.md "Tiling and memory").
    tiling = Tiling(latent_frames=8, overlap_latents=2, tile_px=768, overlap_px=128)
    #: Decode-time latent noise and timestep when the decoder is timestep-conditioned.
    decode_noise_scale = 0.025
    decode_timestep = 0.05
    noise_on_normalised = True
    encoder: nn.Module
    decoder: nn.Module

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, std) [1,C,1,1,1] fp32 mapping raw latents to normalised ones."""
        raise NotImplementedError

    @property
    def _dtype(self) -> torch.dtype:
        return self.encoder.conv_in.conv.weight.dtype

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,3,1+8k,H,W] in [-1,1] -> normalised (mean, logvar), fp32 [B,C,1+k,H/32,W/32]."""
        mean, logvar = self.encoder(x.to(self._dtype))
        mu, sd = self._stats()
        return (mean.float() - mu) / sd, logvar.float() - 2 * torch.log(sd)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised latents -> fp32 pixels, roughly in [-1,1].

        A timestep-conditioned decoder sees ``(1 - s) * z + s * noise`` at ``decode_timestep``;
        the noise (and any noise injected inside decoder blocks) is zero unless a ``generator``
        is given, so the default decode is deterministic and identical across tiles.
        """
        mu, sd = self._stats()
        z = z.float()
        if not self.noise_on_normalised:
            z = z * sd + mu
        t = None
        if self.decoder.timestep:
            noise = torch.randn(z.shape, generator=generator, device=z.device) if generator is not None else 0.0
            z = (1 - self.decode_noise_scale) * z + self.decode_noise_scale * noise
            t = torch.full((z.shape[0],), self.decode_timestep, device=z.device)
        if self.noise_on_normalised:
            z = z * sd + mu
        return self.decoder(z.to(self._dtype), t, generator).float()


def check_dtype(dtype: torch.dtype, what: str) -> None:
    """Refuse compute dtypes these VAEs are known to break in (fp16 overflows to green/grey frames)."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise UsageError(f"{what} runs in float32 or bfloat16, not {str(dtype).removeprefix('torch.')} "
                         "(--dtype fp32 or bf16)")


def read_safetensors_header(path: str | Path) -> tuple[dict[str, str], set[str]]:
    """(metadata, key set) of a safetensors file without reading tensor data."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {}), set(f.keys())
    except FileNotFoundError:
        raise ModelError(f"weights file not found: {path}") from None
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ModelError(f"not a readable safetensors file: {path} ({e})") from None


def load_weights(
    model: nn.Module,
    path: str | Path,
    prefix: str,
    device: torch.device,
    dtype: torch.dtype,
    what: str,
    owned: tuple[str, ...] = ("encoder.", "decoder."),
) -> None:
    """Fill a meta-device ``model`` from ``path`` tensor by tensor (memory-mapped), checking keys/shapes.

    Each tensor is read from the mmap, cast to ``dtype`` and moved to ``device`` on its own, so
    the host never holds a second full copy of the model. Keys under ``prefix + owned`` that the
    model lacks mean the config and the weights disagree, which is an error too.
    """
    expected = model.state_dict()
    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = set(f.keys())
        missing = [k for k in expected if prefix + k not in keys]
        if missing:
            raise ModelError(f"not {what} checkpoint: missing {missing[0]} ({len(missing)} keys missing)")
        scope = tuple(prefix + o for o in owned)
        extra = sorted(k for k in keys if k.startswith(scope) and k[len(prefix) :] not in expected)
        if extra:
            raise ModelError(
                f"{what} checkpoint does not match its config: unexpected {extra[0]} ({len(extra)} extra keys)"
            )
        sd: dict[str, torch.Tensor] = {}
        for name, ref in expected.items():
            shape = tuple(f.get_slice(prefix + name).get_shape())
            if shape != tuple(ref.shape):
                raise ModelError(
                    f"{what} checkpoint does not match its config: "
                    f"{name} has shape {shape}, expected {tuple(ref.shape)}"
                )
            t = f.get_tensor(prefix + name)
            keep_fp32 = name.endswith(("mean-of-means", "std-of-means", "latents_mean", "latents_std"))
            sd[name] = t.to(device=device, dtype=torch.float32 if keep_fp32 else dtype)
    model.load_state_dict(sd, strict=True, assign=True)


def config_json(cfg: dict) -> str:
    """Canonical JSON of a config (stable key order) for hashing into a model id."""
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))

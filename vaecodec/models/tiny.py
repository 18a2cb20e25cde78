"""The embedded default model: a small causal video VAE built for CPU speed.

Design (our own; the causal "memory" idea — mixing each frame with the previous one —
and temporal pooling/growing by channel folding follow madebyollin/taehv):

* Everything is conv2d on frames folded into the batch, so it runs well on CPU/MPS.
* Pixels are pixel-unshuffled by 4 at once; the only full-frame-rate work happens at
  1/4 and 1/8 resolution, the heavy blocks run at 1/8 resolution and 1/4 frame rate.
* Causality: the first frame is replicated 3x in front so a clip of 1 + 4k frames becomes
  4(k+1) frames, pooled in groups of 4 -> 1 + k latent frames. Memory blocks only look at
  the previous frame; every call starts from zero memory, so calls are self-contained
  (the lead's temporal tiler relies on that).

Shapes for one 480p frame (854x480 padded to 856x480): unshuffle -> [48, 120, 214],
stem -> [32, 120, 214], down -> [64, 60, 107], pool 4 frames -> latent-rate blocks at
[64, 60, 107], head -> mean/logvar [16, 60, 107]. The decoder mirrors this.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from vaecodec.errors import ModelError
from vaecodec.models.base import Tiling, VideoVAE, sha256_file

WEIGHTS = Path(__file__).parent / "weights" / "tiny-v1.safetensors"

C1 = 32  # channels at 1/4 resolution
C2 = 64  # channels at 1/8 resolution
LATENT = 16


def _shift(x: torch.Tensor, t: int) -> torch.Tensor:
    """Previous frame of every frame, zeros before the first: [B*T, C, H, W] -> same."""
    bt, c, h, w = x.shape
    x5 = x.reshape(bt // t, t, c, h, w)
    prev = torch.cat((torch.zeros_like(x5[:, :1]), x5[:, :-1]), 1)
    return prev.reshape(bt, c, h, w)


class ResBlock(nn.Module):
    """conv3x3 -> relu -> conv, residual; per frame (no temporal mixing)."""

    def __init__(self, c: int, k2: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, k2, padding=k2 // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.relu(self.a(x)))


class MemBlock(nn.Module):
    """Residual block whose first conv sees [frame, previous frame]: causal temporal mixing.

    ``light`` uses a 1x1 mixing conv (for full-frame-rate stages) instead of a 3x3 one.
    """

    def __init__(self, c: int, light: bool = False) -> None:
        super().__init__()
        k = 1 if light else 3
        self.a = nn.Conv2d(2 * c, c, k, padding=k // 2)
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        # x: [B*t, C, H, W]
        return x + self.b(F.relu(self.a(torch.cat((x, _shift(x, t)), 1))))


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(48, C1, 1)
        self.down = nn.Conv2d(C1, C2, 3, stride=2, padding=1)
        self.mem = MemBlock(C2, light=True)
        self.pool = nn.Conv2d(4 * C2, C2, 1)
        self.blocks = nn.ModuleList([MemBlock(C2) for _ in range(3)])
        self.head = nn.Conv2d(C2, 2 * LATENT, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, t, h, w = x.shape
        x = torch.cat((x[:, :, :1].expand(-1, -1, 3, -1, -1), x), 2)  # [B, 3, 4(k+1), H, W]
        tp = t + 3
        f = x.transpose(1, 2).reshape(b * tp, 3, h, w)
        f = F.pixel_unshuffle(f, 4).contiguous(memory_format=torch.channels_last)  # [B*T', 48, H/4, W/4]
        f = F.relu(self.stem(f))
        f = F.relu(self.down(f))  # [B*T', C2, H/8, W/8]
        f = F.relu(self.mem(f, tp))
        tl = tp // 4
        f = f.reshape(b * tl, 4 * C2, h // 8, w // 8)  # fold 4 frames into channels
        f = F.relu(self.pool(f.contiguous(memory_format=torch.channels_last)))
        for blk in self.blocks:
            f = F.relu(blk(f, tl))
        f = self.head(f)  # [B*t_lat, 2C, h, w]
        f = f.reshape(b, tl, 2 * LATENT, h // 8, w // 8).transpose(1, 2)
        mean, logvar = f[:, :LATENT], f[:, LATENT:].clamp(-30.0, 20.0)
        return mean.contiguous(), logvar.contiguous()


class TinyDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(LATENT, C2, 3, padding=1)
        self.blocks = nn.ModuleList([MemBlock(C2) for _ in range(3)])
        self.grow = nn.Conv2d(C2, 4 * C2, 1)
        self.mem = MemBlock(C2, light=True)
        self.up = nn.Conv2d(C2, 4 * C1, 1)
        self.res = ResBlock(C1, k2=1)
        self.out = nn.Conv2d(C1, 48, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, tl, h, w = z.shape
        f = z.transpose(1, 2).reshape(b * tl, LATENT, h, w).contiguous(memory_format=torch.channels_last)
        f = F.relu(self.inp(f))
        for blk in self.blocks:
            f = F.relu(blk(f, tl))
        f = self.grow(f).reshape(b * tl * 4, C2, h, w)  # unfold 4 frames out of channels
        f = F.relu(f.contiguous(memory_format=torch.channels_last))
        tp = tl * 4
        f = F.relu(self.mem(f, tp))
        f = F.relu(F.pixel_shuffle(self.up(f), 2))  # [B*T', C1, H/4, W/4]
        f = F.relu(self.res(f))
        f = F.pixel_shuffle(self.out(f), 4)  # [B*T', 3, H, W]
        x = f.reshape(b, tp, 3, h * 8, w * 8).transpose(1, 2)
        return x[:, :, 3:].contiguous()  # drop the 3 replicated warm-up frames


class TinyVAE(VideoVAE):
    """Embedded default backend: 8x8 spatial x 4 temporal, 16 latent channels."""

    kind = "tiny"
    spatial = 8
    temporal = 4
    latent_channels = LATENT
    # 8 latent frames = 33 pixel frames per temporal tile; 512 px tiles keep CPU memory small
    tiling = Tiling(latent_frames=8, overlap_latents=1, tile_px=512, overlap_px=64)

    def __init__(self) -> None:
        super().__init__()
        self.encoder = TinyEncoder()
        self.decoder = TinyDecoder()
        self._coder = None
        self.metadata: dict[str, str] = {}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,3,1+4k,H,W] in [-1,1] -> (mean, logvar) [B,16,1+k,H/8,W/8]."""
        _, _, t, h, w = x.shape
        if (t - 1) % 4 or h % 8 or w % 8:
            raise ValueError(f"tiny VAE needs T=1+4k and H, W multiples of 8, got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B,16,1+k,h,w] -> [B,3,1+4k,8h,8w]."""
        return self.decoder(z)

    @property
    def entropy_coder(self):
        return self._coder


def load(path: str | Path | None, device: torch.device, dtype: torch.dtype) -> TinyVAE:
    """Load tiny weights (``None`` = the shipped file) with their entropy-coder tables."""
    from vaecodec.entropy import EntropyCoder

    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise ModelError(f"tiny model weights not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ModelError(f"cannot read tiny model weights {path}: {e}") from e
    model = TinyVAE()
    state = {k[len("model."):]: v.float() for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{path} is not a vaecodec tiny model: {str(e).splitlines()[0]}") from e
    coder_t = {k[len("entropy."):]: v for k, v in tensors.items() if k.startswith("entropy.")}
    if coder_t:
        model._coder = EntropyCoder.from_tensors(coder_t)
    model.metadata = meta
    model.model_id = meta.get("model_id", "vaecodec-tiny-unknown")
    model.weights_sha256 = sha256_file(path)
    model = model.to(device=device, dtype=dtype).eval()
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def model_card(meta: dict[str, str]) -> dict:
    """The JSON model card stored in the weights metadata, parsed."""
    return json.loads(meta.get("card", "{}"))

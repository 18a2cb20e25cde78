"""Coding the picture at a smaller size (``--scale``): the encoder shrinks each frame before the
model and the decoder enlarges the model's output back to the source size.

Why: at low rates the embedded model spends its few bits better on a smaller picture, since
its reconstructions are soft anyway and a bicubic enlargement loses little beside them. On
480p clips (docs/MODEL.md) the full-size qualities 1-4 lose to a smaller picture at the same
bytes on every clip, by up to 7 dB; from the default quality 5 up, full size is best. So the
entropy coder's low qualities code a smaller picture by default (``SCALE_BY_QUALITY``), the
way streaming ladders drop resolution with bitrate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError

MIN_SCALE = 0.125

# Default scale per entropy-coder quality of the embedded model: qualities 1-2 (steps the model
# never trained on) keep their PSNR level for well under half the bytes at half size;
# 3-4 at three quarters size beat full size at equal rate on all clips measured.
SCALE_BY_QUALITY = {1: 0.5, 2: 0.5, 3: 0.75, 4: 0.75}


def default_scale(quality: int | None) -> float:
    """The coded picture's scale at an entropy-coder quality (1 without one)."""
    return SCALE_BY_QUALITY.get(quality, 1.0) if quality is not None else 1.0


def check_scale(scale: float) -> float:
    if not MIN_SCALE <= scale <= 1.0:
        raise UsageError(f"--scale must be between {MIN_SCALE} and 1, got {scale}")
    return float(scale)


def coded_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The (width, height) the model codes for a source of ``width`` x ``height``: scaled and
    rounded to even numbers (so chroma-subsampled previews stay exact), at least 2x2."""
    if scale == 1.0:
        return width, height
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def shrink(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [n, H, W, 3] -> uint8 [n, height, width, 3], antialiased (bicubic with a widened
    kernel), so the model does not code aliasing that the enlargement would show."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def enlarge(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Decoded float frames [3, n, h, w] -> [3, n, height, width] (bicubic)."""
    if x.shape[-2:] == (height, width):
        return x
    y = F.interpolate(x.transpose(0, 1).float(), size=(height, width), mode="bicubic", align_corners=False)
    return y.transpose(0, 1)


def to_uint8_frames(x: torch.Tensor, height: int, width: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """[3, n, Hp, Wp] float in [-1,1] -> uint8 [n, H, W, 3]: crops the grid padding to
    ``height`` x ``width``, then enlarges to ``size`` (W, H) when the file was coded smaller.

    On CPU one frame at a time into one contiguous array (no tile-sized float temporaries);
    on a GPU in one go, then one copy to the host.
    """
    x = x[:, :, :height, :width]
    W, H = size or (width, height)
    if x.device.type != "cpu":
        x = enlarge(x, W, H)
        return x.float().add(1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous().cpu().numpy()
    out = torch.empty(x.shape[1], H, W, 3, dtype=torch.uint8)
    for i in range(x.shape[1]):
        frame = enlarge(x[:, i : i + 1], W, H)[:, 0].float().add(1).mul_(127.5).round_().clamp_(0, 255)
        out[i].copy_(frame.permute(1, 2, 0))
    return out.numpy()

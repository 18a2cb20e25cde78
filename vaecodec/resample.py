"""Coding the picture at another size (``--scale``): the encoder resizes each frame before the
model and the decoder resizes the model's output back to the source size.

Why: the embedded model's 16 latent channels per 8x8x4 pixels bound both ends of its range.
At low rates it spends its few bits better on a smaller picture, since its reconstructions are
soft anyway and a bicubic enlargement loses little beside them; at high rates its quality
saturates (texture finer than its cells is lost at any step), and a larger picture gives it
more cells per source pixel. On 480p clips (docs/MODEL.md) a smaller picture wins at equal
bytes at qualities 1-4 and a larger one from 6 up, so the quality ladder codes those sizes by
default (``quant.LADDER``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError

MIN_SCALE, MAX_SCALE = 0.125, 4.0

# A default scale above 1 stops at this many coded pixels (3.5x a 480p picture, about 5 MP):
# large sources are smoother per pixel, and an 8K picture would cost a 1080p source 16x the
# work of its own size. (Measured on the busy lomiri pan at 720p: 2x at tables 5 gave 29.0 dB
# at 0.042 bpp where 1.5x, the old cap's 1920x1080, reached 27.6 dB only at 0.064 bpp.)
MAX_UPSCALED_PIXELS = 2992 * 1680


def capped_scale(scale: float, width: int, height: int) -> float:
    """A quality level's picture scale for a ``width`` x ``height`` source: enlarging stops at
    ``MAX_UPSCALED_PIXELS`` (never below the source size)."""
    if scale > 1.0:
        scale = max(1.0, min(scale, (MAX_UPSCALED_PIXELS / (width * height)) ** 0.5))
    return scale


def fine_detail_db(frame: np.ndarray) -> float:
    """PSNR of a uint8 [H, W, 3] frame against itself halved and restored: low when much of
    the picture is detail finer than 2 px, which is what saturates a VAE's latent cells."""
    h, w = frame.shape[:2]
    back = resize_frames(resize_frames(frame[None], max(2, w // 2), max(2, h // 2)), w, h)[0]
    mse = float(np.mean((back.astype(np.float32) - frame) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def check_scale(scale: float) -> float:
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise UsageError(f"--scale must be between {MIN_SCALE} and {MAX_SCALE:g}, got {scale}")
    return float(scale)


def coded_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The (width, height) the model codes for a source of ``width`` x ``height``: scaled and
    rounded to even numbers (so chroma-subsampled previews stay exact), at least 2x2."""
    if scale == 1.0:
        return width, height
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [n, H, W, 3] -> uint8 [n, height, width, 3], bicubic, antialiased (a widened
    kernel) when it shrinks, so the model does not code aliasing that the enlargement would show."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = torch.empty(len(frames), height, width, 3, dtype=torch.uint8)
    for i in range(0, len(frames), 8):  # a few frames at a time: no tile-sized float temporaries
        x = torch.from_numpy(frames[i : i + 8]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        out[i : i + 8].copy_(y.round_().clamp_(0, 255).permute(0, 2, 3, 1))
    return out.numpy()


def resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Decoded float frames [3, n, h, w] -> [3, n, height, width]: bicubic, antialiased when it
    shrinks a picture coded larger than the source."""
    if x.shape[-2:] == (height, width):
        return x
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    src = x.transpose(0, 1).float()
    if shrinking and src.device.type not in ("cpu", "cuda"):  # antialiased kernels: CPU and CUDA only
        return resize(x.cpu(), width, height).to(x.device)
    y = F.interpolate(src, size=(height, width), mode="bicubic", antialias=shrinking, align_corners=False)
    return y.transpose(0, 1)


def to_uint8_frames(x: torch.Tensor, height: int, width: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """[3, n, Hp, Wp] float in [-1,1] -> uint8 [n, H, W, 3]: crops the grid padding to
    ``height`` x ``width``, then resizes to ``size`` (W, H) when the file was coded at another size.

    On CPU one frame at a time into one contiguous array (no tile-sized float temporaries);
    on a GPU in one go, then one copy to the host.
    """
    x = x[:, :, :height, :width]
    W, H = size or (width, height)
    if x.device.type != "cpu":
        x = resize(x, W, H)
        return x.float().add(1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous().cpu().numpy()
    out = torch.empty(x.shape[1], H, W, 3, dtype=torch.uint8)
    for i in range(x.shape[1]):
        frame = resize(x[:, i : i + 1], W, H)[:, 0].float().add(1).mul_(127.5).round_().clamp_(0, 255)
        out[i].copy_(frame.permute(1, 2, 0))
    return out.numpy()

"""Differentiable rate model used only in training.

It mirrors what ``vaecodec.entropy.EntropyCoder`` does at coding time so the encoder is
trained for the bits actually spent: every latent frame's channel plane is coded either
directly ("intra": q) or as the residual to the previous latent frame ("inter":
q_t - q_{t-1}), whichever is cheaper, with one flag bit per plane. Each mode has a
per-channel density (mixture of logistics) in *latent units*, so one prior serves every
quantization step. The coder's integer tables are built from histograms after training;
this prior only shapes the latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaecodec.metrics import luma, ssim

_LOG2 = 0.6931471805599453


def _sigmoid_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sigmoid(a) - sigmoid(b) for a >= b without cancellation in the upper tail."""
    upper_tail = (a + b) > 0
    return torch.where(upper_tail, torch.sigmoid(-b) - torch.sigmoid(-a), torch.sigmoid(a) - torch.sigmoid(b))


class _Mixture(nn.Module):
    """Per-channel mixture of K logistics; ``bits`` = -log2 P(bin of width s around v)."""

    def __init__(self, channels: int, k: int, spread: float) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(channels, k))
        self.means = nn.Parameter(torch.linspace(-spread, spread, k).repeat(channels, 1))
        self.log_scales = nn.Parameter(torch.zeros(channels, k))

    def bits(self, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # v: [B, C, t, h, w]; s: [B, 1, 1, 1, 1] step in latent units
        c = v.shape[1]
        shape = (1, c, 1, 1, 1, -1)
        w = torch.softmax(self.logits, -1).view(shape)
        mu = self.means.view(shape)
        inv = torch.exp(-self.log_scales.clamp(-7, 7)).view(shape)
        v6, s6 = v.unsqueeze(-1), s.unsqueeze(-1)
        p = (w * _sigmoid_diff((v6 + s6 / 2 - mu) * inv, (v6 - s6 / 2 - mu) * inv)).sum(-1)
        return -torch.log(p.clamp_min(1e-9)) / _LOG2


class RatePrior(nn.Module):
    """Bits of a latent clip under intra/inter mode selection per (channel, latent frame)."""

    def __init__(self, channels: int = 16, k: int = 3) -> None:
        super().__init__()
        self.intra = _Mixture(channels, k, spread=1.0)
        self.inter = _Mixture(channels, k, spread=0.2)

    def forward(self, y: torch.Tensor, s: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """Total bits per clip [B] for latents y [B, C, t, h, w] at steps s [B].

        noise=True: training proxy (additive uniform noise of width s); noise=False:
        the real rounding, i.e. the ideal code length of what the coder would see.
        """
        b, c, t = y.shape[:3]
        s5 = s.view(b, 1, 1, 1, 1)
        yq = torch.round(y / s5) * s5
        yq_ste = y + (yq - y).detach()  # rounded values, identity gradient
        if noise:
            y_hat = y + (torch.rand_like(y) - 0.5) * s5
        else:
            y_hat = yq
        intra = self.intra.bits(y_hat, s5).sum((3, 4))  # [B, C, t]
        total = intra[:, :, 0].sum(1)
        if t > 1:
            d = y[:, :, 1:] - yq_ste[:, :, :-1]
            d_hat = d + (torch.rand_like(d) - 0.5) * s5 if noise else yq[:, :, 1:] - yq[:, :, :-1]
            inter = self.inter.bits(d_hat, s5).sum((3, 4))  # [B, C, t-1]
            total = total + torch.minimum(intra[:, :, 1:], inter).sum((1, 2)) + c * (t - 1)
        return total


def kl_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean per-element KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] tensors (peak = 1 on the [0, 1] scale)."""
    mse = F.mse_loss((x.clamp(-1, 1) + 1) / 2, (y + 1) / 2).item()
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def ssim_y(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM over all frames of two [-1, 1] clip batches [B, 3, T, H, W], on BT.601 luma at
    8-bit scale: what ``vaecodec bench`` reports for files, so the two can be compared."""
    def frames(v: torch.Tensor) -> torch.Tensor:  # -> [B * T, H, W]
        return luma(((v.clamp(-1, 1) + 1) * 127.5).float().permute(0, 2, 3, 4, 1)).flatten(0, 1)

    return ssim(frames(x), frames(y)).mean().item()

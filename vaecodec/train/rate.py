"""Differentiable rate model used only in training.

It mirrors what ``vaecodec.entropy.EntropyCoder`` does at coding time so the encoder is
trained for the bits actually spent: every latent frame's channel plane is coded either
directly ("intra": q) or as the residual to the previous latent frame ("inter":
q_t - q_{t-1}), whichever is cheaper, with one flag bit per plane. With motion (the coder's
default, chunk version 4), q_{t-1} is first moved by one vector per block, found by the same
search as the coder's but batched in torch on the training device. Each mode has a
per-channel density (mixture of logistics) in *latent units*, so one prior serves every
quantization step. The coder's integer tables are built from histograms after training;
this prior only shapes the latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaecodec import motion as mc
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


def _cells(mv: torch.Tensor, h: int, w: int, block: int) -> torch.Tensor:
    """Block vectors [N, nby, nbx, 2] (eighths) -> per-cell displacements [N, h, w, 2] in cells."""
    per_cell = mv.repeat_interleave(block, 1)[:, :h].repeat_interleave(block, 2)[:, :, :w]
    return per_cell.to(torch.float32) / mc.PRECISION


def shift(u: torch.Tensor, mv: torch.Tensor, block: int) -> torch.Tensor:
    """``motion.shift`` for a batch of frames u [N, C, h, w] and vectors mv [N, nby, nbx, 2]:
    each cell reads the bilinear blend at its block's displacement, edges repeated
    (``grid_sample`` with border padding); differentiable in u."""
    n, _, h, w = u.shape
    disp = _cells(mv, h, w, block).to(u.device)
    rows = torch.arange(h, device=u.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=u.device, dtype=torch.float32).view(1, 1, w)
    grid = torch.stack([2 * (cols + disp[..., 1]) / max(w - 1, 1) - 1,  # x first, then y
                        2 * (rows + disp[..., 0]) / max(h - 1, 1) - 1], -1)
    return F.grid_sample(u, grid.to(u.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def _block_sums(d: torch.Tensor, block: int) -> torch.Tensor:
    """[N, h, w] -> [N, nby, nbx] sums over each block's cells."""
    n, h, w = d.shape
    nby, nbx = -(-h // block), -(-w // block)
    d = F.pad(d, (0, nbx * block - w, 0, nby * block - h))
    return d.view(n, nby, block, nbx, block).sum((2, 4))


@torch.no_grad()
def search(x: torch.Tensor, prev: torch.Tensor, block: int) -> torch.Tensor:
    """``motion.search`` for a batch: float latents x [N, C, h, w] (in steps) against symbols
    prev [N, C, h, w] -> vectors [N, nby, nbx, 2] (int64, eighths). Same candidates, order and
    tie rule; the prediction is rounded half up like the coder's, in float arithmetic."""
    n, _, h, w = x.shape
    nby, nbx = -(-h // block), -(-w // block)

    def cost(mv: torch.Tensor) -> torch.Tensor:  # [N, nby, nbx, 2] -> [N, nby, nbx]
        pred = torch.floor(shift(prev, mv, block) + 0.5)
        return _block_sums((x - pred).abs().sum(1), block)

    cells = torch.tensor(mc.WHOLE_CELLS, device=x.device) * mc.PRECISION  # [K, 2], made once per call
    offsets = torch.tensor(mc.NEIGHBOURS, device=x.device)
    scores = torch.stack([cost(v.expand(n, nby, nbx, 2)) for v in cells])  # [K, N, nby, nbx]
    best, idx = scores.min(0)  # the first of equal minima: the shortest vector
    mv = cells[idx]
    for d in mc.REFINE:
        cands = [mv] + [mv + d * o for o in offsets]  # the centre wins ties
        costs = [best] + [torch.where(c.abs().amax(-1) > mc.MV_MAX, torch.inf, cost(c)) for c in cands[1:]]
        best, idx = torch.stack(costs).min(0)
        mv = torch.stack(cands).gather(0, idx[None, ..., None].expand(1, n, nby, nbx, 2))[0]
    return mv


class RatePrior(nn.Module):
    """Bits of a latent clip under intra/inter mode selection per (channel, latent frame);
    with ``motion_block`` the inter reference is the previous latent frame moved by the
    coder's motion search, as in chunk version 4."""

    def __init__(self, channels: int = 16, k: int = 3, motion_block: int = 0) -> None:
        super().__init__()
        self.intra = _Mixture(channels, k, spread=1.0)
        self.inter = _Mixture(channels, k, spread=0.2)
        self.motion_block = motion_block

    def _reference(self, y: torch.Tensor, yq: torch.Tensor, s5: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """What latent frames 1.. are predicted from: ``prev`` (frames ..t-2 of the rounded
        latents, [B, C, t-1, h, w]) in place, or moved along the vectors that the coder's
        search finds for y against yq."""
        if not self.motion_block:
            return prev
        b, c, t1, h, w = prev.shape

        def frames(v: torch.Tensor) -> torch.Tensor:  # [B, C, t-1, h, w] -> [B(t-1), C, h, w]
            return v.transpose(1, 2).reshape(b * t1, c, h, w)

        mv = search(frames(y[:, :, 1:] / s5), frames(yq[:, :, :-1] / s5), self.motion_block)
        moved = shift(frames(prev), mv, self.motion_block)
        return moved.view(b, t1, c, h, w).transpose(1, 2)

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
            if noise:
                d = y[:, :, 1:] - self._reference(y, yq, s5, yq_ste[:, :, :-1])
                d_hat = d + (torch.rand_like(d) - 0.5) * s5
            else:  # the coder rounds its prediction in steps
                ref = self._reference(y, yq, s5, yq[:, :, :-1] / s5)
                d_hat = yq[:, :, 1:] - torch.floor(ref + 0.5) * s5
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

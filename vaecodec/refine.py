"""Encoder-side latent refinement: store the latents that decode best, not the encoder's guess.

The encoder's mean is a one-shot (amortised) guess, and a 430 k-parameter encoder guesses far
from the best latents its decoder could use. With the decoder at hand the encoder can search:
a few Adam steps on each tile's latents, through the file's real quantization (straight-
through rounding at the quality's steps, with the temporal deadzone) and the real decoder,
minimising the picture's squared error plus a rate term. Decoders are untouched: a refined
file is an ordinary file, and only encoding gets slower (one decoder forward and backward
pass per step).

Refinement follows the decoder's temporal tiles, one tile at a time, so memory stays one
tile's activations and gradients, and each tile is refined against the picture the viewer
gets. A streaming model (``VideoVAE.streams``, the embedded one) decodes a tile from the
causal state the previous tile's final latents left, as ``tiling.CausalDecoder`` does. Other
models follow the overlapping plan of ``tiling.temporal_tiles``: tile ``i`` shares its first
``overlap + 1`` latents with tile ``i - 1``; those are already final, and the frames they
share are cross-faded with tile ``i - 1``'s final output exactly as the decoder will. The refiner hands on its latents already
quantized (symbols times steps), so the quantizer stores exactly the symbols it optimised,
whatever the chunk boundaries.

The rate term is the mean absolute frame-to-frame change of the latents in quantization
steps, what the coder's inter tables pay for: with motion compensation (the default), the
change from the previous latent frame moved by the vectors the quantizer picks for the
current latents (``motion.shift``), as the coder predicts it, and resampled first where the
camera's zoom started a new reference (``motion.resample_float``, ``zoom``). Both terms are
divided by their values before the first step, so ``rate_weight`` is a unitless trade-off: 1
weighs a 1 % change of the rate term like a 1 % change of the squared error (the default is
0.25).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from . import motion as mc
from .errors import UsageError
from .quant import chunk_symbols
from .tiling import Move, TileRunner, crossfade, moves_in

# Measured on held-out 480p pans (docs/MODEL.md, "Encoder-side latent refinement"): over
# qualities 2-7, rate weight 0.5 beat 1 on both a smooth and a busy pan, and 0.25 matched 0.5
# on the smooth one and beat it on the busy one (BD-rate of 0.25 against 0.5: -0.3 / -2.7 %);
# 0.01 steps per iteration, cosine-decayed, keeps paying up to at least 40 iterations (the
# CLI leaves the count to the user).
RATE_WEIGHT = 0.25
LEARNING_RATE = 0.01
MAX_STEPS = 1000


@dataclass(frozen=True)
class RefineSettings:
    """``steps``: Adam iterations per tile (0: off). ``lr`` is in quantization steps per
    iteration (cosine-decayed to zero); ``rate_weight`` as in the module docstring."""

    steps: int
    rate_weight: float = RATE_WEIGHT
    lr: float = LEARNING_RATE


def check_refine(value: int | RefineSettings | None) -> RefineSettings | None:
    """Validate ``--refine`` (a step count) or full settings; None when refinement is off."""
    if value is not None and not isinstance(value, RefineSettings) and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"--refine must be a whole number of steps or RefineSettings, got {value!r}")
    st = value if isinstance(value, RefineSettings) else RefineSettings(value or 0)
    if not 0 <= st.steps <= MAX_STEPS:
        raise UsageError(f"--refine must be between 0 and {MAX_STEPS} steps, got {st.steps}")
    if not (st.lr > 0 and st.rate_weight >= 0):
        raise UsageError(f"refinement needs lr > 0 and rate_weight >= 0, got {st}")
    return st if st.steps else None


def held_symbols(u: torch.Tensor, prev: torch.Tensor | None, deadzone: float, motion_block: int | None = None,
                 coder=None, quality: int | None = None, zooms: mc.Zooms | None = None
                 ) -> tuple[torch.Tensor, np.ndarray | None]:
    """Symbols of latents ``u`` [C, k, h, w] in step units, the deadzone chain continuing from
    the previous latent frame's symbols ``prev`` [C, h, w] (None: ``u`` starts the stream),
    and with ``motion_block`` the motion vector of each of the k frames (``motion.quantize``;
    a frame that starts the stream has zeros; ``coder`` and ``quality`` price blocks as the
    quantizer does; ``zooms``: frames of ``u`` predicted through a zoom, by their index in it)."""
    x = u if prev is None else torch.cat([prev[:, None], u], dim=1)
    first = x.shape[1] - u.shape[1]
    zooms = {j + first: z for j, z in zooms.items()} if zooms and motion_block else None
    q, mv = chunk_symbols(x, deadzone, motion_block, coder, quality, zooms)  # as the quantizer will store them
    return torch.from_numpy(q[:, first:]).to(u), None if mv is None else mv[first:]


class LatentRefiner:
    """Takes the encoder's latent blocks and the frames they came from; yields refined latents.

    ``frames`` [3, n, H, W] uint8 go in as they are read (``add_frames``), latent blocks
    [C, k, h, w] through ``push``; ``finish`` runs the last, shorter tile. ``visible`` (H, W)
    is the part of the padded frame that the decoder writes out, the only part scored.
    """

    def __init__(self, runner: TileRunner, temporal: int, step: torch.Tensor, deadzone: float,
                 settings: RefineSettings, visible: tuple[int, int], motion_block: int | None = None,
                 coder=None, quality: int | None = None) -> None:
        self.runner, self.t, self.settings = runner, temporal, settings
        self.coder, self.quality = coder, quality  # to hold blocks as the quantizer does
        self.step = step.float().view(-1, 1, 1, 1)  # [C, 1, 1, 1]
        self.deadzone, self.visible = deadzone, visible
        self.motion_block = motion_block  # the coder's block when it predicts along motion
        til = runner.tiling
        self.streams = runner.streams
        # a streamed tile is L latents after the last final one; an overlapping one L + 1
        self.L, self.stride = til.latent_frames, til.latent_frames - (0 if self.streams else til.overlap_latents)
        self.states: dict | None = None  # a streaming decoder's state after the final latents
        self.frames: list[torch.Tensor] = []  # pending uint8 frames [3, H, W]
        self.f0 = 0  # global index of frames[0]
        self.latents: list[torch.Tensor] = []  # pending latents [C, h, w], in step units
        self.l0 = 0  # global index of latents[0]
        self.start = 0  # latent start of the next tile
        self.final = -1  # last latent index that is final (refined and emitted)
        self.symbols: torch.Tensor | None = None  # held symbols of latent ``final`` [C, h, w]
        self.tail: torch.Tensor | None = None  # decoded frames the next tile cross-fades with
        self.frames_in = 0  # real frames seen; padding beyond them is not scored
        self.moves: dict[int, Move] = {}  # latent frame -> how the content moved before it
        self.tile_moves: dict[int, Move] = {}  # those of the tile being refined, by its latent frames
        self.zooms: mc.Zooms = {}  # latent frame -> the zoom the coder predicts it through
        self.tile_zooms: mc.Zooms = {}  # those before the tile's free latents, by their index among them

    def move(self, latent: int, move: Move) -> None:
        """As ``CausalEncoder.move``: the decoder's memory moves before latent frame ``latent``."""
        self.moves[latent] = move

    def zoom(self, latent: int, zoom: tuple[int, int, int]) -> None:
        """Latent frame ``latent`` is predicted from the one before resampled through ``zoom``
        (a chunk's ``camera_zoom`` on the latent grid), so the rate term prices it so too."""
        self.zooms[latent] = zoom

    def add_frames(self, x: torch.Tensor) -> None:
        """x: uint8 [3, n, H, W], the frames the encoder was given."""
        self.frames.extend(x.unbind(1))
        self.frames_in += x.shape[1]

    def push(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """z: encoder latents [C, k, h, w]; yields refined latents as tiles complete."""
        self.latents.extend((z.float() / self.step).unbind(1))
        while self.l0 + len(self.latents) > self.start + self.L - self.streams:
            yield self._run(self.L)

    def finish(self) -> Iterator[torch.Tensor]:
        """Refine what is left: the tiles the decoder's plan ends with. The frames are padded
        as the encode stream's ``finish`` pads them (the last one repeated)."""
        last = self.l0 + len(self.latents) - 1
        pad = 1 + last * self.t - self.f0 - len(self.frames)
        self.frames.extend([self.frames[-1]] * pad if pad > 0 else [])
        while self.final < last:
            yield self._run(min(self.L, last - self.start + self.streams))

    def _run(self, m: int) -> torch.Tensor:
        """Refine the next tile: latents [start, start + m] (streamed: [start, start + m));
        returns its newly final latents [C, k, h, w] as symbols times steps."""
        a, s, t = self.start, self.step, self.t
        if self.streams:  # its own latents, after the last final one (the rate term's reference)
            lo, end = a - (self.final >= 0), a + m
        else:  # its first latents are the previous tile's last
            lo, end = a, a + m + 1
        u = torch.stack(self.latents[lo - self.l0 : end - self.l0], dim=1)  # [C, k, h, w]
        n_fixed = self.final + 1 - lo  # latents before this tile's own: already final
        fixed, free = u[:, :n_fixed], u[:, n_fixed:].clone()
        # the frames the tile decodes to: a stream's first latent gives one frame, later ones t
        f_lo = max(0, (a - 1) * t + 1) if self.streams else a * t
        x = torch.stack(self.frames[f_lo - self.f0 : (end - 1) * t + 1 - self.f0], dim=1).float().div_(127.5).sub_(1)
        real = max(1, min(x.shape[1], self.frames_in - f_lo))  # padding frames are not scored
        self.tile_moves = moves_in(self.moves, lo + n_fixed, end)
        self.moves = {j: mv for j, mv in self.moves.items() if j >= end}
        self.tile_zooms = moves_in(self.zooms, lo + n_fixed, end)
        self.zooms = {j: z for j, z in self.zooms.items() if j >= end}
        free = self._optimise(fixed, free, x[:, :real])
        q_free, _ = held_symbols(free, self.symbols, self.deadzone, self.motion_block, self.coder, self.quality,
                                 self.tile_zooms)
        with torch.no_grad():
            out = self._picture(torch.cat([fixed, q_free], dim=1), n_fixed, keep=True)
        # keep what the next tile needs: the latents it shares or follows (as symbols, what
        # the decoder sees), its frames and this tile's decoded tail
        self.symbols = q_free[:, -1]
        self.latents[lo + n_fixed - self.l0 : end - self.l0] = list(q_free.unbind(1))
        self.final = end - 1
        self.start = a + self.stride
        if not self.streams:
            split = self.start * t - a * t
            self.tail = out[:, split:].clone() if split < out.shape[1] else None
        keep_from = self.start - self.streams  # a streamed tile follows the last final latent
        del self.latents[: keep_from - self.l0]
        self.l0 = keep_from
        drop = (self.start - self.streams) * t + self.streams - self.f0  # frames decoded by final latents
        del self.frames[:drop]
        self.f0 += drop
        return q_free * s

    def _picture(self, u: torch.Tensor, n_fixed: int, keep: bool = False) -> torch.Tensor:
        """Decoded frames of the tile whose scaled latents are ``u`` [C, k, h, w], the first
        ``n_fixed`` already final: streamed, the free ones from the state the final ones left
        (``keep``: this becomes the new state); else all of them, the head cross-faded with the
        previous tile's tail as ``StreamingDecoder`` does. [3, n, H, W]."""
        grad = torch.is_grad_enabled()
        if self.streams:
            states = dict(self.states or {})  # a copy: every step starts from the same state
            x = self.runner.decode((u[:, n_fixed:] * self.step)[None], grad=grad, states=states, moves=self.tile_moves)[0]
            if keep:
                self.states = states
            return x
        x = self.runner.decode((u * self.step)[None], grad=grad)[0]
        if self.tail is None:
            return x
        return torch.cat([crossfade(self.tail, x), x[:, self.tail.shape[1] :]], dim=1)

    def _predicted(self, prev: torch.Tensor, mv: np.ndarray | None) -> torch.Tensor:
        """Latent frames ``prev`` [C, n, h, w] as the coder predicts the n frames after them, the
        last n free ones: in place, or moved by their vectors, resampled first through a zoom."""
        if mv is None:
            return prev
        first = len(mv) - prev.shape[1]  # the free frame the first prediction is for
        return torch.stack([mc.shift(p if (z := self.tile_zooms.get(first + k)) is None else mc.resample_float(p, z),
                                     v, self.motion_block)
                            for k, (p, v) in enumerate(zip(prev.unbind(1), mv[first:]))], dim=1)

    def _optimise(self, fixed: torch.Tensor, free: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Adam on the free latents (step units) against the tile's first real frames ``x``
        [3, n, H, W] in [-1, 1]."""
        st = self.settings
        if st.steps == 0 or free.shape[1] == 0:
            return free
        h, w = self.visible
        real = x.shape[1]
        target = x[:, :, :h, :w]
        free = free.requires_grad_(True)
        # The loss is scaled up for the backward pass so that an fp16 decoder's gradients do
        # not underflow (per-pixel terms are ~1/numel); Adam's eps is scaled alike, which makes
        # its steps exactly those of the unscaled loss.
        scale = float(target.numel()) ** 0.5
        opt = torch.optim.Adam([free], lr=st.lr, eps=1e-8 * scale)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / st.steps)))
        d0 = r0 = None
        best, best_loss = free.detach().clone(), math.inf
        for i in range(st.steps + 1):  # the last pass only scores the last step's latents
            with torch.set_grad_enabled(i < st.steps):
                q, mv = held_symbols(free.detach(), self.symbols, self.deadzone, self.motion_block,
                                     self.coder, self.quality, self.tile_zooms)
                u = torch.cat([fixed, free + (q - free).detach()], dim=1)  # rounded values, identity gradient
                err = (self._picture(u, fixed.shape[1])[:, :real, :h, :w] - target).square().mean()
                seq = u[:, max(0, fixed.shape[1] - 1):]  # the free latents and the one they follow
                rate = (seq[:, 1:] - self._predicted(seq[:, :-1], mv)).abs().mean() if seq.shape[1] > 1 \
                    else err.new_zeros(())
                if d0 is None:
                    d0, r0 = err.item() or 1.0, rate.item() or 1.0
                loss = err / d0 + st.rate_weight * rate / r0
            if loss.item() < best_loss:  # never hand on latents worse than the encoder's own
                best, best_loss = free.detach().clone(), loss.item()
            if i == st.steps:
                break
            opt.zero_grad(set_to_none=True)
            (loss * scale).backward()
            opt.step()
            sched.step()
        return best

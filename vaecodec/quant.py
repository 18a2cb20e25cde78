"""Latent quantization: float latents <-> integer symbols <-> chunk payload bytes.

Two schemes, named in the .vlat header so decode needs no guesswork:

``uniform``  per-chunk, per-channel min/max scaling to ``bits`` (4..8) unsigned levels;
             works for every model; payload = bit-packed levels, zstd-compressed by the
             container. Reconstruction error per value is at most half a step.
``entropy``  ``q = round(z / step[c])`` with the model's learned per-channel steps for a
             quality level, coded by the model's bit-exact entropy coder (stored raw).
             The encoder may hold a symbol at its previous latent frame's value (the
             temporal deadzone below), moved along the block's motion vector by default
             (``vaecodec.motion``); the decoder only ever computes ``q * step[c]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import motion as mc
from .errors import FormatError, UsageError

MIN_BITS, MAX_BITS = 4, 8
MAX_DEADZONE = 0.5
# Temporal deadzone per quality of the embedded model's bank, each at its default picture size
# (benchmarks/deadzone.py, benchmarks/scale.py): the coarse qualities gain most. At the half and
# three-quarter sizes of qualities 1-4 latents drift more slowly, and 0.1 beats the wider
# deadzones full size preferred; from quality 5 up the gain is small.
DEADZONE_BY_QUALITY = {1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.05, 6: 0.05, 7: 0.05, 8: 0.05}


@dataclass(frozen=True)
class Level:
    """A rung of the quality ladder (``--quality``): which of the coder's step sizes and tables
    to use (``table``, the header's ``quantization.quality``) and how large a picture to code."""

    table: int
    scale: float


# The embedded model's quality ladder, the way streaming ladders move resolution with bitrate
# (docs/MODEL.md "The quality ladder"). The model's 16 channels per 8x8x4 pixels bound both
# ends: at low rates its few bits go further on a smaller picture; at high rates its detail
# saturates: on the busy held-out pan, tables 6 -> 8 at 1.5x buy +0.4 dB for 2.6x the bits,
# while 2x the width and height at table 5 gives +1.3 dB over 1.5x at table 8 for 42 % of its
# bits. So the top levels code up to 2x the picture at tables 5-6; 9-10 add the fine tables.
# How far to enlarge depends on how much fine detail the picture has (``resample.fine_detail_db``
# of its first, middle and last frame read, the lowest): this ladder is for the middle.
LADDER = {1: Level(1, 0.5), 2: Level(2, 0.5), 3: Level(3, 0.75), 4: Level(4, 0.75), 5: Level(5, 1.0),
          6: Level(5, 1.5), 7: Level(5, 2.0), 8: Level(6, 2.0), 9: Level(7, 2.0), 10: Level(8, 2.0)}
# A busy picture (below BUSY_DB) keeps paying for more latent cells per source pixel far past 2x:
# on the three busy held-out 480p pans 3x at tables 4 gave 0.5-1.2 dB more than 2x at tables 6
# for 5-17 % fewer bits, and on the busiest the hull of (scale, tables) runs along tables 4 up to
# 3.5x before finer tables pay (docs/MODEL.md, "The ladder goes to 3.5x"). On pictures of middle
# detail (33-37 dB) the same rungs lost 0.2-3 dB to the 2x ones.
BUSY_LADDER = {7: Level(4, 2.5), 8: Level(4, 3.0), 9: Level(5, 3.0), 10: Level(6, 3.5)}
# A smooth picture (from SMOOTH_DB up) does not saturate the model at 1.5x, and there finer
# tables beat a larger picture at equal rate (+0.4-1.0 dB on the smooth held-out pans) and
# decode 2x faster.
SMOOTH_LADDER = {7: Level(6, 1.5), 8: Level(7, 1.5)}
# Thresholds on ``fine_detail_db``: on 14 pans the smooth rung was as good or better than the
# 2x one from 39.1 dB up and worse from 36.6 dB down; the busy rung 0.2-1.2 dB better than the
# 2x one on the six pans at 26.0-29.6 dB, 0.1-0.4 dB better at 31.0, 1-2.6 dB worse at 31.3,
# and from 32.6 dB up mostly worse, by up to 3.6 dB, never better by more than 0.34 (25 pans,
# docs/MODEL.md, "Seven more photos"). A busy rung wrongly taken costs more than one missed.
SMOOTH_DB, BUSY_DB = 38.0, 30.5


def check_level(quality: int) -> int:
    if quality not in LADDER:
        raise UsageError(f"--quality must be from {min(LADDER)} to {max(LADDER)}, got {quality}")
    return quality


def ladder_level(quality: int, detail_db: float | None = None) -> Level:
    """The rung of ``--quality`` for a picture with ``detail_db`` of fine detail
    (``resample.fine_detail_db``, lower is busier; None: the middle ladder)."""
    check_level(quality)
    if detail_db is not None and detail_db >= SMOOTH_DB:
        return SMOOTH_LADDER.get(quality, LADDER[quality])
    if detail_db is not None and detail_db < BUSY_DB:
        return BUSY_LADDER.get(quality, LADDER[quality])
    return LADDER[quality]


def fit_level(rung: Level, scale: float, finest: int) -> Level:
    """``rung`` on a picture of ``scale`` instead, for a source that may not be enlarged as far
    (``resample.capped_scale``) or a ``--scale`` that asks for less: each half of the
    enlargement lost becomes one finer table set, up to ``finest``, so the top levels stay
    apart and a higher level never codes coarser at a given size. On the pans measured, +0.5x
    and one finer table set each cost 1.5-1.7x the bits. (Scales up to 1 lose no enlargement.)"""
    lost = max(0.0, rung.scale - max(scale, 1.0))
    return Level(min(rung.table + round(lost / 0.5), finest), scale)


@dataclass(frozen=True)
class Packed:
    """One chunk's payload plus what its meta must record to undo it."""

    payload: bytes
    meta: dict
    coding: str  # container coding: "zstd" or "raw"


def _pack_bits(levels: np.ndarray, bits: int) -> bytes:
    """uint8 levels < 2**bits -> dense big-endian bit string (no padding between values)."""
    if bits == 8:
        return levels.tobytes()
    planes = np.unpackbits(levels.reshape(-1, 1), axis=1)[:, 8 - bits :]  # [N, bits]
    return np.packbits(planes.reshape(-1)).tobytes()


def _unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of ``_pack_bits``; validates the length so a damaged payload cannot mislead."""
    expected = (count * bits + 7) // 8
    if len(data) != expected:
        raise FormatError(f"latent payload has {len(data)} bytes, expected {expected}")
    if bits == 8:
        return np.frombuffer(data, dtype=np.uint8)
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    return (planes * weights).sum(axis=1, dtype=np.uint8)


def default_deadzone(quality: int) -> float:
    """The encoder's temporal deadzone at an entropy-coder quality level (see ``hold_symbols``).

    Measured on 480p pans of held-out photos (docs/MODEL.md): holding saves most at the coarse
    qualities, where rounding noise makes a panned latent flip between neighbouring symbols.
    """
    return DEADZONE_BY_QUALITY.get(quality, 0.0)


def hold_symbols(x: torch.Tensor, q: torch.Tensor, deadzone: float) -> None:
    """Temporal deadzone, in place: latent frame t keeps frame t-1's symbol wherever the scaled
    latent ``x`` [..., t, h, w] is within ``0.5 + deadzone`` steps of it, else keeps ``round(x)``.

    The reference is the previous *held* symbol, so the error never exceeds ``0.5 + deadzone``
    steps; the inter residuals of slowly drifting latents become zero (fewer bits, steadier
    output) instead of flipping between neighbouring symbols from frame to frame.
    """
    for t in range(1, x.shape[-3]):
        prev = q[..., t - 1, :, :]
        keep = (x[..., t, :, :] - prev).abs_() <= 0.5 + deadzone
        q[..., t, :, :] = torch.where(keep, prev, q[..., t, :, :])


def entropy_symbols(x: torch.Tensor, deadzone: float) -> torch.Tensor:
    """Latents already divided by their step, [..., t, h, w] -> integer-valued symbols: what
    the encoder stores, what the coder's tables are fitted to and what model cards measure."""
    q = torch.round(x)
    if deadzone:
        hold_symbols(x, q, deadzone)
    return q


def chunk_symbols(x: torch.Tensor, deadzone: float, motion_block: int | None,
                  coder=None, quality: int | None = None, zooms: mc.Zooms | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """A chunk's latents in steps [C, t, h, w] -> its int32 symbols and, with ``motion_block``,
    its motion vectors (``motion.quantize``, which holds whole blocks where ``coder`` prices
    their residual at ``quality`` as not worth it; None without): what ``EntropyCoder.encode``
    takes. Entropy worker processes run it on what ``Quantizer.scaled`` hands them. ``zooms``:
    the latent frames predicted through a zoom (``motion.resample``), which needs motion."""
    if motion_block:
        return mc.quantize(x, deadzone, motion_block, None if coder is None else coder.residual_bits(quality), zooms)
    return entropy_symbols(x, deadzone).to(torch.int32).numpy(), None


class Quantizer:
    """Turns latent blocks [C, t, h, w] into chunk payloads and back."""

    def __init__(self, scheme: str, bits: int | None = None, quality: int | None = None, coder=None,
                 deadzone: float | None = None, motion: bool | None = None) -> None:
        if scheme == "uniform":
            if bits is None or not MIN_BITS <= bits <= MAX_BITS:
                raise UsageError(f"--bits must be between {MIN_BITS} and {MAX_BITS}, got {bits}")
        elif scheme == "entropy":
            if coder is None:
                raise UsageError("this model has no entropy coder; use --bits for uniform quantization")
            quality = coder.default_quality if quality is None else quality
            if quality not in coder.qualities:
                raise UsageError(f"the model's entropy coder has table sets {list(coder.qualities)}, not {quality}")
        else:
            raise FormatError(f"unknown quantization scheme {scheme!r}")
        if deadzone is not None and not 0.0 <= deadzone < MAX_DEADZONE:
            raise UsageError(f"--deadzone must be in [0, {MAX_DEADZONE}), got {deadzone}")
        # uniform quantization comes from --bits or from a model without an entropy coder
        if scheme == "uniform" and deadzone is not None:
            raise UsageError("--deadzone needs entropy coding, which --bits and models without an entropy coder lack")
        if scheme == "uniform" and motion is not None:
            raise UsageError(f"--{'' if motion else 'no-'}motion needs entropy coding, which --bits and models without "
                             "an entropy coder lack")
        if scheme == "entropy" and deadzone is None:
            deadzone = default_deadzone(quality)
        self.scheme, self.bits, self.quality, self.coder = scheme, bits, quality, coder
        self.deadzone = deadzone
        self.motion = scheme == "entropy" and motion is not False  # on by default where it applies

    @classmethod
    def from_header(cls, q: dict, coder) -> "Quantizer":
        return cls(q.get("scheme", ""), bits=q.get("bits"), quality=q.get("quality"), coder=coder)

    def describe(self) -> dict:
        """The header's ``quantization`` object."""
        if self.scheme == "uniform":
            return {"scheme": "uniform", "bits": self.bits, "granularity": "chunk,channel"}
        step = self.coder.step(self.quality)
        return {"scheme": "entropy", "quality": self.quality, "step": [float(s) for s in step],
                "deadzone": self.deadzone, "motion": self.motion}

    def pack(self, z: torch.Tensor, zooms: mc.Zooms | None = None) -> Packed:
        """z: float [C, t, h, w] -> payload; ``zooms``: the chunk's (``motion.Zooms``, entropy
        coding with motion only)."""
        if self.scheme == "entropy":
            q, motion = self.symbols(z, zooms)
            return Packed(self.coder.encode(q, self.quality, motion, zooms), {}, "raw")
        z = z.float().cpu()
        C = z.shape[0]
        flat = z.reshape(C, -1)
        lo, hi = flat.min(1).values, flat.max(1).values
        levels = (1 << self.bits) - 1
        scale = ((hi - lo) / levels).clamp_min(1e-12)
        q = torch.round((flat - lo[:, None]) / scale[:, None]).clamp_(0, levels).to(torch.uint8)
        meta = {"offset": lo.tolist(), "scale": scale.tolist()}
        return Packed(_pack_bits(q.numpy(), self.bits), meta, "zstd")

    def _step(self) -> torch.Tensor:
        """The entropy scheme's per-channel step, shaped [C, 1, 1, 1] to broadcast over a chunk."""
        return self.coder.step(self.quality).float().view(-1, 1, 1, 1)

    @property
    def motion_block(self) -> int | None:
        """Cells per motion-vector block edge, None without motion compensation."""
        return self.coder.block if self.motion else None

    def scaled(self, z: torch.Tensor) -> torch.Tensor:
        """float latents [C, t, h, w] -> float32 latents in steps, ``z / step[c]``, on the CPU."""
        return z.float().cpu() / self._step()

    def symbols(self, z: torch.Tensor, zooms: mc.Zooms | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """float latents [C, t, h, w] -> the entropy coder's int32 symbols, ``round(z / step[c])``
        held across frames by the temporal deadzone, and the chunk's motion vectors (None
        without motion): what ``EntropyCoder.encode`` takes."""
        return chunk_symbols(self.scaled(z), self.deadzone, self.motion_block, self.coder, self.quality, zooms)

    def dequantize(self, q: np.ndarray) -> torch.Tensor:
        """Entropy-coded symbols [C, t, h, w] -> float32 latents ``q * step[c]``."""
        return torch.from_numpy(np.asarray(q, dtype=np.float32)) * self._step()

    def unpack(self, payload: bytes, meta: dict, shape: tuple[int, int, int, int],
               zooms: mc.Zooms | None = None) -> torch.Tensor:
        """payload -> float32 [C, t, h, w]; raises FormatError when payload and meta disagree."""
        C = shape[0]
        if self.scheme == "entropy":
            return self.dequantize(self.coder.decode(payload, shape, self.quality, zooms))
        try:
            lo = torch.tensor(meta["offset"], dtype=torch.float32)
            scale = torch.tensor(meta["scale"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"latent chunk meta lacks valid offset/scale ({e})") from None
        if lo.shape != (C,) or scale.shape != (C,):
            raise FormatError(f"latent chunk meta has {lo.numel()} offsets for {C} channels")
        count = int(np.prod(shape))
        q = torch.from_numpy(_unpack_bits(payload, self.bits, count).astype(np.float32)).reshape(C, -1)
        return (q * scale[:, None] + lo[:, None]).reshape(shape)

"""Bit-exact entropy coding of quantized latents with integer frequency tables.

Each latent channel plane of a chunk is coded either directly ("intra", q) or as the
residual to the previous latent frame ("inter", q_t - q_{t-1}); the encoder picks the
cheaper mode per (channel, frame) and sends one flag bit for it, so static content costs
little while cuts and fast motion fall back to direct coding. Symbols use per-quality,
per-channel integer tables (stored in the weights file) over the values -K..K plus an
escape symbol; escaped values go verbatim into a side list, so ANY int32 input is coded
losslessly. The coded probabilities depend only on those integers, never on a float
network output, so encode and decode agree bit for bit on every machine.

Chunk layout (one ``encode`` call):
  u8 version (=1) | mode flags, packbits of [C, t-1] (1 = inter) | u32 LE escape count |
  escapes int64 LE | range-coder words uint32 LE (constriction queue.RangeEncoder)
Stream order: for each channel, its intra symbols (frame 0 and intra frames, in time
order, row-major) then its inter symbols.
"""

from __future__ import annotations

import struct

import constriction
import numpy as np
import torch

from vaecodec.errors import FormatError, UsageError

K = 63  # values -K..K get their own symbol
ALPHABET = 2 * K + 2  # ... plus one escape symbol (the last)
ESC = ALPHABET - 1
TABLE_TOTAL = 1 << 16  # every table sums to this; each entry >= 1
VERSION = 1


def _symbols(v: np.ndarray) -> np.ndarray:
    """Values -> symbol indices (escape for |v| > K)."""
    return np.where(np.abs(v) <= K, v + K, ESC).astype(np.int32)


def _hist(v: np.ndarray, c: int) -> np.ndarray:
    """[C, ALPHABET] symbol counts of values v [C, ...]."""
    s = _symbols(v).reshape(c, -1)
    return np.stack([np.bincount(s[i], minlength=ALPHABET) for i in range(c)]).astype(np.int64)


def latent_histograms(means: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intra and inter symbol counts [Q, C, ALPHABET] of latent means [N, C, t, h, w] at each step."""
    c = means.shape[1]
    intra, inter = [], []
    for s in steps:
        q = np.round(means / s).astype(np.int64).transpose(1, 0, 2, 3, 4)  # [C, N, t, h, w]
        intra.append(_hist(q, c))
        inter.append(_hist(q[:, :, 1:] - q[:, :, :-1], c))
    return np.stack(intra), np.stack(inter)


def counts_to_table(hist: np.ndarray) -> np.ndarray:
    """Histograms [..., ALPHABET] -> int32 tables summing to TABLE_TOTAL, no zero entries."""
    hist = hist.astype(np.float64)
    tot = hist.sum(-1, keepdims=True).clip(min=1)
    table = np.floor(hist / tot * (TABLE_TOTAL - ALPHABET)).astype(np.int64) + 1
    # give the rounding remainder to the most frequent symbol so every table sums exactly
    rem = TABLE_TOTAL - table.sum(-1)
    idx = np.argmax(table, -1)
    np.put_along_axis(table, idx[..., None], np.take_along_axis(table, idx[..., None], -1) + rem[..., None], -1)
    return table.astype(np.int32)


class EntropyCoder:
    """Per-quality step sizes plus intra/inter integer tables; see the module docstring."""

    def __init__(self, steps: np.ndarray, intra: np.ndarray, inter: np.ndarray,
                 qualities: tuple[int, ...], default_quality: int) -> None:
        # steps [Q, C] float32; intra/inter [Q, C, ALPHABET] int32
        steps, intra, inter = np.asarray(steps, np.float32), np.asarray(intra), np.asarray(inter)
        nq = len(qualities)
        if steps.ndim != 2 or steps.shape[0] != nq or intra.shape != (nq, steps.shape[1], ALPHABET) \
                or inter.shape != intra.shape or default_quality not in qualities:
            raise FormatError("entropy coder tables have inconsistent shapes")
        if (intra <= 0).any() or (inter <= 0).any() or not (steps > 0).all():
            raise FormatError("entropy coder tables hold non-positive entries")
        self.qualities = tuple(int(q) for q in qualities)
        self.default_quality = int(default_quality)
        self.channels = steps.shape[1]
        self._steps = steps
        self._intra = intra.astype(np.int32)
        self._inter = inter.astype(np.int32)
        self._models: dict[int, tuple[list, list, np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------ construction

    @classmethod
    def from_histograms(cls, steps: np.ndarray, intra_hist: np.ndarray, inter_hist: np.ndarray,
                        qualities: tuple[int, ...], default_quality: int) -> "EntropyCoder":
        """Build tables from symbol counts; ``steps`` is [Q] or [Q, C]."""
        steps = np.asarray(steps, np.float32)
        if steps.ndim == 1:
            steps = np.repeat(steps[:, None], intra_hist.shape[1], 1)
        return cls(steps, counts_to_table(intra_hist), counts_to_table(inter_hist), qualities, default_quality)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "steps": torch.from_numpy(self._steps.copy()),
            "intra": torch.from_numpy(self._intra.copy()),
            "inter": torch.from_numpy(self._inter.copy()),
            "qualities": torch.tensor(self.qualities, dtype=torch.int32),
            "default_quality": torch.tensor([self.default_quality], dtype=torch.int32),
        }

    @classmethod
    def from_tensors(cls, d: dict[str, torch.Tensor]) -> "EntropyCoder":
        try:
            return cls(d["steps"].float().numpy(), d["intra"].numpy(), d["inter"].numpy(),
                       tuple(d["qualities"].tolist()), int(d["default_quality"][0]))
        except KeyError as e:
            raise FormatError(f"entropy coder tensors lack {e.args[0]!r}") from e

    # ------------------------------------------------------------ helpers

    def _index(self, quality: int) -> int:
        if quality not in self.qualities:
            raise UsageError(f"quality {quality} not available (choose from {', '.join(map(str, self.qualities))})")
        return self.qualities.index(quality)

    def _prepared(self, quality: int) -> tuple[list, list, np.ndarray, np.ndarray]:
        """constriction models and -log2 probabilities for one quality (cached)."""
        if quality not in self._models:
            i = self._index(quality)
            mk = constriction.stream.model.Categorical
            # probabilities are exact ratios of the stored integers: identical on every machine
            pi = self._intra[i].astype(np.float64) / TABLE_TOTAL
            pp = self._inter[i].astype(np.float64) / TABLE_TOTAL
            self._models[quality] = (
                [mk(p, perfect=False) for p in pi], [mk(p, perfect=False) for p in pp],
                -np.log2(pi), -np.log2(pp))
        return self._models[quality]

    def step(self, quality: int) -> torch.Tensor:
        """[C] float32 quantization step (latent units) for ``quality``."""
        return torch.from_numpy(self._steps[self._index(quality)].copy())

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[0] != self.channels or shape[1] < 1 or min(shape) < 0:
            raise UsageError(f"latent chunk shape {tuple(shape)} is not [{self.channels}, t>=1, h, w]")

    # ------------------------------------------------------------ coding

    def encode(self, q: np.ndarray, quality: int) -> bytes:
        """int [C, t, h, w] -> bytes; lossless for any int32 values, deterministic."""
        q = np.asarray(q)
        if not np.issubdtype(q.dtype, np.integer):
            raise UsageError(f"latent symbols must be integers, got {q.dtype}")
        self._check_shape(q.shape)
        m_intra, m_inter, bits_intra, bits_inter = self._prepared(quality)
        c, t, h, w = q.shape
        q = q.astype(np.int64)
        res = q[:, 1:] - q[:, :-1]  # [C, t-1]
        # mode choice: exact code length under each table (+64 bits per escaped value)
        ch = np.arange(c)[:, None, None, None]
        cost_intra = (bits_intra[ch, _symbols(q[:, 1:])] + 64.0 * (np.abs(q[:, 1:]) > K)).sum((2, 3))
        cost_inter = (bits_inter[ch, _symbols(res)] + 64.0 * (np.abs(res) > K)).sum((2, 3))
        mode = cost_inter < cost_intra  # [C, t-1] True = inter
        enc = constriction.stream.queue.RangeEncoder()
        escapes = []
        for i in range(c):
            intra_frames = np.concatenate(([0], 1 + np.flatnonzero(~mode[i])))
            for vals, model in ((q[i, intra_frames], m_intra[i]), (res[i, np.flatnonzero(mode[i])], m_inter[i])):
                if vals.size == 0:
                    continue
                sym = _symbols(vals.ravel())
                escapes.append(vals.ravel()[sym == ESC])
                enc.encode(sym, model)
        esc = np.concatenate(escapes) if escapes else np.zeros(0, np.int64)
        words = enc.get_compressed().astype("<u4")
        return b"".join((
            bytes([VERSION]),
            np.packbits(mode.ravel()).tobytes(),
            struct.pack("<I", esc.size),
            esc.astype("<i8").tobytes(),
            words.tobytes(),
        ))

    def decode(self, data: bytes, shape: tuple[int, int, int, int], quality: int) -> np.ndarray:
        """Exact inverse of ``encode``: bytes -> int32 [C, t, h, w]."""
        shape = tuple(int(s) for s in shape)
        self._check_shape(shape)
        m_intra, m_inter, _, _ = self._prepared(quality)
        c, t, h, w = shape
        nflag = (c * (t - 1) + 7) // 8
        if len(data) < 1 + nflag + 4 or data[0] != VERSION:
            raise FormatError("latent chunk too short or of an unknown entropy-coder version")
        mode = np.unpackbits(np.frombuffer(data, np.uint8, nflag, 1))[: c * (t - 1)].astype(bool).reshape(c, t - 1)
        (nesc,) = struct.unpack_from("<I", data, 1 + nflag)
        off = 1 + nflag + 4
        if len(data) < off + 8 * nesc or (len(data) - off - 8 * nesc) % 4:
            raise FormatError("latent chunk is truncated (escape list or coder words)")
        esc = np.frombuffer(data, "<i8", nesc, off).astype(np.int64)
        words = np.frombuffer(data, "<u4", offset=off + 8 * nesc).astype(np.uint32)
        dec = constriction.stream.queue.RangeDecoder(words)
        q = np.zeros((c, t, h, w), np.int64)
        res = np.zeros((c, max(t - 1, 0), h, w), np.int64)
        used = 0
        for i in range(c):
            intra_frames = np.concatenate(([0], 1 + np.flatnonzero(~mode[i])))
            inter_frames = np.flatnonzero(mode[i])
            for frames, model, dst in ((intra_frames, m_intra[i], q), (inter_frames, m_inter[i], res)):
                n = frames.size * h * w
                if n == 0:
                    continue
                vals = dec.decode(model, n).astype(np.int64) - K
                hit = np.flatnonzero(vals == ESC - K)
                if used + hit.size > nesc:
                    raise FormatError("latent chunk escape list is shorter than its symbols need")
                vals[hit] = esc[used:used + hit.size]
                used += hit.size
                dst[i, frames] = vals.reshape(frames.size, h, w)
        if used != nesc:
            raise FormatError("latent chunk escape count does not match its symbols")
        for j in range(1, t):  # rebuild inter frames in time order
            m = mode[:, j - 1][:, None, None]
            q[:, j] = np.where(m, q[:, j - 1] + res[:, j - 1], q[:, j])
        if (q < np.iinfo(np.int32).min).any() or (q > np.iinfo(np.int32).max).any():
            raise FormatError("latent chunk decodes to values outside int32")
        return q.astype(np.int32)

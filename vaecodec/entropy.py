"""Bit-exact entropy coding of quantized latents with integer frequency tables.

Each latent channel plane is cut into BLOCK x BLOCK blocks. A block is coded either
directly ("intra", q) or as the residual to the previous latent frame of the chunk ("inter",
q_t - q_{t-1}), each with one of S tables per quality and channel (a bank ordered from quiet
to busy content), or (choice 2S, "zero") has no symbols at all: all values 0 in frame 0, a
copy of the previous frame later. The encoder picks the cheapest choice per block and
range-codes it with a model that adapts, frame by frame, to how often each choice follows
each choice of the same block in the previous frame; so static or smooth regions cost little
(and decode fast) while cuts, motion and texture get tables that fit them. Tables cover the
values -K..K plus an escape symbol; escaped values go verbatim into a side list, so ANY int32
input is coded losslessly.
The coded probabilities depend only on integers (stored in the weights file, or counted in
the chunk itself), never on a float network output, so encode and decode agree bit for bit
on every machine.

Chunk layout, version 5 (written by models whose weights hold context tables, tiny-v7 on):
  u8 version (=5) | u8 BLOCK | u8 flags (1: motion vectors coded, as in version 4) | escapes
  and words as version 3. Choices and motion as version 4, then the symbols of each channel
  in three passes (``_code_passes``): a symbol's table is picked by its block's choice and a
  context from symbols already decoded (earlier channels at the same cell, or four
  neighbours from earlier passes), so a quiet cell in a busy block, or a busy one in a quiet
  block, gets a table that fits it. 7-14 % fewer bytes on smooth 480p pans.
Version 4 (written by models without context tables): version 3's, with the version byte 4 and the
  motion vectors of frames 1..t-1 coded between the choices and the symbols (``_code_motion``);
  "inter" and "zero" then refer to the previous frame moved by its block's vector
  (``vaecodec.motion.predict``) instead of the previous frame itself.
Version 3 (written by those models without motion, ``--no-motion``):
  u8 version (=3) | u8 BLOCK | u32 LE escape count | escapes int64 LE | range-coder words
  uint32 LE (constriction queue.RangeEncoder): first the choices [C, t, nb] (nb =
  ceil(h/BLOCK) * ceil(w/BLOCK) blocks per plane in raster order; choice k < S = intra with
  table k, S <= k < 2S = inter with table k-S, never at frame 0, 2S = zero), coded by
  ``_code_choices``; then the symbols.
Version 2 (still decoded): u8 version (=2) | u8 BLOCK | the choices as 4-bit codes (high
  nibble first) | u32 escape count | escapes | words (symbols only).
Version 1 (files of vaecodec-tiny-v1/v2; still decoded): u8 version (=1) | mode flags,
  packbits of [C, t-1] (1 = inter) | u32 escape count | escapes | words; one table per mode,
  i.e. version 2 with S = 1 and one block per plane.
Symbol order of versions 1-4: for each channel, for each choice k = 0 .. 2S-1, the blocks
with that choice in (frame, block row, block column) order, each block's symbols row-major.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import constriction
import numpy as np
import torch

from vaecodec import motion as mc
from vaecodec.motion import Zooms
from vaecodec.errors import FormatError, UsageError
from vaecodec.quant import entropy_symbols

K = 63  # values -K..K get their own symbol
ALPHABET = 2 * K + 2  # ... plus one escape symbol (the last)
ESC = ALPHABET - 1
TABLE_TOTAL = 1 << 16  # every table sums to this; each entry >= 1
BLOCK = 16  # latent cells per block edge (128 pixels at 8x)
MAX_TABLES = 8  # 2S choices must fit the 4-bit codes of version 2 chunks
ESCAPE_BITS = 64.0
# chunk version 5: three passes over each plane whose symbols pick a table by context (see
# ``_code_passes``)
CONTEXTS_A = 3  # pass 0: how busy the channels coded before are at the same cell
CONTEXTS_B = 6  # passes 1 and 2: how busy the cell's four neighbours from earlier passes are
CONTEXTS = CONTEXTS_A + CONTEXTS_B
# context of a value (lookup tables; the last entry stands for everything larger)
_LEVELS_A = np.array([0, 1, 1, 1, 2], np.uint16)  # 4 x mean |value| of the earlier channels: 0 | < 1 | >= 1
_LEVELS_B = CONTEXTS_A + np.array([0, 1, 2, 3, 3, 4, 4, 4, 4, 5], np.uint16)  # sum of the 4 neighbours' |value|
CONTEXT_PRIOR = 64.0  # pseudo-counts that pull a context table towards its bank table


def _symbols(v: np.ndarray) -> np.ndarray:
    """Values -> symbol indices (escape for |v| > K)."""
    return np.where(np.abs(v) <= K, v + K, ESC).astype(np.int32)


def _blocks(t: int, h: int, w: int, block: int) -> tuple[np.ndarray, int]:
    """Block index of every cell [t*h*w] (frame-major, raster within a frame) and the count per frame."""
    nby, nbx = -(-h // block), -(-w // block)
    by = np.arange(h) // block
    bx = np.arange(w) // block
    ids = (np.arange(t)[:, None, None] * nby + by[None, :, None]) * nbx + bx[None, None, :]
    return ids.reshape(-1), nby * nbx


def _block_hist(sym: np.ndarray, ids: np.ndarray, nblocks: int) -> np.ndarray:
    """[C, nblocks, ALPHABET] symbol counts per channel and block; sym is [C, cells]. One
    channel at a time: the keys of all of them at once were the encoder's largest array."""
    key = ids * ALPHABET
    return np.stack([np.bincount(key + s, minlength=nblocks * ALPHABET).reshape(nblocks, ALPHABET) for s in sym])


def _bank_cost(hist: np.ndarray, table_bits: np.ndarray) -> np.ndarray:
    """Exact code length [C, blocks, S] of block histograms [C, blocks, A] under each of S tables
    of code lengths [C, S, A], plus the verbatim bits of every escaped value."""
    return np.einsum("cba,cka->cbk", hist, table_bits) + ESCAPE_BITS * hist[..., ESC:ESC + 1]


def _activity(hist: np.ndarray) -> np.ndarray:
    """Mean |value| of each histogram (escapes count as K+1): how busy a block is."""
    mag = np.abs(np.arange(ALPHABET) - K)
    mag[ESC] = K + 1
    return (hist * mag).sum(-1) / np.maximum(hist.sum(-1), 1)


def _choice_prior(n: int) -> np.ndarray:
    """Starting counts [n + 1, n] of the block-choice model. Context = the same block's choice
    in the previous latent frame (n: none, frame 0). Keeping the previous choice starts out
    as likely as all others together; frame 0 leans to the n // 2 intra choices; the last
    choice, zero, starts n // 2 higher everywhere (at low rates most blocks are zero)."""
    counts = np.ones((n + 1, n), np.int64)
    counts[np.arange(n), np.arange(n)] += n
    counts[n, : n // 2] += 1
    counts[:, n - 1] += n // 2
    return counts


def _code_choices(choice: np.ndarray, n: int, code) -> np.ndarray:
    """Range-code the block choices [C, t, nb] frame by frame with an adaptive context model.

    ``code(model, symbols)`` encodes ``symbols`` and returns them (encoder), or decodes as many
    and returns those (decoder; ``choice`` then starts as zeros and is filled in). The counts
    start from ``_choice_prior`` and learn from every coded frame, identically on both sides
    (integers only), so no table travels with the chunk.
    """
    c, t, nb = choice.shape
    counts = _choice_prior(n)
    for j in range(t):
        ctx = (choice[:, j - 1] if j else np.full((c, nb), n, choice.dtype)).ravel()
        p = counts_to_table(counts) / TABLE_TOTAL  # every context's exact integer table at once
        order = np.argsort(ctx, kind="stable")  # by context, then (channel, block)
        ends = np.cumsum(np.bincount(ctx, minlength=n + 1))
        sym = choice[:, j].ravel()[order]
        for k in np.flatnonzero(np.diff(ends, prepend=0)):
            lo = ends[k - 1] if k else 0
            sym[lo:ends[k]] = code(constriction.stream.model.Categorical(p[k], perfect=False), sym[lo:ends[k]])
        frame = np.empty_like(sym)
        frame[order] = sym
        choice[:, j] = frame.reshape(c, nb)
        counts += np.bincount(ctx.astype(np.int64) * n + frame, minlength=(n + 1) * n).reshape(n + 1, n)
    return choice


def _code_motion(mv: np.ndarray, code) -> np.ndarray:
    """Range-code the motion vectors [t, nby, nbx, 2] of frames 1..t-1 (frame 0's are zero).

    Each component is coded as its change from the same block's vector in the previous frame
    (a pan keeps its vector), with one adaptive model for all: counts that start with "no
    change" as likely as all other changes together and learn from every coded frame,
    identically on both sides. ``code`` is as in ``_code_choices``; decoding checks the range.
    """
    n = 4 * mc.MV_MAX + 1  # changes -2 MV_MAX .. 2 MV_MAX
    counts = np.ones(n, np.int64)
    counts[2 * mc.MV_MAX] += n
    for j in range(1, mv.shape[0]):
        model = constriction.stream.model.Categorical(counts_to_table(counts) / TABLE_TOTAL, perfect=False)
        sym = code(model, (mv[j].astype(np.int32) - mv[j - 1] + 2 * mc.MV_MAX).ravel())
        mv[j] = mv[j - 1] + (sym - 2 * mc.MV_MAX).reshape(mv[j].shape)
        if np.abs(mv[j]).max(initial=0) > mc.MV_MAX:
            raise FormatError("latent chunk holds a motion vector out of range")
        counts += np.bincount(sym, minlength=n)
    return mv


def _pass_of(shape: tuple[int, int, int]) -> np.ndarray:
    """Pass of every cell [t*h*w] in chunk version 5: 0 (row and column even), 1 (both odd), 2."""
    yy, xx = np.indices(shape[1:]) % 2
    return np.broadcast_to(np.where(yy == xx, yy, 2), shape).ravel()


def _first_context(earlier: np.ndarray, before: int | np.ndarray) -> np.ndarray:
    """Pass-0 context from the sum of |value| of the ``before`` channels coded earlier."""
    return _LEVELS_A[np.minimum(4 * earlier // np.maximum(before, 1), _LEVELS_A.size - 1)]


def _near_context(near: np.ndarray) -> np.ndarray:
    """Pass-1/2 context from a neighbour sum of |value|."""
    return _LEVELS_B[np.minimum(near, _LEVELS_B.size - 1)]


_PASS_CELLS = {1: ((1, 1),), 2: ((0, 1), (1, 0))}  # (row, column) parity of the cells of passes 1, 2
_NEIGHBOURS = {1: ((-1, -1), (-1, 1), (1, -1), (1, 1)), 2: ((-1, 0), (1, 0), (0, -1), (0, 1))}


def _set_near_contexts(planes: np.ndarray, part: int, out: np.ndarray) -> None:
    """Write the context of the cells of pass ``part`` (1 or 2) of |value| planes [..., h, w]
    into ``out`` (same shape): the sum over their four diagonal (pass 1) or direct (pass 2)
    neighbours, all of earlier passes; cells outside the plane count 0."""
    h, w = planes.shape[-2:]
    p = np.zeros((*planes.shape[:-2], h + 2, w + 2), planes.dtype)  # np.pad costs more than the sums
    p[..., 1:-1, 1:-1] = planes
    for y0, x0 in _PASS_CELLS[part]:
        near = sum(p[..., 1 + y0 + dy:1 + h + dy:2, 1 + x0 + dx:1 + w + dx:2] for dy, dx in _NEIGHBOURS[part])
        out[..., y0::2, x0::2] = _near_context(near)


def _capped(vals: np.ndarray, channels: int) -> np.ndarray:
    """|value| capped where no context can tell the difference any more (a neighbour sum of 9
    or more, or an earlier-channel sum reaching the channel count): small integers, fast sums."""
    return np.minimum(np.abs(vals), max(channels, _LEVELS_B.size - 1)).astype(np.int16)


def _contexts_if_alike(vals: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The version 5 context of every cell [C, t*h*w] if every block coded ``vals`` (all intra,
    or all inter): what the encoder prices its block choices with."""
    planes = _capped(vals, len(vals)).reshape(len(vals), *shape)
    ctx = np.empty(planes.shape, np.uint16)
    first = planes[..., ::2, ::2]
    ctx[..., ::2, ::2] = _first_context(np.cumsum(first, 0, dtype=np.int32) - first,
                                        np.arange(len(vals))[:, None, None, None])
    _set_near_contexts(planes, 1, ctx)
    _set_near_contexts(planes, 2, ctx)
    return ctx.reshape(len(vals), -1)


def _code_passes(vals: np.ndarray, cell_choice: np.ndarray, shape: tuple[int, int, int],
                 block_major: np.ndarray, tables: int, models, code, escape) -> np.ndarray:
    """Range-code the symbols of chunk version 5: channel by channel, in three passes over
    every frame's cells, each cell with the table of its block's choice and its context.
    Pass 0: y and x even; context: how busy the channels coded before are at the cell
    (4 x mean |value|, 3 levels; channel 0 has context 0). Pass 1: y and x odd; context: the
    sum of |value| of the four diagonal neighbours (pass 0). Pass 2: the rest; context: the
    same sum over the four direct neighbours (passes 0 and 1). Both neighbour sums share 6
    levels (outside the plane counts 0). Within a pass the order is (choice, context), then
    block-major (frame, block row, block column, raster in the block).

    ``vals`` [C, t*h*w]: what each cell codes (0 in "zero" blocks); decoding fills it in place.
    ``cell_choice`` [C, t*h*w]: the choice of each cell's block; ``block_major``: the cells in
    block-major order; ``models[i][k][n]``: channel i, choice k < 2 ``tables``, context n.
    ``code`` is as in ``_code_choices``; ``escape(values)`` gets the values of escaped symbols
    in coding order and returns the true ones (the encoder keeps them for the escape list, the
    decoder takes them from it); contexts are computed from true values on both sides.
    """
    part_bm = _pass_of(shape)[block_major]
    pass_cells = [block_major[part_bm == part] for part in range(3)]  # block-major within each pass
    earlier = np.zeros(vals.shape[1], np.int64)  # sum of |value| over the channels coded so far
    for i, choice in enumerate(cell_choice):
        ctx = _first_context(earlier, i)
        for part, cells in enumerate(pass_cells):
            if part:  # the neighbours summed are all cells of earlier passes, known by now
                _set_near_contexts(_capped(vals[i], len(vals)).reshape(shape), part, ctx.reshape(shape))
            cells = cells[choice[cells] < 2 * tables]
            key = choice[cells].astype(np.uint16) * CONTEXTS + ctx[cells]
            by = np.argsort(key, kind="stable")  # a radix sort on 16-bit keys
            cells = cells[by]
            counts = np.bincount(key[by], minlength=2 * tables * CONTEXTS)
            sym = _symbols(vals[i, cells])
            bounds = np.cumsum(counts)
            for g in np.flatnonzero(counts):
                lo = bounds[g] - counts[g]
                sym[lo:bounds[g]] = code(models[i][g // CONTEXTS][g % CONTEXTS], sym[lo:bounds[g]])
            v = sym.astype(np.int64) - K
            hit = sym == ESC
            v[hit] = escape(vals[i, cells[hit]])
            vals[i, cells] = v
        earlier += np.abs(vals[i])
    return vals


def latent_histograms(means: np.ndarray, steps: np.ndarray, tables: int = MAX_TABLES,
                      block: int = BLOCK, deadzones: Sequence[float] | None = None,
                      motion: bool = False, rates: Sequence[Callable] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Intra and inter table banks as counts [Q, C, tables, ALPHABET] from latent means [N, C, t, h, w].

    The means are quantized as the encoder does, with each quality's temporal deadzone (none
    by default): in place (``quant.entropy_symbols``), or with ``motion`` along motion vectors
    (``motion.quantize``, holding the blocks that each quality's ``rates``, an earlier coder's
    ``residual_bits``, prices as not worth their bits), whose residuals to the moved previous
    frame the inter tables then fit. Per quality and channel, the blocks are sorted by activity
    and split into ``tables`` equal groups; each group's pooled histogram becomes one table of
    the bank.
    """
    c = means.shape[1]
    intra, inter = [], []
    for s, dz, rate in zip(steps, deadzones or [0.0] * len(steps), rates or [None] * len(steps)):
        x = torch.from_numpy(means / s)
        if motion:
            q = np.empty(means.shape, np.int64)
            res = np.zeros_like(q)
            for i in range(len(x)):
                qi, mv = mc.quantize(x[i], dz, block, rate)
                q[i] = qi
                for j in range(1, qi.shape[1]):
                    res[i, :, j] = qi[:, j] - mc.predict(qi[:, j - 1], mv[j], block)
            q, res = q.transpose(1, 0, 2, 3, 4), res.transpose(1, 0, 2, 3, 4)[:, :, 1:]  # [C, N, t(-1), h, w]
        else:
            q = entropy_symbols(x, dz).numpy().astype(np.int64).transpose(1, 0, 2, 3, 4)  # [C, N, t, h, w]
            res = q[:, :, 1:] - q[:, :, :-1]
        banks = []
        for v in (q, res):
            n, t, h, w = v.shape[1:]
            ids, nb = _blocks(n * t, h, w, block)
            hist = _block_hist(_symbols(v.reshape(c, -1)), ids, n * t * nb)  # [C, blocks, A]
            order = np.argsort(_activity(hist), axis=1, kind="stable")
            groups = np.array_split(np.arange(hist.shape[1]), tables)
            banks.append(np.stack([
                np.stack([hist[i, order[i, g]].sum(0) for g in groups]) for i in range(c)
            ]))
        intra.append(banks[0])
        inter.append(banks[1])
    return np.stack(intra), np.stack(inter)


def counts_to_table(hist: np.ndarray) -> np.ndarray:
    """Histograms [..., n] -> int32 tables summing to TABLE_TOTAL, no zero entries."""
    hist = hist.astype(np.float64)
    tot = hist.sum(-1, keepdims=True).clip(min=1)
    table = np.floor(hist / tot * (TABLE_TOTAL - hist.shape[-1])).astype(np.int64) + 1
    # give the rounding remainder to the most frequent symbol so every table sums exactly
    rem = TABLE_TOTAL - table.sum(-1)
    idx = np.argmax(table, -1)
    np.put_along_axis(table, idx[..., None], np.take_along_axis(table, idx[..., None], -1) + rem[..., None], -1)
    return table.astype(np.int32)


class EntropyCoder:
    """Per-quality step sizes plus intra/inter banks of integer tables, and optionally context
    tables (then chunks are written in version 5); see the module docstring."""

    def __init__(self, steps: np.ndarray, intra: np.ndarray, inter: np.ndarray,
                 qualities: tuple[int, ...], default_quality: int, context: np.ndarray | None = None) -> None:
        # steps [Q, C] float32; intra/inter [Q, C, S, ALPHABET] int32 ([Q, C, ALPHABET]: S = 1)
        steps, intra, inter = np.asarray(steps, np.float32), np.asarray(intra), np.asarray(inter)
        if intra.ndim == 3:
            intra, inter = intra[:, :, None], inter[:, :, None]
        nq = len(qualities)
        if steps.ndim != 2 or steps.shape[0] != nq or intra.ndim != 4 or inter.shape != intra.shape \
                or intra.shape[:2] != (nq, steps.shape[1]) or intra.shape[3] != ALPHABET \
                or not 1 <= intra.shape[2] <= MAX_TABLES or default_quality not in qualities:
            raise FormatError("entropy coder tables have inconsistent shapes")
        if (intra <= 0).any() or (inter <= 0).any() or not (steps > 0).all():
            raise FormatError("entropy coder tables hold non-positive entries")
        self.qualities = tuple(int(q) for q in qualities)
        self.default_quality = int(default_quality)
        self.channels = steps.shape[1]
        self.tables = intra.shape[2]
        self.block = BLOCK  # cells per block edge, also the motion vectors' blocks
        self._steps = steps
        self._intra = intra.astype(np.int32)
        self._inter = inter.astype(np.int32)
        if context is not None:  # [Q, C, 2S, CONTEXTS, ALPHABET] uint16, each table summing exactly
            context = np.asarray(context)
            if context.shape != (nq, self.channels, 2 * self.tables, CONTEXTS, ALPHABET):
                raise FormatError("entropy coder context tables have inconsistent shapes")
            if (context <= 0).any() or (context.astype(np.int64).sum(-1) != TABLE_TOTAL).any():
                raise FormatError("entropy coder context tables hold entries that are not positive "
                                  f"or do not sum to {TABLE_TOTAL}")
            context = np.ascontiguousarray(context, np.uint16)
        self.context = context
        self._models: dict[int, tuple[list[list], np.ndarray]] = {}
        self._ctx_models: dict[int, list] = {}
        self._ctx_bits: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------ construction

    @classmethod
    def from_histograms(cls, steps: np.ndarray, intra_hist: np.ndarray, inter_hist: np.ndarray,
                        qualities: tuple[int, ...], default_quality: int) -> "EntropyCoder":
        """Build tables from symbol counts [Q, C, S, ALPHABET]; ``steps`` is [Q] or [Q, C]."""
        steps = np.asarray(steps, np.float32)
        if steps.ndim == 1:
            steps = np.repeat(steps[:, None], intra_hist.shape[1], 1)
        return cls(steps, counts_to_table(intra_hist), counts_to_table(inter_hist), qualities, default_quality)

    def with_context(self, context_hist: np.ndarray, prior: float = CONTEXT_PRIOR) -> "EntropyCoder":
        """This coder plus context tables from counts [Q, C, 2S, CONTEXTS, ALPHABET] (see
        ``context_histograms``), each smoothed towards its bank table by ``prior`` pseudo-counts:
        rare (choice, context) pairs then code like the bank instead of like a few samples."""
        bank = np.concatenate((self._intra, self._inter), axis=2).astype(np.float64) / TABLE_TOTAL
        table = counts_to_table(context_hist + prior * bank[:, :, :, None, :]).astype(np.uint16)
        return EntropyCoder(self._steps, self._intra, self._inter, self.qualities, self.default_quality, table)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        d = {
            "steps": torch.from_numpy(self._steps.copy()),
            "intra": torch.from_numpy(self._intra.copy()),
            "inter": torch.from_numpy(self._inter.copy()),
            "qualities": torch.tensor(self.qualities, dtype=torch.int32),
            "default_quality": torch.tensor([self.default_quality], dtype=torch.int32),
        }
        if self.context is not None:
            d["context"] = torch.from_numpy(self.context.copy())
        return d

    @classmethod
    def from_tensors(cls, d: dict[str, torch.Tensor]) -> "EntropyCoder":
        try:
            context = d["context"].to(torch.int32).numpy() if "context" in d else None
            return cls(d["steps"].float().numpy(), d["intra"].numpy(), d["inter"].numpy(),
                       tuple(d["qualities"].tolist()), int(d["default_quality"][0]), context)
        except KeyError as e:
            raise FormatError(f"entropy coder tensors lack {e.args[0]!r}") from e

    # ------------------------------------------------------------ helpers

    def _index(self, quality: int) -> int:
        if quality not in self.qualities:
            raise UsageError(f"quality {quality} not available (choose from {', '.join(map(str, self.qualities))})")
        return self.qualities.index(quality)

    def _prepared(self, quality: int) -> tuple[list[list], np.ndarray]:
        """constriction models [C][2S] and code lengths -log2 p [C, 2S, ALPHABET] for one quality
        (choice k < S: intra table k; k >= S: inter table k - S). Cached."""
        if quality not in self._models:
            i = self._index(quality)
            # probabilities are exact ratios of the stored integers: identical on every machine
            p = np.concatenate((self._intra[i], self._inter[i]), axis=1).astype(np.float64) / TABLE_TOTAL
            mk = constriction.stream.model.Categorical
            self._models[quality] = ([[mk(pk, perfect=False) for pk in pc] for pc in p], -np.log2(p))
        return self._models[quality]

    def context_histograms(self, means: np.ndarray, deadzones: Sequence[float]) -> np.ndarray:
        """Counts [Q, C, 2S, CONTEXTS, ALPHABET] of the symbols that chunk version 5 codes under
        each (choice, context), from latent means [N, C, t, h, w] quantized as the encoder
        does (motion, each quality's deadzone, blocks held where the banks price them as not
        worth their bits), with this coder's banks choosing the blocks."""
        c, s = self.channels, self.tables
        hist = np.zeros((len(self.qualities), c, 2 * s, CONTEXTS, ALPHABET), np.int64)
        keys = [[[(i, k, n) for n in range(CONTEXTS)] for k in range(2 * s)] for i in range(c)]
        for qi, (quality, dz) in enumerate(zip(self.qualities, deadzones)):
            step = self.step(quality).view(-1, 1, 1, 1)

            def count(key: tuple[int, int, int], sym: np.ndarray) -> np.ndarray:
                hist[(qi, *key)] += np.bincount(sym, minlength=ALPHABET)
                return sym

            for m in means:
                q, mv = mc.quantize(torch.from_numpy(m) / step, dz, BLOCK, self.residual_bits(quality))
                _, t, h, w = q.shape
                choice, coded, ids, nb = self._choose(q, quality, mv.astype(np.int64))
                _code_passes(coded, choice[:, ids], (t, h, w), self._layout(ids, t * nb)[0], s, keys, count,
                             lambda v: v)
        return hist

    def residual_bits(self, quality: int):
        """The encoder's price of a latent frame's residual [C, h, w] to its prediction: bits
        per channel and block [C, nby, nbx] under the best inter table of the bank (what
        ``motion.quantize`` weighs against the error of holding a block)."""
        _, bits = self._prepared(quality)
        inter = bits[:, self.tables:2 * self.tables]  # [C, S, A]

        def rate(res: np.ndarray) -> np.ndarray:
            c, h, w = res.shape
            ids, nb = _blocks(1, h, w, BLOCK)
            hist = _block_hist(_symbols(res.reshape(c, -1)), ids, nb)  # [C, blocks, A]
            return _bank_cost(hist, inter).min(2).reshape(c, -(-h // BLOCK), -(-w // BLOCK))

        return rate

    def _context_models(self, quality: int) -> list:
        """constriction models [C][2S][CONTEXTS] of the context tables for one quality. Cached."""
        if quality not in self._ctx_models:
            p = self.context[self._index(quality)].astype(np.float64) / TABLE_TOTAL
            mk = constriction.stream.model.Categorical
            self._ctx_models[quality] = [[[mk(pn, perfect=False) for pn in pk] for pk in pc] for pc in p]
        return self._ctx_models[quality]

    def step(self, quality: int) -> torch.Tensor:
        """[C] float32 quantization step (latent units) for ``quality``."""
        return torch.from_numpy(self._steps[self._index(quality)].copy())

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[0] != self.channels or shape[1] < 1 or min(shape) < 0:
            raise UsageError(f"latent chunk shape {tuple(shape)} is not [{self.channels}, t>=1, h, w]")

    @staticmethod
    def _layout(ids: np.ndarray, nblocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per chunk: cells block by block (raster order inside a block), and where each block's
        cells start in that list and how many there are."""
        size = np.bincount(ids, minlength=nblocks)
        return np.argsort(ids, kind="stable"), np.cumsum(size) - size, size

    @staticmethod
    def _order(choice: np.ndarray, layout: tuple[np.ndarray, np.ndarray, np.ndarray], n_choices: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Coding order of the cells of one channel, sorted by (choice, block, raster position),
        and the cell count per choice. Sorts the few blocks, not the many cells."""
        block_major, start, size = layout
        blocks = np.argsort(choice, kind="stable")
        n = size[blocks]
        first = np.cumsum(n) - n  # where each block lands in the coding order
        order = block_major[np.repeat(start[blocks] - first, n) + np.arange(n.sum())]
        return order, np.bincount(choice, weights=size, minlength=n_choices).astype(np.int64)

    # ------------------------------------------------------------ coding

    def _choose(self, q: np.ndarray, quality: int, motion: np.ndarray | None, zooms: Zooms | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The cheapest choice of every block [C, t*nb], what each cell codes [C, t*h*w] (q
        where intra, the residual where inter, 0 in zero blocks), the cells' block ids and the
        blocks per frame. Each choice is priced by the exact code length of the block under
        its bank table, or (with context tables) under its context tables, the contexts taken
        as if the neighbouring blocks coded the same kind of values."""
        _, bits = self._prepared(quality)
        c, t, h, w = q.shape
        s = self.tables
        # residuals of int32 symbols can need 33 bits; real latents' never come close, and int64
        # for all of them was half the encoder's peak memory
        wide = q.size and max(int(q.max()), -int(q.min())) >= 1 << 30
        q = q.astype(np.int64 if wide else np.int32, copy=False)  # read only below
        res = np.zeros_like(q)
        if motion is None and not zooms:
            res[:, 1:] = q[:, 1:] - q[:, :-1]
        else:
            for j in range(1, t):
                res[:, j] = q[:, j] - self._prediction(q[:, j - 1], j, motion, zooms)
        q, res = q.reshape(c, -1), res.reshape(c, -1)
        ids, nb = _blocks(t, h, w, BLOCK)
        # exact code length of every block under every choice (+ verbatim bits per escape)
        cost, zero = [], []
        for vals, kinds in ((q, slice(0, s)), (res, slice(s, 2 * s))):
            sym = _symbols(vals)
            hist = _block_hist(sym, ids, t * nb)  # [C, blocks, A]
            if self.context is None:
                cost.append(_bank_cost(hist, bits[:, kinds]))
            else:
                cost.append(self._context_cost(sym, _contexts_if_alike(vals, (t, h, w)), ids, t * nb, quality, kinds))
            zero.append(hist[..., K] == hist.sum(-1))  # every value of the block is 0
        cost[1][:, :nb] = np.inf  # frame 0 has no previous frame in this chunk
        # choice 2S, "zero": no symbols at all (frame 0: all values 0; later: a copy of the previous frame)
        zero = np.concatenate((zero[0][:, :nb], zero[1][:, nb:]), axis=1)
        cost.append(np.where(zero, 0.0, np.inf)[..., None])
        choice = np.concatenate(cost, axis=2).argmin(2).astype(np.uint8)  # [C, t*nb]
        return choice, np.where((choice >= s)[:, ids], res, q), ids, nb

    def _context_cost(self, sym: np.ndarray, ctx: np.ndarray, ids: np.ndarray, nblocks: int, quality: int,
                      kinds: slice) -> np.ndarray:
        """Code length [C, blocks, S] of every block's symbols [C, cells] in contexts [C, cells]
        under the context tables of choices ``kinds`` (+ verbatim bits per escape)."""
        if quality not in self._ctx_bits:
            bits = -np.log2(self.context[self._index(quality)] / TABLE_TOTAL)
            bits[..., ESC] += ESCAPE_BITS  # an escape also stores its value verbatim
            self._ctx_bits[quality] = bits.reshape(*bits.shape[:2], -1)  # [C, 2S, CONTEXTS*A]
        bits = self._ctx_bits[quality][:, kinds]
        out = np.empty((len(sym), nblocks, bits.shape[1]))
        for i in range(len(sym)):  # one channel at a time bounds the histogram's memory
            hist = np.bincount((ids * CONTEXTS + ctx[i]) * ALPHABET + sym[i], minlength=nblocks * CONTEXTS * ALPHABET)
            out[i] = hist.reshape(nblocks, CONTEXTS * ALPHABET) @ bits[i].T
        return out

    @staticmethod
    def _prediction(prev: np.ndarray, j: int, motion: np.ndarray | None, zooms: Zooms | None) -> np.ndarray:
        """Latent frame j's prediction from frame j - 1's symbols: resampled by the chunk's
        zoom before frame j, if it lists one, then moved by frame j's vectors, if any."""
        ref = mc.reference(prev, zooms.get(j) if zooms else None)
        return ref if motion is None else mc.predict(ref, motion[j], BLOCK)

    def encode(self, q: np.ndarray, quality: int, motion: np.ndarray | None = None,
               zooms: Zooms | None = None) -> bytes:
        """int [C, t, h, w] -> bytes; lossless for any int32 values, deterministic. ``motion``:
        int [t, nby, nbx, 2] from ``vaecodec.motion``; ``zooms``: latent frame j -> the zoom
        (``motion.resample``) its prediction first carries frame j - 1 through (chunk meta
        ``camera_zoom``; a decoder needs the same). Chunk version 5 with context tables, else
        version 4 with motion, 3 without."""
        q = np.asarray(q)
        if not np.issubdtype(q.dtype, np.integer):
            raise UsageError(f"latent symbols must be integers, got {q.dtype}")
        self._check_shape(q.shape)
        c, t, h, w = q.shape
        s = self.tables
        if motion is not None:
            motion = self._check_motion(motion, t, h, w)
        choice, coded, ids, nb = self._choose(q, quality, motion, zooms)
        enc = constriction.stream.queue.RangeEncoder()

        def put(model, sym: np.ndarray) -> np.ndarray:
            enc.encode(sym.astype(np.int32), model)
            return sym

        _code_choices(choice.reshape(c, t, nb).copy(), 2 * s + 1, put)
        if motion is not None:
            _code_motion(motion.copy(), put)
        escapes = []
        layout = self._layout(ids, t * nb)
        if self.context is not None:
            def keep(v: np.ndarray) -> np.ndarray:
                escapes.append(v)
                return v

            _code_passes(coded, choice[:, ids], (t, h, w), layout[0], s, self._context_models(quality), put, keep)
            head = bytes([5, BLOCK, motion is not None])
        else:
            models, _ = self._prepared(quality)
            for i in range(c):
                order, counts = self._order(choice[i], layout, 2 * s + 1)
                vals = coded[i, order]
                sym = _symbols(vals)
                escapes.append(vals[sym == ESC])
                bounds = np.cumsum(counts)
                for k in np.flatnonzero(counts[:2 * s]):
                    enc.encode(sym[bounds[k] - counts[k]:bounds[k]], models[i][k])
            head = bytes([3 if motion is None else 4, BLOCK])
        esc = np.concatenate(escapes) if escapes else np.zeros(0, np.int64)
        return b"".join((
            head,
            struct.pack("<I", esc.size),
            esc.astype("<i8").tobytes(),
            enc.get_compressed().astype("<u4").tobytes(),
        ))

    @staticmethod
    def _check_motion(motion: np.ndarray, t: int, h: int, w: int) -> np.ndarray:
        motion = np.asarray(motion)
        shape = (t, -(-h // BLOCK), -(-w // BLOCK), 2)
        if motion.shape != shape or not np.issubdtype(motion.dtype, np.integer):
            raise UsageError(f"motion vectors {motion.shape} {motion.dtype} are not integers of shape {shape}")
        if motion[0].any() or np.abs(motion).max(initial=0) > mc.MV_MAX:
            raise UsageError(f"motion vectors must be zero at frame 0 and within +-{mc.MV_MAX} elsewhere")
        return motion.astype(np.int64)

    def _header(self, data: bytes, c: int, t: int, h: int, w: int) -> tuple[np.ndarray | None, np.ndarray, int, int]:
        """Parse a chunk's header: (choice [C, blocks], or None where the range coder holds
        them (versions 3 to 5), cell block ids, blocks per frame, offset of the escape count)."""
        if not data or data[0] not in (1, 2, 3, 4, 5):
            raise FormatError(f"latent chunk of an unknown entropy-coder version {data[0] if data else None}")
        if data[0] == 1:  # one block per plane; intra table 0, or inter table 0 where flagged
            if self.tables != 1:
                raise FormatError("a version 1 latent chunk needs a model with one table per mode")
            nflag = (c * (t - 1) + 7) // 8
            if len(data) < 1 + nflag:
                raise FormatError("latent chunk is truncated (mode flags)")
            flags = np.unpackbits(np.frombuffer(data, np.uint8, nflag, 1))[: c * (t - 1)].reshape(c, t - 1)
            choice = np.concatenate((np.zeros((c, 1), np.uint8), flags), axis=1)
            ids, nb = _blocks(t, h, w, max(h, w, 1))
            return choice, ids, nb, 1 + nflag
        if len(data) < 2 or data[1] == 0:
            raise FormatError("latent chunk has no block size")
        ids, nb = _blocks(t, h, w, data[1])
        if data[0] in (3, 4, 5):
            if data[0] >= 4 and data[1] != BLOCK:
                raise FormatError(f"latent chunk's blocks of {data[1]} cells are not the coder's {BLOCK}")
            if data[0] == 5:
                if self.context is None:
                    raise FormatError("a version 5 latent chunk needs a model with context tables")
                if len(data) < 3 or data[2] > 1:
                    raise FormatError("latent chunk has no valid flags byte")
                return None, ids, nb, 3
            return None, ids, nb, 2
        n = c * t * nb
        if len(data) < 2 + (n + 1) // 2:
            raise FormatError("latent chunk is truncated (block choices)")
        packed = np.frombuffer(data, np.uint8, (n + 1) // 2, 2)
        choice = np.stack((packed >> 4, packed & 15), axis=1).ravel()[:n].reshape(c, t * nb)
        if (choice >= 2 * self.tables).any():
            raise FormatError("latent chunk names a table the model does not have")
        return choice, ids, nb, 2 + (n + 1) // 2

    def decode(self, data: bytes, shape: tuple[int, int, int, int], quality: int, zooms: Zooms | None = None
               ) -> np.ndarray:
        """Exact inverse of ``encode`` (chunk versions 1 to 5) given the same ``zooms``:
        bytes -> int32 [C, t, h, w]."""
        shape = tuple(int(s) for s in shape)
        self._check_shape(shape)
        models, _ = self._prepared(quality)
        c, t, h, w = shape
        s = self.tables
        choice, ids, nb, off = self._header(data, c, t, h, w)
        if len(data) < off + 4:
            raise FormatError("latent chunk is truncated (escape count)")
        (nesc,) = struct.unpack_from("<I", data, off)
        off += 4
        if len(data) < off + 8 * nesc or (len(data) - off - 8 * nesc) % 4:
            raise FormatError("latent chunk is truncated (escape list or coder words)")
        esc = np.frombuffer(data, "<i8", nesc, off).astype(np.int64)
        words = np.frombuffer(data, "<u4", offset=off + 8 * nesc).astype(np.uint32)
        dec = constriction.stream.queue.RangeDecoder(words)

        def take(model, n: int) -> np.ndarray:
            try:
                return dec.decode(model, n)
            except (AssertionError, ValueError, RuntimeError):  # how constriction meets words no encoder wrote
                raise FormatError("latent chunk's coded words are invalid for its tables") from None

        n_choices = 2 * s + (choice is None)  # version 3 adds choice 2S, "zero"
        motion = None
        if choice is None:
            choice = _code_choices(np.zeros((c, t, nb), np.uint8), n_choices, lambda m, sym: take(m, sym.size))
            choice = choice.reshape(c, t * nb)
            if data[0] == 4 or (data[0] == 5 and data[2]):
                nby, nbx = -(-h // data[1]), -(-w // data[1])
                motion = _code_motion(np.zeros((t, nby, nbx, 2), np.int64), lambda m, sym: take(m, sym.size))
        if ((choice[:, :nb] >= s) & (choice[:, :nb] < 2 * s)).any():
            raise FormatError("latent chunk codes an inter block at frame 0")
        vals = np.zeros((c, t * h * w), np.int64)  # q where intra, the residual where inter
        used = 0
        layout = self._layout(ids, t * nb)

        def listed(v: np.ndarray) -> np.ndarray:  # the next v.size values of the escape list
            nonlocal used
            if used + v.size > nesc:
                raise FormatError("latent chunk escape list is shorter than its symbols need")
            used += v.size
            return esc[used - v.size:used]

        if data[0] == 5:
            _code_passes(vals, choice[:, ids], (t, h, w), layout[0], s, self._context_models(quality),
                         lambda m, sym: take(m, sym.size), listed)
        else:
            for i in range(c):
                order, counts = self._order(choice[i], layout, n_choices)
                v = np.full(order.size, K, np.int64)  # "zero" blocks keep symbol K, the value 0
                bounds = np.cumsum(counts)
                for k in np.flatnonzero(counts[:2 * s]):
                    v[bounds[k] - counts[k]:bounds[k]] = take(models[i][k], int(counts[k]))
                v -= K
                hit = v == ESC - K
                v[hit] = listed(v[hit])
                vals[i, order] = v
        if used != nesc:
            raise FormatError("latent chunk escape count does not match its symbols")
        q, inter = vals.reshape(c, t, h, w), (choice >= s)[:, ids].reshape(c, t, h, w)
        for j in range(1, t):  # add residuals in time order
            if inter[:, j].any():
                ref = self._prediction(q[:, j - 1], j, motion, zooms)
                q[:, j] += np.where(inter[:, j], ref, 0)
        if (q < np.iinfo(np.int32).min).any() or (q > np.iinfo(np.int32).max).any():
            raise FormatError("latent chunk decodes to values outside int32")
        return q.astype(np.int32)

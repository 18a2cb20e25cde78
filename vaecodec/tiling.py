"""Temporal and spatial tiling with overlap blending, so memory is bounded by the tile.

Temporal tiles follow the causal rule of ``base.VideoVAE``: a tile that starts at latent
index ``a`` reads pixel frames ``[a*t, a*t + 1 + m*t)``. Its latent 0 is the single-frame
"warm-up" encoding of frame ``a*t`` (it is the real global latent only when ``a == 0``);
its latents ``1..m`` are the global latents ``a+1..a+m``. Consecutive tiles start
``stride = latent_frames - overlap_latents`` apart, so they share ``overlap_latents``
latents (blended with a linear cross-fade on encode) and ``overlap_latents*t + 1`` pixel
frames (cross-faded on decode). The warm-up end of each tile always gets the low weight.

A model that streams (``VideoVAE.streams``: its causal state between calls is a small carry,
as in the embedded model) needs none of that in time: ``CausalEncoder``/``CausalDecoder`` run
tiles one after another with no overlap, each continuing the state the previous one left, and
give exactly what one whole-clip call gives. When the picture's content moves (a steadied
canvas's window by whole latent cells, or a new reference's zoom), a model whose state lies on
the latent grid has that state moved with it between calls (``Move``, ``move_states``).

Spatial tiles split frames larger than ``tile_px`` into overlapping tiles whose results are
blended with separable linear ramps, in latent space on encode and pixel space on decode
(with a streaming model, each spatial tile carries its own state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .models.base import Tiling


@dataclass(frozen=True)
class TemporalTile:
    """Latent range [start, start + length] (inclusive); latent ``start`` is the warm-up."""

    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


def temporal_tiles(n_latents: int, tiling: Tiling) -> list[TemporalTile]:
    """The tile plan for a stream of ``n_latents`` latent frames (n_latents >= 1)."""
    stride = tiling.latent_frames - tiling.overlap_latents
    last = n_latents - 1
    tiles = [TemporalTile(0, min(tiling.latent_frames, last))]
    while tiles[-1].end < last:
        start = tiles[-1].start + stride
        tiles.append(TemporalTile(start, min(tiling.latent_frames, last - start)))
    return tiles


def check_tiling(tiling: Tiling, spatial: int) -> None:
    """Reject tilings the blending below cannot honour. The CLI reports the message, so it names
    the option that sets each field and the range that option allows."""
    t = tiling
    if t.latent_frames < 1:
        raise ValueError(f"--tile-frames must be at least 1, got {t.latent_frames}")
    if not 0 <= t.overlap_latents < t.latent_frames:
        raise ValueError(f"--tile-overlap must be from 0 to {t.latent_frames - 1} (below the tile length "
                         f"{t.latent_frames}, --tile-frames), got {t.overlap_latents}")
    if t.tile_px < spatial or t.tile_px % spatial:
        raise ValueError(f"--tile-px must be a positive multiple of {spatial}, got {t.tile_px}")
    if not 0 <= t.overlap_px < t.tile_px or t.overlap_px % spatial:
        raise ValueError(f"--tile-overlap-px must be a multiple of {spatial} from 0 to {t.tile_px - spatial} "
                         f"(below the tile edge {t.tile_px}, --tile-px), got {t.overlap_px}")


def _ramp(n: int, device: torch.device) -> torch.Tensor:
    """Weights (1..n)/(n+1) that fade a later tile in over ``n`` steps; 1 - ramp fades the earlier out."""
    return torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1)


def crossfade(tail: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The first ``n`` frames of ``x`` [C, T, ...] faded in over the earlier tile's ``tail``
    [C, n, ...] (which fades out): how neighbouring temporal tiles meet."""
    n = tail.shape[1]
    w = _ramp(n, x.device).view(1, n, *([1] * (x.dim() - 2)))
    return tail * (1 - w) + x[:, :n] * w


def _spans(total: int, tile: int, overlap: int, unit: int = 1) -> list[tuple[int, int]]:
    """(start, size) of equal tiles covering [0, total): as few as ``tile`` allows, neighbours
    sharing at least ``overlap`` cells, starts and sizes multiples of ``unit`` (``total``,
    ``tile`` and ``overlap`` are). Equal tiles rather than ``tile``-sized ones: a 984-row
    picture in 896-row tiles would otherwise compute 1792 rows."""
    if total <= tile:
        return [(0, total)]
    n = -(-(total - overlap) // (tile - overlap))
    size = -(-(total + (n - 1) * overlap) // n)  # n tiles of this size reach across with the overlap
    size = -(-size // unit) * unit  # <= tile, a multiple of unit
    # starts rounded down to the unit stay at most size - overlap apart (a multiple of unit)
    return [((i * (total - size) // (n - 1)) // unit * unit, size) for i in range(n)]


def _edge_weights(size: int, start: int, total: int, overlap: int, device: torch.device) -> torch.Tensor:
    """1-D blending weights for a tile at ``start``: ramps only towards existing neighbours."""
    w = torch.ones(size, device=device)
    n = min(overlap, size)
    if start > 0:
        w[:n] = _ramp(n, device)
    if start + size < total:
        w[size - n :] = torch.minimum(w[size - n :], _ramp(n, device).flip(0))
    return w


def _tiled_2d(
    fn: Callable,
    x: torch.Tensor,  # [B, C, T, H, W]
    tile: int,
    overlap: int,
    scale: float,
    states: dict | None = None,
) -> torch.Tensor:
    """Apply ``fn`` on overlapping spatial tiles of ``x`` and blend; ``scale`` = out cells per in cell.

    With ``states`` (a streaming model's step: ``fn(part, state) -> (out, state)``) each
    spatial tile continues its own stream: ``states`` maps the tile's position to its state
    and is updated in place.

    Under autograd each tile is checkpointed: the backward pass recomputes one tile at a time,
    so a gradient through a big frame needs one tile's activations, not all of them.
    """
    H, W = x.shape[-2:]
    unit = max(1, round(1 / scale))  # an encoder's tiles hold whole latent cells
    ys, xs = _spans(H, tile, overlap, unit), _spans(W, tile, overlap, unit)
    if torch.is_grad_enabled() and (len(ys) > 1 or len(xs) > 1):
        plain = fn
        fn = lambda *a: checkpoint(plain, *a, use_reentrant=False)  # noqa: E731

    def run(part: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
        if states is None:
            return fn(part)
        out, states[key] = fn(part, states.get(key))
        return out

    if len(ys) == 1 and len(xs) == 1:
        return run(x, (0, 0))
    out = wsum = None
    o_ov = round(overlap * scale)
    oH, oW = round(H * scale), round(W * scale)
    for y, ny in ys:
        for x0, nx in xs:
            part = run(x[..., y : y + ny, x0 : x0 + nx], (y, x0)).float()  # [B, C', T', th, tw]
            th, tw = part.shape[-2:]
            oy, ox = round(y * scale), round(x0 * scale)
            w = _edge_weights(th, oy, oH, o_ov, part.device)[:, None] * _edge_weights(tw, ox, oW, o_ov, part.device)
            if out is None:
                out = part.new_zeros(*part.shape[:-2], oH, oW)
                wsum = part.new_zeros(oH, oW)
            out[..., oy : oy + th, ox : ox + tw] += part * w
            wsum[oy : oy + th, ox : ox + tw] += w
    return out / wsum


@dataclass
class TileRunner:
    """Runs a model's encode/decode on one temporal tile, split spatially when the frame is big.

    ``encode_step``/``decode_step`` are a streaming model's (``VideoVAE.streams``) calls that
    carry state; with them, ``states`` (a dict, empty at the stream start) continues a stream.
    """

    encode_fn: Callable[[torch.Tensor], torch.Tensor]
    decode_fn: Callable[[torch.Tensor], torch.Tensor]
    spatial: int
    tiling: Tiling
    encode_step: Callable | None = None
    decode_step: Callable | None = None

    @property
    def streams(self) -> bool:
        return self.decode_step is not None

    @torch.no_grad()
    def encode(self, x: torch.Tensor, states: dict | None = None) -> torch.Tensor:
        """[1,3,1+m*t,H,W] -> [1,C,1+m,H/s,W/s] float32 (a continued stream: m*t frames -> m)."""
        t = self.tiling
        fn = self.encode_fn if states is None else self.encode_step
        return _tiled_2d(fn, x, t.tile_px, t.overlap_px, 1 / self.spatial, states).float()

    def decode(self, z: torch.Tensor, grad: bool = False, states: dict | None = None,
               moves: dict[int, Move] | None = None) -> torch.Tensor:
        """[1,C,1+m,h,w] -> [1,3,1+m*t,h*s,w*s] float32 (a continued stream: m -> m*t frames);
        ``grad``: differentiable in ``z`` (for the encoder's latent refinement, ``vaecodec.refine``);
        ``moves`` ({latent frame of z: ``Move``}): the stream's state moves before those
        latent frames (``move_states``), the call split there."""
        if moves and states is not None:
            cuts = sorted({0, *moves, z.shape[2]})
            parts = []
            for a, b in zip(cuts, cuts[1:]):
                if a in moves:
                    move_states(states, moves[a])
                parts.append(self.decode(z[:, :, a:b], grad, states))
            return torch.cat(parts, 2)
        s, t = self.spatial, self.tiling
        fn = self.decode_fn if states is None else self.decode_step
        with torch.set_grad_enabled(grad):
            return _tiled_2d(fn, z, t.tile_px // s, t.overlap_px // s, s, states).float()


class StreamingEncoder:
    """Feeds pixel frames in, yields finalized latent frames out, one temporal tile in memory.

    Frames arrive as float tensors [3, n, H, W]; ``finish`` pads the tail by repeating the last
    frame up to the causal grid (1 + k*t frames) and flushes.
    """

    def __init__(self, runner: TileRunner, temporal: int) -> None:
        self.runner, self.t = runner, temporal
        til = runner.tiling
        self.L, self.O = til.latent_frames, til.overlap_latents
        self.frames: list[torch.Tensor] = []  # pending pixel frames, each [3, H, W]
        self.first = 0  # global index of frames[0]
        self.next_tile = 0  # latent start of the next tile to run
        self.tail: torch.Tensor | None = None  # [C, O, h, w] unblended end of the previous tile
        self.covered = -1  # last latent index any tile has produced
        self.frames_in = 0

    def push(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """x: [3, n, H, W] in [-1, 1]. Yields latent blocks [C, k, h, w] as they become final."""
        self.frames.extend(x.unbind(1))
        self.frames_in += x.shape[1]
        need = self.next_tile * self.t + 1 + self.L * self.t  # frames a full tile needs
        while self.first + len(self.frames) >= need:
            yield from self._run(self.L)
            need = self.next_tile * self.t + 1 + self.L * self.t

    def finish(self) -> Iterator[torch.Tensor]:
        """Pad to 1 + k*t frames, run the remaining (short) tiles, flush the tail."""
        if self.frames_in == 0:
            return
        k = -(-(self.frames_in - 1) // self.t)
        total = 1 + k * self.t
        self.frames.extend([self.frames[-1]] * (total - self.frames_in))
        while self.covered < k:
            yield from self._run(min(self.L, k - self.next_tile))
        if self.tail is not None:
            yield self.tail
            self.tail = None

    def _run(self, m: int) -> Iterator[torch.Tensor]:
        a = self.next_tile
        lo = a * self.t - self.first
        clip = torch.stack(self.frames[lo : lo + 1 + m * self.t], dim=1)[None]  # [1,3,1+m*t,H,W]
        z = self.runner.encode(clip)[0]  # [C, 1+m, h, w]
        self.covered = a + m
        if a == 0:
            body = z
        else:
            body = z[:, 1:]  # drop the warm-up latent
            if self.tail is not None:
                body[:, : self.tail.shape[1]] = crossfade(self.tail, body)  # z is this tile's own tensor
        self.next_tile = a + self.L - self.O
        # everything up to and including the next tile's warm-up latent is final
        keep = min(self.O, body.shape[1]) if m == self.L else 0
        # the tail is copied so this tile's tensors can be freed once ``final`` is consumed
        final, self.tail = (body[:, : body.shape[1] - keep], body[:, body.shape[1] - keep :].clone()) if keep else (body, None)
        drop = self.next_tile * self.t - self.first
        if drop > 0:
            del self.frames[:drop]
            self.first += drop
        if final.shape[1]:
            yield final


class StreamingDecoder:
    """Feeds latent frames in, yields finalized pixel frames out, one temporal tile in memory."""

    def __init__(self, runner: TileRunner, temporal: int, n_latents: int) -> None:
        self.runner, self.t = runner, temporal
        self.plan = temporal_tiles(n_latents, runner.tiling)
        self.latents: list[torch.Tensor] = []  # pending latent frames, each [C, h, w]
        self.first = 0
        self.tile_i = 0
        self.end_tile = len(self.plan)
        self.tail: torch.Tensor | None = None  # [3, n, H, W] unblended end of the previous tile

    def tiles_for_frames(self, start: int, stop: int) -> tuple[int, int]:
        """Index range of tiles needed to produce pixel frames [start, stop) exactly as a full decode."""
        spans = [(tl.start * self.t, tl.end * self.t + 1) for tl in self.plan]
        first = next(i for i, (a, b) in enumerate(spans) if b > start)
        last = max(i for i, (a, b) in enumerate(spans) if a < stop)
        return first, last + 1

    def push(self, z: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """z: [C, k, h, w] consecutive latents. Yields (first frame index, frames [3, n, H, W])."""
        self.latents.extend(z.unbind(1))
        while self.tile_i < len(self.plan):
            tile = self.plan[self.tile_i]
            if self.first + len(self.latents) <= tile.end:
                return
            yield from self._run(tile)

    def skip_to(self, tile_i: int) -> int:
        """Start decoding at tile ``tile_i``; returns the first latent index it needs fed."""
        self.tile_i = tile_i
        self.first = self.plan[tile_i].start
        return self.first

    def seek(self, start: int, stop: int) -> tuple[int, int]:
        """Decode only what pixel frames [start, stop) need, exactly as a full decode gives
        them; returns the latent frames [first, end) to feed."""
        first, self.end_tile = self.tiles_for_frames(start, stop)
        return self.skip_to(first), self.plan[self.end_tile - 1].end + 1

    @property
    def done(self) -> bool:
        return self.tile_i >= self.end_tile

    def _run(self, tile: TemporalTile) -> Iterator[tuple[int, torch.Tensor]]:
        lo = tile.start - self.first
        z = torch.stack(self.latents[lo : lo + tile.length + 1], dim=1)[None]  # [1, C, 1+m, h, w]
        x = self.runner.decode(z)[0]  # [3, 1+m*t, H, W]
        f0 = tile.start * self.t
        if self.tail is not None:
            x[:, : self.tail.shape[1]] = crossfade(self.tail, x)  # x is this tile's own tensor
        self.tile_i += 1
        if self.tile_i < len(self.plan):
            nxt = self.plan[self.tile_i].start
            split = nxt * self.t - f0  # frames from here on overlap the next tile
            out, self.tail = x[:, :split], x[:, split:].clone()  # a copy: x is freed after ``out``
            drop = nxt - self.first
            del self.latents[:drop]
            self.first = nxt
        else:
            out, self.tail = x, None
        if out.shape[1]:
            yield f0, out


class Move(NamedTuple):
    """How the picture's content moved on the latent grid before a latent frame: new cell
    (y, x) lies where old cell (a x + bx, a y + by) lay. A window moved by whole cells is
    ``Move.by_cells``; a zoom has a != 1."""

    a: float
    bx: float
    by: float

    @classmethod
    def by_cells(cls, dx: int, dy: int) -> Move:
        """The content of cell p went to p + (dx, dy)."""
        return cls(1.0, float(-dx), float(-dy))


def moved(f: torch.Tensor, move: Move) -> torch.Tensor:
    """[..., h, w] read where ``move`` says each cell's content was, edges repeated: by whole
    cells exactly (``shifted``), else bilinear."""
    a, bx, by = move
    if a == 1 and bx == round(bx) and by == round(by):
        return shifted(f, -round(bx), -round(by))
    h, w = f.shape[-2:]
    gx = (2 * (a * torch.arange(w, device=f.device, dtype=torch.float64) + bx) + 1) / w - 1
    gy = (2 * (a * torch.arange(h, device=f.device, dtype=torch.float64) + by) + 1) / h - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).float()[None]
    flat = f.reshape(-1, 1, h, w).float()  # in float32: a bf16 grid cannot place a cell (and gave NaN on the CPU)
    out = F.grid_sample(flat, grid.expand(flat.shape[0], -1, -1, -1), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.reshape(f.shape).to(f.dtype)


def shifted(f: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """[..., h, w] with its content moved by whole cells (what was at p goes to p + (dx, dy)),
    the edges repeated into what the move uncovers."""
    h, w = f.shape[-2:]
    iy = (torch.arange(h, device=f.device) - dy).clamp_(0, h - 1)
    ix = (torch.arange(w, device=f.device) - dx).clamp_(0, w - 1)
    return f.index_select(-2, iy).index_select(-1, ix)


def _depth(n: int, device: torch.device) -> torch.Tensor:
    """How far each of ``n`` cells lies from the nearer end of its tile."""
    i = torch.arange(n, device=device)
    return torch.minimum(i, n - 1 - i)


def move_states(states: dict, move: Move, unit: int = 1) -> None:
    """Move a stream's state (``VideoVAE.state_on_grid``: per spatial tile, a list of tensors
    [B, C, h, w] on the tile's latent grid) as the picture's content moved (``moved``), in
    place; ``unit``: the tiles' keys (their places in ``_tiled_2d``'s input) are in units of
    1/unit latent cell (pixels of the encoder's input: the spatial factor).

    With several spatial tiles the move is made on the whole picture: each state is put together
    from the tiles, every cell taken from the tile it lies deepest in (where that tile's state is
    least touched by its edges), moved, and cut back into the tiles, so a tile takes what moves
    in across its edge from its neighbour. The picture's edges are repeated into what the move
    uncovers."""
    if not states:  # a stream that starts cold here (a seek) has nothing to move
        return
    if len(states) == 1:
        key = next(iter(states))
        states[key] = [moved(f, move) for f in states[key]]
        return
    boxes = {key: (key[0] // unit, key[1] // unit, *st[0].shape[-2:]) for key, st in states.items()}
    H = max(y + h for y, _, h, _ in boxes.values())
    W = max(x + w for _, x, _, w in boxes.values())
    first = next(iter(states.values()))[0]
    depth = torch.full((H, W), -1, device=first.device)
    deeper = {}  # per tile, the cells it lies deeper in than the tiles before it
    for key, (y, x, h, w) in boxes.items():
        d = torch.minimum(_depth(h, first.device)[:, None], _depth(w, first.device)[None])
        deeper[key] = d > depth[y : y + h, x : x + w]
        depth[y : y + h, x : x + w] = torch.maximum(d, depth[y : y + h, x : x + w])
    out: dict = {key: [] for key in states}
    for i, ref in enumerate(next(iter(states.values()))):
        whole = ref.new_zeros(*ref.shape[:-2], H, W)
        for key, (y, x, h, w) in boxes.items():
            part = whole[..., y : y + h, x : x + w]
            whole[..., y : y + h, x : x + w] = torch.where(deeper[key], states[key][i], part)
        whole = moved(whole, move)
        for key, (y, x, h, w) in boxes.items():
            out[key].append(whole[..., y : y + h, x : x + w].clone())
    states.update(out)


_T = TypeVar("_T")


def moves_in(moves: dict[int, _T], first: int, end: int) -> dict[int, _T]:
    """The moves (or zooms) of latent frames [first, end), by their index from ``first``."""
    return {j - first: m for j, m in moves.items() if first <= j < end}


class CausalEncoder:
    """``StreamingEncoder`` for a streaming model (``TileRunner.streams``): tiles of
    ``latent_frames`` latent frames run one after another, each continuing the causal state
    the one before left (per spatial tile), so every frame is encoded once and the latents are
    exactly those of one whole-clip call. Same interface."""

    def __init__(self, runner: TileRunner, temporal: int) -> None:
        self.runner, self.t, self.L = runner, temporal, runner.tiling.latent_frames
        self.frames: list[torch.Tensor] = []  # pending pixel frames, each [3, H, W]
        self.states: dict | None = None  # per spatial tile, once the stream has started
        self.frames_in = 0
        self.latents_out = 0
        self.moves: dict[int, Move] = {}  # latent frame -> how its content moved

    def move(self, latent: int, move: Move) -> None:
        """The picture's content moves before latent frame ``latent`` (not yet encoded): the
        stream's state moves with it."""
        self.moves[latent] = move

    def _need(self, m: int) -> int:
        """Frames that ``m`` more latent frames take: the stream's first latent takes one."""
        return m * self.t + (self.states is None)

    def push(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """x: [3, n, H, W] in [-1, 1]. Yields latent blocks [C, k, h, w] as tiles complete."""
        self.frames.extend(x.unbind(1))
        self.frames_in += x.shape[1]
        while len(self.frames) >= self._need(self.L):
            yield self._run(self.L)

    def finish(self) -> Iterator[torch.Tensor]:
        """Pad to 1 + k*t frames (the last one repeated) and run the rest."""
        if self.frames_in == 0:
            return
        pad = -(self.frames_in - 1) % self.t
        self.frames.extend([self.frames[-1]] * pad if pad else [])
        while self.frames:
            yield self._run(min(self.L, (len(self.frames) - (self.states is None)) // self.t))

    def _run(self, m: int) -> torch.Tensor:
        start, first = self.states is None, self.latents_out
        # a call ends before a move, so that the state moves between calls
        m = min([m] + [j - first - start for j in self.moves if first < j])
        n = self._need(m)
        clip = torch.stack(self.frames[:n], dim=1)[None]  # [1, 3, n, H, W]
        self.latents_out += m + start
        if start:
            self.states = {}
        elif first in self.moves:
            move_states(self.states, self.moves.pop(first), unit=self.runner.spatial)
        del self.frames[:n]
        return self.runner.encode(clip, self.states)[0]


class CausalDecoder:
    """``StreamingDecoder`` for a streaming model: latent frames decoded in tiles that each
    continue the state the one before left, so the frames are exactly those of one whole-clip
    call. The tiles are those of ``CausalEncoder``: latents [0, L] first, then L at a time.

    A seek starts the stream cold at a tile boundary at least ``reach`` latent frames before
    the first one it needs (``VideoVAE.reach``: from there on the output no longer depends on
    the cold start) and runs whole tiles, so it computes what a full decode computes for those
    frames, tile by tile and bit for bit. ``moves`` ({latent frame: ``Move``}) are the moves
    ``CausalEncoder.move`` made: the state moves before those latent frames as it did there.
    Same interface.
    """

    def __init__(self, runner: TileRunner, temporal: int, n_latents: int, reach: int,
                 moves: dict[int, Move] | None = None) -> None:
        self.runner, self.t, self.L, self.reach = runner, temporal, runner.tiling.latent_frames, reach
        self.n = n_latents
        self.moves = moves or {}  # latent frame -> how the content moved before it (as encoded)
        self.latents: list[torch.Tensor] = []  # pending latent frames, each [C, h, w]
        self.next, self.stop = 0, n_latents  # global index of latents[0]; the end of the stream
        self.states: dict | None = None

    def _tile(self, latent: int) -> int:
        return max(0, (latent - 1) // self.L)

    def seek(self, start: int, stop: int) -> tuple[int, int]:
        """Decode only what pixel frames [start, stop) need, exactly as a full decode gives
        them; returns the latent frames [first, end) to feed."""
        first = self._tile(-(-start // self.t)) - -(-self.reach // self.L)  # latent ceil(start/t) gives frame start
        self.next = 0 if first <= 0 else first * self.L + 1
        self.stop = min(self.n, (self._tile(-(-(stop - 1) // self.t)) + 1) * self.L + 1)
        return self.next, self.stop

    @property
    def done(self) -> bool:
        return self.next >= self.stop

    def push(self, z: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """z: [C, k, h, w] consecutive latents. Yields (first frame index, frames [3, n, H, W])."""
        self.latents.extend(z.unbind(1))
        while self.latents:
            m = min(self.L + (self.next == 0), self.stop - self.next)
            if len(self.latents) < m:
                return
            yield self._run(m)

    def _run(self, m: int) -> tuple[int, torch.Tensor]:
        z = torch.stack(self.latents[:m], dim=1)[None]  # [1, C, m, h, w]
        del self.latents[:m]
        # a stream's first latent frame decodes to one frame, every later one to t frames
        f0 = self.next * self.t if self.states is None else (self.next - 1) * self.t + 1
        if self.states is None:
            self.states = {}
        moves = moves_in(self.moves, self.next, self.next + m)
        self.next += m
        return f0, self.runner.decode(z, states=self.states, moves=moves)[0]


def encoder_for(runner: TileRunner, temporal: int) -> StreamingEncoder | CausalEncoder:
    """The encode stream a model takes: carried state when it streams, overlapping tiles if not."""
    return CausalEncoder(runner, temporal) if runner.streams else StreamingEncoder(runner, temporal)


def decoder_for(runner: TileRunner, temporal: int, n_latents: int, reach: int,
                moves: dict[int, Move] | None = None) -> StreamingDecoder | CausalDecoder:
    """The decode stream a model takes (``encoder_for``'s counterpart); ``moves`` as
    ``CausalEncoder.move`` made them (a streaming model only)."""
    if runner.streams:
        return CausalDecoder(runner, temporal, n_latents, reach, moves)
    return StreamingDecoder(runner, temporal, n_latents)

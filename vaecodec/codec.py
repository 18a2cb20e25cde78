"""The ``Codec``: the one pipeline behind both the CLI and the Python API.

encode: VideoReader -> pad to the model grid -> tiling.encoder_for (temporal + spatial tiles)
        -> Quantizer -> VlatWriter chunks (latents and audio interleaved as demuxed)
decode: VlatReader -> Quantizer.unpack -> tiling.decoder_for -> crop -> VideoWriter

Only one temporal tile of frames and latents is alive at any time, so memory does not grow
with the length of the video.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import resource
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from . import __version__
from . import camera as cam
from . import motion as mc
from .container import FLAG_CANVAS, FLAG_RESAMPLED, FLAG_SHIFT, FLAG_ZOOM, VlatReader, VlatWriter
from .device import DTYPE_NAMES, autotuned_convs, codec_dtypes, keep_freed_memory, pick_device
from .errors import FormatError, InputError, UsageError
from .models import KINDS, VideoVAE, check_weights, load_model, ref_for_file, resolve
from .models.base import Tiling
from .quant import BUSY_LADDER, SMOOTH_LADDER, Level, Quantizer, check_level, fit_level, ladder_level
from .refine import LatentRefiner, RefineSettings, check_refine
from .resample import capped_scale, check_scale, coded_size, fine_detail_db, resize_frames, to_uint8_frames
from .tiling import Move, TileRunner, check_tiling, decoder_for, encoder_for
from .video import (
    DECODE_PRESET, TIME_SLACK, AudioTrack, Color, VideoReader, VideoWriter, check_limit, is_url, pack_packets, rebase,
    seconds, unpack_packets,
)
from .workers import CoderPool

class Progress(Protocol):
    """What the pipeline reports to a UI (the CLI's rich bar); all calls are optional work."""

    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, frames: int) -> None: ...


class Stopwatch:
    """Accumulates seconds per stage; synchronises CUDA so GPU work lands in the right stage."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[stage] += time.perf_counter() - t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def iterate(self, it, stage: str) -> Iterator:
        """Yield from ``it``, charging the time spent producing each item to ``stage``."""
        it = iter(it)
        while True:
            with self(stage):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item


def _peak_rss() -> int:
    """Peak resident memory of this process so far, in bytes (ru_maxrss is KiB on Linux)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if os.uname().sysname == "Darwin" else r * 1024


def _peak_gpu(device: torch.device) -> int | None:
    """Peak GPU memory allocated by torch on ``device`` (None off CUDA)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


@dataclass
class Result:
    """What an encode or decode did; ``to_dict`` is what ``--json`` prints."""

    path: str
    frames: int
    width: int
    height: int
    fps: Fraction
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    peak_gpu_bytes: int | None = None
    model_id: str = ""

    @property
    def fps_processed(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        d["fps_processed"] = round(self.fps_processed, 3)
        return d


def check_entropy_options(bits: object, quality: object, deadzone: float | None, motion: bool | None,
                          refine: object, has_coder: bool = True) -> None:
    """Options that only entropy coding takes, asked of uniform quantization: with ``bits`` a clash
    of options (the model may well have an entropy coder), else a model without an entropy coder.
    The CLI asks it before any work (a sweep's ``bits`` is a list), the Codec before its model loads."""
    if bits is None and has_coder:
        return
    given = [name for name, asked in (("--quality", quality is not None), ("--deadzone", deadzone is not None),
                                      ("--motion" if motion else "--no-motion", motion is not None),
                                      ("--refine", bool(refine))) if asked]
    if given and has_coder:
        raise UsageError(f"--bits (uniform quantization) cannot be combined with {' or '.join(given)} (entropy coding)")
    if given:
        raise UsageError(f"{given[0]} needs a model with an entropy coder; this one takes --bits")


def _check_types(**options: tuple[object, type]) -> None:
    """Reject a Python API option of the wrong type in one line, before it fails deep inside or
    lands in a file header (``quality=5.0``, ``motion="no"``). None means the default; bool is
    not an integer here; an int is a float."""
    for name, (value, kind) in options.items():
        if value is None:
            continue
        if kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
        if not ok:
            what = {int: "an integer", float: "a number", bool: "True, False or None"}[kind]
            raise UsageError(f"Codec({name}=...) must be {what}, got {value!r}")


@dataclass
class EncodeResult(Result):
    file_bytes: int = 0
    audio_bytes: int = 0  # the audio chunks' stored payloads, inside file_bytes
    input_bytes: int = 0  # what the input occupies on disk; 0 for a filter source or a part of a file
    latent_shape: tuple[int, ...] = ()
    quantization: dict = field(default_factory=dict)
    scale: float = 1.0  # the picture was coded at about this fraction of its width and height
    coded_size: tuple[int, int] = (0, 0)  # (width, height) the model coded: even numbers
    canvas: tuple[int, int] | None = None  # (width, height) of the steadied canvas, if the camera moved
    window_moves: int = 0  # how often the window over the canvas moved (the pan outran its margin)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the video: the whole .vlat file (header and index included) but
        its audio, which a clip's rate would otherwise hide and video-only codecs do not carry."""
        return 8 * (self.file_bytes - self.audio_bytes) / max(1, self.width * self.height * self.frames)

    @property
    def ratio(self) -> float:
        """Compression ratio of the video (as ``bpp``, audio left out) against raw 8-bit RGB."""
        return 3 * self.width * self.height * self.frames / max(1, self.file_bytes - self.audio_bytes)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(bpp=self.bpp, ratio_vs_rgb=self.ratio, ratio_vs_input=self.input_bytes / max(1, self.file_bytes))
        return d


@dataclass
class DecodeResult(Result):
    warnings: list[str] = field(default_factory=list)


def _pad_to_grid(frames: np.ndarray, multiple: int) -> np.ndarray:
    """Replicate-pad [n, H, W, 3] so H and W are multiples of the model's spatial factor."""
    h, w = frames.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


# Latent frames per entropy-coded chunk. Only a chunk's first frame is coded on its own (so a
# damaged chunk cannot break the next one); every later frame may be coded against the one
# before, so longer chunks cost fewer bits. Temporal tiles (11-12 latent frames at 480p)
# grouped to 32 saved 17 % (smooth pan) and 3 % (busy pan) at quality 5 on 10 s 480p clips.
# Since inter frames got cheap (motion, context tables, holding) a chunk start is a bigger
# share: 64 (256 frames, about 10 s at 25 fps, x264's default keyframe interval) against 32
# saves 10-24 % on the 10 s smooth pan at qualities 1, 5 and 8 and 11.5 % on the busy one at
# quality 5, for 0.01-0.08 dB (docs/MODEL.md, "Streaming").
# The encoder holds a chunk's float latents (and its entropy coder about 6.6x that at its peak),
# so big frames get shorter chunks, but not much shorter: a chunk start is dearest on the
# large pictures of the top qualities (one intra latent frame of a 3.5x 480p picture costs
# ~155 KB, 20 inter frames' worth). 128 MiB keeps 64 latent frames up to 2x 480p, 30 at 3x,
# 23 at 3.5x and 16 at 4K. 64 MiB cut 3-3.5x to 11-17, which cost the 10 s lomiri pan 12 %
# more bits at quality 8 (3x) and a 2 s one 62 % at quality 10; 64 latent frames at 3x saved
# only 1.9 % more than 32 there, for 1.4 GB more encode memory (4.8 GB).
CHUNK_LATENTS = 64
CHUNK_BUFFER_BYTES = 128 << 20


def _take_frames(frames: Iterator[np.ndarray], n: int) -> np.ndarray:
    """The first ``n`` frames (or all there are) of a stream of frame chunks, joined; the
    stream resumes after them."""
    got: list[np.ndarray] = []
    while sum(len(c) for c in got) < n and (chunk := next(frames, None)) is not None:
        got.append(chunk)
    if not got:
        return np.zeros((0, 1, 1, 3), np.uint8)
    return np.concatenate(got)


class _Views:
    """The camera params of the frames steadied so far, until their latent chunk takes them."""

    def __init__(self) -> None:
        self.params: deque[np.ndarray] = deque()
        self.start = self.end = 0  # frames [start, end) are held
        self.moved: list[int] = []  # frames held whose window moved, the model's memory not with it
        self.shifts: list[list[int]] = []  # [frame, dx, dy]: frames held whose window moved, the memory with it
        self.zooms: list[list[int]] = []  # [frame, a, bx, by]: frames held whose latents are predicted through a zoom
        self.moves = 0  # window moves so far

    def add(self, params: np.ndarray, moved: bool, shift: tuple[int, int] | None = None,
            zoom: tuple[int, int, int] | None = None, memory_follows: bool = False) -> None:
        """``memory_follows``: the model's memory is resampled through ``zoom`` (no cut from
        the next frame needed)."""
        if shift is not None:
            self.shifts.append([self.end, *shift])
        elif moved and not memory_follows:
            self.moved.append(self.end)
        if zoom is not None:
            self.zooms.append([self.end, *zoom])
        self.moves += moved
        self.params.extend(params)
        self.end += len(params)

    def take(self, first: int, end: int) -> dict:
        """Params of frames [first, end) and the chunk meta of their moves: first must be the oldest held."""
        assert first == self.start and end <= self.end, (first, end, self.start, self.end)
        out = [self.params.popleft() for _ in range(end - first)]
        self.start = end
        meta = {"camera": cam.pack(np.stack(out) if out else np.zeros((0, 3), np.int64))}
        if moved := [f for f in self.moved if f < end]:  # decoders cut these from the next canvas frame
            meta["camera_moved"] = moved
        if shifts := [m for m in self.shifts if m[0] < end]:  # decoders move their memory with these
            meta["camera_shift"] = shifts
        # decoders predict these latent frames through the zoom and resample their memory (at a
        # chunk's first latent frame, which has no frame before it in the chunk, only the memory)
        if zooms := [m for m in self.zooms if m[0] < end]:
            meta["camera_zoom"] = zooms
        self.moved = [f for f in self.moved if f >= end]
        self.shifts = [m for m in self.shifts if m[0] >= end]
        self.zooms = [m for m in self.zooms if m[0] >= end]
        return meta


def latent_zoom(m: np.ndarray, s: int) -> tuple[int, int, int]:
    """A canvas zoom (2x3: new canvas pixel -> old canvas pixel, ``camera.Steadier``) on the
    latent grid of a model with spatial factor ``s``, as ``motion.resample`` takes it: cell c's
    centre is pixel s c + (s - 1) / 2, so new cell c reads old cell z c + ((z - 1)(s - 1) / 2 + t) / s."""
    z, one = float(m[0, 0]), 1 << mc.ZOOM_BITS
    return (round(z * one), *(round(((z - 1) * (s - 1) / 2 + float(t)) / s * one) for t in m[:, 2]))


def zoom_move(zoom: tuple[int, int, int]) -> Move:
    """A ``camera_zoom``'s (a, bx, by) as the model memory's move (``tiling.Move``)."""
    return Move(*(v / (1 << mc.ZOOM_BITS) for v in zoom))


def chunk_zooms(meta: dict, t0: int, temporal: int) -> mc.Zooms:
    """A latent chunk's ``camera_zoom`` entries as ``motion.Zooms`` (chunk latent frame -> zoom)."""
    return {_latent_of(m[0], temporal) - t0: tuple(m[1:]) for m in meta.get("camera_zoom", [])}


def default_chunk_latents(quant: Quantizer, latent_frame_bytes: int) -> int:
    """Latent frames per chunk: tiles grouped up to ``CHUNK_LATENTS`` for entropy coding, one
    tile per chunk for uniform quantization (zstd gains nothing from longer chunks)."""
    if quant.scheme != "entropy":
        return 1
    return max(1, min(CHUNK_LATENTS, CHUNK_BUFFER_BYTES // max(1, latent_frame_bytes)))


class ChunkGatherer:
    """Joins the encoder's consecutive latent blocks [C, k, h, w] into chunks of at least
    ``per_chunk`` latent frames (the last may be shorter); ``None``: ``default_chunk_latents``
    for the quantizer and the blocks' frame size (float32 latents).

    ``expected``: the stream's length in latent frames as the container estimates it. A chunk
    that would leave a tail shorter than half a chunk takes the tail too (up to 1.5 chunks):
    every chunk starts with a latent frame coded on its own, and a 10 s 480p pan cut 64 + 1
    pays for a second one, ~30 % of its file at quality 5. A wrong estimate costs only that:
    no chunk grows past twice ``per_chunk``.
    """

    def __init__(self, quant: Quantizer, per_chunk: int | None = None, expected: int | None = None) -> None:
        self.quant, self.per_chunk, self.expected = quant, per_chunk, expected
        self.blocks: list[torch.Tensor] = []
        self.done = 0  # latent frames already handed out as chunks

    def add(self, z: torch.Tensor) -> torch.Tensor | None:
        """Take the next block; returns a whole chunk once enough frames are gathered."""
        if self.per_chunk is None:
            self.per_chunk = default_chunk_latents(self.quant, 4 * z[:, :1].numel())
        self.blocks.append(z.cpu())
        have = sum(b.shape[1] for b in self.blocks)
        if have < self.per_chunk:
            return None
        tail = None if self.expected is None else self.expected - self.done - have
        if tail is not None and 0 < tail < self.per_chunk / 2 and have + tail <= 2 * self.per_chunk:
            return None  # the end is near: this chunk takes it
        return self.rest()

    def rest(self) -> torch.Tensor | None:
        """The frames gathered so far as one chunk (None if there are none)."""
        if not self.blocks:
            return None
        z = torch.cat(self.blocks, dim=1) if len(self.blocks) > 1 else self.blocks[0]
        self.blocks = []
        self.done += z.shape[1]
        return z


# On one H200's 16-core host a 60 s 480p file (chunk version 5) decoded at 1,468 fps with 8
# workers and 1,601 with 12 (docs/BENCHMARKS.md, "On a GPU").
MAX_ENTROPY_WORKERS = 12


def default_entropy_workers(device: torch.device) -> int:
    """Processes that entropy-code latent chunks beside the model (``vaecodec.workers``): none
    on the CPU, where the model already keeps every core busy; on a GPU the spare host cores,
    up to ``MAX_ENTROPY_WORKERS``, so the CPU-side coder keeps up with the GPU and runs while
    it computes."""
    if device.type == "cpu":
        return 0
    return max(0, min(MAX_ENTROPY_WORKERS, (os.cpu_count() or 1) - 2))


class _ChunkQueue:
    """The chunks of an encode, written in the order they are made while latent chunks may
    still be coding in worker processes; so a file's bytes do not depend on the worker count."""

    def __init__(self, out: VlatWriter, pool: CoderPool) -> None:
        self.out, self.pool = out, pool
        self.items: deque[tuple[str, bytes | None, dict, str]] = deque()  # None: still coding

    def chunk(self, kind: str, payload: bytes, meta: dict, coding: str = "zstd") -> None:
        self.items.append((kind, payload, meta, coding))
        self._write_ready(wait=0)

    def latent(self, z: torch.Tensor, quant: Quantizer, meta: dict, zooms: mc.Zooms) -> None:
        """Hand a chunk's float latents [C, t, h, w] to a worker, which quantizes and codes them."""
        if not self.pool.idle:  # results come back in order: the oldest frees the next worker
            self._write_ready(wait=1)
        self.pool.quantize(quant.scaled(z), quant.quality, quant.deadzone, quant.motion_block, zooms)
        self.items.append(("latent", None, meta, "raw"))
        self._write_ready(wait=0)

    def finish(self) -> None:
        self._write_ready(wait=len(self.items))

    def _write_ready(self, wait: int) -> None:
        """Write chunks from the front, waiting for at most ``wait`` coding results on the way."""
        while self.items:
            kind, payload, meta, coding = self.items[0]
            if payload is None:
                if wait == 0:
                    return
                payload, wait = self.pool.result(), wait - 1
            self.items.popleft()
            self.out.add_chunk(kind, payload, meta, coding=coding)


class Codec:
    """Encode videos to .vlat and back with one model and one set of settings.

    >>> codec = Codec()                        # embedded model, auto device
    >>> codec.encode("in.mp4", "out.vlat")     # doctest: +SKIP
    >>> codec.decode("out.vlat", "back.mp4")   # doctest: +SKIP
    """

    def __init__(
        self,
        model: str = "tiny",
        *,
        device: str = "auto",
        dtype: str = "auto",
        bits: int | None = None,
        quality: int | None = None,
        tables: int | None = None,
        deadzone: float | None = None,
        motion: bool | None = None,
        scale: float | None = None,
        camera: bool | None = None,
        refine: int | RefineSettings = 0,
        model_dir: str | Path | None = None,
        model_path: str | Path | None = None,
        tile_frames: int | None = None,
        tile_overlap: int | None = None,
        tile_px: int | None = None,
        tile_overlap_px: int | None = None,
        chunk_latents: int | None = None,
        zstd_level: int = 9,
        zstd_threads: int = 0,
        entropy_workers: int | None = None,
    ) -> None:
        if not isinstance(model, str):
            raise UsageError(f"Codec(model=...) must be a model name or KIND:PATH string, got {model!r}")
        _check_types(bits=(bits, int), quality=(quality, int), tables=(tables, int), deadzone=(deadzone, float),
                     motion=(motion, bool), scale=(scale, float), camera=(camera, bool), tile_frames=(tile_frames, int),
                     tile_overlap=(tile_overlap, int), tile_px=(tile_px, int), tile_overlap_px=(tile_overlap_px, int),
                     chunk_latents=(chunk_latents, int), zstd_level=(zstd_level, int),
                     zstd_threads=(zstd_threads, int), entropy_workers=(entropy_workers, int))
        self.model_spec, self.model_dir, self.model_path = model, model_dir, model_path
        self.device, self.dtype_name = pick_device(device), dtype
        self.encode_dtype, self.decode_dtype = codec_dtypes(dtype, self.device)
        if entropy_workers is not None and entropy_workers < 0:
            raise UsageError(f"--entropy-workers must be >= 0, got {entropy_workers}")
        self.entropy_workers = default_entropy_workers(self.device) if entropy_workers is None else entropy_workers
        self.bits, self.quality, self.deadzone, self.motion = bits, quality, deadzone, motion
        # the coder's table set instead of the level's (Python only: benchmarks that sweep tables and
        # picture sizes apart, and the card's check, which measures each table set as trained)
        self.tables = tables
        self.scale = None if scale is None else check_scale(scale)  # None: per quality
        # steady a moving camera's picture into a canvas (``vaecodec.camera``); None: for the
        # entropy-coded models, whose files are for watching, not for latents that must line
        # up with the picture (a latent cache for an LTX model)
        self.camera = camera
        self.refine = refine  # latent refinement (``vaecodec.refine``), checked by the setter
        if chunk_latents is not None and chunk_latents < 1:
            raise UsageError(f"--chunk-frames must be at least 1, got {chunk_latents}")
        self.chunk_latents = chunk_latents
        self.tile_overrides = {
            "latent_frames": tile_frames,
            "overlap_latents": tile_overlap,
            "tile_px": tile_px,
            "overlap_px": tile_overlap_px,
        }
        self.zstd_level, self.zstd_threads = zstd_level, zstd_threads
        self._model: VideoVAE | None = None  # the encode model (``encode_dtype``)
        self._decoder: VideoVAE | None = None  # the last file's model, when it is not that one
        keep_freed_memory()

    @property
    def refine(self) -> RefineSettings | None:
        return self._refine

    @refine.setter
    def refine(self, value: int | RefineSettings | None) -> None:
        """A step count (0: off) or full settings; a sweep point sets it as a count."""
        self._refine = check_refine(value)

    # -- model ---------------------------------------------------------------------------
    @property
    def model(self) -> VideoVAE:
        """The encode model, loaded on first use."""
        if self._model is None:
            self._model = load_model(resolve(self.model_spec, self.model_dir), self.device, self.encode_dtype)
        return self._model

    def _model_for(self, header_model: dict) -> VideoVAE:
        """The model a file needs, in ``decode_dtype``: a loaded one when weights and dtype
        match, else loaded (kept apart from the encode model, which a later encode still wants)."""
        sha = header_model.get("sha256")
        for model in (self._decoder, self._model):
            if model is not None and model.weights_sha256 == sha and next(model.parameters()).dtype == self.decode_dtype:
                return model
        if self._model is not None and self._model.weights_sha256 == sha:  # the encoder's weights, again
            ref = resolve(self.model_spec, self.model_dir)
        else:
            ref = ref_for_file(header_model, self.model_path, self.model_dir)
        model = load_model(ref, self.device, self.decode_dtype)
        check_weights(model, header_model)
        self._decoder = model
        return model

    def _tiling(self, model: VideoVAE, height: int, width: int) -> Tiling:
        tiling = replace(model.tiling_for(height, width), **{k: v for k, v in self.tile_overrides.items() if v is not None})
        if model.streams and tiling.overlap_latents:
            if self.tile_overrides["overlap_latents"]:
                raise UsageError(f"--tile-overlap: {model.model_id} carries its causal state from one temporal "
                                 "tile to the next, so its tiles take no overlap (leave the option out)")
            tiling = replace(tiling, overlap_latents=0)
        # a tile set smaller than the model's default overlap keeps the most overlap it can hold
        if self.tile_overrides["overlap_latents"] is None and tiling.latent_frames >= 1:
            tiling = replace(tiling, overlap_latents=min(tiling.overlap_latents, tiling.latent_frames - 1))
        if self.tile_overrides["overlap_px"] is None and tiling.tile_px >= model.spatial:
            tiling = replace(tiling, overlap_px=min(tiling.overlap_px, tiling.tile_px - model.spatial))
        try:
            check_tiling(tiling, model.spatial)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return tiling

    def _runner(self, model: VideoVAE, tiling: Tiling) -> TileRunner:
        dtype = next(model.parameters()).dtype  # the encode or the decode model's

        def encode_fn(x: torch.Tensor) -> torch.Tensor:  # uint8 [1,3,T,h,w] -> latent mean
            return model.encode(x.to(dtype, copy=True).div_(127.5).sub_(1))[0]  # one float copy of the tile

        def decode_fn(z: torch.Tensor) -> torch.Tensor:
            return model.decode(z.to(dtype))

        if not model.streams:
            return TileRunner(encode_fn, decode_fn, model.spatial, tiling)

        def encode_step(x: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
            return model.encode_step(x.to(dtype, copy=True).div_(127.5).sub_(1), state)

        def decode_step(z: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
            return model.decode_step(z.to(dtype), state)

        return TileRunner(encode_fn, decode_fn, model.spatial, tiling, encode_step, decode_step)

    def _quantizer(self, model: VideoVAE, rung: Level | None) -> Quantizer:
        if rung is not None:
            return Quantizer("entropy", quality=rung.table, coder=model.entropy_coder, deadzone=self.deadzone,
                             motion=self.motion)
        return Quantizer("uniform", bits=8 if self.bits is None else self.bits, deadzone=self.deadzone,
                         motion=self.motion)

    def _level(self, model: VideoVAE) -> int | None:
        """The quality level asked for (``--quality``, a rung of ``quant.LADDER``), None when the
        latents are not entropy-coded; the quantization options checked before any input is read."""
        coder = model.entropy_coder
        check_entropy_options(self.bits, self.quality, self.deadzone, self.motion, self.refine, coder is not None)
        if self.bits is not None or coder is None:
            if self.tables is not None:
                raise UsageError("Codec(tables=...) needs a model with an entropy coder and no bits=")
            return None
        return check_level(coder.default_quality if self.quality is None else self.quality)

    def _rung(self, model: VideoVAE, level: int | None, first: np.ndarray, width: int, height: int) -> Level | None:
        """The table set and picture size of quality ``level`` for a ``width`` x ``height`` video
        whose first frames are ``first``; None without entropy coding."""
        if level is None:
            return None
        # finer tables where the picture is smooth, a larger picture where it is busy, at the levels
        # where that changes the rung; the first, middle and last frame read decide, the least
        # smooth of them (a fade from black is not a smooth picture)
        detail = (min(fine_detail_db(first[i]) for i in {0, len(first) // 2, -1})
                  if level in SMOOTH_LADDER.keys() | BUSY_LADDER.keys() and len(first) > 0 else None)
        rung = ladder_level(level, detail)
        # a large source is not enlarged as far, nor a picture whose --scale asks for less: finer tables
        scale = capped_scale(rung.scale, width, height) if self.scale is None else self.scale
        rung = fit_level(rung, scale, max(model.entropy_coder.qualities))
        return rung if self.tables is None else Level(self.tables, rung.scale)

    def describe(self) -> dict:
        """Environment facts a benchmark records next to its figures."""
        m = self.model
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return {
            "vaecodec": __version__,
            "model_id": m.model_id,
            "weights_sha256": m.weights_sha256,
            "torch": torch.__version__,
            "device": name,
            "dtype": self.dtype_name if self.dtype_name != "auto" else
            f"auto (encode {DTYPE_NAMES[self.encode_dtype]}, decode {DTYPE_NAMES[self.decode_dtype]})",
            "threads": torch.get_num_threads(),
        }

    # -- encode --------------------------------------------------------------------------
    def encode(
        self, src: str | Path, dst: str | Path, *, overwrite: bool = False, progress: Progress | None = None,
        frames: int | None = None, start: Fraction | float | str = 0,
    ) -> EncodeResult:
        """Encode the video ``src`` into the .vlat ``dst`` (written atomically). ``src`` is a file,
        an image sequence, ``lavfi:...``, ``-`` (stdin) or a URL string (``https://``, ``rtsp://``);
        ``start`` (seconds after its first frame) skips to the frame shown then, with its audio;
        ``frames`` stops after that many (a live stream has no end of its own)."""
        dst = Path(dst)
        check_limit(frames)
        start = seconds(start)
        if not is_url(src) and Path(src).resolve() == dst.resolve():
            raise UsageError("input and output are the same file")
        if dst.exists() and not overwrite:
            raise UsageError(f"{dst} exists (use -y/--overwrite to replace it)")
        if self._model is None and not KINDS[resolve(self.model_spec, self.model_dir).kind].entropy:
            # before loading what may be gigabytes of weights
            check_entropy_options(self.bits, self.quality, self.deadzone, self.motion, self.refine, has_coder=False)
        t_start = time.perf_counter()
        sw = Stopwatch(self.device)
        model = self.model
        level = self._level(model)
        s = model.spatial
        with VideoReader(src, limit=frames, start=start) as reader:
            name = reader.path  # the input in messages: the file, or what names a stream
            info = reader.info
            frames = sw.iterate(reader.chunks(), "read")  # at the source size
            steady = self.camera if self.camera is not None else level is not None
            first = _take_frames(frames, cam.LOOKAHEAD if steady else 1)  # the stream resumes after them
            rung = self._rung(model, level, first, info.width, info.height)
            quant = self._quantizer(model, rung)
            scale = self.scale if self.scale is not None else rung.scale if rung else 1.0
            cw, ch = coded_size(info.width, info.height, scale)
            canvas = None
            fitted = self.tile_overrides["tile_px"]  # a canvas within the tile asked for, or as large as it pays
            if steady:
                with sw("camera"):
                    path = cam.estimate_path(first, (cw, ch)) if len(first) > 1 else []
                    canvas = cam.plan_canvas(first, fitted and self._tiling(model, ch, cw).tile_px, path, (cw, ch))
            pw, ph = canvas or (cw, ch)  # the picture the model codes
            hp, wp = -(-ph // s) * s, -(-pw // s) * s
            if min(hp, wp) // s < model.min_latent:
                raise UsageError(f"{name}: a {cw}x{ch} picture is {wp // s}x{hp // s} latent cells; {model.model_id} "
                                 f"decodes at least {model.min_latent}x{model.min_latent} "
                                 f"({model.min_latent * s} px: raise --scale)")
            tiling = self._tiling(model, hp, wp)
            if canvas and not fitted and max(cw, ch) <= tiling.tile_px < max(wp, hp):
                # a picture in one tile keeps its canvas in one: the tile grows by the canvas's margin (at
                # most a quarter a side), where clamping the canvas to it cost up to a quarter more bits
                tiling = replace(tiling, tile_px=max(wp, hp))
            runner = self._runner(model, tiling)
            described = quant.describe()
            if level and self.tables is None:  # the rung of the quality ladder: the tables above plus a picture size
                described["level"] = level
            refiner = None
            if self.refine:  # the symbols are the encoder's choice: record how they were chosen
                described["refine"] = asdict(self.refine)
                refiner = LatentRefiner(runner, model.temporal, quant.coder.step(quant.quality).to(self.device),
                                        quant.deadzone, self.refine, (ph, pw), quant.motion_block,
                                        quant.coder, quant.quality)
            coded = {} if (cw, ch) == (info.width, info.height) else {"coded_width": cw, "coded_height": ch}
            if canvas:
                coded |= {"canvas_width": pw, "canvas_height": ph}
            header = {
                "vaecodec": __version__,
                "model": model.describe(),
                "latent": {"channels": model.latent_channels, "height": hp // s, "width": wp // s, "dtype": "float32"},
                "quantization": described,
                "tiling": tiling.to_dict(),
                "video": {**info.to_dict(), **coded, "padded_width": wp, "padded_height": hp},
                "audio": reader.audio.to_dict() if reader.audio else None,
                "source": {"name": name.name, "bytes": reader.input_bytes,
                           **({"start": f"{reader.started.numerator}/{reader.started.denominator}"} if reader.started else {}),
                           **({"tags": reader.tags} if reader.tags else {})},
            }
            if progress:
                progress.start(info.frames, f"encode {name.name}")
            enc = encoder_for(runner, model.temporal)
            n_lat = 0
            with VlatWriter(dst, header, overwrite=overwrite, level=self.zstd_level, threads=self.zstd_threads,
                            flags=(FLAG_RESAMPLED if (cw, ch) != (info.width, info.height) else 0)
                            | (FLAG_CANVAS if canvas else 0)) as out, ExitStack() as stack, \
                    autotuned_convs(self.device):
                pool = (stack.enter_context(closing(CoderPool(self.entropy_workers, quant.coder)))
                        if self.entropy_workers and quant.scheme == "entropy" else None)
                queue = _ChunkQueue(out, pool) if pool else None
                gather = ChunkGatherer(quant, self.chunk_latents,
                                       model.latents_for_frames(info.frames) if info.frames else None)

                def emit(z: torch.Tensor | None) -> None:  # z: [C, k, h, w], a whole chunk of latents
                    nonlocal n_lat
                    if z is None:
                        return
                    with sw("pack"):
                        meta = {"t0": n_lat, "t": z.shape[1]}
                        if views is not None:  # each frame's view of the canvas (padding frames have none)
                            end = min(_first_frame(n_lat + z.shape[1], model.temporal), views.end)
                            meta |= views.take(_first_frame(n_lat, model.temporal), end)
                            if "camera_shift" in meta:  # readers before the flag would not move their memory
                                out.add_flags(FLAG_SHIFT)
                            if "camera_zoom" in meta:  # readers before the flag would mispredict
                                out.add_flags(FLAG_ZOOM)
                        zooms = chunk_zooms(meta, n_lat, model.temporal)
                        if queue:  # coded by a worker; written in order when it is back
                            queue.latent(z, quant, meta, zooms)
                        else:
                            p = quant.pack(z, zooms)
                            out.add_chunk("latent", p.payload, {**meta, **p.meta}, coding=p.coding)
                    n_lat += z.shape[1]

                def latents(blocks: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
                    for z in sw.iterate(blocks, "model_encode"):
                        yield from sw.iterate(refiner.push(z), "refine") if refiner else (z,)

                def add(kind: str, payload: bytes, meta: dict) -> None:
                    (queue.chunk if queue else out.add_chunk)(kind, payload, meta)

                def emit_audio() -> None:
                    packets = reader.take_audio()
                    if packets:
                        add("audio", pack_packets(packets), {"packets": len(packets)})

                # the steadier resizes as it warps; without it frames are resized here
                steadier = (cam.Steadier(cw, ch, canvas, model.temporal, self.device, path, (info.width, info.height))
                            if canvas else None)
                views = _Views() if canvas else None

                def code(pictures: np.ndarray) -> None:  # uint8 [n, ph, pw, 3], the model's input
                    x = torch.from_numpy(_pad_to_grid(pictures, s)).to(self.device).permute(3, 0, 1, 2)  # [3,n,Hp,Wp] u8
                    if refiner:
                        refiner.add_frames(x)
                    for z in latents(enc.push(x)):
                        emit(gather.add(z))

                def steadied(segments: Iterator[cam.Segment]) -> None:
                    for pictures, params, moved, shift, zoom in sw.iterate(segments, "camera"):
                        # a window moved by whole latent cells: the model's memory moves with it
                        follows = shift is not None and model.state_on_grid and not (shift[0] % s or shift[1] % s)
                        # a new reference after another: its first latent frame is predicted from
                        # the one before resampled through the zoom (motion-compensated coding
                        # only), and a memory on the latent grid is resampled likewise
                        grid = latent_zoom(zoom, s) if zoom is not None and quant.motion and views.end > 0 else None
                        zoom_follows = grid is not None and model.state_on_grid
                        move = (Move.by_cells(shift[0] // s, shift[1] // s) if follows
                                else zoom_move(grid) if zoom_follows else None)
                        latent = _latent_of(views.end, model.temporal)
                        if move is not None:
                            for stream in (enc, refiner) if refiner else (enc,):
                                stream.move(latent, move)
                        if grid is not None and refiner:  # its rate term predicts as the coder will
                            refiner.zoom(latent, grid)
                        views.add(params, moved, shift if follows else None, grid, zoom_follows)
                        code(pictures)

                for chunk in itertools.chain([first] if len(first) else [], frames):
                    if steadier:
                        steadied(steadier.push(chunk))
                    else:
                        code(resize_frames(chunk, cw, ch))
                    emit_audio()
                    if progress:
                        progress.advance(chunk.shape[0])
                n_frames = reader.frames_read
                if n_frames == 0:
                    raise InputError(f"{name}: no video frames could be decoded")
                if steadier:
                    steadied(steadier.finish())
                for z in latents(enc.finish()):
                    emit(gather.add(z))
                if refiner:
                    for z in sw.iterate(refiner.finish(), "refine"):
                        emit(gather.add(z))
                emit(gather.rest())
                emit_audio()
                add("summary", b"", {"frames": n_frames, "latent_frames": n_lat})
                if queue:
                    with sw("pack"):
                        queue.finish()
        return EncodeResult(
            path=str(dst),
            frames=n_frames,
            width=info.width,
            height=info.height,
            fps=info.fps,
            seconds=time.perf_counter() - t_start,
            timings=dict(sw.seconds),
            peak_rss_bytes=_peak_rss(),
            peak_gpu_bytes=_peak_gpu(self.device),
            model_id=model.model_id,
            file_bytes=dst.stat().st_size,
            audio_bytes=sum(c.stored_size for c in out.chunks if c.kind == "audio"),
            input_bytes=reader.input_bytes if reader.whole else 0,  # a part's share of the file is unknown
            latent_shape=(model.latent_channels, n_lat, hp // s, wp // s),
            quantization=described,
            scale=scale,
            coded_size=(cw, ch),
            canvas=canvas,
            window_moves=views.moves if views is not None else 0,
        )

    # -- decode --------------------------------------------------------------------------
    def open(self, path: str | Path) -> "LatentFile":
        """Open a .vlat for random access to its latents and frames."""
        return LatentFile(path, self)

    def decode_frames(
        self,
        src: str | Path,
        *,
        start: int = 0,
        stop: int | None = None,
        timings: dict | None = None,
        progress: Progress | None = None,
        conceal: bool = False,
    ) -> Iterator[np.ndarray]:
        """Decoded RGB frames [start, stop) of ``src`` as uint8 [n, H, W, 3] chunks, in order;
        ``conceal`` as in ``LatentFile.iter_latents``."""
        with LatentFile(src, self) as f:
            yield from f.iter_frames(start, stop, timings=timings, progress=progress, conceal=conceal)

    def decode(
        self,
        src: str | Path,
        dst: str | Path,
        *,
        overwrite: bool = False,
        codec: str | None = None,
        crf: int = 18,
        preset: str | None = None,
        progress: Progress | None = None,
        conceal: bool = True,
        start: Fraction | float | str = 0,
        frames: int | None = None,
    ) -> DecodeResult:
        """Decode the .vlat ``src`` to the video ``dst`` (same size, frame count, fps; audio copied).

        ``preset`` is the x264/x265 speed preset of ``dst`` (default ``video.DECODE_PRESET``).
        A video keeps its timeline, so by default lost latent frames of a damaged file are
        concealed (``LatentFile.iter_latents``) and listed in ``warnings``; ``conceal=False``
        raises FormatError instead. ``start`` (seconds) and ``frames`` decode a part: from the
        first frame shown at or after ``start``, at most ``frames`` frames, with their audio;
        only the chunks that part needs are read. A single ``.png`` takes one frame; ``"-"``
        streams Matroska to stdout.
        """
        streamed = str(dst) == "-"  # Matroska on stdout
        src, dst = Path(src), Path(dst)
        if dst.exists() and not overwrite and not streamed:
            raise UsageError(f"{dst} exists (use -y/--overwrite to replace it)")
        check_limit(frames)
        t_start = time.perf_counter()
        timings: dict[str, float] = defaultdict(float)
        with LatentFile(src, self) as f, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = f.frame_at(start)
            if first >= f.frames:
                raise UsageError(f"start {start} s is past the last frame ({f.frames} frames, {float(f.frames / f.fps):.3f} s)")
            writer = VideoWriter(
                dst, f.width, f.height, f.fps, codec=codec, crf=crf, audio=f.audio, overwrite=overwrite,
                preset=preset or DECODE_PRESET, sar=f.sar, color=f.color, tags=f.tags,
            )
            with writer:
                if writer.single_image:
                    if frames not in (None, 1):
                        raise UsageError(f"{dst}: one PNG image holds one frame, not {frames} (use a pattern like out/%05d.png)")
                    frames = 1
                stop = f.frames if frames is None else min(f.frames, first + frames)
                audio = f.iter_audio(first / f.fps, None if stop == f.frames else stop / f.fps)  # to the end: all of it
                written = 0
                for chunk in f.iter_frames(first, stop, timings=timings, progress=progress, conceal=conceal):
                    t0 = time.perf_counter()
                    writer.write(chunk)
                    written += chunk.shape[0]
                    # keep audio muxed roughly alongside the video written so far
                    writer.write_audio(audio.until(written / float(f.fps)))
                    timings["write"] += time.perf_counter() - t0
                writer.write_audio(audio.until(float("inf")))
            model_id = f.model.model_id
        return DecodeResult(
            path=str(dst),
            frames=written,
            width=f.width,
            height=f.height,
            fps=f.fps,
            seconds=time.perf_counter() - t_start,
            timings=dict(timings),
            peak_rss_bytes=_peak_rss(),
            peak_gpu_bytes=_peak_gpu(self.device),
            model_id=model_id,
            warnings=[str(w.message) for w in caught] + f.problems,
        )


def _latent_of(frame: int, temporal: int) -> int:
    """The latent frame that holds pixel frame ``frame`` by the causal 1 + k*t rule."""
    return 0 if frame == 0 else 1 + (frame - 1) // temporal


def _first_frame(latent: int, temporal: int) -> int:
    """The first pixel frame that latent frame ``latent`` holds (latent k >= 1: 1+(k-1)t .. k*t)."""
    return 0 if latent == 0 else 1 + (latent - 1) * temporal


@dataclass(frozen=True)
class _Loss:
    """Latent frames [start, stop) that no intact chunk gives; ``message`` names them, the
    pixel frames they held, and the damaged chunk (index, byte offset, what is wrong)."""

    start: int
    stop: int
    message: str


class _AudioFeed:
    """Audio packets of a .vlat in file order, handed out up to a presentation time.

    A feed for a part of the file, from ``start`` to ``stop`` seconds of its timeline, counts
    times from ``start`` and leaves out the packets that end by it (one that overlaps it keeps a
    negative time, as an encode's first packet does) and those that begin at ``stop`` or later.
    """

    def __init__(self, f: "LatentFile", start: Fraction = Fraction(0), stop: Fraction | None = None) -> None:
        self.f = f
        self.chunks = iter(f.reader.chunks_of("audio"))
        self.pending: list = []
        self.tb = f.audio.time_base if f.audio else Fraction(1)
        self.shift = round(start / self.tb)  # in the track's ticks
        self.end = None if stop is None else stop / self.tb

    def until(self, seconds: float) -> list:
        out = []
        while True:
            while self.pending:
                p = self.pending[0]
                if p.pts is not None and float((p.pts - self.shift) * self.tb) > seconds:
                    return rebase(out, self.shift)
                self.pending.pop(0)
                if self.end is not None and p.pts is not None and p.pts >= self.end:
                    self.chunks, self.pending = iter(()), []  # the rest is past the part decoded
                else:
                    out.append(p)
            entry = next(self.chunks, None)
            if entry is None:
                return rebase(out, self.shift)
            try:
                self.pending = unpack_packets(self.f.reader.read(entry.index))
            except FormatError as e:
                self.f.problems.append(f"audio lost: {e}")


class LatentFile:
    """A .vlat opened for reading: header facts, latents for any frame range, decoded frames.

    Latents come back as float32 torch tensors [C, t, h, w]; only the chunks covering the
    requested range are read and decompressed. A request that needs latent frames of a
    damaged chunk raises FormatError unless it asks to ``conceal`` them (``iter_latents``).
    """

    def __init__(self, path: str | Path, codec: Codec | None = None) -> None:
        self.codec = codec or Codec()
        self.reader = VlatReader(path)
        h = self.reader.header
        try:
            self.model_info: dict = h["model"]
            self.temporal = int(self.model_info["temporal"])
            self.spatial = int(self.model_info["spatial"])
            lat = h["latent"]
            self.channels, self.lat_h, self.lat_w = int(lat["channels"]), int(lat["height"]), int(lat["width"])
            video = h["video"]
            self.width, self.height = int(video["width"]), int(video["height"])
            resampled = bool(self.reader.flags & FLAG_RESAMPLED)
            # the picture the model coded: smaller than the source in a resampled file
            self.coded_width = int(video["coded_width"]) if resampled else self.width
            self.coded_height = int(video["coded_height"]) if resampled else self.height
            # a steadied file: the model coded a canvas, each frame is a view cut out of it
            self.canvas = bool(self.reader.flags & FLAG_CANVAS)
            if self.canvas:
                self.canvas_size = int(video["canvas_width"]), int(video["canvas_height"])
            self._shift_flag = bool(self.reader.flags & FLAG_SHIFT)  # the memory moves with the canvas's window
            if self._shift_flag and not self.canvas:
                raise ValueError("the shift flag (0x0004) needs the canvas flag (0x0002)")
            self._zoom_flag = bool(self.reader.flags & FLAG_ZOOM)  # latent frames predicted through a zoom
            if self._zoom_flag and not self.canvas:
                raise ValueError("the zoom flag (0x0008) needs the canvas flag (0x0002)")
            self.fps = Fraction(video["fps"])
            self.sar = Fraction(video.get("sar", "1"))  # the pixels' aspect on screen (absent: square)
            if not Fraction(1, 16) <= self.sar <= 16:
                raise ValueError(f"sar {self.sar} is out of range")
            self.color = Color.from_dict(video["color"]) if "color" in video else None  # absent: BT.709
            self.tags = h.get("source", {}).get("tags", {})  # the recording's title, date, place, ...
            if not isinstance(self.tags, dict) or not all(isinstance(v, str) for v in [*self.tags, *self.tags.values()]):
                raise ValueError("source.tags is not a map of strings")
            self.tiling = Tiling(**h["tiling"])
            self.quant_info: dict = h["quantization"]
            self.audio = AudioTrack.from_dict(h["audio"]) if h.get("audio") else None
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            self.reader.close()
            raise FormatError(f"{path}: header is missing or has a bad field ({e})") from None
        self._latent_chunks = sorted(self.reader.chunks_of("latent"), key=lambda c: int(c.meta.get("t0", -1)))
        self._views: dict[int, np.ndarray] = {}  # latent chunk index -> its frames' camera params
        self._bad_views: dict[int, str] = {}  # offset -> why a chunk's camera motion is unusable
        self._moved: set[int] = set()  # frames after a move of the canvas window
        self._shifts: dict[int, Move] = {}  # latent frame -> whole cells the memory moves by before it
        self._zooms: dict[int, mc.Zooms] = {}  # latent chunk index -> its camera_zoom entries
        self._zoom_moves: dict[int, Move] = {}  # latent frame -> the zoom a memory on the grid is resampled through
        if self.canvas:
            self._latent_chunks = [e for e in self._latent_chunks if self._read_views(e)]
        self._t0s = [int(e.meta["t0"]) for e in self._latent_chunks]
        if not self._latent_chunks:
            why = self.reader.problems[0] if self.reader.problems else "it holds none"
            self.reader.close()
            raise FormatError(f"{path}: the file has no intact latent chunks, nothing to decode ({why})")
        summary = self.reader.chunks_of("summary")
        self._summary_lost = not summary
        if summary:
            self.frames = int(summary[-1].meta["frames"])
            self.latent_frames = int(summary[-1].meta["latent_frames"])
        else:
            self.latent_frames = max(int(c.meta["t0"]) + int(c.meta["t"]) for c in self._latent_chunks)
            self.frames = self._frames_without_summary(video.get("frames"))
        self._gaps, blamed = self._find_gaps()
        self._read_losses: dict[int, _Loss] = {}  # chunk index -> loss found when reading its payload
        self.problems: list[str] = [p for p in self.reader.problems if p not in blamed]
        self.problems += [g.message for g in self._gaps]
        if self._summary_lost:
            lost = sum(end - first for first, end in (self._pixel_span(g.start, g.stop) for g in self._gaps))
            what = "the summary chunk is missing" if self.reader.complete else "file is incomplete"
            self.problems.append(f"{what}: {self.frames - lost} frames recovered from its intact chunks"
                                 + (f", {lost} more lost between them (concealed when decoding)" if lost else ""))
        self._model: VideoVAE | None = None
        self._quant: Quantizer | None = None
        self._pool: CoderPool | None = None
        self._last_view: np.ndarray | None = None

    def __enter__(self) -> "LatentFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.reader.close()

    @property
    def header(self) -> dict:
        return self.reader.header

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (self.channels, self.latent_frames, self.lat_h, self.lat_w)

    @property
    def model(self) -> VideoVAE:
        if self._model is None:
            self._model = self.codec._model_for(self.model_info)
        return self._model

    @property
    def quantizer(self) -> Quantizer:
        if self._quant is None:
            coder = self.model.entropy_coder if self.quant_info.get("scheme") == "entropy" else None
            self._quant = Quantizer.from_header(self.quant_info, coder)
        return self._quant

    def _chunk_shape(self, entry) -> tuple[int, int, int, int]:
        return (self.channels, int(entry.meta["t"]), self.lat_h, self.lat_w)

    def _frames_without_summary(self, estimate: object) -> int:
        """Pixel frames of a file without its summary chunk. ``latent_frames`` T hold up to
        1 + (T-1)t frames, the last of them possibly padding; the header's estimate is the count
        when it needs exactly T latent frames (1 + (T-2)t < N <= 1 + (T-1)t), else (truncated
        file, or no estimate) every frame the latents hold is a real one."""
        t = self.temporal
        if type(estimate) is int and estimate >= 1 and _latent_of(estimate - 1, t) == self.latent_frames - 1:
            return estimate
        return _first_frame(self.latent_frames, t)

    def _pixel_span(self, start: int, stop: int) -> tuple[int, int]:
        """Pixel frames [first, end) that latent frames [start, stop) hold, padding cut off."""
        return min(_first_frame(start, self.temporal), self.frames), min(_first_frame(stop, self.temporal), self.frames)

    def _loss(self, start: int, stop: int, reason: str) -> _Loss:
        """Latent frames [start, stop) lost for ``reason``, named in latent and pixel frames."""
        first, end = self._pixel_span(start, stop)
        lat = f"latent frame {start}" if stop - start == 1 else f"latent frames {start}..{stop - 1}"
        px = f"frame {first}" if end - first == 1 else f"frames {first}..{end - 1}"
        return _Loss(start, stop, f"{lat} ({px}) lost: {reason}")

    def _find_gaps(self) -> tuple[list[_Loss], set[str]]:
        """Latent frames up to ``latent_frames`` that no intact chunk holds, and the reader's
        problems they explain. A damaged record's own t0/t cannot be trusted, so a gap between
        two intact latent chunks is blamed on the damaged records between them in the file."""
        gaps: list[_Loss] = []
        blamed: set[str] = set()
        pos, prev = 0, -1  # first latent frame not yet held; offset of the last intact chunk
        for entry in [*self._latent_chunks, None]:
            t0 = self.latent_frames if entry is None else min(int(entry.meta["t0"]), self.latent_frames)
            if t0 > pos:
                nxt = self.reader.file_size if entry is None else entry.offset
                causes = [p for off, p in {**self.reader.damaged, **self._bad_views}.items() if prev < off < nxt]
                gaps.append(self._loss(pos, t0, "; ".join(causes) or "no chunk in the file holds them"))
                blamed.update(causes)
            if entry is not None:
                pos, prev = max(pos, t0 + int(entry.meta["t"])), entry.offset
        return gaps, blamed

    def _read_views(self, entry) -> bool:
        """Unpack a latent chunk's camera params (its meta is read with the file); a chunk
        without usable ones is left out, its frames lost like those of a damaged chunk."""
        t0, t = int(entry.meta["t0"]), int(entry.meta["t"])
        first, end = _first_frame(t0, self.temporal), _first_frame(t0 + t, self.temporal)
        try:
            views = cam.unpack(entry.meta.get("camera"), end - first)
            moved = entry.meta.get("camera_moved", [])
            if not (isinstance(moved, list) and all(type(f) is int and first <= f < end for f in moved)):
                raise FormatError(f"camera_moved {str(moved)[:40]} does not list frames {first}..{end - 1}")
            shifts = entry.meta.get("camera_shift", [])
            latents = [self._shift_latent(m, first, end) for m in (shifts if isinstance(shifts, list) else [shifts])]
            zooms = entry.meta.get("camera_zoom", [])
            for m in zooms if isinstance(zooms, list) else [zooms]:
                self._check_zoom(m, first, end)
        except FormatError as e:
            self._bad_views[entry.offset] = f"chunk {entry.index} at byte {entry.offset}: {e}"
            return False
        if zooms:
            self._zooms[entry.index] = chunk_zooms(entry.meta, t0, self.temporal)
            self._zoom_moves.update({t0 + j: zoom_move(z) for j, z in self._zooms[entry.index].items()})
        self._views[entry.index] = views
        self._moved.update(moved)
        s = self.spatial
        self._shifts.update({j: Move.by_cells(m[1] // s, m[2] // s) for j, m in zip(latents, shifts)})
        return True

    def _shift_latent(self, m: object, first: int, end: int) -> int:
        """The latent frame a ``camera_shift`` entry [frame, dx, dy] moves the memory before,
        checked: a latent frame's first frame within the chunk's, a move by whole latent cells."""
        t, s = self.temporal, self.spatial
        if not self._shift_flag:
            raise FormatError("camera_shift in a file without the shift flag (0x0004)")
        if not (isinstance(m, list) and len(m) == 3 and all(type(v) is int for v in m)
                and first <= m[0] < end and m[0] > 0 and (m[0] - 1) % t == 0 and not (m[1] % s or m[2] % s)
                and abs(m[1]) <= self.canvas_size[0] and abs(m[2]) <= self.canvas_size[1]):
            raise FormatError(f"camera_shift entry {str(m)[:40]} is not [first frame of a latent frame in "
                              f"{first}..{end - 1}, dx, dy] with whole {s} px cells within the canvas")
        return _latent_of(m[0], t)

    def _check_zoom(self, m: object, first: int, end: int) -> None:
        """A ``camera_zoom`` entry [frame, a, bx, by]: the first frame of one of the chunk's
        latent frames (not the stream's first), a zoom between 1/4x and 4x, a shift within 2^20 cells."""
        if not self._zoom_flag:
            raise FormatError("camera_zoom in a file without the zoom flag (0x0008)")
        one = 1 << mc.ZOOM_BITS
        if not (isinstance(m, list) and len(m) == 4 and all(type(v) is int for v in m)
                and first <= m[0] < end and m[0] > 0 and (m[0] - 1) % self.temporal == 0
                and one // 4 <= m[1] <= 4 * one and abs(m[2]) < one << 20 and abs(m[3]) < one << 20):
            raise FormatError(f"camera_zoom entry {str(m)[:40]} is not [first frame of a latent frame in "
                              f"{max(first, 1)}..{end - 1}, a, bx, by] with a zoom a / 2^16 from 1/4 to 4")

    def _canvas_frames(self, lo: int, hi: int, f0: int, n: int) -> list[int]:
        """Which decoded canvas frame (index into a tile's output of frames f0..f0+n-1) shows
        each frame of [lo, hi): its own, but the next one for a frame right after the window
        moved. The decoder's memory of the frame before still has the old window, and that
        frame would come out several dB worse (6 dB on a held-out pan); the canvas stands
        still, so the next frame shows the same picture."""
        return [f - f0 + (f in self._moved and f + 1 < f0 + n) for f in range(lo, hi)]

    def _frame_views(self, lo: int, hi: int) -> np.ndarray:
        """Camera params [hi - lo, 3] of frames [lo, hi); a frame of a lost chunk keeps the
        view before it (the concealed latents repeat the canvas before them)."""
        out = np.empty((hi - lo, 3), np.int64)
        for f in range(lo, hi):
            lat = _latent_of(f, self.temporal)
            entry = self._latent_chunks[max(0, bisect.bisect_right(self._t0s, lat) - 1)]
            entry = entry if int(entry.meta["t0"]) <= lat < int(entry.meta["t0"]) + int(entry.meta["t"]) else None
            held = self._views[entry.index] if entry is not None and entry.index not in self._read_losses else None
            i = f - _first_frame(int(entry.meta["t0"]), self.temporal) if held is not None else 0
            if held is not None and i < len(held):
                self._last_view = held[i]
            elif self._last_view is None:  # nothing before: the canvas's centre
                cw, ch = self.canvas_size
                self._last_view = np.array([0, (cw - self.coded_width) * cam.FRAC_SHIFT // 2,
                                            (ch - self.coded_height) * cam.FRAC_SHIFT // 2])
            out[f - lo] = self._last_view
        return out

    def _read_loss(self, entry, e: FormatError) -> _Loss:
        """The loss of a chunk whose record checked out but whose payload did not; recorded in
        ``problems`` the first time it is found."""
        if entry.index not in self._read_losses:
            where = f"chunk {entry.index} at byte {entry.offset}"
            reason = str(e).removeprefix(f"{self.reader.path}: ")  # the reader's errors name the chunk
            t0 = int(entry.meta["t0"])
            loss = self._loss(t0, min(t0 + int(entry.meta["t"]), self.latent_frames),
                              reason if reason.startswith(where) else f"{where}: {reason}")
            self._read_losses[entry.index] = loss
            self.problems.append(loss.message)
        return self._read_losses[entry.index]

    def _lost_error(self, loss: _Loss, request: str) -> FormatError:
        """The one error for a request that needs lost latent frames, with the way to read on."""
        return FormatError(f"{self.reader.path}: cannot read {request}: {loss.message}; pass conceal=True to fill "
                           "lost latent frames with the last intact one")

    def _chunk_latents(self, entry) -> torch.Tensor | _Loss:
        """One latent chunk dequantized to [C, t, h, w], or its loss if it is damaged."""
        try:
            return self.quantizer.unpack(self.reader.read(entry.index), entry.meta, self._chunk_shape(entry),
                                         self._zooms.get(entry.index))
        except FormatError as e:
            return self._read_loss(entry, e)

    def _unpacked(self, entries: list) -> Iterator[tuple[object, torch.Tensor | _Loss]]:
        """(entry, latents or their loss if damaged) for ``entries`` in order. With entropy workers
        (``Codec.entropy_workers``), one chunk per worker is decoded ahead of the consumer."""
        workers = self.codec.entropy_workers
        quant = self.quantizer
        if workers == 0 or quant.scheme != "entropy" or not entries:
            for entry in entries:
                yield entry, self._chunk_latents(entry)
            return
        if self._pool is None or not self._pool.procs:  # first use, or the last pool lost a worker
            self._pool = CoderPool(workers, quant.coder)
        pool = self._pool
        pending: deque[tuple[object, FormatError | None]] = deque()  # in the pool, or damaged here
        todo = iter(entries)

        def refill() -> None:
            while pool.idle and (entry := next(todo, None)) is not None:
                try:
                    pool.decode(self.reader.read(entry.index), self._chunk_shape(entry), quant.quality,
                                self._zooms.get(entry.index))
                    pending.append((entry, None))
                except FormatError as e:  # the container chunk itself is damaged
                    pending.append((entry, e))

        refill()
        try:
            while pending:
                entry, damaged = pending.popleft()
                if damaged is None:
                    try:
                        z = quant.dequantize(pool.result())
                    except FormatError as e:
                        damaged = e
                if damaged is not None:
                    z = self._read_loss(entry, damaged)
                refill()
                yield entry, z
        finally:  # a consumer that stops early leaves chunks in flight: collect them, so the
            for _, damaged in pending:  # pool's next user gets its own results, in order
                if damaged is None and pool.procs:
                    try:
                        pool.result()
                    except FormatError:
                        pass

    def iter_latents(
        self, start: int = 0, stop: int | None = None, *, conceal: bool = False
    ) -> Iterator[torch.Tensor]:
        """Latent frames [start, stop) as consecutive blocks [C, k, h, w].

        Latent frames of a damaged or missing chunk raise FormatError naming the chunk and the
        frames lost, so filler is never mistaken for data (latents cached for training).
        ``conceal=True`` instead repeats the last intact latent frame over them (zeros at the
        start) and records them in ``problems``: a decoded video keeps its timeline and audio
        sync and every intact chunk.
        """
        start, end = self._range(start, stop, self.latent_frames, "latent frame")
        return self._latents(start, end, conceal, f"latent frames {start}..{end - 1}")

    def _latents(self, start: int, stop: int, conceal: bool, request: str) -> Iterator[torch.Tensor]:
        """``iter_latents`` for [start, stop) within the file; ``request`` names what the caller
        asked for in the error."""
        if not conceal:
            gap = next((g for g in self._gaps if g.start < stop and g.stop > start), None)
            if gap is not None:
                raise self._lost_error(gap, request)
        pos, last = start, None
        wanted = [e for e in self._latent_chunks if int(e.meta["t0"]) + int(e.meta["t"]) > start
                  and int(e.meta["t0"]) < stop]
        for entry, z in self._unpacked(wanted):
            t0, t = int(entry.meta["t0"]), int(entry.meta["t"])
            if t0 + t <= pos:  # overlaps chunks already used
                continue
            if t0 > pos:  # a gap (in self._gaps), so concealing
                yield self._filler(last, t0 - pos)
                pos = t0
            if isinstance(z, _Loss):
                if not conceal:
                    raise self._lost_error(z, request)
                z = self._filler(last, t)
            z = z[:, pos - t0 : stop - t0]
            last = z[:, -1:]
            pos += z.shape[1]
            yield z
        if pos < stop:
            yield self._filler(last, stop - pos)

    def _filler(self, last: torch.Tensor | None, n: int) -> torch.Tensor:
        if last is None:
            return torch.zeros(self.channels, n, self.lat_h, self.lat_w)
        return last.expand(-1, n, -1, -1).clone()

    def _range(self, start: int, stop: int | None, total: int, what: str) -> tuple[int, int]:
        """[start, stop) with ``stop`` cut to ``total`` (the file's frames or latent frames); an
        empty range is the caller's mistake."""
        end = total if stop is None else min(stop, total)
        if not 0 <= start < end:
            held = " (all that was recovered from this damaged file)" if self._summary_lost else ""
            raise UsageError(
                f"{what} range [{start}, {end if stop is None else stop}) is empty or outside 0..{total}{held}"
            )
        return start, end

    def latents(self, start_frame: int = 0, stop_frame: int | None = None, *, conceal: bool = False) -> torch.Tensor:
        """The latent frames that cover pixel frames [start_frame, stop_frame), as [C, t, h, w];
        ``conceal`` as in ``iter_latents``."""
        start, stop = self._range(start_frame, stop_frame, self.frames, "frame")
        first, last = _latent_of(start, self.temporal), _latent_of(stop - 1, self.temporal)
        request = f"frames {start}..{stop - 1} (latent frames {first}..{last})"
        return torch.cat(list(self._latents(first, last + 1, conceal, request)), dim=1)

    def iter_frames(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        timings: dict | None = None,
        progress: Progress | None = None,
        conceal: bool = False,
    ) -> Iterator[np.ndarray]:
        """Decoded uint8 frames [start, stop) in chunks [n, H, W, 3]; only the tiles needed run.

        A decoder tile reaches past the frames asked for, so a range raises FormatError when
        its tiles need lost latent frames; ``conceal`` as in ``iter_latents``.
        """
        start, stop = self._range(start, stop, self.frames, "frame")
        model = self.model
        codec = self.codec
        sw = Stopwatch(codec.device)
        tiling = self.tiling
        if model.streams:  # the result does not depend on the temporal tile: this decoder picks its own
            s = model.spatial
            tiling = replace(tiling, latent_frames=codec._tiling(model, self.lat_h * s, self.lat_w * s).latent_frames)
        if self._shifts and not model.state_on_grid:
            raise FormatError(f"{self.reader.path}: camera_shift moves a memory that {model.model_id} does not carry")
        moves = {**self._shifts, **(self._zoom_moves if model.state_on_grid else {})}  # as the encoder moved its memory
        dec = decoder_for(codec._runner(model, tiling), self.temporal, self.latent_frames, model.reach, moves)
        lat_start, lat_stop = dec.seek(start, stop)
        request = f"frames {start}..{stop - 1} (their decoder tiles read latent frames {lat_start}..{lat_stop - 1})"
        if progress:
            progress.start(stop - start, "decode")
        with autotuned_convs(codec.device):
            for z in sw.iterate(self._latents(lat_start, lat_stop, conceal, request), "unpack"):
                for f0, x in sw.iterate(dec.push(z.to(codec.device)), "model_decode"):
                    lo, hi = max(start, f0), min(stop, f0 + x.shape[1])
                    if hi <= lo:
                        continue
                    if self.canvas:  # the views, resized to the source size in the same pass
                        with sw("view"):
                            x = cam.unwarp(x[:, self._canvas_frames(lo, hi, f0, x.shape[1])], self._frame_views(lo, hi),
                                           self.width, self.height, (self.coded_width, self.coded_height))
                        frames = to_uint8_frames(x, self.height, self.width)
                    else:
                        frames = to_uint8_frames(x[:, lo - f0 : hi - f0], self.coded_height, self.coded_width,
                                                 (self.width, self.height))
                    if progress:
                        progress.advance(frames.shape[0])
                    yield frames
                if dec.done:
                    break
        if timings is not None:
            for k, v in sw.seconds.items():
                timings[k] = timings.get(k, 0.0) + v

    def frames_tensor(self, start: int = 0, stop: int | None = None, *, conceal: bool = False) -> torch.Tensor:
        """Decoded frames [start, stop) as one uint8 tensor [n, H, W, 3]; ``conceal`` as in ``iter_latents``."""
        return torch.from_numpy(np.concatenate(list(self.iter_frames(start, stop, conceal=conceal))))

    def iter_audio(self, start: Fraction = Fraction(0), stop: Fraction | None = None) -> _AudioFeed:
        """The audio of seconds [start, stop) of the file, its times counted from ``start``."""
        return _AudioFeed(self, start, stop)

    def frame_at(self, at: Fraction | float | str) -> int:
        """The first frame shown at or after time ``at`` (frame i is shown at i / fps)."""
        return math.ceil((seconds(at) - TIME_SLACK) * self.fps)

"""The ``vaecodec`` command line: a thin Typer layer over ``Codec``.

Results go to stdout (a rich table, or JSON with ``--json``); progress bars, warnings and
errors go to stderr. Exit codes: 0 success, 1 failure (bad or damaged input, missing
weights), 2 usage error (bad option, output exists), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM), 129 hung up (SIGHUP), 141 the reader of a video sent to stdout quit (broken pipe).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .container import output_name, remove_partial_outputs
from .errors import FormatError, InputError, UsageError, VaecodecError

app = typer.Typer(
    name="vaecodec",
    help="Compress video with video VAEs: encode to .vlat latents, decode back, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped or logged output is not cut to rich's 80 columns (bench tables would lose their
# numbers) unless COLUMNS asks for a width.
_WIDE = None if "COLUMNS" in os.environ else 240
out = Console(width=None if sys.stdout.isatty() else _WIDE)
err = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE)


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit: the only way a command reports a problem."""
    err.print(f"[bold red]vaecodec: error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP as an exception in the main thread: it unwinds like Ctrl-C, so every
    writer removes its partial output and the entropy workers are ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# what `timeout`, `kill`, service managers and a closing terminal send
_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def _terminate_cleanly(received: list[int]) -> Iterator[None]:
    """While a command runs, make SIGTERM and SIGHUP raise ``Terminated`` (their default action
    kills the process before any clean-up). A signal that was ignored (``nohup``) stays ignored.
    After the first one, both stay ignored until the process exits: ``timeout`` sends SIGTERM to
    the process and then to its group, and that second one must neither cut the clean-up short
    nor kill the process before it exits with its one line and code. A signal received is
    appended to ``received``: code it interrupts (a weights loader, a C extension) may turn the
    exception into another one on its way up."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def handler(signum: int, frame: object) -> None:
        for s in _TERMINATING:
            signal.signal(s, signal.SIG_IGN)
        received.append(signum)
        raise Terminated(signum)

    before = {s: signal.getsignal(s) for s in _TERMINATING}
    for s, h in before.items():
        if h != signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in before.items():
            if signal.getsignal(s) is handler:
                signal.signal(s, h)


def guarded(fn: Callable) -> Callable:
    """Turn expected failures into one stderr line and an exit code; never a traceback."""

    @wraps(fn)
    def run(*args, **kwargs):
        def show(message, category, filename, lineno, file=None, line=None):
            err.print(f"[yellow]vaecodec: warning:[/] {message}", highlight=False, soft_wrap=True)

        warnings.showwarning = show
        received: list[int] = []
        try:
            with _terminate_cleanly(received):
                try:
                    return fn(*args, **kwargs)
                except BaseException as e:
                    remove_partial_outputs()
                    if received and not isinstance(e, (Terminated, typer.Exit, typer.Abort)):
                        # interrupted mid-load, a library reported "cannot read ..." instead
                        raise Terminated(received[0]) from None
                    raise
        except VaecodecError as e:
            fail(str(e), e.exit_code)
        except Terminated as e:
            fail(f"terminated by {signal.Signals(e.signum).name} (no partial output was left behind)", 128 + e.signum)
        except KeyboardInterrupt:
            fail("interrupted (no partial output was left behind)", 130)
        except (typer.Exit, typer.Abort):
            raise
        except OSError as e:  # disk full, permission denied: the writers already removed their temp files
            if e.errno == errno.EPIPE:  # `decode x.vlat - | player`: the player quit first
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more goes to the pipe
                fail("stdout closed before the video ended (whatever read it quit)", 128 + signal.SIGPIPE)
            where = f"{output_name(str(e.filename))}: " if e.filename else ""
            fail(f"{where}{e.strerror or e} (no partial output was left behind)", 1)
        except Exception as e:  # noqa: BLE001 - last line of defence: one line, not a traceback
            if os.environ.get("VAECODEC_DEBUG"):
                raise
            fail(f"unexpected {type(e).__name__}: {e} (set VAECODEC_DEBUG=1 for a traceback)", 1)

    return run


class RichProgress:
    """The Codec's Progress protocol on a rich bar: frames done/total, fps, ETA."""

    def __init__(self, enabled: bool) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames"),
            TextColumn("{task.fields[fps]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not enabled or not err.is_terminal,  # into a pipe or file rich would only write blank lines
        )
        self.task = None

    def __enter__(self) -> "RichProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start(self, total: int | None, description: str) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(description, total=total, fps="")

    def advance(self, frames: int) -> None:
        self.bar.advance(self.task, frames)
        speed = self.bar.tasks[-1].speed
        self.bar.update(self.task, fps=f"{speed:6.1f} fps" if speed else "")


# -- shared options -------------------------------------------------------------------------
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="tiny (embedded), KIND:PATH, or a NAME in the model dir (NAME is KIND or KIND-..., e.g. ltx2-19b).")]
ModelDirOpt = Annotated[
    Optional[Path], typer.Option("--model-dir", help="Folder of model weights (default: $VAECODEC_MODELS).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cuda | mps | cpu (auto: cuda, then mps, then cpu).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto | fp32 | fp16 | bf16. auto: encode in fp32, decode in bf16 where the CPU or GPU has it natively, else fp32.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: all cores).")]
EntropyWorkersOpt = Annotated[Optional[int], typer.Option("--entropy-workers", help="Processes entropy-coding chunks beside the model (default: 0 on CPU, spare cores up to 12 on a GPU).")]
ScaleOpt = Annotated[Optional[float], typer.Option("--scale", help="Code the picture at this multiple of its width and height (0.125-4); decoding restores the source size. Default per quality: 0.5 at qualities 1-2, 0.75 at 3-4, 1 at 5, 1.5 at 6, 2 at 7-10; a busy picture 2.5 at 7, 3 at 8-9, 3.5 at 10; a smooth one 1.5 at 7-8 (with finer tables). Above 1 only up to about 5 MP coded (2992x1680), with finer tables where that stops short.")]
RefineOpt = Annotated[int, typer.Option("--refine", help="Latent refinement: N gradient steps per tile on the latents through the decoder (better picture at the same rate; each step costs a decoder pass forward and back, so use a GPU; 0 = off).")]
MotionOpt = Annotated[Optional[bool], typer.Option(
    "--motion/--no-motion",
    help="Predict each latent frame from the previous one moved by a motion vector per block (fewer bits on pans; "
         "default on with an entropy coder; --no-motion writes chunks that older vaecodec versions read).")]
CameraOpt = Annotated[Optional[bool], typer.Option(
    "--camera/--no-camera",
    help="Steady a moving camera: code a canvas that stays still while the picture pans or zooms, and store each "
         "frame's view of it (far fewer bits on pans; default on with an entropy coder when the first frames move; "
         "--no-camera keeps latents aligned with the picture, as a latent cache needs).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no summary.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", "-y", help="Replace an existing output file.")]


def _setup(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UsageError("--threads must be at least 1")
        import torch

        torch.set_num_threads(threads)


def _codec(**kwargs):
    from .codec import Codec

    return Codec(**kwargs)


def _quantization_line(q: dict) -> str:
    """The header's quantization for people: the level asked for first, the table set beside it."""
    rest = json.dumps({k: v for k, v in q.items() if k not in ("step", "level", "quality")})
    if "level" not in q or q.get("level") == q.get("quality"):
        return rest if "quality" not in q else f"quality {q['quality']}, {rest}"
    return f"quality {q['level']} (table set {q['quality']}), {rest}"


# H.273 code points people know by name
_PRIMARIES = {1: "BT.709", 4: "BT.470M", 5: "BT.601 PAL", 6: "BT.601 NTSC", 7: "SMPTE 240M", 9: "BT.2020", 11: "DCI-P3", 12: "Display P3"}
_TRANSFERS = {1: "BT.709", 4: "gamma 2.2", 5: "gamma 2.8", 6: "BT.601", 8: "linear", 13: "sRGB", 14: "BT.2020", 15: "BT.2020",
              16: "PQ (HDR)", 18: "HLG (HDR)"}


def _colour(c: dict) -> str:
    """A header's ``video.color`` for people: "BT.2020, HLG (HDR)"."""
    p, t = c.get("primaries"), c.get("transfer")
    return f"{_PRIMARIES.get(p, f'primaries {p}')}, {_TRANSFERS.get(t, f'transfer {t}')}"


def _source_line(src: object) -> str:
    """A header's ``source`` for people: "phone.mp4 (1.9 MiB), from 90 s; tags: title, creation_time"."""
    if not isinstance(src, dict):
        return "?"
    line = str(src.get("name")) + (f" ({_human(src['bytes'])})" if isinstance(src.get("bytes"), int) and src["bytes"] else "")
    try:
        line += f", from {float(Fraction(src['start'])):g} s" if "start" in src else ""
    except (TypeError, ValueError, ZeroDivisionError):
        line += f", from {src['start']!r}"
    if isinstance(src.get("tags"), dict) and src["tags"]:
        line += "; tags: " + ", ".join(map(str, src["tags"]))
    return line


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _summary(title: str, rows: list[tuple[str, str]], console: Console | None = None) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    (console or out).print(table)


def _print_json(obj: dict | list) -> None:
    out.print_json(json.dumps(obj, default=str))


# -- commands -------------------------------------------------------------------------------
@app.command()
@guarded
def encode(
    srcs: Annotated[list[str], typer.Argument(metavar="src", help="Input video: a file PyAV opens, a numbered-image pattern (frames/%04d.png) or directory, lavfi:SOURCE, a URL (https://, rtsp://), or - for a stream on stdin (Matroska, NUT, MPEG-TS). Several files: each is encoded into DST, a folder, with one model load.")],
    dst: Annotated[Path, typer.Argument(help="Output .vlat file, or an existing folder that gets NAME.vlat for each input.")],
    model: ModelOpt = "tiny",
    model_dir: ModelDirOpt = None,
    bits: Annotated[Optional[int], typer.Option(help="Uniform quantization bits 4-8 (default for models without an entropy coder: 8).")] = None,
    quality: Annotated[Optional[int], typer.Option(help="Quality level 1-10 of the model's entropy coder (higher = better, bigger; default 5; 7-10 code up to a 2x picture and decode several times slower).")] = None,
    deadzone: Annotated[Optional[float], typer.Option(help="Temporal deadzone, 0 <= D < 0.5: a latent keeps its previous frame's symbol unless it moved over 0.5+D steps (fewer bits, steadier picture; 0 = plain rounding; default set per quality).")] = None,
    motion: MotionOpt = None,
    camera: CameraOpt = None,
    scale: ScaleOpt = None,
    refine: RefineOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    tile_frames: Annotated[Optional[int], typer.Option(help="Temporal tile length in latent frames, at least 1.")] = None,
    tile_overlap: Annotated[Optional[int], typer.Option(help="Latent frames shared by neighbouring temporal tiles, 0 to --tile-frames minus 1 (models without a carried causal state, e.g. LTX; the embedded model streams its state and takes none).")] = None,
    tile_px: Annotated[Optional[int], typer.Option(help="Spatial tile edge in pixels, a positive multiple of the model's spatial factor (tiny: 8, LTX: 32); bigger frames are split.")] = None,
    tile_overlap_px: Annotated[Optional[int], typer.Option(help="Spatial tile overlap in pixels, a multiple of the spatial factor below --tile-px.")] = None,
    start: Annotated[str, typer.Option(help="Begin at the frame shown this long after the input's first one: seconds (90.5) or [HH:]MM:SS[.frac]; a file is seeked, a stream read up to it; the audio is cut to match.")] = "0",
    frames: Annotated[Optional[int], typer.Option(help="Encode at most this many frames, at least 1 (a live stream or camera URL has no end of its own; Ctrl-C discards the whole encode).")] = None,
    chunk_frames: Annotated[Optional[int], typer.Option(help="Latent frames per chunk, at least (entropy coding; default 64, about 10 s at 25 fps, fewer for big frames): longer costs fewer bits, shorter gives finer random access and loses less to damage.")] = None,
    zstd_level: Annotated[int, typer.Option(help="zstd level for the container's chunks (1-22).")] = 9,
    zstd_threads: Annotated[int, typer.Option(help="zstd worker threads, 0 or more (0 = single-threaded, deterministic bytes).")] = 0,
    threads: ThreadsOpt = None,
    entropy_workers: EntropyWorkersOpt = None,
    overwrite: OverwriteOpt = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Into a folder: leave inputs whose .vlat exists alone (resume a batch).")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Encode a video (or several) into a .vlat file of quantized VAE latents."""
    from .codec import check_entropy_options
    from .video import VIDEO_SUFFIXES

    jobs, skipped = _encode_jobs(srcs, dst, overwrite, skip_existing)
    if str(dst) == "-":
        raise UsageError("encode writes a .vlat file, not a stream: name the output file (stdin can be the input: -)")
    if dst.suffix.lower() in VIDEO_SUFFIXES and not dst.is_dir():  # a .vlat is no video: a player would fail on it
        raise UsageError(f"{dst}: {dst.suffix} names a video, but encode writes a .vlat file (try {dst.with_suffix('.vlat')})")
    if zstd_threads < 0:
        raise UsageError(f"--zstd-threads must be 0 or more, got {zstd_threads}")
    check_entropy_options(bits, quality, deadzone, motion, refine)  # before any work
    _setup(threads)
    codec = _codec(
        model=model, model_dir=model_dir, bits=bits, quality=quality, deadzone=deadzone, motion=motion, camera=camera,
        scale=scale, refine=refine, device=device, dtype=dtype, tile_frames=tile_frames, tile_overlap=tile_overlap, tile_px=tile_px, tile_overlap_px=tile_overlap_px,
        chunk_latents=chunk_frames, zstd_level=zstd_level, zstd_threads=zstd_threads, entropy_workers=entropy_workers,
    )
    if len(jobs) != 1 or jobs[0][1] != dst:
        return _encode_batch(codec, jobs, skipped, dst, quiet, as_json, overwrite=overwrite, frames=frames, start=start)
    src = jobs[0][0]
    with RichProgress(not quiet and not as_json) as progress:
        r = codec.encode(src, dst, overwrite=overwrite, progress=progress, frames=frames, start=start)
    if as_json:
        _print_json(r.to_dict())
    elif not quiet:
        from .device import DTYPE_NAMES  # torch is loaded by now; `--help` stays fast without it

        _summary(f"encoded {Path(src).name} → {dst.name}", [
            ("frames", f"{r.frames} @ {float(r.fps):.3f} fps, {r.width}x{r.height}"
                       + (" (coded at {}x{})".format(*r.coded_size) if r.coded_size != (r.width, r.height) else "")
                       + (" (steadied on a {}x{} canvas{})".format(*r.canvas, _times(r.window_moves)) if r.canvas else "")),
            ("model", f"{r.model_id} ({codec.device.type}, {DTYPE_NAMES[codec.encode_dtype]})"),
            ("latents", "x".join(map(str, r.latent_shape)) + f" ({r.quantization.get('scheme')})"),
            ("size", _human(r.file_bytes) + (f" (input {_human(r.input_bytes)})" if r.input_bytes else "")),
            ("ratio", f"{r.ratio:.0f}:1 vs raw RGB"),
            ("bits/pixel", f"{r.bpp:.4f}" + (f" (video; audio {_human(r.audio_bytes)})" if r.audio_bytes else "")),
            ("speed", f"{r.fps_processed:.2f} fps ({r.seconds:.1f} s)"),
        ])


def _encode_jobs(srcs: list[str], dst: Path, overwrite: bool, skip_existing: bool) -> tuple[list[tuple[str, Path]], int]:
    """(input, output) pairs and how many were skipped: one input to a file, or each input to
    FOLDER/NAME.vlat. Every clash is found before any work, so a batch never stops half-way
    on something it could have said at the start."""
    if len(srcs) == 1 and not dst.is_dir():
        if skip_existing:
            raise UsageError("--skip-existing is for encoding into a folder; for one file, -y or not")
        return [(srcs[0], dst)], 0
    if not dst.is_dir():
        raise UsageError(f"{dst} is not a folder: several inputs are encoded into one, as FOLDER/NAME.vlat")
    from .video import is_pattern, is_url, url_name

    jobs: dict[Path, str] = {}
    for src in srcs:
        if src == "-" or src.startswith("lavfi:"):
            raise UsageError(f"{src} has no name to give its .vlat: encode it on its own, naming the output")
        if is_url(src):
            name = url_name(src).stem
        else:
            path = Path(src)
            name = path.parent.name if is_pattern(path.name) else path.name if path.is_dir() else path.stem
        out = dst / f"{name or 'video'}.vlat"
        if out in jobs:
            raise UsageError(f"{jobs[out]} and {src} would both be encoded to {out}: encode one of them on its own")
        jobs[out] = src
    existing = [out for out in jobs if out.exists()]
    if existing and not (overwrite or skip_existing):
        more = f" and {len(existing) - 1} more exist" if len(existing) > 1 else " exists"
        raise UsageError(f"{existing[0]}{more} (use -y/--overwrite to replace, --skip-existing to keep them)")
    if skip_existing:
        jobs = {out: src for out, src in jobs.items() if out not in existing}
    return [(src, out) for out, src in jobs.items()], len(existing) if skip_existing else 0


def _encode_batch(codec, jobs: list[tuple[str, Path]], skipped: int, folder: Path, quiet: bool, as_json: bool,
                  **kwargs) -> None:
    """Encode each input with one codec (one model load); an input that cannot be read is
    reported in one line and the rest go on; the exit code says whether any failed."""
    results, failed = [], 0
    for i, (src, dst) in enumerate(jobs, 1):
        try:
            with RichProgress(not quiet and not as_json) as progress:
                r = codec.encode(src, dst, progress=progress, **kwargs)
        except (InputError, FormatError) as e:
            err.print(f"[bold red]vaecodec: error:[/] {e}", highlight=False, soft_wrap=True)
            results.append({"input": src, "error": str(e)})
            failed += 1
            continue
        results.append({"input": src, **r.to_dict()})
        if not quiet and not as_json:
            out.print(f"[{i}/{len(jobs)}] {Path(src).name} → {dst}: {r.frames} frames, {r.bpp:.4f} bits/pixel, "
                      f"{_human(r.file_bytes)}, {r.fps_processed:.1f} fps", highlight=False, soft_wrap=True)
    if as_json:
        _print_json(results)
    elif not quiet:
        out.print(f"encoded {len(jobs) - failed} of {len(jobs)} inputs into {folder}"
                  + (f" ({skipped} skipped: their .vlat exists)" if skipped else ""), highlight=False)
    if failed:
        fail(f"{failed} of {len(jobs)} inputs could not be encoded (each is named above)", 1)


@app.command()
@guarded
def decode(
    src: Annotated[Path, typer.Argument(help="Input .vlat file.")],
    dst: Annotated[Path, typer.Argument(help="Output video: .mp4/.mov (H.264), .mkv (H.264, or FFV1 with --codec ffv1), .webm, a PNG pattern (out/%05d.png) or directory, one .png image (one frame), or - for Matroska on stdout.")],
    codec: Annotated[Optional[str], typer.Option("--codec", help="h264 | h265 | vp9 | ffv1 | png (default: by extension: VP9 for .webm, else H.264).")] = None,
    crf: Annotated[int, typer.Option(help="CRF for H.264/H.265 output.")] = 18,
    preset: Annotated[Optional[str], typer.Option(help="x264/x265 speed preset of the output, ultrafast … veryslow (default: veryfast).")] = None,
    start: Annotated[str, typer.Option(help="Decode from the first frame shown at or after this time: seconds (90.5) or [HH:]MM:SS[.frac]; only the chunks needed are read, the audio is cut to match.")] = "0",
    frames: Annotated[Optional[int], typer.Option(help="Decode at most this many frames, at least 1 (default: to the end; 1 for a single .png).")] = None,
    model_path: Annotated[Optional[Path], typer.Option(help="Weights of the model the file names (for non-embedded models).")] = None,
    model_dir: ModelDirOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    threads: ThreadsOpt = None,
    entropy_workers: EntropyWorkersOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Decode a .vlat file back to video (same size, frame count and fps; audio copied), or a part of it."""
    streamed = str(dst) == "-"  # Matroska on stdout: `vaecodec decode x.vlat - | ffplay -`
    if streamed and as_json:
        raise UsageError("--json prints on stdout, where - sends the video: leave one of them out")
    if streamed and sys.stdout.isatty():
        raise UsageError("- sends the video to stdout, which is a terminal: pipe it (vaecodec decode x.vlat - | ffplay -) or name a file")
    _setup(threads)
    c = _codec(model_path=model_path, model_dir=model_dir, device=device, dtype=dtype, entropy_workers=entropy_workers)
    with RichProgress(not quiet and not as_json) as progress:
        r = c.decode(src, dst, overwrite=overwrite, codec=codec, crf=crf, preset=preset, progress=progress,
                     start=start, frames=frames)
    for w in r.warnings:
        err.print(f"[yellow]vaecodec: warning:[/] {w}", highlight=False, soft_wrap=True)
    if as_json:
        _print_json(r.to_dict())
    elif not quiet:
        from .device import DTYPE_NAMES

        _summary(f"decoded {src.name} → {'stdout' if streamed else dst.name}", [
            ("frames", f"{r.frames} @ {float(r.fps):.3f} fps, {r.width}x{r.height}"),
            ("model", f"{r.model_id} ({c.device.type}, {DTYPE_NAMES[c.decode_dtype]})"),
            ("speed", f"{r.fps_processed:.2f} fps ({r.seconds:.1f} s)"),
        ], console=err if streamed else out)  # stdout carries the video


@app.command()
@guarded
def info(
    paths: Annotated[list[Path], typer.Argument(metavar="path", help="A .vlat file, or several (a table, a row each: check a latent cache with --verify).")],
    verify: Annotated[bool, typer.Option(help="Read and check every chunk.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what a .vlat file holds: header, model, latent shape, chunks, sizes, problems."""
    from .container import describe

    if len(paths) > 1:
        return _info_many(paths, verify, as_json)
    path = paths[0]
    d = describe(path, verify=verify)
    if as_json:
        _print_json(d)
    else:
        h = d["header"]
        v, m, lat = h.get("video", {}), h.get("model", {}), h.get("latent", {})
        summary = next((c["meta"] for c in d["chunks"] if c["kind"] == "summary"), {})
        frames = summary.get("frames", "?")
        rows = [
            ("file", f"{d['path']} ({_human(d['file_size'])}, format v{d['version']}, {'complete' if d['complete'] else 'INCOMPLETE'})"),
            ("video", f"{v.get('width')}x{v.get('height')} @ {v.get('fps')} fps, {frames} frames, from {v.get('codec')} {v.get('pix_fmt')}"
                      + (f"; coded at {v.get('coded_width')}x{v.get('coded_height')}" if "coded_width" in v else "")
                      + (f"; steadied on a {v.get('canvas_width')}x{v.get('canvas_height')} canvas{_moves(d['chunks'])}"
                         if "canvas_width" in v else "")
                      + (f"; pixels {str(v.get('sar')).replace('/', ':')} (not square)" if "sar" in v else "")
                      + (f"; colour {_colour(v['color'])}" if isinstance(v.get("color"), dict) else "")),
            ("model", f"{m.get('id')} ({m.get('kind')}, sha256 {str(m.get('sha256'))[:16]}…)"),
            ("latents", f"{lat.get('channels')} ch x {summary.get('latent_frames', '?')} t x {lat.get('height')} x {lat.get('width')}, "
                        f"{m.get('spatial')}x{m.get('spatial')}x{m.get('temporal')} compression"),
            ("quantization", _quantization_line(h.get("quantization", {}))),
            ("tiling", json.dumps(h.get("tiling"))),
            ("source", _source_line(h.get("source"))),
            ("audio", f"{h['audio']['codec']} {h['audio']['sample_rate']} Hz, {h['audio']['channels']} ch" if h.get("audio") else "none"),
            ("written by", f"vaecodec {h.get('vaecodec')}"),
        ]
        if isinstance(frames, int) and v.get("width"):
            audio = d["by_kind"].get("audio", {}).get("stored_bytes", 0)
            rows.append(("bits/pixel", f"{8 * (d['file_size'] - audio) / (frames * v['width'] * v['height']):.4f}"
                                       + (f" (video; audio {_human(audio)})" if audio else "")))
        for kind, k in d["by_kind"].items():
            rows.append((f"{kind} chunks", f"{k['count']}, {_human(k['stored_bytes'])} stored, {_human(k['raw_bytes'])} raw"))
        rows.append(("overhead", f"{_human(d['overhead_bytes'])} (header, chunk records, index)"))
        if d["verified_chunks"] is not None:
            rows.append(("verified", f"{d['verified_chunks']} chunks read, "
                                     + (f"{len(d['problems'])} problem(s) below" if d["problems"] else "every checksum matches")))
        _summary(str(path), rows)
        for p in d["problems"]:
            err.print(f"[yellow]problem:[/] {p}", highlight=False, soft_wrap=True)
    if d["problems"]:
        raise typer.Exit(1)


def _moves(chunks: list[dict]) -> str:
    """How often a steadied file's canvas content moved (the frames its chunks' ``camera_shift``,
    ``camera_moved`` and ``camera_zoom`` lists name, each once: what the encoder counted), and
    how many of those were new references predicted through their zoom, as a phrase for ``info``."""
    def frames(key: str) -> set[int]:  # the frames a key lists (camera_moved: numbers; the others: [frame, ...])
        return {m if isinstance(m, int) else m[0] for c in chunks if c["kind"] == "latent"
                for m in (c["meta"].get(key) if isinstance(c["meta"].get(key), list) else [])
                if isinstance(m, int) or (isinstance(m, list) and m and isinstance(m[0], int))}

    # a zoom whose memory follows it is in neither camera_moved nor camera_shift, yet a move
    zooms = frames("camera_zoom")
    moves = frames("camera_moved") | frames("camera_shift") | zooms
    return _times(len(moves)) + (f" ({len(zooms)} predicted through the zoom)" if zooms else "")


def _times(moves: int) -> str:
    """The phrase that follows a canvas's size: how often its window moved (nothing for never)."""
    return f", its window moved {moves} time{'s' * (moves != 1)}" if moves else ""


def _info_many(paths: list[Path], verify: bool, as_json: bool) -> None:
    """A row per file; a file that cannot be read at all is a row with its reason. Exit 1 when
    any file has a problem, so a script can check a whole latent cache in one call."""
    from .container import describe

    described, bad = [], 0
    for path in paths:
        try:
            d = describe(path, verify=verify)
        except (InputError, FormatError) as e:
            d = {"path": str(path), "problems": [str(e)]}
        bad += bool(d["problems"])
        described.append(d)
    if as_json:
        _print_json(described)
    else:
        table = Table(box=None, pad_edge=False)
        for name in ("file", "frames", "size", "bits/pixel", "model", "status"):
            table.add_column(name, justify="right" if name in ("frames", "size", "bits/pixel") else "left")
        for d in described:
            if "header" not in d:  # the reason, less the file's name that the row begins with
                table.add_row(d["path"], "", "", "", "", f"[red]{d['problems'][0].removeprefix(d['path'] + ': ')}[/]")
                continue
            v = d["header"].get("video", {})
            frames = next((c["meta"].get("frames") for c in d["chunks"] if c["kind"] == "summary"), None)
            audio = d["by_kind"].get("audio", {}).get("stored_bytes", 0)
            bpp = f"{8 * (d['file_size'] - audio) / (frames * v['width'] * v['height']):.4f}" if frames and v.get("width") else "?"
            status = (f"[red]{len(d['problems'])} problem(s)[/]" if d["problems"]
                      else "verified" if d["verified_chunks"] is not None else "ok")
            table.add_row(d["path"], str(frames or "?"), _human(d["file_size"]), bpp,
                          str(d["header"].get("model", {}).get("id")), status)
        out.print(table)
        for d in described:
            for p in d["problems"][1 if "header" not in d else 0:]:
                err.print(f"[yellow]problem:[/] {d['path']}: {p}", highlight=False, soft_wrap=True)
    if bad:
        fail(f"{bad} of {len(paths)} files have problems", 1)


@app.command()
@guarded
def bench(
    inputs: Annotated[list[Path], typer.Argument(help="Input videos.")],
    model: ModelOpt = "tiny",
    model_dir: ModelDirOpt = None,
    bits: Annotated[Optional[str], typer.Option(help="Comma list of uniform bit depths for a rate sweep, e.g. 4,5,6,8.")] = None,
    quality: Annotated[Optional[str], typer.Option(help="Comma list of entropy-coder quality levels for a rate sweep.")] = None,
    deadzone: Annotated[Optional[float], typer.Option(help="Temporal deadzone for every sweep point (default: per quality, as encode).")] = None,
    motion: MotionOpt = None,
    camera: CameraOpt = None,
    scale: ScaleOpt = None,
    refine: RefineOpt = 0,
    baselines: Annotated[str, typer.Option(help="Classic codecs at matched rate (comma list, or 'none').")] = "x264,x264-444,x265,svtav1",
    start: Annotated[str, typer.Option(help="Benchmark each input from the frame shown at this time: seconds or [HH:]MM:SS[.frac].")] = "0",
    frames: Annotated[Optional[int], typer.Option(help="Benchmark at most this many frames of each input (a part of a long film).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    threads: ThreadsOpt = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every figure to this JSON file.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write RD curves and a per-frame PSNR trace to this image (format by extension: .png, .svg, .pdf, ...).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", "-y", help="Replace existing --json and --plot files.")] = False,
) -> None:
    """Measure speed and quality, side by side with x264/x265/AV1 at the same bits per pixel."""
    import torch

    from .bench import run_bench
    from .codec import check_entropy_options
    from .refine import check_refine
    from .resample import check_scale

    _setup(threads)

    def ints(s: str | None, name: str) -> list[int] | None:
        try:
            return [int(v) for v in s.split(",")] if s else None
        except ValueError:
            raise UsageError(f"--{name} takes a comma list of integers, got {s!r}") from None

    bit_depths = ints(bits, "bits")
    check_entropy_options(bit_depths, None, deadzone, motion, refine)  # every sweep point gets these
    sweep = [{"bits": b} for b in bit_depths or []] + [{"quality": q} for q in ints(quality, "quality") or []]
    if scale is not None:  # a sweep setting, so that the tables name it
        sweep = [{**point, "scale": check_scale(scale)} for point in sweep or [{}]]
    if check_refine(refine):
        sweep = [{**point, "refine": refine} for point in sweep or [{}]]
    run_bench(
        inputs,
        codec_kwargs={"model": model, "model_dir": model_dir, "device": device, "dtype": dtype, "deadzone": deadzone,
                      "motion": motion, "camera": camera},
        sweep=sweep or None,
        baselines=[] if baselines == "none" else [b.strip() for b in baselines.split(",") if b.strip()],
        threads=threads or torch.get_num_threads(),
        json_path=json_path,
        plot_path=plot,
        overwrite=overwrite,
        console=out,
        start=start,
        frames=frames,
    )


@app.command()
@guarded
def models(model_dir: ModelDirOpt = None, as_json: JsonOpt = False) -> None:
    """List model backends, what each needs, what the model directory holds for each, and what in it is not usable."""
    from .models import list_models

    rows, unusable = list_models(model_dir)
    if as_json:
        _print_json({"models": rows, "unusable": unusable})
        return
    table = Table(title="vaecodec models")
    for col in ("kind", "needs", "found locally"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["kind"], r["needs"], "embedded" if r["embedded"] else "\n".join(r["found"]) or "-")
    out.print(table)
    if unusable:
        table = Table(title="in the model directory but not usable")
        for col in ("entry", "why"):
            table.add_column(col)
        for u in unusable:
            table.add_row(u["path"], u["reason"])
        out.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train, export or time the embedded model: vaecodec train {train,export,speed} ... (see --help)."""
    from .train.__main__ import main as train_main

    raise typer.Exit(train_main(ctx.args))


def _version(value: bool) -> None:
    if value:
        out.print(f"vaecodec {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """vaecodec: video compression with video VAEs."""


# click's UsageError, wherever this typer keeps click (0.29 vendors it): the base class of the
# public typer.BadParameter
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    """Console-script entry point. Usage mistakes (an unknown option, a missing argument, a
    value of the wrong type) are one line, like every other error, not click's usage panel."""
    try:
        code = app(prog_name="vaecodec", standalone_mode=False)
    except _USAGE_ERROR as e:
        if type(e).__name__ != "NoArgsIsHelpError":  # bare `vaecodec`: typer has shown the help
            where = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
            err.print(f"[bold red]vaecodec: error:[/] {e.format_message()}{where}", highlight=False, soft_wrap=True)
        code = e.exit_code
    except typer.Abort:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())

"""`vaecodec bench`: speed, memory and quality of vaecodec, next to classic codecs at equal rate.

For each input: vaecodec encodes and decodes it (once per sweep point), stage timings come
from the Codec, and the decoded frames are scored against the original frames while they
stream past. Each baseline (video only) is rate-matched to the .vlat's bpp without its audio and scored by
the same metric code. With a sweep of >= 4 points, BD-rate / BD-PSNR against each baseline
summarise the curves. Results go to a rich table, optionally JSON (``json_path``) and an image
(``plot_path``), both checked before the run and written atomically; CLI parsing lives in cli.py.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.table import Table

from vaecodec.baselines import BaselineResult, check_baselines, match_rate
from vaecodec.codec import Codec
from vaecodec.container import create_temp
from vaecodec.errors import InputError, UsageError
from vaecodec.metrics import bd_psnr, bd_rate, score
from vaecodec.video import DECODE_PRESET, VideoReader, VideoWriter, check_limit, seconds

# "camera": estimating the camera's motion and warping frames into the canvas; "view":
# cutting each frame out of the decoded canvas (steadied files only; 0 s elsewhere)
ENCODE_STAGES = ("read", "camera", "model_encode", "pack")
DECODE_STAGES = ("unpack", "model_decode", "view", "write")
STEADY_STAGES = ("camera", "view")
CACHE_BYTES = 256 << 20  # raw RGB kept in RAM between baseline passes up to this size
MIN_BD_POINTS = 4


@dataclass(frozen=True)
class Source:
    """One input video and its facts, read once up front."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int
    file_bytes: int
    start: Fraction = Fraction(0)  # the part benchmarked: from this time, at most ``limit`` frames
    limit: int | None = None


class Frames:
    """Re-readable original frames: each call yields uint8 ``[n, H, W, 3]`` chunks from the start.

    Baselines need the same frames many times (every encode and every scoring pass). Once
    ``keep`` is set, a short clip is kept after its next full pass (at most ``CACHE_BYTES`` of
    raw RGB); a longer one is decoded again on each pass, so memory stays one chunk. ``keep``
    stays off while vaecodec runs so its peak-memory figures do not include the cache.
    """

    def __init__(self, path: Path, limit_bytes: int = CACHE_BYTES, start: Fraction = Fraction(0),
                 frames: int | None = None) -> None:
        self.path = path
        self.limit = limit_bytes
        self.part = {"start": start, "limit": frames}  # the frames benchmarked
        self.keep = False
        self._cache: list[np.ndarray] | None = None

    def __call__(self) -> Iterator[np.ndarray]:
        if self._cache is not None:
            yield from self._cache
            return
        kept: list[np.ndarray] | None = [] if self.keep else None
        size = 0
        with VideoReader(self.path, **self.part) as reader:
            for chunk in reader.chunks():
                if kept is not None:
                    size += chunk.nbytes
                    if size <= self.limit:
                        kept.append(chunk)
                    else:
                        kept = None
                yield chunk
        self._cache = kept


def probe_source(path: Path, start: Fraction = Fraction(0), limit: int | None = None) -> tuple[Source, Frames]:
    """Count the frames by decoding once (container frame counts are only estimates); with
    ``start`` and ``limit``, those of that part."""
    frames = Frames(path, start=start, frames=limit)
    n = 0
    for chunk in frames():
        n += chunk.shape[0]
    if n == 0:
        raise InputError(f"{path}: no video frames")
    with VideoReader(path) as reader:
        info = reader.info
    whole = not start and (limit is None or n < limit)  # a part's share of the file's bytes is unknown
    return Source(path, info.width, info.height, info.fps, n, reader.input_bytes if whole else 0, start, limit), frames


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def _warm_up(codec: Codec, src: Path, work: Path) -> None:
    """Run a short clip (the first 1 + temporal frames) through encode and decode, untimed.

    Loads the model and lets the backend pick kernels (cuDNN autotune on CUDA) so the timed
    run measures steady-state speed.
    """
    need = 1 + codec.model.temporal
    clip = work / "warmup.mkv"
    with VideoReader(src) as reader:
        info = reader.info
        with VideoWriter(clip, info.width, info.height, info.fps, codec="ffv1", overwrite=True) as writer:
            for chunk in reader.chunks():
                writer.write(chunk[: need - writer.frames_written])
                if writer.frames_written >= need:
                    break
    codec.encode(clip, work / "warmup.vlat", overwrite=True)
    for _ in codec.decode_frames(work / "warmup.vlat"):
        pass


def _reset_peak_rss() -> None:
    """Restart Linux's resident-memory high-water mark so each phase reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: _peak_rss falls back to the lifetime peak


def _peak_rss() -> int:
    """Peak resident bytes since the last reset (VmHWM); the process lifetime peak elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if platform.system() == "Darwin" else r * 1024


def _reset_peaks(device: torch.device) -> None:
    _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _gpu_peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def run_vaecodec(codec: Codec, src: Source, frames: Frames, work: Path, setting: dict) -> dict:
    """Encode + decode ``src`` once, timed by stage, the decode scored as it streams.

    Decoded frames are also written to an H.264 file as ``vaecodec decode`` would (the
    ``write`` stage, encoder flush included). Peak memory is measured per phase.
    """
    codec.model  # noqa: B018 - load weights before the clock starts
    vlat = work / "coded.vlat"  # one input at a time; its name may be a pattern or a lavfi source
    _reset_peaks(codec.device)
    res = codec.encode(src.path, vlat, overwrite=True, start=src.start, frames=src.limit)
    if "scale" not in setting and res.scale != 1.0:  # a per-quality default
        setting = {**setting, "scale": res.scale}
    memory = {"encode_peak_rss_bytes": _peak_rss(), "encode_peak_gpu_bytes": _gpu_peak(codec.device)}
    _reset_peaks(codec.device)
    timings: dict[str, float] = {}
    write = 0.0
    decoded = work / "decoded.mp4"
    with VideoWriter(decoded, src.width, src.height, src.fps, overwrite=True, preset=DECODE_PRESET) as out:

        def written(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal write
            for chunk in chunks:  # uint8 [n, H, W, 3]
                t0 = time.perf_counter()
                out.write(chunk)
                write += time.perf_counter() - t0
                yield chunk

        t0 = time.perf_counter()
        quality = score(frames(), written(codec.decode_frames(vlat, timings=timings)), device=_score_device(codec))
        score_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        out.close()  # the encoder's delayed frames are written here
        write += time.perf_counter() - t0
    memory.update(decode_peak_rss_bytes=_peak_rss(), decode_peak_gpu_bytes=_gpu_peak(codec.device))
    absent = {k: 0.0 for k in STEADY_STAGES}  # a file without a canvas never enters these stages
    encoded, decoded = {**absent, **res.timings}, {**absent, **timings}
    stages = {k: float(encoded.get(k, math.nan)) for k in ENCODE_STAGES}
    if "refine" in res.timings:  # only refined points have this stage
        stages["refine"] = float(res.timings["refine"])
    stages.update({k: float(decoded.get(k, math.nan)) for k in DECODE_STAGES[:3]}, write=write)
    decode_seconds = sum(stages[k] for k in DECODE_STAGES)
    n = res.frames
    gpu = [v for k, v in memory.items() if "gpu" in k and v is not None]
    return {
        "name": "vaecodec",
        "input": str(src.path),
        "setting": setting,
        "bpp": res.bpp,
        "psnr": quality.psnr,
        "file_bytes": res.file_bytes,
        "audio_bytes": res.audio_bytes,  # inside file_bytes, left out of bpp and ratio_vs_rgb
        "ratio_vs_rgb": res.ratio,
        "ratio_vs_input": src.file_bytes / res.file_bytes,
        "quality": quality.to_dict(),
        "stages_seconds": stages,
        "stages_fps": {k: n / v if v > 0 else None for k, v in stages.items()},
        "encode_seconds": res.seconds,
        "decode_seconds": decode_seconds,
        "encode_fps": n / res.seconds,
        "decode_fps": n / decode_seconds if decode_seconds > 0 else None,
        "peak_rss_bytes": max(memory["encode_peak_rss_bytes"], memory["decode_peak_rss_bytes"]),
        "peak_gpu_bytes": max(gpu) if gpu else None,
        **memory,
        "score_seconds": score_seconds,
        "latent_shape": list(res.latent_shape),
        "quantization": res.quantization,
    }


def _score_device(codec: Codec) -> str:
    # Metrics use float64 reductions, which MPS lacks; CUDA scores where the frames already are.
    return "cuda" if codec.device.type == "cuda" else "cpu"


def _baseline_entry(r: BaselineResult, src: Source, ours: dict) -> dict:
    delta = None if r.psnr_at_target is None else ours["psnr"] - r.psnr_at_target
    return {
        "name": r.name,
        "input": str(src.path),
        "target_bpp": r.target_bpp,
        "bpp": r.bpp,
        "psnr": r.quality.psnr,
        "crf": r.q,
        "file_bytes": r.file_bytes,
        "ratio_vs_rgb": 3 * src.width * src.height * src.frames / r.file_bytes,
        "ratio_vs_input": src.file_bytes / r.file_bytes,
        "psnr_at_target": r.psnr_at_target,
        "vaecodec_psnr_gain_db": delta,
        "matched_to": ours["setting"],
        "quality": r.quality.to_dict(),
        "rd_points": [{"bpp": b, "psnr": p} for b, p in r.points()],
        "encodes": [{"crf": e.q, "bpp": e.bpp, "seconds": e.seconds} for e in r.encodes],
        "encode_seconds": r.encode_seconds,
        "score_seconds": r.score_seconds,
    }


def _bd(src: Source, ours: list[dict], theirs: list[dict], name: str) -> dict:
    """BD figures of vaecodec (test) against one baseline (anchor) on one input."""
    test = _one_per_rate([(c["bpp"], c["psnr"]) for c in ours])
    anchor = _one_per_rate([(p["bpp"], p["psnr"]) for c in theirs for p in c["rd_points"]])
    entry = {"input": str(src.path), "anchor": name, "test": "vaecodec", "points": [len(test), len(anchor)]}
    if len(test) < MIN_BD_POINTS or len(anchor) < MIN_BD_POINTS:
        return {**entry, "bd_rate_percent": None, "bd_psnr_db": None, "note": f"needs >= {MIN_BD_POINTS} points each"}
    args = ([b for b, _ in anchor], [p for _, p in anchor], [b for b, _ in test], [p for _, p in test])
    try:
        rate, gain = bd_rate(*args), bd_psnr(*args)
    except ValueError as e:
        return {**entry, "bd_rate_percent": None, "bd_psnr_db": None, "note": str(e)}
    if math.isnan(rate) or math.isnan(gain):
        entry["note"] = "curves do not overlap" + (" in PSNR" if math.isnan(rate) else " in rate")
    return {**entry, "bd_rate_percent": _finite(rate), "bd_psnr_db": _finite(gain)}


def _one_per_rate(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(bpp, PSNR) points by rate, one per rate: the searches for two targets can both end at
    a baseline's coarsest setting (x264 CRF 51), and a curve cannot take two PSNRs at one rate,
    so those are averaged."""
    by_rate: dict[float, list[float]] = {}
    for bpp, psnr in points:
        by_rate.setdefault(bpp, []).append(psnr)
    return [(bpp, sum(v) / len(v)) for bpp, v in sorted(by_rate.items())]


def _finite(x):
    """JSON has no inf/nan: write them as null (an exact decode's PSNR is +inf)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _fmt(x, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _setting(s: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in s.items()) or "default"


def baseline_setting(c: dict, short: bool = False) -> str:
    """A baseline row's setting. Where vaecodec's rate is out of the baseline's CRF range, the
    search ends at the CRF limit for each such point, and the row says so rather than
    repeating one encode unexplained (``short``: for the terminal's table)."""
    crf = f"{c['crf']:g}" if short else f"crf {c['crf']:g}"
    if c["psnr_at_target"] is not None:
        return crf
    return f"{crf} (limit)" if short else f"{crf} (target {c['target_bpp']:.4f} bpp not reached)"


def _print(console: Console, report: dict) -> None:
    """Compact tables (fit 80 columns): quality per codec, vaecodec speed by stage, BD figures."""
    for src in report["inputs"]:
        rows = [c for c in report["codecs"] if c["input"] == src["path"]]
        t = Table(
            title=f"{Path(src['path']).name}: {src['width']}x{src['height']}, {src['frames']} frames"
                  + (f" from {src['start']:g} s" if src.get("start") else ""),
            box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
            caption="setting: vaecodec options or the baseline's CRF ((limit): its range ends before vaecodec's rate). "
            "worst: lowest frame PSNR. flick: mean |Δerror| between frames. @rate: PSNR interpolated to vaecodec's "
            "bpp. Δ: vaecodec PSNR − @rate.",
        )
        for col in ("codec", "setting", "bpp", "PSNR", "Y-PSNR", "worst", "SSIM-Y", "flick", "@rate", "Δ"):
            t.add_column(col, justify="left" if col in ("codec", "setting") else "right", no_wrap=True)
        for c in rows:
            q = c["quality"]
            ours = c["name"] == "vaecodec"
            t.add_row(
                c["name"],
                _setting(c["setting"]) if ours else baseline_setting(c, short=True),
                _fmt(c["bpp"], ".4f"),
                _fmt(c["psnr"]),
                _fmt(q["psnr_y"]),
                _fmt(q["psnr_min"]),
                _fmt(q["ssim_y"], ".4f"),
                _fmt(q["temporal_error"]),
                "" if ours else _fmt(c["psnr_at_target"]),
                "" if ours else _fmt(c["vaecodec_psnr_gain_db"], "+.2f"),
            )
        console.print(t)
        mine = [c for c in rows if c["name"] == "vaecodec"]
        speed = Table(title="vaecodec speed, frames/s (warm-up excluded)", box=box.SIMPLE_HEAD, pad_edge=False)
        speed.add_column("stage")
        for c in mine:
            speed.add_column(_setting(c["setting"]), justify="right")
        refined = ("refine",) if any("refine" in c["stages_fps"] for c in mine) else ()
        for stage in (*ENCODE_STAGES, *refined, *DECODE_STAGES):
            speed.add_row(stage, *(_fmt(c["stages_fps"].get(stage), ".1f") for c in mine))
        speed.add_row("encode (end to end)", *(_fmt(c["encode_fps"], ".1f") for c in mine))
        speed.add_row("decode (end to end)", *(_fmt(c["decode_fps"], ".1f") for c in mine))
        speed.add_row("peak RSS MiB", *(_fmt(c["peak_rss_bytes"] / 2**20, ".0f") for c in mine))
        if any(c["peak_gpu_bytes"] is not None for c in mine):
            speed.add_row("peak GPU MiB", *(_fmt((c["peak_gpu_bytes"] or 0) / 2**20, ".0f") for c in mine))
        console.print(speed)
    if report["bd"]:
        t = Table(title="BD of vaecodec vs each anchor (BD-rate < 0: fewer bits)", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("input", "anchor", "BD-rate %", "BD-PSNR dB", "points"):
            t.add_column(col, justify="right" if col not in ("input", "anchor") else "left")
        for b in report["bd"]:
            t.add_row(
                Path(b["input"]).name,
                b["anchor"],
                _fmt(b["bd_rate_percent"], "+.1f"),
                _fmt(b["bd_psnr_db"], "+.2f"),
                b.get("note") or f"{b['points'][0]} vs {b['points'][1]}",
            )
        console.print(t)


def _figure_class():
    """matplotlib's Figure (object API: no pyplot, no global backend switch), or a usage error."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'vaecodec[plot]'") from None
    return Figure


def _plot_formats() -> set[str]:
    """Image formats (extensions) the plot can be saved in here: matplotlib's, but pgf only
    where its TeX program is installed, as saving runs it."""
    from matplotlib import rcParams

    formats = set(_figure_class()().canvas.get_supported_filetypes())
    if shutil.which(rcParams["pgf.texsystem"]) is None:
        formats.discard("pgf")
    return formats


def _check_report_paths(inputs: list[Path], json_path: Path | None, plot_path: Path | None, overwrite: bool) -> None:
    """Refuse report paths that would fail, or destroy something, only after the whole benchmark
    has run: a plot format matplotlib cannot write, a folder that is missing or takes no new
    file, an existing file without ``overwrite``, an input video, one path for both reports."""
    if plot_path is not None:
        ext = Path(plot_path).suffix.lower().removeprefix(".")
        formats = _plot_formats()
        if ext not in formats:
            what = f".{ext} is not an image format matplotlib can write" if ext else "needs an extension to name the format"
            raise UsageError(f"--plot {plot_path}: {what} (use {', '.join('.' + f for f in sorted(formats))})")
    taken = {Path(p).resolve(): "an input video" for p in inputs}
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path is None:
            continue
        path = Path(path)
        if path.resolve() in taken:
            raise UsageError(f"{option} {path} is {taken[path.resolve()]}")
        taken[path.resolve()] = "the --json file"
        if path.is_dir():
            raise UsageError(f"{option} {path} is a folder")
        if path.exists() and not overwrite:
            raise UsageError(f"{option} {path} exists (use -y/--overwrite to replace it)")
        try:  # the one sure test that the folder exists and takes a new file
            fd, tmp = create_temp(path)
        except UsageError as e:
            raise UsageError(f"{option} {path}: {e}") from None
        os.close(fd)
        os.unlink(tmp)


def _publish(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a report to a hidden temp file renamed over ``path`` once complete: a failed or
    interrupted write leaves no partial report and any earlier one intact."""
    fd, tmp = create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_report(report: dict, path: Path) -> None:
    """RD curves (PSNR vs bpp, one line per codec) and the per-frame PSNR trace, per input."""
    figure = _figure_class()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    inputs = report["inputs"]
    fig = figure(figsize=(12, 4.5 * len(inputs)))
    axes = fig.subplots(len(inputs), 2, squeeze=False)
    for row, src in zip(axes, inputs):
        rows = [c for c in report["codecs"] if c["input"] == src["path"]]
        names = list(dict.fromkeys(c["name"] for c in rows))
        rd, trace = row
        for name in names:
            mine = [c for c in rows if c["name"] == name]
            if name == "vaecodec":
                pts = sorted((c["bpp"], c["psnr"]) for c in mine)
            else:
                pts = sorted({(p["bpp"], p["psnr"]) for c in mine for p in c["rd_points"]})
            style = dict(linewidth=2.5, marker="o") if name == "vaecodec" else dict(marker=".")
            rd.plot([b for b, _ in pts], [p for _, p in pts], label=name, **style)
            first = mine[0]["quality"]["per_frame_psnr"]
            trace.plot(range(len(first)), [min(v, 100.0) for v in first], label=name, linewidth=1)
        rd.set_xscale("log")
        rd.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        rd.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.05, not 5x10^-2
        rd.xaxis.set_minor_formatter(NullFormatter())
        rd.set_xlabel("bits per pixel (whole file, audio excluded)")
        rd.set_ylabel("PSNR RGB (dB)")
        rd.set_title(f"{Path(src['path']).name}: rate-distortion")
        rd.grid(True, which="both", alpha=0.3)
        rd.legend()
        trace.set_xlabel("frame")
        trace.set_ylabel("PSNR RGB (dB)")
        trace.set_title("per-frame PSNR at the first vaecodec rate")
        trace.grid(True, alpha=0.3)
        trace.legend()
    fig.tight_layout()
    _publish(path, lambda f: fig.savefig(f, format=path.suffix.lower().removeprefix("."), dpi=110))


SWEEP_KEYS = ("bits", "quality", "scale", "refine")


@contextmanager
def _settings(codec: Codec, point: dict) -> Iterator[None]:
    """Apply a sweep point's rate settings to ``codec`` for one run.

    One Codec (one loaded model) serves the whole sweep: loading a large backend once per
    point would multiply load time and, on a GPU, hold several copies of the weights.
    """
    before = {k: getattr(codec, k) for k in SWEEP_KEYS}
    for k in SWEEP_KEYS:
        setattr(codec, k, point.get(k, before[k]))
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(codec, k, v)


def run_bench(
    inputs: list[Path],
    *,
    codec_kwargs: dict,
    sweep: list[dict] | None,
    baselines: list[str],
    threads: int,
    json_path: Path | None,
    plot_path: Path | None,
    console: Console,
    overwrite: bool = False,
    start: Fraction | float | str = 0,
    frames: int | None = None,
) -> dict:
    """Benchmark every input at each sweep point (or once at ``codec_kwargs``); returns the report.
    ``start`` and ``frames`` benchmark a part of each input (a long film, say).

    ``sweep`` items override ``codec_kwargs`` (e.g. ``{"bits": 4}``); every baseline is
    rate-matched to every vaecodec point, and with >= 4 points BD figures are computed.
    Existing ``json_path``/``plot_path`` files are replaced only with ``overwrite``.
    """
    if not inputs:
        raise UsageError("bench needs at least one input video")
    if threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    specs = check_baselines(baselines)
    points = sweep or [{}]
    for point in points:
        unknown = set(point) - set(SWEEP_KEYS)
        if unknown:
            raise UsageError(f"a sweep point may set only {', '.join(SWEEP_KEYS)}, got {', '.join(sorted(unknown))}")
    start = seconds(start)
    check_limit(frames)
    _check_report_paths(inputs, json_path, plot_path, overwrite)  # fail before the slow part, not after
    for path in inputs:  # all of them: the second one must not fail after the first one's run
        if str(path) == "-":
            raise UsageError("bench reads each input several times: name a file, not stdin (-)")
        with VideoReader(path, start=start):  # a file, an image sequence or a lavfi source that opens as video
            pass
    torch.set_num_threads(threads)
    codec = Codec(**codec_kwargs)
    report: dict = {"environment": {}, "inputs": [], "codecs": [], "bd": []}

    with tempfile.TemporaryDirectory(prefix="vaecodec-bench-") as tmp:
        work = Path(tmp)
        for n_input, path in enumerate(inputs):
            src, originals = probe_source(Path(path), start, frames)
            report["inputs"].append(
                {"path": str(src.path), "width": src.width, "height": src.height, "frames": src.frames,
                 "fps": f"{src.fps.numerator}/{src.fps.denominator}", "file_bytes": src.file_bytes,
                 "start": float(src.start)}
            )
            if n_input == 0:
                _warm_up(codec, src.path, work)
            ours = []
            for point in points:
                console.print(f"[dim]{src.path.name}: vaecodec {_setting(point)}[/]")
                with _settings(codec, point):
                    ours.append(run_vaecodec(codec, src, originals, work, point))
            report["codecs"].extend(ours)
            originals.keep = True
            for spec in specs:
                runs = []
                for mine in ours:
                    hint = (runs[-1]["crf"], runs[-1]["bpp"]) if runs else None
                    r = match_rate(
                        originals, spec, mine["bpp"], width=src.width, height=src.height, fps=src.fps,
                        threads=threads, device=_score_device(codec), hint=hint,
                    )
                    console.print(
                        f"[dim]{src.path.name}: {spec.name} crf {r.q:g} -> {r.bpp:.4f} bpp "
                        f"(target {r.target_bpp:.4f}, {len(r.encodes)} encodes)[/]"
                        + ("" if r.psnr_at_target is not None else " [yellow]target rate not reached[/]")
                    )
                    runs.append(_baseline_entry(r, src, mine))
                report["codecs"].extend(runs)
                if sweep:
                    report["bd"].append(_bd(src, ours, runs, spec.name))

    env = codec.describe()
    env.update(
        machine=_machine(),
        baseline_threads=threads,
        pyav=av.__version__,
        ffmpeg={k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
    )
    report["environment"] = env
    _print(console, report)
    if json_path is not None:
        _publish(Path(json_path), lambda f: f.write(json.dumps(_finite(report), indent=1).encode()))
    if plot_path is not None:
        plot_report(report, Path(plot_path))
    return report

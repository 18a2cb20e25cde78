"""Classic codecs (x264, x265, SVT-AV1 through PyAV) rate-matched to a vaecodec file.

A fair comparison needs equal rate: each baseline's quality knob (CRF) is searched so the
*whole* encoded file (an in-memory MP4, container overhead included) lands at the target
bits per pixel. The search works in log-bpp, where rate is close to linear in CRF, so it
usually brackets the target in 3-4 encodes (at most ``max_encodes``). The encodes on either
side of the target are then decoded and scored with the same metric code as vaecodec, and
the PSNR at exactly the target rate is interpolated between them in log-bpp.

Colour: RGB -> Y'CbCr uses BT.601 limited range both ways (explicit, so the round trip is
exact up to 8-bit rounding); odd frame sizes are edge-padded to even for 4:2:0 and cropped
after decoding. Every codec gets the same thread count.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from vaecodec.errors import UsageError
from vaecodec.metrics import Quality, bits_per_pixel, score

COLORSPACE = "ITU601"
FrameChunks = Callable[[], Iterable[np.ndarray]]  # a fresh iterator of uint8 [n, H, W, 3] per call


@dataclass(frozen=True)
class Baseline:
    """One classic encoder configuration and how to steer its rate.

    ``halving_step`` is roughly how many CRF units halve the rate; it sizes the first
    search step before two measured points give a real slope.
    """

    name: str
    encoder: str
    pix_fmt: str
    options: dict[str, str]
    q_min: float
    q_max: float
    q_start: float
    halving_step: float
    integer_q: bool = False

    def encoder_options(self, q: float, threads: int) -> dict[str, str]:
        """libav options for one encode at quality ``q`` with ``threads`` worker threads."""
        opts = dict(self.options)
        opts["crf"] = str(int(q)) if self.integer_q else f"{q:.2f}"
        if self.encoder == "libx264":
            opts["threads"] = str(threads)
        elif self.encoder == "libx265":
            opts["x265-params"] = f"pools={threads}:frame-threads={threads}:log-level=error"
        elif self.encoder == "libsvtav1":
            opts["svtav1-params"] = f"lp={threads}"
        return opts


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("x264", "libx264", "yuv420p", {"preset": "medium", "tune": "psnr"}, 0, 51, 30, 6),
        Baseline("x264-444", "libx264", "yuv444p", {"preset": "medium", "tune": "psnr"}, 0, 51, 30, 6),
        Baseline("x265", "libx265", "yuv420p", {"preset": "medium", "tune": "psnr"}, 0, 51, 32, 6),
        # SVT-AV1 preset 8: its speed at 480p is close to x264 medium; CRF is an integer 1..63.
        Baseline("svtav1", "libsvtav1", "yuv420p", {"preset": "8"}, 1, 63, 40, 8, integer_q=True),
    )
}
DEFAULT_BASELINES = tuple(BASELINES)


def check_baselines(names: Iterable[str]) -> list[Baseline]:
    """Resolve names, failing with one line for an unknown name or an encoder PyAV lacks."""
    out = []
    for name in names:
        if name not in BASELINES:
            raise UsageError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        spec = BASELINES[name]
        try:
            av.codec.Codec(spec.encoder, "w")
        except Exception as exc:  # PyAV raises its own UnknownCodecError subclasses
            raise UsageError(f"baseline {name!r} needs encoder {spec.encoder}, which this PyAV build lacks") from exc
        out.append(spec)
    return out


@dataclass
class Encoded:
    """One baseline encode: the whole file and what it cost."""

    q: float
    data: bytes = field(repr=False)
    bpp: float
    seconds: float


def _even(n: int) -> int:
    return n + (n & 1)


def encode(
    chunks: Iterable[np.ndarray], spec: Baseline, q: float, *, width: int, height: int, fps: Fraction, threads: int
) -> tuple[bytes, int]:
    """Encode RGB chunks into an in-memory MP4 -> (file bytes, frame count)."""
    # SVT-AV1 prints a banner on every encoder open unless told otherwise.
    os.environ.setdefault("SVT_LOG", "1")
    buf = io.BytesIO()
    pw, ph = _even(width), _even(height)
    frames = 0
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(spec.encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = pw, ph, spec.pix_fmt
        stream.codec_context.thread_count = threads
        stream.options = spec.encoder_options(q, threads)
        for chunk in chunks:
            if (pw, ph) != (width, height):  # [n, H, W, 3] -> [n, ph, pw, 3], edges repeated
                chunk = np.pad(chunk, ((0, 0), (0, ph - height), (0, pw - width), (0, 0)), mode="edge")
            for rgb in chunk:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame = frame.reformat(format=spec.pix_fmt, dst_colorspace=COLORSPACE)
                frame.pts = frames
                for packet in stream.encode(frame):
                    out.mux(packet)
                frames += 1
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue(), frames


def decode(data: bytes, *, width: int, height: int, threads: int, chunk: int = 8) -> Iterator[np.ndarray]:
    """In-memory file -> uint8 RGB chunks ``[<=chunk, height, width, 3]`` (padding cropped)."""
    with av.open(io.BytesIO(data), "r") as inp:
        stream = inp.streams.video[0]
        stream.codec_context.thread_count = threads
        pending: list[np.ndarray] = []
        for frame in inp.decode(stream):
            rgb = frame.to_ndarray(format="rgb24", src_colorspace=COLORSPACE)  # [ph, pw, 3]
            pending.append(rgb[:height, :width])
            if len(pending) == chunk:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)


@dataclass
class BaselineResult:
    """A baseline at (or as near as the search got to) the target rate, scored.

    ``bpp``/``quality`` describe the real encode nearest the target; ``psnr_at_target`` is
    interpolated in log-bpp between the scored encodes either side of the target (None if
    the target lies outside what the codec reached, e.g. below its lowest rate).
    """

    name: str
    target_bpp: float
    q: float
    bpp: float
    file_bytes: int
    quality: Quality
    psnr_at_target: float | None
    encodes: list[Encoded] = field(repr=False)
    scored: dict[float, Quality] = field(repr=False)
    encode_seconds: float
    score_seconds: float

    def points(self) -> list[tuple[float, float]]:
        """Every scored (bpp, mean RGB PSNR) point, by rate; used for RD curves and BD."""
        by_q = {e.q: e for e in self.encodes}
        return sorted((by_q[q].bpp, s.psnr) for q, s in self.scored.items())


def _next_q(spec: Baseline, tried: list[Encoded], target: float) -> float | None:
    """Next CRF to try, or None when no untried setting can get closer."""
    lt = math.log(target)
    above = [e for e in tried if e.bpp > target]  # too many bits: need a higher CRF
    below = [e for e in tried if e.bpp <= target]
    if above and below:
        a = max(above, key=lambda e: e.q)
        b = min(below, key=lambda e: e.q)
        la, lb = math.log(a.bpp), math.log(b.bpp)
        q = a.q + (lt - la) * (b.q - a.q) / (lb - la) if lb != la else (a.q + b.q) / 2
        lo, hi = a.q, b.q
    else:
        last = tried[-1]
        slope = -math.log(2) / spec.halving_step  # d log(bpp) / d q
        if len(tried) >= 2:
            p, c = tried[-2], tried[-1]
            if c.q != p.q and c.bpp != p.bpp:
                measured = (math.log(c.bpp) - math.log(p.bpp)) / (c.q - p.q)
                slope = measured if measured < 0 else slope
        q = last.q + (lt - math.log(last.bpp)) / slope
        step = 2 * spec.halving_step  # one-sided: never jump more than a 4x rate change
        q = min(max(q, last.q - step), last.q + step)
        lo, hi = spec.q_min, spec.q_max
    q = min(max(q, lo), hi)
    if spec.integer_q:
        q = float(round(q))
        if any(e.q == q for e in tried):  # rounding landed on a tried value: step inward once
            inward = [v for v in (q - 1, q + 1) if lo < v < hi and all(e.q != v for e in tried)]
            if not inward:
                return None
            q = min(inward, key=lambda v: abs(v - q))
    else:
        q = round(q, 2)
    if any(abs(e.q - q) < 1e-9 for e in tried):
        return None
    return q


def match_rate(
    frames: FrameChunks,
    spec: Baseline,
    target_bpp: float,
    *,
    width: int,
    height: int,
    fps: Fraction,
    threads: int,
    max_encodes: int = 6,
    tolerance: float = 0.02,
    device: str = "cpu",
) -> BaselineResult:
    """Search CRF until the whole-file bpp is within ``tolerance`` of ``target_bpp``, then score."""
    if target_bpp <= 0:
        raise UsageError(f"target rate must be positive, got {target_bpp} bpp")
    tried: list[Encoded] = []
    q: float | None = spec.q_start
    while q is not None and len(tried) < max_encodes:
        t0 = time.perf_counter()
        data, n = encode(frames(), spec, q, width=width, height=height, fps=fps, threads=threads)
        tried.append(Encoded(q, data, bits_per_pixel(len(data), width, height, n), time.perf_counter() - t0))
        if abs(math.log(tried[-1].bpp / target_bpp)) <= math.log1p(tolerance):
            break
        q = _next_q(spec, tried, target_bpp)

    def gap(e: Encoded) -> float:
        return abs(math.log(e.bpp / target_bpp))

    nearest = min(tried, key=gap)
    other_side = [e for e in tried if (e.bpp > target_bpp) != (nearest.bpp > target_bpp)]
    rest = [e for e in tried if e is not nearest and e.bpp != nearest.bpp]
    if other_side:  # interpolate across the target
        partner = min(other_side, key=gap)
    elif rest and gap(nearest) <= math.log1p(tolerance):  # extrapolate a tolerance-sized step at most
        partner = min(rest, key=gap)
    else:
        partner = None

    t0 = time.perf_counter()
    scored: dict[float, Quality] = {}
    for e in (nearest, partner):
        if e is not None:
            dist = decode(e.data, width=width, height=height, threads=threads)
            scored[e.q] = score(frames(), dist, device=device)
    score_seconds = time.perf_counter() - t0

    psnr_at_target = None
    if partner is not None:
        x0, x1 = math.log(nearest.bpp), math.log(partner.bpp)
        y0, y1 = scored[nearest.q].psnr, scored[partner.q].psnr
        psnr_at_target = y0 + (math.log(target_bpp) - x0) * (y1 - y0) / (x1 - x0)
    return BaselineResult(
        name=spec.name,
        target_bpp=target_bpp,
        q=nearest.q,
        bpp=nearest.bpp,
        file_bytes=len(nearest.data),
        quality=scored[nearest.q],
        psnr_at_target=psnr_at_target,
        encodes=tried,
        scored=scored,
        encode_seconds=sum(e.seconds for e in tried),
        score_seconds=score_seconds,
    )

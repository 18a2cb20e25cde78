"""Classic codecs (x264, x265, SVT-AV1 through PyAV) rate-matched to a vaecodec file.

A fair comparison needs equal rate: each baseline's quality knob (CRF) is searched so the
*whole* encoded file (an in-memory MP4, container overhead included) lands at the target
bits per pixel. The search works in log-bpp, where rate is close to linear in CRF, so it
usually brackets the target in 3-4 encodes (at most ``max_encodes``). The encodes on either
side of the target are then decoded and scored with the same metric code as vaecodec, and
the PSNR at exactly the target rate is interpolated between them in log-bpp.

Colour: RGB <-> Y'CbCr is BT.709 limited range with swscale's accurate rounding, explicit on
both sides (the streams are tagged BT.709 too) so encoder and decoder agree; chroma filters:
see ``SWS_DOWN``. Odd frame sizes are edge-padded to even and cropped after decoding.
Every codec gets the same thread count.
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
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from vaecodec.errors import UsageError
from vaecodec.metrics import Quality, bits_per_pixel, score

COLORSPACE = Colorspace.ITU709
RANGE = ColorRange.MPEG
# Chosen for the highest RGB -> 4:2:0 -> RGB round trip without any codec (measured on the
# samples and a 480p photo clip: 47.8-48.9 dB vs 45.4-46.7 dB with the reader's flags both
# ways), so the baselines are not charged for a poor chroma filter. Upsampling uses the same
# flags as vaecodec.video's reader.
SWS_DOWN = Interpolation.BICUBIC | Interpolation.ACCURATE_RND
SWS_UP = (
    Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
)
FrameChunks = Callable[[], Iterable[np.ndarray]]  # a fresh iterator of uint8 [n, H, W, 3] per call


@dataclass(frozen=True)
class Baseline:
    """One classic encoder configuration and how to steer its rate.

    ``halving_step`` is roughly how many CRF units halve the rate, and ``q_ref`` gave
    ``ref_bpp`` on a typical 480p photo pan; together they place the first encode of a
    search (content moves the curve, the search corrects for it).
    """

    name: str
    encoder: str
    pix_fmt: str
    options: dict[str, str]
    q_min: float
    q_max: float
    q_ref: float
    ref_bpp: float
    halving_step: float
    integer_q: bool = False

    def first_guess(self, target_bpp: float, hint: tuple[float, float] | None = None) -> float:
        """CRF expected to give ``target_bpp``, from ``hint`` = a measured (crf, bpp) if given."""
        q0, b0 = hint or (self.q_ref, self.ref_bpp)
        q = q0 - self.halving_step * math.log2(target_bpp / b0)
        return min(max(q, self.q_min), self.q_max)

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
        Baseline("x264", "libx264", "yuv420p", {"preset": "medium", "tune": "psnr"}, 0, 51, 30, 0.075, 5),
        Baseline("x264-444", "libx264", "yuv444p", {"preset": "medium", "tune": "psnr"}, 0, 51, 30, 0.081, 5),
        Baseline("x265", "libx265", "yuv420p", {"preset": "medium", "tune": "psnr"}, 0, 51, 32, 0.044, 5),
        # SVT-AV1 preset 8: its speed at 480p is close to x264 medium; CRF is an integer 1..63.
        Baseline("svtav1", "libsvtav1", "yuv420p", {"preset": "8"}, 1, 63, 40, 0.067, 13, integer_q=True),
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
        except ValueError as exc:  # PyAV's UnknownCodecError
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
        cc = stream.codec_context
        cc.thread_count = threads
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited
        stream.options = spec.encoder_options(q, threads)
        sws = VideoReformatter()
        for chunk in chunks:
            if (pw, ph) != (width, height):  # [n, H, W, 3] -> [n, ph, pw, 3], edges repeated
                chunk = np.pad(chunk, ((0, 0), (0, ph - height), (0, pw - width), (0, 0)), mode="edge")
            for rgb in chunk:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame = sws.reformat(
                    frame, format=spec.pix_fmt, dst_colorspace=COLORSPACE, dst_color_range=RANGE, interpolation=SWS_DOWN
                )
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
        sws = VideoReformatter()
        pending: list[np.ndarray] = []
        for frame in inp.decode(stream):
            rgb = sws.reformat(
                frame, format="rgb24", src_colorspace=COLORSPACE, src_color_range=RANGE, interpolation=SWS_UP
            ).to_ndarray()  # [ph, pw, 3]
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
    the search could not bracket the target, e.g. below the codec's lowest rate). The
    other-side encode is scored for PSNR only (its SSIM is nan), to keep benches quick.
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


def _gap(e: Encoded, target: float) -> float:
    return abs(math.log(e.bpp / target))


def _next_q(spec: Baseline, tried: list[Encoded], target: float, tolerance: float) -> float | None:
    """Next CRF to try, or None when the search is done or no untried setting can help.

    Secant through the two encodes nearest the target in (CRF, log bpp), kept strictly
    inside the bracket once the target is bracketed. Done when the nearest encode is within
    ``tolerance`` *and* some encode lies across the target, so the PSNR at the target is
    interpolated, never extrapolated (with the nearest point within 3%, the curvature of
    PSNR in log-bpp adds well under 0.01 dB even across a wide bracket); a lucky hit with
    nothing across gets one more encode aimed just across the target.
    """
    lt = math.log(target)
    above = [e for e in tried if e.bpp > target]  # too many bits: need a higher CRF
    below = [e for e in tried if e.bpp <= target]
    near = sorted(tried, key=lambda e: _gap(e, target))
    close = _gap(near[0], target) <= math.log1p(tolerance)
    if close and above and below:
        return None
    slope = -math.log(2) / spec.halving_step  # d log(bpp) / d q, a prior until two points exist
    if len(near) >= 2 and near[0].q != near[1].q and near[0].bpp != near[1].bpp:
        measured = (math.log(near[0].bpp) - math.log(near[1].bpp)) / (near[0].q - near[1].q)
        slope = measured if measured < 0 else slope
    if above and below:  # bracketed: secant from the nearest encode, strictly inside the bracket
        lo, hi = max(e.q for e in above), min(e.q for e in below)
        q = near[0].q + (lt - math.log(near[0].bpp)) / slope
        q = min(max(q, lo + 0.01), hi - 0.01)
    else:  # one side only: step on from the encode furthest toward the target
        up = bool(above)  # every encode has too many bits: raise the CRF
        base = max(tried, key=lambda e: e.q) if up else min(tried, key=lambda e: e.q)
        lo, hi = (base.q, spec.q_max) if up else (spec.q_min, base.q)
        q = base.q + (lt - math.log(base.bpp)) / slope
        if close:
            q = base.q + 2 * (q - base.q)  # aim past the target to bracket it
        min_step = 1.0 if spec.integer_q else 0.5  # rate can be flat over small CRF changes
        max_step = 3 * spec.halving_step  # never more than a ~8x rate change at once
        q = base.q + math.copysign(min(max(abs(q - base.q), min_step), max_step), 1 if up else -1)
        q = min(max(q, spec.q_min), spec.q_max)
    if spec.integer_q:
        q = float(round(q))
        if any(e.q == q for e in tried):  # rounding landed on a tried value: one step inward
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
    tolerance: float = 0.03,
    device: str = "cpu",
    hint: tuple[float, float] | None = None,
) -> BaselineResult:
    """Search CRF until the whole-file bpp is within ``tolerance`` of ``target_bpp``, then score.

    ``hint`` is a (crf, bpp) this codec measured on the same frames (e.g. at a neighbouring
    sweep point); it places the first encode better than the built-in reference.
    """
    if target_bpp <= 0:
        raise UsageError(f"target rate must be positive, got {target_bpp} bpp")
    tried: list[Encoded] = []
    q: float | None = spec.first_guess(target_bpp, hint)
    q = float(round(q)) if spec.integer_q else round(q, 2)
    while q is not None and len(tried) < max_encodes:
        t0 = time.perf_counter()
        data, n = encode(frames(), spec, q, width=width, height=height, fps=fps, threads=threads)
        tried.append(Encoded(q, data, bits_per_pixel(len(data), width, height, n), time.perf_counter() - t0))
        q = _next_q(spec, tried, target_bpp, tolerance)

    nearest = min(tried, key=lambda e: _gap(e, target_bpp))
    other_side = [e for e in tried if (e.bpp > target_bpp) != (nearest.bpp > target_bpp)]
    partner = min(other_side, key=lambda e: _gap(e, target_bpp)) if other_side else None

    t0 = time.perf_counter()
    dist = decode(nearest.data, width=width, height=height, threads=threads)
    scored = {nearest.q: score(frames(), dist, device=device)}
    if partner is not None:  # only its PSNR is needed, for the interpolation
        dist = decode(partner.data, width=width, height=height, threads=threads)
        scored[partner.q] = score(frames(), dist, device=device, with_ssim=False)
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

"""Streaming video I/O on PyAV: read any input as 8-bit RGB chunks, write H.264/H.265/VP9/FFV1/PNG.

Both directions stream (a chunk of frames at a time) so memory does not grow with the
video's length. The reader normalises what decoders hand back (10-bit, gray, alpha,
rotation metadata, odd sizes, VFR timestamps) into plain ``uint8 [n, H, W, 3]`` RGB and
carries the audio packets through untouched, so the writer can re-mux them bit-exactly.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import sys
import warnings
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.error
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from vaecodec.container import MAGIC, create_temp
from vaecodec.errors import FormatError, InputError, UsageError

# Container tag holding the true frame size when the encoder needed a larger picture (>= 64 px
# for libx265; even sides for 4:2:0 in files of earlier versions): the stored picture is padded
# at the right/bottom with replicated edge pixels and VideoReader crops it back.
SIZE_TAG = "vaecodec_size"
# Container tags that describe the file rather than the recording: the muxer writes its own
_MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration", SIZE_TAG}
_MAX_TAGS_BYTES = 16384  # a header field, not a place for cover art or logs
# Video packets demuxed ahead at open time to measure the frame rate from timestamps.
_PEEK_PACKETS = 48
_NUMBER_FIELD = re.compile(r"%0?\d*d")  # the frame number in an image-sequence pattern ("%05d")
_REORDER_DEPTH = 16  # the most frames H.264/H.265 may reorder
# swscale's default RGB<->YUV 4:2:0 path is biased (about -1.2 levels per channel on a round
# trip, with ~4x the mean abs error); accurate rounding + full chroma interpolation is not.
_SWS_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _rational(text: str) -> Fraction:
    num, _, den = text.partition("/")
    return Fraction(int(num), int(den or 1))


@dataclass(frozen=True)
class VideoInfo:
    """What the codec needs to know about an input before reading it."""

    width: int  # displayed size, after rotation (and size-tag crop) is applied
    height: int
    fps: Fraction
    frames: int | None  # estimate; the true count is what the reader yields
    pix_fmt: str
    codec: str
    rotation: int  # counter-clockwise degrees (0/90/180/270) applied to the decoded pixels
    sar: Fraction = Fraction(1)  # pixel width / height on screen (anamorphic video: not 1), after rotation
    color: Color | None = None  # the RGB's primaries and transfer, where they are not BT.709's

    def to_dict(self) -> dict:
        d = {
            "width": self.width,
            "height": self.height,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "frames": self.frames,
            "pix_fmt": self.pix_fmt,
            "codec": self.codec,
            "rotation": self.rotation,
        }
        if self.sar != 1:  # square pixels keep the header as it was
            d["sar"] = f"{self.sar.numerator}/{self.sar.denominator}"
        if self.color is not None:
            d["color"] = {"primaries": self.color.primaries, "transfer": self.color.transfer}
        return d


# H.273 code points (FFmpeg's AVCOL_PRI_* / AVCOL_TRC_* / AVCOL_SPC_* share them): BT.709 and
# BT.2020 (the non-constant-luminance matrix, for matrix coefficients) share their numbers
_BT709, _UNSPECIFIED, _BT2020 = 1, 2, 9
_WIDE_PRIMARIES = {9, 10, 11, 12}  # BT.2020, XYZ, DCI-P3, Display P3
_HDR_TRANSFERS = {16, 18}  # PQ, HLG


@dataclass(frozen=True)
class Color:
    """What the RGB values mean: their primaries and transfer curve as H.273 code points.

    swscale turns any matrix into RGB but keeps primaries and transfer as they are, so the
    decoded RGB of an HDR (BT.2020, PQ/HLG) or other non-BT.709 source is only shown right if
    the output says what it is. (1, 1), BT.709 both, is what an untagged output means.
    """

    primaries: int
    transfer: int

    @classmethod
    def of(cls, primaries: int | None, transfer: int | None) -> Color | None:
        """The pair a source tags, or None where it tags BT.709 or nothing."""
        p, t = primaries or _UNSPECIFIED, transfer or _UNSPECIFIED
        return None if {p, t} <= {_BT709, _UNSPECIFIED} else cls(p, t)

    @property
    def wide(self) -> bool:
        """Whether shown as sRGB it would look plainly wrong (wide gamut or HDR), not just a
        shade off as BT.601's primaries do."""
        return self.primaries in _WIDE_PRIMARIES or self.transfer in _HDR_TRANSFERS

    @classmethod
    def from_dict(cls, d: dict) -> Color:
        p, t = d["primaries"], d["transfer"]
        if not all(type(v) is int and 0 <= v <= 255 for v in (p, t)):
            raise ValueError(f"color {d} is not a pair of H.273 code points")
        return cls(p, t)


@dataclass(frozen=True)
class AudioTrack:
    """Everything needed to re-mux an audio stream without re-encoding it."""

    codec: str  # canonical codec name ("aac", "opus", "mp3", ...)
    sample_rate: int
    channels: int
    layout: str
    time_base: Fraction  # of the packets' pts/dts/duration
    bit_rate: int | None
    extradata: bytes | None
    language: str | None = None  # ISO 639-2 ("fra"), as the source tagged it; None: not said

    def to_dict(self) -> dict:
        d = {
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "layout": self.layout,
            "time_base": f"{self.time_base.numerator}/{self.time_base.denominator}",
            "bit_rate": self.bit_rate,
            "extradata": None if self.extradata is None else base64.b64encode(self.extradata).decode("ascii"),
        }
        if self.language:
            d["language"] = self.language
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AudioTrack:
        try:
            extradata = d.get("extradata")
            return cls(
                codec=str(d["codec"]),
                sample_rate=int(d["sample_rate"]),
                channels=int(d["channels"]),
                layout=str(d["layout"]),
                time_base=_rational(str(d["time_base"])),
                bit_rate=None if d.get("bit_rate") is None else int(d["bit_rate"]),
                extradata=None if extradata is None else base64.b64decode(extradata),
                language=None if d.get("language") is None else str(d["language"]),
            )
        except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
            raise FormatError(f"audio track description is malformed: {e!r}") from None

    @classmethod
    def from_stream(cls, stream: av.audio.stream.AudioStream) -> AudioTrack:
        cc = stream.codec_context
        layout = cc.layout.name
        if layout.endswith("channels"):  # unspecified order ("1 channels"): name the default layout
            layout = av.AudioLayout(f"{int(cc.channels)}c").name
        return cls(
            codec=cc.codec.canonical_name,
            sample_rate=int(cc.sample_rate),
            channels=int(cc.channels),
            layout=layout,
            time_base=Fraction(stream.time_base),
            bit_rate=cc.bit_rate or None,
            extradata=cc.extradata,
            language=stream.language if stream.language not in (None, "", "und") else None,
        )


@dataclass
class AudioPacket:
    """One compressed audio packet; timestamps are in its AudioTrack's time_base."""

    data: bytes
    pts: int | None
    dts: int | None
    duration: int | None
    keyframe: bool


# ---- compact packet serialisation (for a .vlat chunk) -------------------------------------
# Layout: version byte, varint count, then per packet a flags byte and varints. Timestamps are
# stored as differences from what the previous packet predicts, so contiguous audio costs
# about 4 bytes per packet: flags, a zero pts delta, the size.
_PACK_VERSION = 1
_KEY, _HAS_PTS, _HAS_DTS, _HAS_DUR, _DTS_IS_PTS, _DUR_REPEATS = 1, 2, 4, 8, 16, 32


def rebase(packets: list[AudioPacket], shift: int) -> list[AudioPacket]:
    """Packets with their times counted from ``shift`` (in their time base), as a video that
    starts there shows them: those that end by it are left out, one that overlaps it keeps a
    negative time; a shift of 0 leaves every packet as it was (AAC's priming one included)."""
    if not shift:
        return packets
    return [replace(p, pts=None if p.pts is None else p.pts - shift, dts=None if p.dts is None else p.dts - shift)
            for p in packets if p.pts is None or p.pts + (p.duration or 0) > shift]


def _put_varint(out: bytearray, value: int) -> None:
    value = value * 2 if value >= 0 else -value * 2 - 1  # zig-zag: small magnitudes, small codes
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise FormatError(f"audio packet block truncated at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value // 2 if value % 2 == 0 else -(value + 1) // 2), pos
        shift += 7
        if shift > 70:
            raise FormatError(f"audio packet block has an overlong varint at byte {pos}")


def pack_packets(packets: list[AudioPacket]) -> bytes:
    """Serialise packets losslessly (payload bytes and timestamps) with little overhead."""
    out = bytearray([_PACK_VERSION])
    _put_varint(out, len(packets))
    next_pts, last_dur = 0, None
    for p in packets:
        flags = _KEY if p.keyframe else 0
        flags |= _HAS_PTS if p.pts is not None else 0
        flags |= _HAS_DTS if p.dts is not None else 0
        flags |= _HAS_DUR if p.duration is not None else 0
        flags |= _DTS_IS_PTS if p.dts is not None and p.dts == p.pts else 0
        flags |= _DUR_REPEATS if p.duration is not None and p.duration == last_dur else 0
        out.append(flags)
        if p.pts is not None:
            _put_varint(out, p.pts - next_pts)
        if p.dts is not None and not flags & _DTS_IS_PTS:
            _put_varint(out, p.dts - (p.pts or 0))
        if p.duration is not None and not flags & _DUR_REPEATS:
            _put_varint(out, p.duration)
        _put_varint(out, len(p.data))
        out += p.data
        if p.pts is not None:
            next_pts = p.pts + (p.duration or 0)
        last_dur = p.duration
    return bytes(out)


def unpack_packets(buf: bytes) -> list[AudioPacket]:
    """Inverse of pack_packets; raises FormatError on damaged input."""
    if not buf or buf[0] != _PACK_VERSION:
        raise FormatError(f"audio packet block has unknown version {buf[0] if buf else 'none'}")
    count, pos = _get_varint(buf, 1)
    packets: list[AudioPacket] = []
    next_pts, last_dur = 0, None
    for _ in range(count):
        if pos >= len(buf):
            raise FormatError(f"audio packet block truncated at byte {pos}")
        flags = buf[pos]
        pos += 1
        pts = dts = duration = None
        if flags & _HAS_PTS:
            delta, pos = _get_varint(buf, pos)
            pts = next_pts + delta
        if flags & _HAS_DTS:
            if flags & _DTS_IS_PTS:
                dts = pts
            else:
                delta, pos = _get_varint(buf, pos)
                dts = (pts or 0) + delta
        if flags & _HAS_DUR:
            if flags & _DUR_REPEATS:
                duration = last_dur
            else:
                duration, pos = _get_varint(buf, pos)
        size, pos = _get_varint(buf, pos)
        if size < 0 or pos + size > len(buf):
            raise FormatError(f"audio packet block truncated at byte {len(buf)} (packet needs {size} bytes)")
        packets.append(AudioPacket(bytes(buf[pos : pos + size]), pts, dts, duration, bool(flags & _KEY)))
        pos += size
        if pts is not None:
            next_pts = pts + (duration or 0)
        last_dur = duration
    if pos != len(buf):
        raise FormatError(f"audio packet block has {len(buf) - pos} trailing bytes at byte {pos}")
    return packets


# ---- reading ------------------------------------------------------------------------------


def _nice_rate(rate: Fraction) -> Fraction:
    """Snap a rate to the nearer of the integer rate and the NTSC one (N x 1000/1001: 23.976,
    29.97, 59.94, 119.88 ...) when within 0.1% of it; an NTSC rate is itself 0.1% below its
    integer one, so the nearer wins."""
    ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
    r = min((Fraction(round(rate)), ntsc), key=lambda c: abs(rate - c))
    return r if r > 0 and abs(rate - r) <= r / 1000 else rate.limit_denominator(1001)


def _peek_times(stream: av.video.stream.VideoStream, pts: list[int]) -> list[int]:
    """The distinct frame times of the peeked packets, without the holes at their end: packets
    come in decode order, so when the peek cut the stream, frames that B-frame reordering shows
    before the last peeked one are still unread (a hole in the last ``_REORDER_DEPTH`` times)."""
    times = sorted(set(pts))
    return times[:-_REORDER_DEPTH] if len(pts) >= _PEEK_PACKETS else times


def _pick_fps(stream: av.video.stream.VideoStream, pts: list[int]) -> Fraction:
    """Declared rate if the frame times agree with it, else the mean rate of the frame times.

    Header rates are unreliable for VFR input (a container's nominal or finest rate), so a
    declared rational is only used when the measured mean frame interval matches it within
    1%; using the declared value (not the measurement) keeps e.g. 30000/1001 exact. Both are
    snapped to the common rate they approximate: Matroska derives its declared rate from
    millisecond times (59.94 fps reads 19001/317).
    """
    declared = [Fraction(r) for r in (stream.average_rate, stream.base_rate, stream.guessed_rate) if r]
    times = _peek_times(stream, pts)
    if len(times) < 2 or not stream.time_base:
        return _nice_rate(declared[0]) if declared else Fraction(25)
    tb = Fraction(stream.time_base)
    mean = (times[-1] - times[0]) * tb / (len(times) - 1)
    for r in declared:
        if abs(1 / r - mean) <= mean / 100:
            return _nice_rate(r)
    if stream.frames and stream.frames > 1 and stream.duration:  # whole-stream mean beats the peek window
        return _nice_rate(stream.frames / (stream.duration * tb))
    return _nice_rate(1 / mean)


def _uneven_intervals(stream: av.video.stream.VideoStream, pts: list[int]) -> tuple[float, float] | None:
    """(shortest, longest) seconds between the frame times seen, when the longest is over 1.5x
    the shortest: variable frame rate (or frames missing), which a constant rate cannot keep."""
    times = _peek_times(stream, pts)
    if len(times) < 3 or not stream.time_base:
        return None
    gaps = np.diff(times) * float(stream.time_base)
    return (float(gaps.min()), float(gaps.max())) if gaps.max() > 1.5 * gaps.min() else None


def check_limit(frames: int | None) -> int | None:
    """A frame limit as given, or a usage error (checked before any work)."""
    if frames is not None and (type(frames) is not int or frames < 1):
        raise UsageError(f"--frames must be a whole number of at least 1, got {frames!r}")
    return frames


#: How far a time may fall short of a frame's and still name it: half a millisecond, so that
#: a frame time printed to the millisecond (29.97 fps frame 45, 1.5015 s, as "1.502") finds it.
TIME_SLACK = Fraction(1, 2000)


def seconds(at: Fraction | float | str) -> Fraction:
    """A time, exactly: a number of seconds or text as ffmpeg writes it ("90", "1:30.5", "1:02:03")."""
    try:
        if isinstance(at, str):
            parts = [Fraction(p) for p in at.strip().split(":")]
            if len(parts) > 3 or any(p < 0 for p in parts) or any(p >= 60 for p in parts[1:]):
                raise ValueError
            t = sum((p * 60**i for i, p in enumerate(reversed(parts))), Fraction(0))
        else:
            t = Fraction(str(at)) if isinstance(at, float) else Fraction(at)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        raise UsageError(f"time {at!r} is not seconds or [HH:]MM:SS[.frac]") from None
    if t < 0:
        raise UsageError(f"time {at} is negative")
    return t


def is_url(source: str | Path) -> bool:
    """Whether an input names a URL (``scheme://...``) rather than a file; a Path has lost its
    double slash already, so URLs must be passed as strings."""
    return isinstance(source, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source) is not None


def url_name(url: str) -> Path:
    """What names a URL input in messages and files: the last part of its path (no query)."""
    return Path(url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or url)


def _is_vlat(path: Path) -> bool:
    """Whether ``path`` begins like a .vlat file: what a user who encodes one is told."""
    try:
        with path.open("rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _recording_tags(metadata: dict[str, str]) -> dict[str, str]:
    """The container's tags about the recording (title, creation_time, location, comment, ...),
    which a decoded file should keep, without those each muxer writes for itself; none when
    together they are too large for a header."""
    tags = {k: v for k, v in metadata.items() if k.lower() not in _MUXER_TAGS and isinstance(v, str)}
    return tags if sum(len(k) + len(v) for k, v in tags.items()) <= _MAX_TAGS_BYTES else {}


def _mp4_without_index(path: Path) -> bool:
    """Whether ``path`` is an MP4/MOV whose media data has no index (``moov`` box) before the end
    of the file: a recording or a download cut short, which no demuxer can open."""
    try:
        with path.open("rb") as f:
            boxes, size = set(), path.stat().st_size
            while (start := f.tell()) + 8 <= size:  # the top-level boxes: 32-bit size, 4-letter type
                head = f.read(8)
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if length == 1:  # a 64-bit size follows
                    length = int.from_bytes(f.read(8), "big")
                elif length == 0:  # to the end of the file
                    length = size - start
                if length < 8 or not kind.isalnum():
                    break
                boxes.add(kind)
                f.seek(start + length)
            return b"ftyp" in boxes and b"mdat" in boxes and b"moov" not in boxes
    except OSError:
        return False


def is_pattern(name: str) -> bool:
    """Whether a file name is an image-sequence pattern (``%d``, ``%05d``); a plain ``%`` is not."""
    return _NUMBER_FIELD.search(name) is not None


def _sequence_bytes(pattern: Path) -> int:
    """Bytes of the files an image-sequence pattern names."""
    name = _pattern_regex(pattern.name)
    return sum(f.stat().st_size for f in pattern.parent.iterdir() if name.fullmatch(f.name) and f.is_file())


def _image_dir_pattern(path: Path) -> tuple[str, int]:
    """A directory of numbered images -> (image2 pattern, first number)."""
    groups: dict[tuple[int, str], list[int]] = {}
    for f in path.iterdir():
        if f.suffix.lower() in _IMAGE_EXTS and f.stem.isdigit():
            groups.setdefault((len(f.stem), f.suffix), []).append(int(f.stem))
    if not groups:
        raise InputError(f"{path} is a directory without numbered image files (like 000001.png)")
    (width, ext), numbers = max(groups.items(), key=lambda kv: len(kv[1]))
    return str(path / f"%0{width}d{ext}"), min(numbers)


class VideoReader:
    """Decode any PyAV-readable video into RGB chunks; audio packets are collected on the side.

    ``path`` may be a file, an image-sequence pattern (``frames_%04d.png``), a directory of
    numbered images, or ``lavfi:<filter source>`` (e.g. ``lavfi:testsrc2=size=320x240``).
    """

    def __init__(self, path: str | Path, chunk_frames: int = 16, limit: int | None = None,
                 start: Fraction | float | str = 0) -> None:
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        self.limit = check_limit(limit)  # read at most this many frames (a live stream, a clip's start)
        self.start = seconds(start)  # begin at the frame shown this long after the first one
        self.started = Fraction(0)  # the first frame read: seconds after the input's first one
        self.cut = False  # whether ``limit`` left frames unread
        self.chunk_frames = chunk_frames
        self.frames_read = 0
        self._audio_packets: list[AudioPacket] = []
        self._pending: deque[av.Packet] = deque()  # demuxed ahead (fps peek), not yet handled
        self._frames: deque[av.VideoFrame] = deque()  # decoded ahead (first frame), not yet yielded
        self._flushed = False
        self._reformatter = VideoReformatter()
        self._warned_resize = False

        raw = str(path)
        fmt = None
        self._piped = raw == "-"
        self.input_bytes = 0  # what the input occupies on disk, for compression ratios (0: no file)
        # ``path`` names the input in messages: the file, or the stream
        if raw.startswith("lavfi:"):  # a filter-graph source, e.g. lavfi:testsrc2=size=320x240
            self.path = Path(raw)
            url, options, fmt = raw[len("lavfi:") :], {}, "lavfi"
        elif self._piped:  # a stream FFmpeg demuxes without seeking (Matroska, NUT, MPEG-TS; MP4 only faststart)
            self.path = Path("<stdin>")
            url, options = sys.stdin.buffer, {}
        elif is_url(raw):  # what FFmpeg's protocols open: https://, rtsp://, file://, ...
            self.path = url_name(raw)
            url, options = raw, {}
        else:
            self.path = Path(path)
            url, options = self._resolve(self.path)
            self.input_bytes = self.path.stat().st_size if self.path.is_file() else _sequence_bytes(Path(url))
        try:
            self._container = av.open(url, format=fmt, options=options)
        except av.error.EOFError:
            raise InputError(f"{self.path} has no video frames (the data ends before the first one)") from None
        except av.error.FFmpegError as e:
            if _is_vlat(self.path):
                raise InputError(f"{self.path} is a .vlat file, not a video (decode it: vaecodec decode)") from None
            if _mp4_without_index(self.path):
                raise InputError(f"{self.path}: the MP4 has no index (moov box): the file was cut short (a recording "
                                 "or copy that did not finish); tools like untrunc can rebuild it") from None
            raise InputError(f"{self.path}: cannot open as video ({_reason(e)})") from None
        try:
            self._setup()
        except BaseException:
            self._container.close()
            raise

    @staticmethod
    def _resolve(path: Path) -> tuple[str, dict[str, str]]:
        """Map the user's path to what av.open takes (directories become image2 patterns)."""
        if is_pattern(path.name) and not path.is_file():  # image sequence pattern; the demuxer checks the files
            if not path.parent.is_dir():
                raise InputError(f"{path}: directory {path.parent} does not exist")
            return str(path), {}
        if path.is_dir():
            pattern, start = _image_dir_pattern(path)
            return pattern, {"start_number": str(start)}
        if not path.exists():
            raise InputError(f"{path}: no such file")
        return str(path), {}

    def _setup(self) -> None:
        video = [s for s in self._container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not video:
            raise InputError(f"{self.path}: no video stream")
        self._vs = video[0]
        self._vs.thread_type = "AUTO"
        audio = list(self._container.streams.audio)
        # the track a player starts with: the one marked default, else the first
        self._as = next((a for a in audio if a.disposition & av.stream.Disposition.default), audio[0] if audio else None)
        subtitles = len(self._container.streams.subtitles)
        if subtitles:
            warnings.warn(f"{self.path}: {subtitles} subtitle track{'s' if subtitles > 1 else ''} dropped "
                          "(vaecodec keeps video and one audio track)", stacklevel=3)
        if len(audio) > 1:
            warnings.warn(f"{self.path}: {len(audio)} audio tracks; only track {audio.index(self._as) + 1} "
                          f"({self._as.language or self._as.codec_context.name}) is kept", stacklevel=3)
        self.audio: AudioTrack | None = AudioTrack.from_stream(self._as) if self._as is not None else None
        self._streams = [self._vs] + ([self._as] if self._as is not None else [])
        self._demux = self._container.demux(*self._streams)

        pts: list[int] = []
        while len(pts) < _PEEK_PACKETS:
            packet = self._demux_next()
            if packet is None:
                break
            self._pending.append(packet)
            if packet.stream is self._vs and packet.pts is not None and packet.size:
                pts.append(packet.pts)
        fps = _pick_fps(self._vs, pts)
        uneven = _uneven_intervals(self._vs, pts)
        if uneven:
            warnings.warn(f"{self.path}: uneven frame times (frames {uneven[0] * 1000:.0f} to {uneven[1] * 1000:.0f} ms "
                          "apart: a variable frame rate, or frames missing); it is coded at a constant "
                          f"{float(fps):.3f} fps, which keeps every frame and the duration but not each frame's time",
                          stacklevel=3)

        if not self._fill():
            raise InputError(f"{self.path} has no video frames")
        if self.start:
            self._skip_to(self.start)
        first = self._frames[0]
        # the output shows the first frame at t = 0, so the audio moves by the same amount: an
        # MPEG-TS stream starting at 1.4 s, or video that starts after its audio, stays in sync
        self._audio_shift = 0
        if self.audio is not None and first.pts and self._vs.time_base:
            self._audio_shift = round(first.pts * Fraction(self._vs.time_base) / self.audio.time_base)

        if first.interlaced_frame:
            warnings.warn(f"{self.path}: interlaced video (two fields a frame) is coded as whole frames, so what moves "
                          "keeps its comb-like edges; deinterlace it first (e.g. ffmpeg -vf bwdif)", stacklevel=3)
        # checked frame by frame until one is seen: GIFs and many RGBA files are opaque throughout
        self._alpha_unseen = any(c.is_alpha for c in first.format.components)
        self._crop = self._size_tag(first)
        self._rot = round((first.rotation or 0) / 90) % 4  # np.rot90 turns counter-clockwise, as does rotation
        w, h = self._crop or (first.width, first.height)
        if self._rot % 2:
            w, h = h, w
        self._size = (first.width, first.height)
        self.tags = _recording_tags(self._container.metadata)
        cc = self._vs.codec_context
        self.info = VideoInfo(
            width=w,
            height=h,
            fps=fps,
            frames=self._estimate_frames(fps),
            pix_fmt=cc.pix_fmt or first.format.name,
            codec=cc.name,
            rotation=self._rot * 90,
            sar=self._sar(),
            color=Color.of(first.color_primaries or cc.color_primaries, first.color_trc or cc.color_trc),
        )

    def _skip_to(self, start: Fraction) -> None:
        """Make the frame shown ``start`` s after the first one the first: seek to the keyframe
        before it where the input can seek (files), else decode on to it (pipes, filters), and
        drop what comes before it (its audio goes with the shift that the new first frame sets)."""
        tb = Fraction(self._vs.time_base)
        origin = self._frames[0].pts or 0
        target = origin + (start - TIME_SLACK) / tb
        if not self._piped:
            try:
                self._container.seek(math.floor(target), stream=self._vs, backward=True)
                self._demux = self._container.demux(*self._streams)  # the peek may have ended the last one
                self._pending.clear()
                self._frames.clear()
                self._audio_packets.clear()
                self._flushed = False
            except (av.error.FFmpegError, OSError, ValueError):
                pass  # not seekable (a filter source): decoding on to the frame gets there too
        while True:
            if not self._fill():
                raise InputError(f"{self.path}: --start {float(start):g} s is past its last frame")
            if self._frames[0].pts is None or self._frames[0].pts >= target:
                break
            self._frames.popleft()
        self.started = ((self._frames[0].pts or origin) - origin) * tb

    def _sar(self) -> Fraction:
        """The pixels' aspect on screen (DVD and HDV store wide pictures in narrow pixels);
        a quarter turn swaps the pixels' sides. Unset or implausible values mean square."""
        sar = self._vs.sample_aspect_ratio or self._vs.codec_context.sample_aspect_ratio
        sar = Fraction(sar) if sar and sar.numerator > 0 and sar.denominator > 0 else Fraction(1)
        if not Fraction(1, 16) <= sar <= 16:
            sar = Fraction(1)
        return 1 / sar if self._rot % 2 else sar

    def _size_tag(self, frame: av.VideoFrame) -> tuple[int, int] | None:
        """The true (width, height) our writer recorded when it padded to even, if any."""
        tags = {k.lower(): v for k, v in {**self._vs.metadata, **self._container.metadata}.items()}
        m = re.fullmatch(r"(\d+)x(\d+)", tags.get(SIZE_TAG, ""))  # Matroska upper-cases tag names
        if not m:
            return None
        w, h = int(m.group(1)), int(m.group(2))
        return (w, h) if 0 < w <= frame.width and 0 < h <= frame.height else None

    def _estimate_frames(self, fps: Fraction) -> int | None:
        """The container's idea of the frame count, capped by ``limit`` (which bounds a stream
        that has none)."""
        known = self._container_frames(fps)
        if known is not None:
            known = max(known - round(self.started * fps), 0)  # less the frames before ``start``
        return known if self.limit is None else min(known or self.limit, self.limit)

    def _container_frames(self, fps: Fraction) -> int | None:
        if self._vs.frames:
            return int(self._vs.frames)
        if self._vs.duration and self._vs.time_base:
            return round(self._vs.duration * Fraction(self._vs.time_base) * fps)
        tagged = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", self._vs.metadata.get("DURATION", ""))
        if tagged:  # Matroska's per-stream duration: the container's may be a longer audio track's
            h, m, sec = tagged.groups()
            return round((3600 * int(h) + 60 * int(m) + Fraction(sec)) * fps)
        if self._container.duration:
            return round(Fraction(self._container.duration, av.time_base) * fps)
        return None

    def _demux_next(self) -> av.Packet | None:
        try:
            return next(self._demux)
        except StopIteration:
            return None
        except av.error.FFmpegError as e:
            if self._piped and "mp4" in self._container.format.name:  # mov,mp4,m4a,...: its index may come last
                raise InputError(f"{self.path}: an MP4/MOV read from a pipe needs its index first (ffmpeg "
                                 "-movflags +faststart); pass the file instead, or pipe Matroska, NUT or MPEG-TS") from None
            raise InputError(f"{self.path}: damaged input after {self.frames_read} frames ({_reason(e)})") from None

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame]:
        try:
            return self._vs.decode(packet)
        except av.error.FFmpegError as e:
            raise InputError(f"{self.path}: corrupt video data after {self.frames_read} frames ({_reason(e)})") from None

    def _next_packet(self) -> av.Packet | None:
        return self._pending.popleft() if self._pending else self._demux_next()

    def _stash_audio(self, packet: av.Packet) -> None:
        if packet.size:  # skip demux's empty end-of-stream marker
            self._audio_packets.append(
                AudioPacket(bytes(packet), packet.pts, packet.dts, packet.duration, bool(packet.is_keyframe))
            )

    def _fill(self) -> bool:
        """Demux and decode until a frame is queued; audio packets met go to take_audio()."""
        while not self._frames and not self._flushed:
            packet = self._next_packet()
            if packet is None:  # end of input without demux's flush marker
                self._flushed = True
                self._frames.extend(self._decode(None))
            elif packet.stream is self._vs:
                self._flushed = not packet.size  # demux's empty end-of-stream packet flushes the decoder
                self._frames.extend(self._decode(packet))
            else:
                self._stash_audio(packet)
        return bool(self._frames)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        while self._fill():
            yield self._frames.popleft()
        # Audio demuxed after the last video packet still belongs to take_audio().
        while (packet := self._next_packet()) is not None:
            if packet.stream is not self._vs:
                self._stash_audio(packet)

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """Any pixel format -> uint8 [H, W, 3]; swscale honours bit depth, matrix and range."""
        w, h = self._size
        if (frame.width, frame.height) != (w, h) and not self._warned_resize:
            warnings.warn(f"{self.path}: frame size changes mid-stream; scaling to {w}x{h}", stacklevel=3)
            self._warned_resize = True
        if self._alpha_unseen and frame.reformat(format="rgba").to_ndarray()[..., 3].min() < 255:
            warnings.warn(f"{self.path}: its alpha channel (transparency) is dropped: the model codes colour only, "
                          "and transparent pixels keep the colour they store", stacklevel=3)
            self._alpha_unseen = False
        rgb = self._reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation=_SWS_FLAGS).to_ndarray()
        if self._crop:
            rgb = rgb[: self._crop[1], : self._crop[0]]
        if self._rot:
            rgb = np.rot90(rgb, k=self._rot)
        return rgb

    def chunks(self) -> Iterator[np.ndarray]:
        """Yield uint8 [n, H, W, 3] RGB with n <= chunk_frames, holding at most one chunk."""
        shape = (self.chunk_frames, self.info.height, self.info.width, 3)
        buf = np.empty(shape, np.uint8)
        n = 0
        for frame in self._decoded():
            if self.frames_read == self.limit:
                self.cut = True
                self._audio_to_limit()
                break
            buf[n] = self._to_rgb(frame)
            n += 1
            self.frames_read += 1
            if n == self.chunk_frames:
                yield buf
                buf, n = np.empty(shape, np.uint8), 0
        if n:
            yield buf[:n]
        declared = self._vs.frames and self._vs.frames - round(self.started * self.info.fps)
        if declared and self.frames_read < min(declared, self.limit or declared):
            warnings.warn(
                f"{self.path}: decoded {self.frames_read} of the {declared} frames the stream declares"
                " (truncated or damaged input)",
                stacklevel=2,
            )

    @property
    def whole(self) -> bool:
        """Whether what was read is all of the input (not a part cut by ``start`` or ``limit``)."""
        return not self.start and not self.cut

    def _audio_end(self) -> Fraction:
        """Where the frame ``limit`` ends, in audio time_base units of the shifted timeline."""
        return self.limit / self.info.fps / self.audio.time_base

    def _audio_to_limit(self) -> None:
        """Stop at the frame limit, but first demux on to the audio of the frames read: it comes
        interleaved later in the file (or the stream) than their video."""
        if self.audio is None:
            return
        end = self._audio_end() + self._audio_shift  # in the stream's own times
        while (packet := self._next_packet()) is not None:
            if packet.stream is not self._vs:
                self._stash_audio(packet)
                if packet.pts is not None and packet.pts >= end:
                    return

    def take_audio(self) -> list[AudioPacket]:
        """Audio packets demuxed so far, in demux order; the list is emptied on each call. Their
        times count from the first video frame; when that is not at 0, packets that end by it
        are left out and one that overlaps it keeps a negative time. (A first frame at 0 leaves
        every packet as it was, AAC's priming packet before 0 included.) With a frame ``limit``,
        packets that start after the last frame read are left out."""
        packets, self._audio_packets = rebase(self._audio_packets, self._audio_shift), []
        if self.limit is not None and self.audio is not None:  # none past the last frame read
            end = self._audio_end()
            packets = [p for p in packets if p.pts is None or p.pts < end]
        return packets

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def probe(path: str | Path) -> tuple[VideoInfo, AudioTrack | None]:
    """Open, measure and close: the info and audio track without decoding the whole video."""
    with VideoReader(path, chunk_frames=1) as r:
        return r.info, r.audio


# ---- writing ------------------------------------------------------------------------------

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
#: Extensions of video files, those written here and other common ones: ``encode`` refuses them
#: as the name of a .vlat file.
VIDEO_SUFFIXES = frozenset(_FORMATS) | {
    ".avi", ".flv", ".m2ts", ".mpeg", ".mpg", ".mts", ".mxf", ".ogv", ".ts", ".wmv", ".3gp",
}
_CODEC_ALIASES = {
    "h264": "h264", "avc": "h264", "libx264": "h264", "x264": "h264",
    "h265": "h265", "hevc": "h265", "libx265": "h265", "x265": "h265",
    "vp9": "vp9", "libvpx-vp9": "vp9",
    "ffv1": "ffv1", "png": "png",
}  # fmt: skip
# codec -> (encoder, pixel format, containers it may go in)
_ENCODERS = {
    "h264": ("libx264", "yuv420p", {"mp4", "mov", "matroska"}),
    "h265": ("libx265", "yuv420p", {"mp4", "mov", "matroska"}),
    "vp9": ("libvpx-vp9", "yuv420p", {"webm", "matroska", "mp4"}),
    "ffv1": ("ffv1", "bgr0", {"matroska"}),  # RGB kept as RGB: the round trip is bit-exact
}
# 4:2:0 in these bitstreams cannot express an odd size: such pictures are written in 4:4:4,
# exact in every decoder, though some hardware and browser players cannot play that profile.
_EVEN_ONLY = {"h264", "h265"}
# Bitstreams that hold a sample aspect ratio themselves (VUI); VP9 and FFV1 rely on the
# container's field, which PyAV's muxing does not set.
_SAR_IN_BITSTREAM = {"h264", "h265"}
# Audio codecs a muxer lists as supported (its MP4 sibling takes them) but refuses when it
# writes the header: QuickTime has no Opus or FLAC sample entry.
_REFUSED_AUDIO = {"mov": {"opus", "flac"}}
# libx265 (this build) corrupts the heap on frames narrower than 64 px: pad tiny frames up.
_MIN_SIZE = {"h265": 64}


# x264/x265 speed presets, fastest first
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# Preset of decoded video: the VAE already set the error, and at CRF 18 veryfast adds next to
# nothing to it while running 2.4x faster than medium (which took a third of decode time).
DECODE_PRESET = "veryfast"


def _encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    if codec == "h264":
        return {"crf": str(crf), "preset": preset}
    if codec == "h265":
        return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if codec == "vp9":
        return {"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
    return {"level": "3", "g": "1", "slicecrc": "1"}  # ffv1: intra-only, checksummed slices


class VideoWriter:
    """Encode RGB chunks (and re-mux audio) to a file that appears only when close() succeeds."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: Fraction,
        codec: str | None = None,
        crf: int = 18,
        audio: AudioTrack | None = None,
        overwrite: bool = False,
        preset: str = "medium",
        sar: Fraction = Fraction(1),
        color: Color | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        if width < 1 or height < 1:
            raise UsageError(f"output size {width}x{height} is not positive")
        if not 0 <= crf <= 51:
            raise UsageError(f"crf {crf} is out of range 0..51")
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r} (use one of {', '.join(PRESETS)})")
        self.path = Path(path)
        self.width, self.height = width, height
        self.fps = Fraction(fps)
        self.sar = Fraction(sar)  # the pixels' aspect on screen, tagged on the stream (not on PNG frames)
        self.color = color  # the RGB's primaries and transfer, tagged on the stream (not on PNG frames)
        self.tags = tags or {}  # the source's tags about the recording (not on PNG frames)
        # BT.2020 pictures take the BT.2020 matrix, which HDR players expect; others BT.709's
        self._matrix = Colorspace.BT2020 if color and color.primaries == _BT2020 else Colorspace.ITU709
        self.frames_written = 0
        self._overwrite = overwrite
        self._crf, self._preset = crf, preset
        self._closed = False
        self._reformatter = VideoReformatter()
        self._audio_track = audio
        self._audio_dropped = False  # PNG frames: the track given is dropped, its packets ignored
        self.single_image = False  # one PNG file (out.png): a single frame
        self._astream: av.audio.stream.AudioStream | None = None
        self._transcoder: _AudioTranscoder | None = None

        wanted = None if codec is None else _CODEC_ALIASES.get(codec.lower())
        if codec is not None and wanted is None:
            raise UsageError(f"unsupported output codec {codec!r} (use h264, h265, vp9, ffv1 or png)")
        self.streamed = str(path) == "-"  # Matroska on stdout, for a player or ffmpeg: no file to publish
        suffix = ".mkv" if self.streamed else self.path.suffix.lower()
        is_png_target = not self.streamed and (is_pattern(self.path.name) or suffix in ("", ".png"))
        if self.streamed and wanted == "png":
            raise UsageError("- sends a video stream (Matroska) to stdout: PNG frames need a file, a folder or a pattern")
        if wanted == "png" or (wanted is None and is_png_target):
            if suffix in _FORMATS:
                raise UsageError(f"{path}: PNG goes to one image (out.png), a directory or a pattern like out/%05d.png")
            self._open_png()
            return
        fmt = _FORMATS.get(suffix)
        if fmt is None:
            raise UsageError(f"{self.path}: unsupported output extension {suffix!r} (use .mp4, .mov, .mkv, .webm, .png or a PNG directory)")
        self._codec = wanted or ("vp9" if fmt == "webm" else "h264")
        encoder, self._pix_fmt, containers = _ENCODERS[self._codec]
        if fmt not in containers:
            raise UsageError(f"{self.path}: codec {self._codec} cannot be stored in a {suffix} file")
        if self.streamed:
            target = sys.stdout.buffer
        else:
            self._check_target_file()
            target = self._temp_file()
        options = {"movflags": "+faststart+use_metadata_tags"} if fmt in ("mp4", "mov") else {}
        try:
            self._container = av.open(target, mode="w", format=fmt, options=options)
            self._setup_video(encoder)
            if audio is not None:
                self._setup_audio(audio, fmt)
        except BaseException:
            self._abort()
            raise

    # -- setup --
    def _temp_file(self) -> str:
        """The hidden file written in place of the output until close() publishes it."""
        fd, tmp = create_temp(self.path)  # not mkstemp: its 0600 would make the video private
        os.close(fd)
        self._tmp = Path(tmp)
        return tmp

    def _check_target_file(self) -> None:
        if not self.path.parent.is_dir():
            raise UsageError(f"{self.path}: output directory {self.path.parent} does not exist")
        if self.path.is_dir():
            raise UsageError(f"{self.path} is a directory")
        if self.path.exists() and not self._overwrite:
            raise UsageError(f"{self.path} already exists (use -y/--overwrite to replace it)")

    def _setup_video(self, encoder: str) -> None:
        if self._codec in _EVEN_ONLY and (self.width % 2 or self.height % 2):
            self._pix_fmt = "yuv444p"
            warnings.warn(f"{self.path}: {self.width}x{self.height} has an odd side, which 4:2:0 cannot store; "
                          f"writing {self._codec} in 4:4:4, which some players cannot play", stacklevel=3)
        least = _MIN_SIZE.get(self._codec, 1)
        self._enc_w, self._enc_h = max(self.width, least), max(self.height, least)
        try:
            vs = self._container.add_stream(encoder, rate=self.fps, options=_encoder_options(self._codec, self._crf, self._preset))
        except (av.error.FFmpegError, ValueError) as e:
            raise UsageError(f"encoder {encoder} is not available ({_reason(e)})") from None
        vs.width, vs.height, vs.pix_fmt = self._enc_w, self._enc_h, self._pix_fmt
        vs.codec_context.time_base = 1 / self.fps
        if self.sar != 1:
            vs.codec_context.sample_aspect_ratio = self.sar
            if self._codec not in _SAR_IN_BITSTREAM:
                warnings.warn(f"{self.path}: {self._codec} cannot carry the source's {self.sar.numerator}:{self.sar.denominator} "
                              "pixel aspect here (the container's field is out of PyAV's reach); players will show "
                              "the picture with square pixels (use h264 or h265 to keep it)", stacklevel=3)
        vs.thread_type = "AUTO"
        cc = vs.codec_context
        if self._pix_fmt.startswith("yuv"):  # tag what write() produces so decoders invert it exactly
            cc.colorspace = _BT2020 if self._matrix is Colorspace.BT2020 else _BT709
            cc.color_range = 1  # limited
            cc.color_primaries = cc.color_trc = _BT709
        if self.color is not None:
            cc.color_primaries, cc.color_trc = self.color.primaries, self.color.transfer
        if self._codec == "h265" and self._container.format.name in ("mp4", "mov"):
            vs.codec_tag = "hvc1"  # the tag Apple players require
        self._container.metadata.update(self.tags)
        if (self._enc_w, self._enc_h) != (self.width, self.height):
            self._container.metadata[SIZE_TAG] = f"{self.width}x{self.height}"
        self._vstream = vs

    def _setup_audio(self, track: AudioTrack, fmt: str) -> None:
        """Stream-copy when the container takes the codec, else transcode (AAC; Opus for webm)."""
        if track.codec in self._container.supported_codecs and track.codec not in _REFUSED_AUDIO.get(fmt, ()):
            try:
                stream = self._container.add_stream(track.codec, rate=track.sample_rate, layout=track.layout)
                cc = stream.codec_context
                cc.time_base = track.time_base
                if track.bit_rate:
                    cc.bit_rate = track.bit_rate
                # Open the (unused) encoder now, then put the source's extradata in place of
                # its own: the header is written from this context, the packets are copied.
                cc.open()
                cc.extradata = track.extradata
                self._astream = stream
                if track.language:
                    stream.metadata["language"] = track.language
                return
            except (av.error.FFmpegError, ValueError):
                pass  # no usable encoder context to describe this codec: transcode below
        target = "libopus" if fmt == "webm" else "aac"
        warnings.warn(
            f"{self.path}: {track.codec} audio cannot be copied into a {self.path.suffix} file; transcoding to {target}",
            stacklevel=3,
        )
        self._transcoder = _AudioTranscoder(self._container, track, target)

    def _open_png(self) -> None:
        """PNG frames: path is a directory (frames %06d.png), a pattern like out/%05d.png, or
        one image (out.png), which holds a single frame."""
        self._codec = "png"
        self.single_image = not is_pattern(self.path.name) and self.path.suffix.lower() == ".png"
        if self.color is not None and self.color.wide:
            warnings.warn(f"{self.path}: PNG does not record the source's wide-gamut or HDR colours (primaries "
                          f"{self.color.primaries}, transfer {self.color.transfer}): viewers will show its RGB as sRGB",
                          stacklevel=3)
        if self.single_image:
            self._check_target_file()
            self._audio_track, self._audio_dropped = None, self._audio_track is not None  # a still has no sound to lose
            self._open_image2(self._temp_file(), {"update": "1"})  # image2 rewrites one file instead of numbering
            return
        if is_pattern(self.path.name):
            self._png_dir, self._png_pattern = self.path.parent, self.path.name
            try:
                self._png_pattern % 1
            except (TypeError, ValueError):
                raise UsageError(f"{self.path}: bad frame pattern (use e.g. out/%05d.png)") from None
        else:
            self._png_dir, self._png_pattern = self.path, "%06d.png"
        if not self._png_dir.parent.is_dir() or (self._png_dir.exists() and not self._png_dir.is_dir()):
            raise UsageError(f"{self._png_dir}: cannot create frames there")
        occupied = (self._png_dir / (self._png_pattern % 1)).exists() or (
            not is_pattern(self.path.name) and self._png_dir.is_dir() and any(self._png_dir.iterdir())
        )
        if occupied and not self._overwrite:
            raise UsageError(f"{self.path} already exists (use -y/--overwrite to replace it)")
        if self._audio_track is not None:
            warnings.warn(f"{self.path}: PNG frames cannot carry audio; the audio track is dropped", stacklevel=3)
            self._audio_track, self._audio_dropped = None, True
        parent = self._png_dir if self._png_dir.is_dir() else self._png_dir.parent
        self._tmp = Path(create_temp(parent / self._png_dir.name, directory=True)[1])
        self._open_image2(str(self._tmp / self._png_pattern), {})

    def _open_image2(self, target: str, options: dict[str, str]) -> None:
        try:
            self._container = av.open(target, mode="w", format="image2", options=options)
            # zlib level 1: 8x faster than the default for 11 % more bytes (a 480p frame in 12 ms,
            # not 100: PNG frames feed pipelines, where the default made decoding 4x slower)
            vs = self._container.add_stream("png", rate=self.fps, options={"compression_level": "1"})
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, "rgb24"
            self._vstream = vs
            self._pix_fmt = "rgb24"
            self._enc_w, self._enc_h = self.width, self.height
        except BaseException:
            self._abort()
            raise

    # -- writing --
    def write(self, frames: np.ndarray) -> None:
        """Encode uint8 [n, H, W, 3] RGB frames."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected uint8 [n, {self.height}, {self.width}, 3], got {frames.dtype} {list(frames.shape)}")
        pad_h, pad_w = self._enc_h - self.height, self._enc_w - self.width
        if pad_h or pad_w:  # replicate the edge so the hidden rows/columns cost ~no bits
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self.single_image and self.frames_written + frames.shape[0] > 1:
            raise UsageError(f"{self.path}: one PNG image holds one frame (use a pattern like out/%05d.png for more)")
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if self._pix_fmt != "rgb24":
                frame = self._reformatter.reformat(
                    frame,
                    format=self._pix_fmt,
                    dst_colorspace=self._matrix,
                    dst_color_range=ColorRange.MPEG if self._pix_fmt.startswith("yuv") else None,
                    interpolation=_SWS_FLAGS,
                )
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            self._container.mux(self._vstream.encode(frame))
            self.frames_written += 1

    def write_audio(self, packets: list[AudioPacket]) -> None:
        """Mux audio packets from the reader; the muxer interleaves them with the video."""
        if self._audio_track is None:
            if packets and not self._audio_dropped:
                raise ValueError("VideoWriter was created without an audio track")
            return
        tb = self._audio_track.time_base
        for p in packets:
            packet = av.Packet(p.data)
            packet.pts, packet.dts, packet.duration = p.pts, p.dts, p.duration or 0
            packet.time_base = tb
            packet.is_keyframe = p.keyframe
            if self._transcoder is not None:
                self._transcoder.feed(packet)
            else:
                packet.stream = self._astream
                self._container.mux(packet)

    def close(self) -> None:
        """Flush encoders and publish the file; on any failure the partial output is removed."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.frames_written == 0:
                raise ValueError(f"{self.path}: no frames were written")
            self._container.mux(self._vstream.encode(None))
            if self._transcoder is not None:
                self._transcoder.flush()
            self._container.close()
            self._publish()
        except BaseException:
            self._abort()
            raise

    def _publish(self) -> None:
        if self.streamed:
            return
        if self._codec != "png" or self.single_image:
            os.replace(self._tmp, self.path)
            return
        if not self._png_dir.exists():
            os.replace(self._tmp, self._png_dir)
            return
        # Replace into an existing directory: new frames in, stale frames of the same pattern out.
        written = {f.name for f in self._tmp.iterdir()}
        stale = _pattern_regex(self._png_pattern)
        for f in self._png_dir.iterdir():
            if f.name not in written and stale.fullmatch(f.name):
                f.unlink()
        for name in written:
            os.replace(self._tmp / name, self._png_dir / name)
        self._tmp.rmdir()

    def _abort(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except (av.error.FFmpegError, ValueError, OSError):
                pass  # the output is discarded anyway
        if self.streamed:
            return  # what went out cannot be called back; the reader of the pipe sees it end early
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._abort()


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """image2 pattern ('%05d.png') -> regex matching the names it produces."""
    parts = _NUMBER_FIELD.split(pattern, maxsplit=1)
    return re.compile(re.escape(parts[0]) + r"\d+" + (re.escape(parts[1]) if len(parts) > 1 else ""))


class _AudioTranscoder:
    """Decode audio packets and re-encode them for a container that cannot hold the source codec."""

    def __init__(self, container: av.container.OutputContainer, track: AudioTrack, encoder: str) -> None:
        self._container = container
        try:
            self._dec = av.CodecContext.create(track.codec, "r")
        except (av.error.FFmpegError, ValueError) as e:
            raise UsageError(f"cannot decode {track.codec} audio to transcode it ({_reason(e)})") from None
        self._dec.sample_rate = track.sample_rate
        self._dec.layout = track.layout
        if track.extradata:
            self._dec.extradata = track.extradata
        rate = 48000 if encoder == "libopus" else track.sample_rate
        layout = track.layout if track.channels <= 2 else "stereo"  # keep AAC/Opus setups simple
        self._stream = container.add_stream(encoder, rate=rate, layout=layout)
        if track.language:
            self._stream.metadata["language"] = track.language
        cc = self._stream.codec_context
        cc.time_base = Fraction(1, rate)
        cc.open()  # now frame_size is known
        self._resampler = av.AudioResampler(format=cc.format.name, layout=layout, rate=rate, frame_size=cc.frame_size or None)
        self._rate = rate
        self._samples = 0

    def feed(self, packet: av.Packet | None) -> None:
        for frame in self._dec.decode(packet):
            self._encode(self._resampler.resample(frame))

    def _encode(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            frame.pts, frame.time_base = self._samples, Fraction(1, self._rate)
            self._samples += frame.samples
            self._container.mux(self._stream.encode(frame))

    def flush(self) -> None:
        self.feed(None)
        self._encode(self._resampler.resample(None))
        self._container.mux(self._stream.encode(None))

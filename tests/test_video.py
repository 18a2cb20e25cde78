"""vaecodec.video on real files made with PyAV/lavfi in tmp_path (tiny sizes, CPU only)."""

from __future__ import annotations

import json
import os
import re
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vaecodec.errors import FormatError, InputError, UsageError
from vaecodec.video import (
    _PEEK_PACKETS,
    SIZE_TAG,
    AudioPacket,
    AudioTrack,
    Color,
    VideoReader,
    VideoWriter,
    pack_packets,
    probe,
    unpack_packets,
)


def smooth_frames(n: int, h: int, w: int) -> np.ndarray:
    """Moving colour gradients: content a lossy codec keeps well, asymmetric so flips show."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = np.arange(n)[:, None, None]
    r = 128 + 100 * np.sin(xx / w * 3 + t * 0.3)
    g = 40 + 180 * yy / h + 0 * t
    b = 128 + 90 * np.cos((xx + 2 * yy) / (w + h) * 4 - t * 0.2)
    return np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8)


def noise_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def read_all(path: Path | str, chunk_frames: int = 4) -> tuple[np.ndarray, VideoReader]:
    with VideoReader(path, chunk_frames=chunk_frames) as r:
        chunks = list(r.chunks())
    assert all(len(c) <= chunk_frames for c in chunks)
    return np.concatenate(chunks), r


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def write_with_pyav(path: Path, frames: np.ndarray, fps: Fraction, encoder: str, pix_fmt: str, **stream_kw) -> None:
    """Fixture writer independent of VideoWriter, so reader tests do not depend on it."""
    with av.open(str(path), "w") as out:
        s = out.add_stream(encoder, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for k, v in stream_kw.items():
            getattr(s, k)(*v) if callable(getattr(s, k, None)) else setattr(s, k, v)
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))


def make_clip_with_aac(path: Path, n_frames: int = 20, fps: int = 20) -> None:
    """A small H.264 + 48 kHz stereo AAC sine clip, n_frames / fps seconds long."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("aac", rate=48000, layout="stereo")
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000, frame_size=1024)
        with av.open(f"sine=frequency=440:duration={n_frames / fps}:sample_rate=48000", format="lavfi") as src:
            for frame in list(src.decode(audio=0)) + [None]:
                for g in resampler.resample(frame):
                    out.mux(aus.encode(g))
        out.mux(aus.encode(None))
        for i, rgb in enumerate(smooth_frames(n_frames, 48, 64)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))


def audio_packets_of(path: Path) -> tuple[AudioTrack, list[bytes], float]:
    """Independent look at a file's audio: track, packet payloads, decoded duration in s."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        track = AudioTrack.from_stream(s)
        payloads = [bytes(p) for p in c.demux(s) if p.size]
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    return track, payloads, samples / track.sample_rate


# ---- reading ------------------------------------------------------------------------------


def test_lavfi_source_streams_in_chunks_with_exact_ntsc_rate() -> None:
    with VideoReader("lavfi:testsrc2=size=64x48:rate=30000/1001:duration=0.5", chunk_frames=4) as r:
        assert r.info.fps == Fraction(30000, 1001)
        assert (r.info.width, r.info.height) == (64, 48)
        sizes = [c.shape for c in r.chunks()]
        assert r.frames_read == 15 == sum(s[0] for s in sizes)
    assert sizes[0] == (4, 48, 64, 3) and all(s[0] <= 4 for s in sizes)


def test_of_several_audio_tracks_the_default_one_is_kept_with_its_language(tmp_path: Path) -> None:
    """A film with an English and a French track (French marked default): the reader keeps
    the one a player would start with and says the other goes; written out, copied or
    transcoded, the track still says it is French."""
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        tracks = [out.add_stream("aac", rate=rate) for rate in (44100, 48000)]
        for track, language, default in zip(tracks, ("eng", "fra"), (0, 1)):
            track.metadata["language"] = language
            track.disposition = av.stream.Disposition(default)
        for frame in smooth_frames(10, 48, 64):
            out.mux(v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        out.mux(v.encode(None))
        for track in tracks:
            with av.open(f"sine=duration=0.4:sample_rate={track.rate}", format="lavfi") as sine:
                for f in sine.decode(audio=0):
                    f.pts = None
                    out.mux(track.encode(f))
            out.mux(track.encode(None))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with VideoReader(path) as r:
            assert r.audio.sample_rate == 48000
            list(r.chunks())
            packets = r.take_audio()
            assert packets  # the kept track's packets come through
    assert [str(w.message).split(": ", 1)[1] for w in seen] == ["2 audio tracks; only track 2 (fra) is kept"]
    assert r.audio.language == "fra" and AudioTrack.from_dict(r.audio.to_dict()) == r.audio
    for out in ("back.mp4", "back.webm"):  # copied, and transcoded to Opus: the language stays
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "transcoding to libopus"
            with VideoWriter(tmp_path / out, 64, 48, Fraction(25), audio=r.audio) as w:
                w.write(smooth_frames(10, 48, 64))
                w.write_audio(packets)
        with av.open(str(tmp_path / out)) as c:
            assert c.streams.audio[0].language == "fra", out


def test_dropped_subtitles_are_named(tmp_path: Path) -> None:
    """A film's subtitle tracks cannot come back; the reader says so instead of losing them."""
    path = tmp_path / "film.mkv"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for _ in range(2):
            out.add_stream("ass").codec_context.extradata = b"[Script Info]\nScriptType: v4.00+\n"
        for frame in smooth_frames(3, 48, 64):
            out.mux(v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        out.mux(v.encode(None))
    with pytest.warns(UserWarning, match="film.mkv: 2 subtitle tracks dropped"):
        VideoReader(path).close()


def test_an_mp4_cut_short_says_so(tmp_path: Path) -> None:
    """A recording or copy that did not finish has its media but not the index MP4 writes at
    the end: "Invalid data found" would leave the user guessing."""
    path = tmp_path / "whole.mp4"
    write_with_pyav(path, smooth_frames(20, 48, 64), Fraction(25), "libx264", "yuv420p")
    data = path.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")  # PyAV's MP4 muxer writes the index last
    (tmp_path / "cut.mp4").write_bytes(data[: data.index(b"moov") - 4])
    with pytest.raises(InputError, match=r"cut\.mp4: the MP4 has no index \(moov box\): the file was cut short"):
        VideoReader(tmp_path / "cut.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\0\0\0\x18ftypisom" + bytes(300))  # not cut short: just not a video
    with pytest.raises(InputError, match="cannot open as video"):
        VideoReader(tmp_path / "junk.mp4")


def test_interlaced_video_is_named(tmp_path: Path) -> None:
    """Broadcast and camcorder video in fields would come back combed without a word."""
    path = tmp_path / "fields.mkv"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25, options={"x264-params": "interlaced=1:tff=1"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for frame in smooth_frames(4, 48, 64):
            out.mux(v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        out.mux(v.encode(None))
    with pytest.warns(UserWarning, match="interlaced video .* deinterlace it first"):
        VideoReader(path).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and progressive video hears nothing
        write_with_pyav(tmp_path / "p.mkv", smooth_frames(4, 48, 64), Fraction(25), "ffv1", "bgr0")
        VideoReader(tmp_path / "p.mkv").close()


def test_transparency_is_named_once_when_a_frame_has_it(tmp_path: Path) -> None:
    """Only a frame with see-through pixels makes the reader say the alpha channel goes (here
    the third; an opaque alpha channel says nothing, above), and only once."""
    path = tmp_path / "rgba.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 16, "bgra"
        for i in range(5):
            rgba = np.full((16, 32, 4), 255, np.uint8)
            rgba[:4, :4, 3] = 128 if i >= 2 else 255
            out.mux(s.encode(av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format="bgra")))
        out.mux(s.encode(None))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        read_all(path)
    assert [str(w.message).split(": ", 1)[1][:18] for w in seen] == ["its alpha channel "]


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p", "gray", "bgra", "yuv444p12le"])
def test_non_rgb_and_high_bit_depth_inputs_become_correct_rgb(tmp_path: Path, pix_fmt: str) -> None:
    src = smooth_frames(3, 48, 64)
    if pix_fmt == "gray":  # gray can only hold R=G=B
        src = np.repeat(src[..., 1:2], 3, axis=-1)
    path = tmp_path / "in.mkv"
    write_with_pyav(path, src, Fraction(25), "ffv1", pix_fmt)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got, r = read_all(path)
    assert not seen, [str(w.message) for w in seen]  # an opaque alpha channel (most GIFs, RGBA exports) loses nothing
    assert r.info.pix_fmt == pix_fmt
    assert got.shape == src.shape
    # A 10/12-bit frame read as 8-bit bytes, or a wrong matrix, is off by tens of levels.
    assert np.abs(got.astype(int) - src).mean() < 1.5, pix_fmt
    assert psnr(got, src) > 38


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotation_metadata_is_applied_to_pixels(tmp_path: Path, degrees: int) -> None:
    src = smooth_frames(2, 48, 64)
    path = tmp_path / "rot.mp4"
    write_with_pyav(path, src, Fraction(25), "libx264", "yuv444p", set_display_rotation=(degrees,))
    got, r = read_all(path)
    k = round(degrees / 90) % 4
    assert r.info.rotation == k * 90
    expected = np.rot90(src, k=k, axes=(1, 2))
    assert got.shape == expected.shape
    assert (r.info.width, r.info.height) == (expected.shape[2], expected.shape[1])
    assert psnr(got, expected) > 35


@pytest.mark.parametrize("degrees", [0, 90])
def test_anamorphic_pixels_are_read_and_written(tmp_path: Path, degrees: int) -> None:
    """A 4:3 sample aspect ratio (DVD/HDV-style wide pictures in narrow pixels) is read, turned
    with the picture, and written back on H.264; square pixels keep the header as it was."""
    src = tmp_path / "sar.mp4"
    write_with_pyav(src, smooth_frames(3, 48, 64), Fraction(25), "libx264", "yuv420p",
                    set_display_rotation=(degrees,))
    _, r = read_all(src)
    assert r.info.sar == 1 and "sar" not in r.info.to_dict()
    write_with_pyav(src, smooth_frames(3, 48, 64), Fraction(25), "libx264", "yuv420p",  # again, narrow pixels
                    set_display_rotation=(degrees,), sample_aspect_ratio=Fraction(4, 3))
    _, r = read_all(src)
    want = Fraction(4, 3) if degrees == 0 else Fraction(3, 4)
    assert r.info.sar == want and r.info.to_dict()["sar"] == f"{want.numerator}/{want.denominator}"
    with VideoWriter(tmp_path / "out.mp4", 64, 48, Fraction(25), sar=Fraction(4, 3)) as w:
        w.write(smooth_frames(2, 48, 64))
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(4, 3)
    with pytest.warns(UserWarning, match="vp9 cannot carry the source's 4:3 pixel aspect"):
        with VideoWriter(tmp_path / "out.webm", 64, 48, Fraction(25), sar=Fraction(4, 3)) as w:
            w.write(smooth_frames(2, 48, 64))


def test_vfr_input_rate_comes_from_frame_times(tmp_path: Path) -> None:
    """Frames alternate 20 ms / 40 ms apart: mean 30 ms, so 100/3 fps, and no frame is lost."""
    path = tmp_path / "vfr.mkv"
    times_ms = np.concatenate([[0], np.cumsum([20, 40] * 15)])
    with av.open(str(path), "w") as out:
        s = out.add_stream("ffv1", rate=50)
        s.width, s.height, s.pix_fmt = 32, 24, "bgr0"
        s.codec_context.time_base = Fraction(1, 1000)
        for t, rgb in zip(times_ms, smooth_frames(len(times_ms), 24, 32)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")
            f.pts, f.time_base = int(t), Fraction(1, 1000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    with pytest.warns(UserWarning, match=r"uneven frame times \(frames 20 to 40 ms apart: .*\); .* 33\.333 fps"):
        got, r = read_all(path)
    assert len(got) == len(times_ms)
    assert r.info.fps == Fraction(100, 3)


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(60000, 1001), Fraction(120000, 1001)])
def test_matroska_rate_is_exact_with_b_frames(tmp_path: Path, fps: Fraction) -> None:
    """x264 reorders frames (B-pyramid), so the packets peeked at open time miss the frames shown
    just before the last one read; Matroska keeps millisecond times and declares 59.94 fps as
    19001/317. Neither may reach the file: these decoded back at 23.5 and 19001/317 fps."""
    path = tmp_path / "b.mkv"
    write_with_pyav(path, smooth_frames(72, 48, 64), fps, "libx264", "yuv420p",
                    options={"x264-params": "bframes=3:b-pyramid=normal:b-adapt=0:scenecut=0"})
    with av.open(str(path)) as c:
        peeked = sorted([p.pts for p in c.demux(video=0) if p.size][:_PEEK_PACKETS])
    assert np.diff(peeked).max() > 1.5 * np.diff(peeked).min()  # the fixture's peek has a hole
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and its steady frame times raise no "uneven" warning
        got, r = read_all(path)
    assert r.info.fps == fps
    assert len(got) == 72


def test_matroska_frame_count_comes_from_the_video_track(tmp_path: Path) -> None:
    """Matroska has no frame count; its container duration is the longer AAC track's (encoder
    padding), one frame too many at 50 fps, so the estimate (progress total, chunk plan) reads
    the video track's DURATION tag."""
    path = tmp_path / "av.mkv"
    make_clip_with_aac(path, n_frames=50, fps=50)
    with av.open(str(path)) as c:
        assert round(c.duration / av.time_base * 50) == 51
    with VideoReader(path) as r:
        assert (r.info.frames, r.info.fps) == (50, 50)


def test_missing_garbage_and_audio_only_inputs_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        VideoReader(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="junk.mp4"):
        VideoReader(junk)
    audio_only = tmp_path / "a.mka"
    with av.open(str(audio_only), "w") as out:
        s = out.add_stream("flac", rate=8000, layout="mono")
        with av.open("sine=duration=0.1:sample_rate=8000", format="lavfi") as src:
            for f in src.decode(audio=0):
                out.mux(s.encode(f))
        out.mux(s.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        VideoReader(audio_only)


def test_zero_frame_video_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.mkv"  # a video track without frames next to an audio track with data
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 24, "bgr0"
        aus = out.add_stream("flac", rate=8000, layout="mono")
        with av.open("sine=duration=0.2:sample_rate=8000", format="lavfi") as src:
            for f in src.decode(audio=0):
                out.mux(aus.encode(f))
        out.mux(aus.encode(None))
    with pytest.raises(InputError, match="empty.mkv has no video frames"):
        VideoReader(path)
    header_only = tmp_path / "header.mkv"
    with av.open(str(header_only), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 24, "bgr0"
        out.start_encoding()
    with pytest.raises(InputError, match="has no video frames"):
        VideoReader(header_only)


def test_truncated_input_warns_with_fewer_frames(tmp_path: Path) -> None:
    src = smooth_frames(20, 48, 64)
    full = tmp_path / "full.mp4"
    with VideoWriter(full, 64, 48, Fraction(25)) as w:  # faststart: index first, data after
        w.write(src)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.9)])
    with pytest.warns(UserWarning) as seen:  # with it, maybe "uneven frame times": the cut lost reordered frames
        got, r = read_all(cut)
    assert any(re.search(r"decoded (\d+) of the 20 frames", str(w.message)) for w in seen)
    assert 0 < len(got) < 20 and r.frames_read == len(got)


def test_corrupt_frame_mid_stream_raises_input_error(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, rgb in enumerate(smooth_frames(6, 24, 32), start=1):
        av.VideoFrame.from_ndarray(rgb, format="rgb24").save(str(frames / f"{i:04d}.png"))
    (frames / "0004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)
    seen = 0
    with pytest.raises(InputError, match="corrupt video data after 3 frames"):
        with VideoReader(frames / "%04d.png", chunk_frames=1) as r:
            for chunk in r.chunks():
                seen += len(chunk)
    assert seen == 3


def test_probe_reports_info_without_reading_everything(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    make_clip_with_aac(path)
    info, audio = probe(path)
    assert (info.width, info.height, info.fps, info.frames, info.codec) == (64, 48, Fraction(20), 20, "h264")
    assert audio is not None and (audio.codec, audio.sample_rate, audio.channels) == ("aac", 48000, 2)
    assert json.loads(json.dumps(info.to_dict()))["fps"] == "20/1"


# ---- writing ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec,suffix", [("h264", ".mp4"), ("h265", ".mkv")])
def test_lossy_roundtrip_keeps_odd_size_and_ntsc_rate(tmp_path: Path, codec: str, suffix: str) -> None:
    """An odd size is stored exactly, in 4:4:4 (with a warning), so any decoder shows 65x49;
    only libx265's 64 px minimum still pads, with a tag that VideoReader crops back by."""
    src = smooth_frames(7, 49, 65)
    path = tmp_path / f"odd{suffix}"
    with pytest.warns(UserWarning, match="4:4:4"), VideoWriter(path, 65, 49, Fraction(30000, 1001), codec=codec) as w:
        w.write(src[:4])
        w.write(src[4:])
    got, r = read_all(path)
    assert got.shape == src.shape
    assert r.info.fps == Fraction(30000, 1001)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.pix_fmt == "yuv444p"
        tags = {k.lower(): v for k, v in c.metadata.items()}
        if codec == "h264":
            assert (vs.width, vs.height) == (65, 49) and SIZE_TAG not in tags
        else:
            assert (vs.width, vs.height) == (65, 64) and tags[SIZE_TAG] == "65x49"
    assert psnr(got, src) > 36


def test_start_skips_to_the_frame_shown_then_in_files_and_streams(tmp_path: Path) -> None:
    """``start`` makes the frame shown at that time the first: a file is seeked to the keyframe
    before it (short GOPs with B-frames, so the seek lands mid-file) and decoded on from there;
    a filter source, which cannot seek, is decoded up to it. Either way the frames are those
    a full read gives from there, and the count estimate and truncation check know it."""
    path = tmp_path / "gop.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"g": "6", "bf": "2", "crf": "10", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for frame in smooth_frames(40, 48, 64):
            out.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        out.mux(s.encode(None))
    lavfi = "lavfi:testsrc2=size=64x48:rate=25:duration=1.6"
    for src in (path, lavfi):
        full, _ = read_all(src)
        for start, first in (("0.5", 13), (Fraction(13, 25), 13), ("0:01.52", 38), (0, 0)):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no "decoded 27 of the 40 frames" warning
                with VideoReader(src, start=start) as r:
                    got = np.concatenate(list(r.chunks()))
            assert np.array_equal(got, full[first:]), (src, start)
            assert r.info.frames in (None, 40 - first)
        with pytest.raises(InputError, match="past its last frame"):
            VideoReader(src, start=2)
    # frame 45 of 29.97 fps video is shown at 1.5015 s, printed to the millisecond as 1.502
    with VideoReader("lavfi:testsrc2=size=64x48:rate=30000/1001:duration=2", start="1.502") as r:
        later = np.concatenate(list(r.chunks()))
    assert np.array_equal(later, read_all("lavfi:testsrc2=size=64x48:rate=30000/1001:duration=2")[0][45:])


@pytest.mark.parametrize("color", [None, Color(9, 18), Color(6, 6)], ids=["bt709", "bt2020-hlg", "smpte170m"])
def test_h264_keeps_flat_colours(tmp_path: Path, color: Color | None) -> None:
    """Saturated flat patches come back within a level or two: the RGB<->YUV matrix, range and
    rounding match on both sides (BT.601/709 or range mix-ups are off by 5-30 levels, and
    swscale's default fast path is biased by about -1.2 on every channel). The stream says
    what the RGB means: BT.709, or the source's primaries and transfer (HDR takes the BT.2020
    matrix, which HDR players expect)."""
    colours = np.array([[200, 30, 40], [20, 180, 60], [40, 50, 210], [128, 128, 128], [250, 240, 20], [15, 15, 15]])
    src = np.zeros((2, 32, 96, 3), np.uint8)
    for i, c in enumerate(colours):
        src[:, (i // 3) * 16 : (i // 3 + 1) * 16, (i % 3) * 32 : (i % 3 + 1) * 32] = c
    path = tmp_path / "flat.mp4"
    with VideoWriter(path, 96, 32, Fraction(25), color=color) as w:
        w.write(src)
    got, r = read_all(path)
    got = got.astype(int)
    assert r.info.color == color
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        primaries, transfer = (color.primaries, color.transfer) if color else (1, 1)
        assert (cc.colorspace, cc.color_primaries, cc.color_trc) == (9 if primaries == 9 else 1, primaries, transfer)
    errors = []
    for i, c in enumerate(colours):
        y, x = (i // 3) * 16 + 8, (i % 3) * 32 + 16
        errors.append(got[:, y - 4 : y + 4, x - 8 : x + 8].reshape(-1, 3).mean(0) - c)
    errors = np.array(errors)  # [patch, channel]
    assert np.abs(errors).max() < 2.5, errors  # 8-bit YUV quantisation only
    assert np.abs(errors.mean(0)).max() < 0.8, errors.mean(0)  # the fast path is ~-1.2 here


def test_png_warns_only_for_colours_that_srgb_would_show_wrong(tmp_path: Path) -> None:
    """PNG has no field for HDR or wide-gamut colours: such frames warn; BT.601's primaries,
    a shade off sRGB, do not."""
    for color, warned in ((Color(9, 18), True), (Color(12, 13), True), (Color(6, 6), False), (None, False)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with VideoWriter(tmp_path / f"{color}.png".replace(" ", ""), 8, 8, Fraction(25), color=color, overwrite=True) as w:
                w.write(np.zeros((1, 8, 8, 3), np.uint8))
        assert [("wide-gamut or HDR" in str(m.message)) for m in seen] == ([True] if warned else []), color


def test_ffv1_roundtrip_is_bit_exact(tmp_path: Path) -> None:
    src = noise_frames(5, 25, 33)
    path = tmp_path / "lossless.mkv"
    with VideoWriter(path, 33, 25, Fraction(24000, 1001), codec="ffv1") as w:
        w.write(src)
    got, r = read_all(path)
    assert np.array_equal(got, src)
    assert r.info.fps == Fraction(24000, 1001) and r.info.codec == "ffv1"


def test_png_directory_and_pattern_roundtrip_bit_exact(tmp_path: Path) -> None:
    src = noise_frames(5, 17, 23)
    with VideoWriter(tmp_path / "dir", 23, 17, Fraction(25)) as w:
        w.write(src)
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == [f"{i:06d}.png" for i in range(1, 6)]
    assert np.array_equal(read_all(tmp_path / "dir")[0], src)

    (tmp_path / "seq").mkdir()
    pattern = tmp_path / "seq" / "f_%03d.png"
    with VideoWriter(pattern, 23, 17, Fraction(25), codec="png") as w:
        w.write(src)
    assert np.array_equal(read_all(pattern)[0], src)
    # Replacing with a shorter sequence must not leave stale frames behind.
    with pytest.raises(UsageError, match="already exists"):
        VideoWriter(pattern, 23, 17, Fraction(25))
    with VideoWriter(pattern, 23, 17, Fraction(25), overwrite=True) as w:
        w.write(src[:2])
    assert np.array_equal(read_all(pattern)[0], src[:2])
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["f_001.png", "f_002.png"]


def test_vp9_webm_by_extension(tmp_path: Path) -> None:
    src = smooth_frames(3, 24, 32)
    path = tmp_path / "x.webm"
    with VideoWriter(path, 32, 24, Fraction(25)) as w:
        w.write(src)
    got, r = read_all(path)
    assert r.info.codec == "vp9" and psnr(got, src) > 33


def test_writer_is_atomic_and_refuses_to_clobber(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, 32, 24, Fraction(25)) as w:
            w.write(smooth_frames(3, 24, 32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temp file
    path.write_bytes(b"precious")
    with pytest.raises(UsageError, match="already exists"):
        VideoWriter(path, 32, 24, Fraction(25))
    assert path.read_bytes() == b"precious"
    with VideoWriter(path, 32, 24, Fraction(25), overwrite=True) as w:
        w.write(smooth_frames(2, 24, 32))
    assert probe(path)[0].frames == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_outputs_get_the_umask_mode_not_a_private_one(tmp_path: Path) -> None:
    """A decoded video (and a PNG frame directory) is as readable as any file the user makes:
    created with 0o666 / 0o777 under the umask, not with a temp file's 0600 / 0700."""
    old = os.umask(0o022)
    try:
        with VideoWriter(tmp_path / "out.mp4", 32, 24, Fraction(25)) as w:
            w.write(smooth_frames(2, 24, 32))
        with VideoWriter(tmp_path / "frames", 32, 24, Fraction(25)) as w:
            w.write(smooth_frames(2, 24, 32))
    finally:
        os.umask(old)
    assert (tmp_path / "out.mp4").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "frames").stat().st_mode & 0o777 == 0o755


def test_writer_rejects_unsupported_targets(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="extension"):
        VideoWriter(tmp_path / "x.avi3", 32, 24, Fraction(25))
    with pytest.raises(UsageError, match="ffv1 cannot be stored"):
        VideoWriter(tmp_path / "x.mp4", 32, 24, Fraction(25), codec="ffv1")
    with pytest.raises(UsageError, match="unsupported output codec"):
        VideoWriter(tmp_path / "x.mp4", 32, 24, Fraction(25), codec="mpeg2")
    with pytest.raises(UsageError, match="does not exist"):
        VideoWriter(tmp_path / "no" / "x.mp4", 32, 24, Fraction(25))
    assert list(tmp_path.iterdir()) == []


# ---- audio --------------------------------------------------------------------------------


def copy_through(src: Path, dst: Path, chunk_frames: int = 4) -> None:
    """What codec.py does: read chunks + audio, write them back."""
    with VideoReader(src, chunk_frames=chunk_frames) as r, VideoWriter(
        dst, r.info.width, r.info.height, r.info.fps, audio=r.audio
    ) as w:
        for chunk in r.chunks():
            w.write(chunk)
            w.write_audio(r.take_audio())
        w.write_audio(r.take_audio())


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_aac_track_is_copied_bit_exact(tmp_path: Path, suffix: str) -> None:
    src = tmp_path / "src.mp4"
    make_clip_with_aac(src)
    dst = tmp_path / f"dst{suffix}"
    copy_through(src, dst)
    track_a, packets_a, secs_a = audio_packets_of(src)
    track_b, packets_b, secs_b = audio_packets_of(dst)
    assert (track_b.codec, track_b.sample_rate, track_b.channels) == ("aac", 48000, 2)
    assert track_b.extradata == track_a.extradata
    assert packets_b == packets_a
    assert abs(secs_b - secs_a) < 0.03 and abs(secs_a - 1.0) < 0.05


def test_reading_streams_video_and_audio_together(tmp_path: Path) -> None:
    """Audio arrives chunk by chunk as the video is read, not all at open or at the end."""
    path = tmp_path / "long.mp4"
    make_clip_with_aac(path, n_frames=200, fps=20)  # 10 s
    with VideoReader(path, chunk_frames=8) as r:
        taken = []
        for chunk in r.chunks():
            taken.append(len(r.take_audio()))
        taken.append(len(r.take_audio()))
    total = len(audio_packets_of(path)[1])
    assert sum(taken) == total and r.frames_read == 200
    assert taken[0] < total / 2  # only the look-ahead window, not the whole track
    assert sum(1 for n in taken if n > 0) > 10


def test_audio_the_container_cannot_hold_is_transcoded_with_warning(tmp_path: Path) -> None:
    src = tmp_path / "pcm.mkv"  # 8-bit PCM: fine in Matroska, refused by the mp4 muxer
    with av.open(str(src), "w") as out:
        vs = out.add_stream("ffv1", rate=10)
        vs.width, vs.height, vs.pix_fmt = 32, 24, "bgr0"
        aus = out.add_stream("pcm_u8", rate=16000, layout="mono")
        to_u8 = av.AudioResampler(format="u8", layout="mono", rate=16000)
        with av.open("sine=frequency=300:duration=1:sample_rate=16000", format="lavfi") as lav:
            for f in list(lav.decode(audio=0)) + [None]:
                for g in to_u8.resample(f):
                    out.mux(aus.encode(g))
        for i, rgb in enumerate(smooth_frames(10, 24, 32)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    dst = tmp_path / "dst.mp4"
    with pytest.warns(UserWarning, match="pcm_u8 audio cannot be copied.*transcoding to aac"):
        copy_through(src, dst)
    track, _, secs = audio_packets_of(dst)
    assert (track.codec, track.sample_rate, track.channels) == ("aac", 16000, 1)
    assert abs(secs - 1.0) < 0.1
    assert len(read_all(dst)[0]) == 10


def test_audio_packets_and_track_serialise_losslessly() -> None:
    packets = [
        AudioPacket(b"\x00\x01abc", -1024, -1024, 1024, True),
        AudioPacket(b"", None, None, None, False),
        AudioPacket(os.urandom(700), 2**40, 2**40 - 5, 1, True),
    ]
    blob = pack_packets(packets)
    assert unpack_packets(blob) == packets
    aac_like = [AudioPacket(bytes(300), 1024 * i - 1024, 1024 * i - 1024, 1024, True) for i in range(100)]
    assert len(pack_packets(aac_like)) - 300 * 100 <= 5 * 100  # a few bytes of overhead per packet
    assert unpack_packets(pack_packets(aac_like)) == aac_like
    for bad in (blob[:-1], blob + b"\x00", b"\x09" + blob[1:], b""):
        with pytest.raises(FormatError):
            unpack_packets(bad)
    track = AudioTrack("aac", 48000, 2, "stereo", Fraction(1, 48000), 128000, b"\x11\x90")
    assert AudioTrack.from_dict(json.loads(json.dumps(track.to_dict()))) == track
    with pytest.raises(FormatError):
        AudioTrack.from_dict({"codec": "aac"})


def test_sample_clips_are_what_the_readme_says() -> None:
    samples = Path(__file__).resolve().parent.parent / "samples"
    info, audio = probe(samples / "coffee_pan.mp4")
    assert (info.width, info.height, info.fps, info.frames) == (480, 320, Fraction(25), 50)
    assert audio is not None and (audio.codec, audio.sample_rate, audio.channels) == ("aac", 48000, 2)
    info, audio = probe(samples / "testsrc2.mp4")
    assert (info.width, info.height, info.fps, info.frames, audio) == (320, 240, Fraction(25), 50, None)
    assert sum(p.stat().st_size for p in samples.glob("*.mp4")) < 400_000

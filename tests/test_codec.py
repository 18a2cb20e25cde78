"""End to end through the real pipeline: embedded model, real PyAV files, real .vlat files."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vaecodec
from vaecodec.cli import app
from vaecodec.codec import Codec
from vaecodec.container import VlatReader
from vaecodec.errors import InputError, UsageError

from conftest import ROOT, make_video, psnr, read_all

SAMPLE = ROOT / "samples" / "coffee_pan.mp4"


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(device="cpu")


def _testsrc_h264(path: Path, seconds: float, prepare=lambda out, stream: None, **options) -> Path:
    """testsrc2 as 64x48 H.264; ``prepare(container, stream)`` first sets what a test is about."""
    with av.open(str(path), "w", **options) as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        prepare(out, s)
        with av.open(f"testsrc2=size=64x48:rate=25:duration={seconds}", format="lavfi") as lavfi:
            for frame in lavfi.decode(video=0):
                out.mux(s.encode(frame.reformat(format="yuv420p")))
        out.mux(s.encode(None))
    return path


def _lossless(frames: np.ndarray, path: Path) -> Path:
    """uint8 [n, H, W, 3] frames as an FFV1 file (lossless, no audio), 25 fps."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="bgr0")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def photo_clip(tmp_path_factory) -> Path:
    """A 25-frame crop of the shipped sample (a real photograph panning), losslessly stored."""
    return _lossless(read_all(SAMPLE)[:25, 40:136, 60:188], tmp_path_factory.mktemp("photo") / "crop.mkv")  # 96x128


def test_round_trip_keeps_geometry_frame_count_and_rate(codec, tmp_path):
    src = make_video(tmp_path / "odd.mp4", size=(67, 45), frames=11, rate=30, codec="libx264")
    r = codec.encode(src, tmp_path / "odd.vlat")
    assert (r.width, r.height, r.frames) == (67, 45, 11)
    back = codec.decode(tmp_path / "odd.vlat", tmp_path / "back.mkv", codec="ffv1")
    with av.open(str(tmp_path / "back.mkv")) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (67, 45)
        assert s.average_rate == Fraction(30)
    out = read_all(tmp_path / "back.mkv")
    assert out.shape == (11, 45, 67, 3) and back.frames == 11
    assert psnr(out, read_all(src)) > 14  # saturated test pattern with text: the worst case for the tiny model (~15.5 dB)


def test_real_photo_quality_and_rate(codec, photo_clip, tmp_path):
    r = codec.encode(photo_clip, tmp_path / "p.vlat")
    frames = np.concatenate(list(codec.decode_frames(tmp_path / "p.vlat")))
    src = read_all(photo_clip)
    assert frames.shape == src.shape
    assert psnr(frames, src) > 25
    assert r.bpp < 1.0  # well below 8-bit zstd of raw latents


def test_bf16_on_the_cpu_codes_the_same_picture(photo_clip, tmp_path):
    """--dtype bf16 runs the model in bfloat16 on the CPU too (faster where the CPU has bf16
    instructions, docs/BENCHMARKS.md): a bf16 file decodes in fp32 and a fp32 file in bf16
    to within a fraction of a dB of the all-fp32 round trip."""
    src = read_all(photo_clip)
    fp32, bf16 = Codec(device="cpu"), Codec(device="cpu", dtype="bf16")
    fp32.encode(photo_clip, tmp_path / "f.vlat")
    bf16.encode(photo_clip, tmp_path / "b.vlat")
    ref = psnr(np.concatenate(list(fp32.decode_frames(tmp_path / "f.vlat"))), src)
    for coder, path in ((fp32, "b.vlat"), (bf16, "f.vlat"), (bf16, "b.vlat")):
        frames = np.concatenate(list(coder.decode_frames(tmp_path / path)))
        assert frames.shape == src.shape and abs(psnr(frames, src) - ref) < 0.2


def test_auto_dtype_encodes_in_fp32_and_decodes_in_bf16_where_the_hardware_has_it(photo_clip, tmp_path):
    """The default ``--dtype auto``: the bits come from an fp32 encoder, also when the same Codec
    has decoded a file in between (its decode model is kept apart); the decode model is bf16
    exactly where the CPU has bf16 instructions, and gives the fp32 picture within 0.1 dB."""
    from vaecodec.device import native_bf16

    auto, fp32 = Codec(device="cpu"), Codec(device="cpu", dtype="fp32")
    auto.encode(photo_clip, tmp_path / "a.vlat")
    fp32.encode(photo_clip, tmp_path / "f.vlat")
    frames = np.concatenate(list(auto.decode_frames(tmp_path / "a.vlat")))
    auto.encode(photo_clip, tmp_path / "again.vlat")
    assert (tmp_path / "a.vlat").read_bytes() == (tmp_path / "f.vlat").read_bytes() == (tmp_path / "again.vlat").read_bytes()
    with auto.open(tmp_path / "a.vlat") as f:
        used = next(f.model.parameters()).dtype
    assert next(auto.model.parameters()).dtype == torch.float32
    assert used == (torch.bfloat16 if native_bf16(torch.device("cpu")) else torch.float32)
    src = read_all(photo_clip)
    ref = np.concatenate(list(fp32.decode_frames(tmp_path / "f.vlat")))
    assert abs(psnr(frames, src) - psnr(ref, src)) < 0.1
    assert auto.describe()["dtype"] == f"auto (encode fp32, decode {'bf16' if used == torch.bfloat16 else 'fp32'})"


def test_default_tiles_follow_device_and_frame_size(photo_clip, tmp_path):
    """On a CPU the tiny model streams in short temporal tiles; elsewhere small frames get long
    ones, 1080p shorter, larger pictures shorter still; an explicit --tile-frames wins and the
    file records what the encoder used. The tile changes neither bytes nor frames: a decoder
    runs its own (the same frames, within float rounding)."""
    from vaecodec.models.tiny import TinyVAE

    m = TinyVAE()
    assert {m.tiling_for(h, w).latent_frames for h, w in ((480, 856), (1088, 1920), (1440, 2560))} == {2}
    gpu_like = TinyVAE().to("meta")  # only the parameters' device type is read
    assert gpu_like.tiling_for(480, 856).latent_frames == 12 and gpu_like.tiling_for(1088, 1920).latent_frames == 8
    assert gpu_like.tiling_for(1440, 2560).latent_frames == 4 and gpu_like.tiling_for(2160, 3840).latent_frames == 4
    for kwargs, expect in (({}, 2), ({"tile_frames": 5}, 5)):
        Codec(device="cpu", dtype="fp32", **kwargs).encode(photo_clip, tmp_path / f"t{expect}.vlat")
        with vaecodec.open(tmp_path / f"t{expect}.vlat", device="cpu") as f:
            assert f.tiling.latent_frames == expect
    with vaecodec.open(tmp_path / "t2.vlat", device="cpu") as a, vaecodec.open(tmp_path / "t5.vlat", device="cpu") as b:
        assert torch.equal(a.latents(), b.latents())  # the same symbols from either tiling
    ours = np.concatenate(list(Codec(device="cpu", dtype="fp32").decode_frames(tmp_path / "t5.vlat"))).astype(int)
    theirs = np.concatenate(list(Codec(device="cpu", dtype="fp32", tile_frames=5).decode_frames(tmp_path / "t5.vlat")))
    assert np.abs(ours - theirs).max() <= 1 and (ours == theirs).mean() > 0.999


def test_tile_seams_are_not_visible(photo_clip, tmp_path):
    """Small tiles in time and space: frames/columns at tile borders are no worse than the interior."""
    c = Codec(device="cpu", tile_frames=2, tile_px=64, tile_overlap_px=32)
    c.encode(photo_clip, tmp_path / "t.vlat")
    with vaecodec.open(tmp_path / "t.vlat", device="cpu") as f:
        assert f.tiling.latent_frames == 2  # recorded in the file, used by decode
        out = f.frames_tensor().numpy()
    src = read_all(photo_clip)
    per_frame = np.array([psnr(a, b) for a, b in zip(out, src)])
    t = 4  # temporal factor; tiles start every latent frame -> borders every 4 frames
    border = per_frame[[i for i in range(4, 25, t)]]
    assert border.mean() >= per_frame.mean() - 1.0
    # spatial: 64 px tiles with 32 px overlap on a 128 px wide frame: tile edges at columns 32, 64, 96
    col_err = ((out.astype(float) - src) ** 2).mean(axis=(0, 1, 3))
    seam = col_err[[c + d for c in (32, 64, 96) for d in (-2, -1, 0, 1)]].mean()
    assert 10 * np.log10(255**2 / seam) >= 10 * np.log10(255**2 / col_err.mean()) - 1.0


def test_random_access_matches_full_decode(codec, photo_clip, tmp_path):
    codec.encode(photo_clip, tmp_path / "r.vlat")
    with vaecodec.open(tmp_path / "r.vlat", device="cpu") as f:
        full_lat = f.latents()
        assert full_lat.shape == f.latent_shape
        part = f.latents(9, 17)  # latent k >= 1 covers frames 4k-3..4k: frames 9..16 are latents 3..4
        assert torch.equal(part, full_lat[:, 3:5])
        assert torch.equal(f.latents(8, 10), full_lat[:, 2:4])
        full = f.frames_tensor()
        assert full.shape[0] == 25
        for a, b in [(0, 1), (7, 19), (20, 25)]:
            assert torch.equal(f.frames_tensor(a, b), full[a:b])


def test_audio_is_carried_through_unchanged(codec, tmp_path):
    """Audio packets come back bit for bit, and the reported bits/pixel is the video's: the
    same picture without audio has the same latent bytes and a bpp within the header's few bytes."""
    src = make_video(tmp_path / "a.mp4", size=(48, 32), frames=12, audio=True)
    r = codec.encode(src, tmp_path / "a.vlat")
    codec.decode(tmp_path / "a.vlat", tmp_path / "a_back.mp4")
    silent = codec.encode(make_video(tmp_path / "s.mp4", size=(48, 32), frames=12), tmp_path / "s.vlat")
    with vaecodec.open(tmp_path / "a.vlat") as f:
        stored = sum(c.stored_size for c in f.reader.chunks_of("audio"))
    assert r.audio_bytes == stored > 0.3 * r.file_bytes  # the audio is a large part of this small file
    assert r.bpp == 8 * (r.file_bytes - stored) / (48 * 32 * 12) and r.ratio == pytest.approx(24 / r.bpp)
    assert abs(r.bpp - silent.bpp) * 48 * 32 * 12 / 8 < 400

    def packets(path):
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            return s.codec_context.name, s.rate, [bytes(p) for p in c.demux(s) if p.size]

    name, rate, data = packets(src)
    name2, rate2, data2 = packets(tmp_path / "a_back.mp4")
    assert (name2, rate2) == (name, rate)
    assert data2 == data  # copied, not re-encoded


def test_png_frames_of_a_file_with_audio_drop_the_audio(codec, tmp_path):
    """PNG frames cannot hold audio: decoding a file with audio to frames warns and writes
    every frame (it used to stop at the first audio packet)."""
    codec.encode(make_video(tmp_path / "a.mp4", size=(48, 32), frames=12, audio=True), tmp_path / "a.vlat")
    r = codec.decode(tmp_path / "a.vlat", tmp_path / "frames" / "%03d.png")
    assert any("cannot carry audio" in w for w in r.warnings), r.warnings
    assert r.frames == 12 and sorted(p.name for p in (tmp_path / "frames").iterdir())[-1] == "012.png"


def test_image_sequences_and_filter_sources_encode(codec, tmp_path):
    """The reader takes a numbered-image pattern, a directory of them and a lavfi source; the
    encoder must too (it used to stat the input as one file: "No such file or directory"),
    recording what the input occupies on disk: the sequence's files, nothing for a filter."""
    frames = tmp_path / "frames"
    codec.encode(make_video(tmp_path / "a.mp4", size=(48, 32), frames=6), tmp_path / "a.vlat")
    codec.decode(tmp_path / "a.vlat", frames / "%04d.png")
    (frames / "notes.txt").write_text("not a frame")
    on_disk = sum(f.stat().st_size for f in frames.glob("*.png"))
    for src, want in ((frames / "%04d.png", on_disk), (frames, on_disk), ("lavfi:testsrc2=size=48x32:rate=25:duration=0.24", 0)):
        r = codec.encode(src, tmp_path / "s.vlat", overwrite=True)
        assert (r.frames, r.input_bytes) == (6, want), src
        with vaecodec.open(tmp_path / "s.vlat") as f:
            assert f.header["source"]["bytes"] == want


def test_anamorphic_video_decodes_with_its_pixel_aspect(codec, tmp_path):
    """A wide picture stored in narrow pixels (SAR 4:3) must not come back squeezed: the header
    keeps the aspect and the decoded H.264 carries it."""
    def narrow_pixels(out, stream):
        stream.codec_context.sample_aspect_ratio = Fraction(4, 3)

    codec.encode(_testsrc_h264(tmp_path / "dvd.mp4", 0.32, narrow_pixels), tmp_path / "dvd.vlat")
    with vaecodec.open(tmp_path / "dvd.vlat") as f:
        assert f.header["video"]["sar"] == "4/3"
    codec.decode(tmp_path / "dvd.vlat", tmp_path / "back.mp4")
    with av.open(str(tmp_path / "back.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height, v.sample_aspect_ratio) == (64, 48, Fraction(4, 3))


def test_hdr_video_comes_back_saying_what_its_colours_are(codec, tmp_path):
    """A BT.2020 HLG phone clip's RGB is not BT.709's; it used to come back tagged BT.709 (washed
    out, hues off). The header keeps primaries and transfer, and every output carries them; a
    BT.709 source's header stays as it was."""
    src = tmp_path / "hlg.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx265", rate=25, options={"x265-params": "log-level=error"})
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p10le"
        s.codec_context.colorspace, s.codec_context.color_primaries, s.codec_context.color_trc = 9, 9, 18
        with av.open("testsrc2=size=64x64:rate=25:duration=0.36", format="lavfi") as lavfi:
            for frame in lavfi.decode(video=0):
                out.mux(s.encode(frame.reformat(format="yuv420p10le", dst_colorspace="bt2020")))
        out.mux(s.encode(None))
    codec.encode(src, tmp_path / "hlg.vlat")
    with vaecodec.open(tmp_path / "hlg.vlat") as f:
        assert f.header["video"]["color"] == {"primaries": 9, "transfer": 18}
    shown = CliRunner().invoke(app, ["info", str(tmp_path / "hlg.vlat")], env={"COLUMNS": "200"}).stdout
    assert "colour BT.2020, HLG (HDR)" in shown, shown
    for name, options in (("back.mp4", {}), ("back.mkv", {"codec": "ffv1"}), ("back.webm", {})):
        codec.decode(tmp_path / "hlg.vlat", tmp_path / name, **options)
        with av.open(str(tmp_path / name)) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.color_primaries, cc.color_trc) == (9, 18), name
            assert cc.colorspace == (2 if options else 9), name  # FFV1 stores RGB: no matrix
    r = codec.decode(tmp_path / "hlg.vlat", tmp_path / "still.png")
    assert any("PNG does not record the source's wide-gamut or HDR colours" in w for w in r.warnings), r.warnings
    codec.encode(make_video(tmp_path / "sdr.mp4", size=(64, 48), frames=5), tmp_path / "sdr.vlat")
    with vaecodec.open(tmp_path / "sdr.vlat") as f:
        assert "color" not in f.header["video"]


def test_the_recordings_tags_come_back(codec, tmp_path):
    """A phone clip's date and place (and a title, a comment) are what a gallery sorts and maps
    it by; the decoded file keeps them, in any container, while the muxer's own tags are not
    carried over as if they were the recording's."""
    tags = {"title": "Holiday", "creation_time": "2024-05-01T10:00:00.000000Z", "comment": "first day",
            "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945/"}
    src = _testsrc_h264(tmp_path / "phone.mp4", 0.2, lambda out, stream: out.metadata.update(tags),
                        options={"movflags": "+use_metadata_tags"})
    codec.encode(src, tmp_path / "phone.vlat")
    with vaecodec.open(tmp_path / "phone.vlat") as f:
        assert f.header["source"]["tags"] == tags  # not major_brand, encoder, ...
    shown = CliRunner().invoke(app, ["info", str(tmp_path / "phone.vlat")], env={"COLUMNS": "250"}).stdout
    assert re.search(r"source\s*│ phone.mp4 \([\d.]+ KiB\); tags: .*creation_time", shown), shown
    for name in ("back.mp4", "back.mkv"):
        codec.decode(tmp_path / "phone.vlat", tmp_path / name, start="0.08")
        with av.open(str(tmp_path / name)) as c:
            kept = {k.lower(): v for k, v in c.metadata.items()}  # Matroska upper-cases tag names
        assert {k.lower(): v for k, v in tags.items()}.items() <= kept.items(), (name, kept)
    codec.encode(make_video(tmp_path / "plain.mp4", size=(48, 32), frames=3), tmp_path / "plain.vlat")
    with vaecodec.open(tmp_path / "plain.vlat") as f:
        assert "tags" not in f.header["source"]  # a file with only its muxer's tags: the header as before


def _flash_and_beep(path: Path) -> tuple[float, float]:
    """Seconds at which a video's brightest frame shows and its audio first sounds."""
    with av.open(str(path)) as c:
        flash = max(((float(f.time), f.to_ndarray(format="rgb24").mean()) for f in c.decode(video=0)), key=lambda x: x[1])[0]
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            loud = np.flatnonzero(np.abs(f.to_ndarray().astype(np.float64)).max(0) > 1000)
            if len(loud):
                return flash, float(f.time) + loud[0] / f.sample_rate
    raise AssertionError("no sound")


def _flash_at_2s(src: Path, video_start: float) -> Path:
    """A 4 s Matroska file with a white frame and a beep at 2 s, its video from ``video_start``."""
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        au = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        sound = np.zeros(8000 * 4, np.int16)
        sound[16000:16800] = 10000  # a beep at 2 s
        for k in range(0, len(sound), 400):
            f = av.AudioFrame.from_ndarray(sound[None, k:k + 400], format="s16", layout="mono")
            f.sample_rate, f.pts, f.time_base = 8000, k, Fraction(1, 8000)
            out.mux(au.encode(f))
        out.mux(au.encode(None))
        for i in range(int(video_start * 25), 100):  # frames up to 3.96 s, white at 2 s
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 255 if i == 50 else 40, np.uint8), format="rgb24")
            f = f.reformat(format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    return src


@pytest.mark.parametrize("video_start", [1.0, 0.0])
def test_audio_stays_in_sync_when_the_video_starts_late(codec, tmp_path, video_start):
    """The decoded video starts at 0, so the audio moves with it: a stream whose first frame is
    at 1 s (video after its audio, or an MPEG-TS timeline) kept its audio times and came back
    with the sound 1 s late. A white frame and a beep, both at 2 s, must stay together."""
    src = _flash_at_2s(tmp_path / "late.mkv", video_start)
    flash, beep = _flash_and_beep(src)
    assert (flash, beep) == (2.0, 2.0)
    codec.encode(src, tmp_path / "late.vlat")
    for suffix in (".mp4", ".mkv"):
        codec.decode(tmp_path / "late.vlat", tmp_path / f"back{suffix}")
        flash, beep = _flash_and_beep(tmp_path / f"back{suffix}")
        assert flash == pytest.approx(2.0 - video_start, abs=0.05)
        assert abs(beep - flash) < 0.02, (suffix, flash, beep)


def test_a_part_decodes_as_the_whole_file_does_with_its_audio_in_sync(codec, tmp_path):
    """decode(start=, frames=) gives exactly the frames a full decode gives there, from the
    first frame shown at or after ``start``, with the audio of those frames and no more, moved
    with them; a single .png takes the one frame shown at ``start``."""
    codec.encode(_flash_at_2s(tmp_path / "beep.mkv", 0.0), tmp_path / "beep.vlat")
    codec.decode(tmp_path / "beep.vlat", tmp_path / "full.mkv", codec="ffv1")
    full = read_all(tmp_path / "full.mkv")
    for start, frames, first, n in (("1.5", 20, 38, 20), (1.5, None, 38, 62), ("0:01.5205", 5, 38, 5), (Fraction(3), 99, 75, 25)):
        out = tmp_path / f"part{first}_{n}.mkv"
        r = codec.decode(tmp_path / "beep.vlat", out, codec="ffv1", start=start, frames=frames)
        assert r.frames == n and np.array_equal(read_all(out), full[first:first + n]), (start, frames)
    flash, beep = _flash_and_beep(tmp_path / "full.mkv")
    assert abs(flash - 2) <= 0.04 and abs(beep - flash) < 0.02, (flash, beep)
    flash_part, beep = _flash_and_beep(tmp_path / "part38_62.mkv")  # both moved 38 frames earlier
    with av.open(str(tmp_path / "part38_62.mkv")) as c:  # (Matroska starts the video late by the
        shown = float(next(c.decode(video=0)).time)  # audio packet that began before its first frame)
    assert flash_part - shown == pytest.approx(flash - 38 / 25) and abs(beep - flash_part) < 0.02, (flash_part, beep, shown)
    for part, n in (("part38_20.mkv", 20), ("part38_62.mkv", 62)):  # audio from the first frame to the last one's end
        with av.open(str(tmp_path / part)) as c:
            a, v = c.streams.audio[0], c.streams.video[0]
            times = [(p.pts * a.time_base, (p.pts + p.duration) * a.time_base) for p in c.demux(a) if p.size]
            video = v.start_time * v.time_base, v.start_time * v.time_base + Fraction(n, 25)
        assert times[0][0] <= video[0] < times[0][1] and times[-1][0] < video[1] <= times[-1][1], (times, video)
    codec.decode(tmp_path / "beep.vlat", tmp_path / "still.png", start=2)
    with av.open(str(tmp_path / "still.png")) as c:
        assert np.array_equal(next(c.decode(video=0)).to_ndarray(format="rgb24"), full[50])
    with pytest.raises(UsageError, match="one frame"):
        codec.decode(tmp_path / "beep.vlat", tmp_path / "two.png", start=2, frames=2)
    with pytest.raises(UsageError, match="past the last frame"):
        codec.decode(tmp_path / "beep.vlat", tmp_path / "late.mkv", start="0:04")
    with pytest.raises(UsageError, match="not seconds"):
        codec.decode(tmp_path / "beep.vlat", tmp_path / "late.mkv", start="1:2x")
    assert sorted(p.name for p in tmp_path.iterdir() if "two" in p.name or "late" in p.name) == []


def test_mpeg_ts_timeline_is_rebased_for_audio_too(codec, tmp_path):
    """MPEG-TS streams start their clock late (here 0.08 s, often 1.4 s); the decoded file's
    audio must start with its video, not that much after it."""
    src = make_video(tmp_path / "cam.ts", size=(48, 32), frames=20, audio=True)
    with av.open(str(src)) as c:
        assert all(float(s.start_time * s.time_base) > 0.05 for s in c.streams)
    codec.encode(src, tmp_path / "cam.vlat")
    codec.decode(tmp_path / "cam.vlat", tmp_path / "back.mp4")
    with av.open(str(tmp_path / "back.mp4")) as c:
        video, audio = (float(s.start_time * s.time_base) for s in (c.streams.video[0], c.streams.audio[0]))
    assert video == 0 and abs(audio) < 0.03, (video, audio)


@pytest.mark.parametrize("size", [(1, 1), (5, 3)])
def test_tiny_pictures_round_trip(codec, tmp_path, size):
    """A picture too small to follow a camera in (a 1x1 one made the camera stage take the
    log of 0) codes without a canvas, every frame at its size."""
    w, h = size
    src = tmp_path / "small.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264rgb", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "rgb24"
        for i in range(9):
            rgb = np.full((h, w, 3), (20 * i, 100, 200 - 20 * i), np.uint8)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(vs.encode(None))
    r = codec.encode(src, tmp_path / "small.vlat")
    assert (r.frames, r.width, r.height, r.canvas) == (9, w, h, None)
    back = codec.decode(tmp_path / "small.vlat", tmp_path / "back.mkv", codec="ffv1")
    assert back.frames == 9
    assert read_all(tmp_path / "back.mkv").shape == (9, h, w, 3)


def test_a_percent_sign_alone_does_not_make_a_pattern(codec, tmp_path):
    """"50% off.mp4" and "back 100%.mkv" are files; only %d or %05d make an image-sequence
    pattern (the output was refused as "PNG frames go to a directory or a pattern")."""
    src = make_video(tmp_path / "50% off é.mp4", size=(48, 32), frames=6)
    r = codec.encode(src, tmp_path / "100%.vlat")
    assert r.input_bytes == src.stat().st_size
    back = codec.decode(tmp_path / "100%.vlat", tmp_path / "back 100%.mkv")
    assert back.frames == 6 and read_all(tmp_path / "back 100%.mkv").shape == (6, 32, 48, 3)


@pytest.mark.parametrize("audio_codec", ["libopus", "flac"])
def test_audio_quicktime_cannot_hold_is_transcoded(codec, tmp_path, audio_codec):
    """QuickTime's muxer lists Opus and FLAC (its MP4 sibling takes them) but refuses them when
    it writes the header: a .mov output failed with "unexpected ArgumentError". It transcodes
    to AAC now, with a warning, and the sound lasts as long as the video."""
    src = tmp_path / "in.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        au = out.add_stream(audio_codec, rate=48000, layout="stereo")
        fit = av.AudioResampler(format=au.codec_context.format.name, layout="stereo", rate=48000,
                                frame_size=au.codec_context.frame_size or 1024)
        with av.open("sine=frequency=440:duration=1:sample_rate=48000", format="lavfi") as sine:
            for frame in [*sine.decode(audio=0), None]:
                for f in fit.resample(frame):
                    out.mux(au.encode(f))
        out.mux(au.encode(None))
        for i in range(25):
            rgb = np.full((32, 48, 3), 8 * i, np.uint8)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")))
        out.mux(vs.encode(None))
    codec.encode(src, tmp_path / "in.vlat")
    r = codec.decode(tmp_path / "in.vlat", tmp_path / "back.mov")
    assert any("transcoding to aac" in w for w in r.warnings), r.warnings
    with av.open(str(tmp_path / "back.mov")) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        assert float(c.duration / av.time_base) == pytest.approx(1.0, abs=0.1)


def test_frames_limits_the_encode_and_its_audio(codec, tmp_path):
    """``frames`` stops a video (a live stream has no end of its own) after that many frames,
    and keeps the audio of those frames: it comes interleaved after their video in the file,
    so the reader demuxes on to it, and no further."""
    src = make_video(tmp_path / "a.mkv", size=(48, 32), frames=40, audio=True)
    r = codec.encode(src, tmp_path / "a.vlat", frames=13)
    assert r.frames == 13 and r.input_bytes == 0  # no ratio to the whole file's size for a part of it
    codec.decode(tmp_path / "a.vlat", tmp_path / "back.mkv")
    with av.open(str(tmp_path / "back.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 13
    with av.open(str(tmp_path / "back.mkv")) as c:
        heard = sum(f.samples for f in c.decode(audio=0)) / 44100
    assert abs(heard - 13 / 25) < 0.05, heard  # within an AAC frame or two of the video's 0.52 s
    whole = codec.encode(src, tmp_path / "all.vlat", frames=1000)
    assert whole.frames == 40 and whole.input_bytes == src.stat().st_size
    with pytest.raises(UsageError, match="--frames must be a whole number of at least 1"):
        codec.encode(src, tmp_path / "none.vlat", frames=0)


def test_start_skips_the_beginning_and_its_audio(codec, tmp_path):
    """``start`` encodes from the frame shown then: a white frame and a beep at 2 s come back
    together at 0.5 s when encoding from 1.5 s."""
    codec.encode(_flash_at_2s(tmp_path / "beep.mkv", 0.0), tmp_path / "late.vlat", start="1.5", frames=40)
    with vaecodec.open(tmp_path / "late.vlat") as f:  # frame 38 is the first, at 1.52 s
        assert f.header["source"]["start"] == "38/25"
    shown = CliRunner().invoke(app, ["info", str(tmp_path / "late.vlat")], env={"COLUMNS": "200"}).stdout
    assert re.search(r"source\s*│ beep.mkv \([\d.]+ KiB\), from 1.52 s", shown), shown
    codec.decode(tmp_path / "late.vlat", tmp_path / "back.mp4")
    flash, beep = _flash_and_beep(tmp_path / "back.mp4")
    assert flash == pytest.approx(0.5, abs=0.05) and abs(beep - flash) < 0.02, (flash, beep)
    with av.open(str(tmp_path / "back.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 40


def test_interrupted_encode_leaves_nothing(codec, photo_clip, tmp_path):
    class Interrupt:
        def start(self, total, description):
            pass

        def advance(self, frames):
            raise KeyboardInterrupt

    dst = tmp_path / "x.vlat"
    with pytest.raises(KeyboardInterrupt):
        codec.encode(photo_clip, dst, progress=Interrupt())
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(codec, clip, tmp_path):
    dst = tmp_path / "keep.vlat"
    dst.write_bytes(b"precious")
    with pytest.raises(UsageError, match="exists"):
        codec.encode(clip, dst)
    assert dst.read_bytes() == b"precious"
    codec.encode(clip, dst, overwrite=True)
    assert VlatReader(dst).complete


def test_damaged_chunk_is_reported_and_the_rest_decodes(codec, tmp_path):
    """Concealed latents reach the frames of the next ``reach`` latent frames (the decoder's
    causal memory), and no further: every frame after that is the intact file's, bit for bit."""
    clip = _lossless(read_all(SAMPLE)[:41, 40:136, 60:188], tmp_path / "clip.mkv")  # 11 latent frames
    src = tmp_path / "d.vlat"
    codec = Codec(device="cpu", tile_frames=2, chunk_latents=1)  # short chunks
    codec.encode(clip, src)
    with VlatReader(src) as r:
        lat = r.chunks_of("latent")
        assert len(lat) >= 2
        victim = lat[0]
        off = victim.offset + victim.stored_size // 2
        reached = int(victim.meta["t0"]) + int(victim.meta["t"]) + codec.model.reach - 1  # the last latent it reaches
    data = bytearray(src.read_bytes())
    data[off] ^= 0xFF
    bad = tmp_path / "bad.vlat"
    bad.write_bytes(bytes(data))
    r = codec.decode(bad, tmp_path / "bad.mkv", codec="ffv1")
    assert r.frames == 41  # timeline kept
    assert any("lost" in w and "checksum" in w for w in r.warnings)
    good = np.concatenate(list(codec.decode_frames(src)))
    out = read_all(tmp_path / "bad.mkv")
    first_clean = 4 * reached + 1  # latent j >= 1 decodes to frames 4j-3 .. 4j
    assert 0 < first_clean < 41 and np.array_equal(out[first_clean:], good[first_clean:])
    assert not np.array_equal(out[first_clean - 4], good[first_clean - 4])  # the first frame of the last latent reached


def test_truncated_file_yields_its_intact_chunks(codec, photo_clip, tmp_path):
    src = tmp_path / "full.vlat"
    codec = Codec(device="cpu", tile_frames=2, chunk_latents=1)
    codec.encode(photo_clip, src)
    with VlatReader(src) as r:
        second = r.chunks_of("latent")[1]
    cut = tmp_path / "cut.vlat"
    cut.write_bytes(src.read_bytes()[: second.offset + 10])
    with vaecodec.open(cut, device="cpu") as f:
        assert any("incomplete" in p for p in f.problems)
        z = f.latents()
    with vaecodec.open(src, device="cpu") as f:
        full = f.latents()
    n = z.shape[1]
    assert n >= 1 and torch.equal(z, full[:, :n])


def test_not_a_video_and_empty_inputs(codec, tmp_path):
    txt = tmp_path / "notes.mp4"
    txt.write_text("not a video")
    with pytest.raises(InputError):
        codec.encode(txt, tmp_path / "n.vlat")
    with pytest.raises(InputError):
        codec.encode(tmp_path / "missing.mp4", tmp_path / "m.vlat")
    assert not (tmp_path / "n.vlat").exists() and not (tmp_path / "m.vlat").exists()


def test_uniform_bits_override(photo_clip, tmp_path):
    r8 = Codec(device="cpu", bits=8).encode(photo_clip, tmp_path / "8.vlat")
    r4 = Codec(device="cpu", bits=4).encode(photo_clip, tmp_path / "4.vlat")
    assert r8.quantization == {"scheme": "uniform", "bits": 8, "granularity": "chunk,channel"}
    assert r4.file_bytes < r8.file_bytes
    q8 = np.concatenate(list(Codec(device="cpu").decode_frames(tmp_path / "8.vlat")))
    assert psnr(q8, read_all(photo_clip)) > 25


def test_file_from_other_weights_names_them_and_decodes_with_them(tmp_path):
    """A .vlat made with other tiny weights (an older release, a user's model) is refused by the
    embedded model with a message naming the weights it needs, and decodes when given them."""
    from safetensors.torch import save_file

    from vaecodec.errors import ModelError
    from vaecodec.models.tiny import TinyVAE

    torch.manual_seed(3)
    weights = tmp_path / "tiny-old.safetensors"
    save_file({f"model.{k}": v.contiguous() for k, v in TinyVAE().state_dict().items()}, str(weights),
              metadata={"model_id": "vaecodec-tiny-old"})
    src = make_video(tmp_path / "in.mp4", frames=9, size=(32, 24))
    vlat = tmp_path / "old.vlat"
    Codec(f"tiny:{weights}", device="cpu").encode(src, vlat)
    with pytest.raises(ModelError, match=r"needs vaecodec-tiny-old \(sha256 [0-9a-f]{12}.*--model-path"):
        list(Codec(device="cpu").decode_frames(vlat))
    frames = np.concatenate(list(Codec(device="cpu", model_path=weights).decode_frames(vlat)))
    assert frames.shape == (9, 24, 32, 3)


def test_temporal_deadzone_beats_plain_rounding_at_equal_rate(photo_clip, tmp_path):
    """The default deadzone holds slowly drifting latents: at quality 2 the file is smaller and
    its PSNR lies above the plain-rounding RD curve through qualities 1 and 2 at that rate, with
    a steadier picture. Decoding needs nothing new (the file only holds other symbols)."""
    src = read_all(photo_clip)
    points = {}
    for name, quality, dz in (("plain1", 1, 0.0), ("plain2", 2, 0.0), ("held2", 2, None)):
        r = Codec(device="cpu", quality=quality, deadzone=dz, scale=1.0).encode(photo_clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            assert f.header["quantization"]["deadzone"] == (0.1 if dz is None else dz)
            frames = f.frames_tensor().numpy()
        flicker = np.abs(np.diff(frames.astype(np.int16) - src, axis=0)).mean()
        points[name] = (np.log(r.file_bytes), psnr(frames, src), flicker)
    (r1, p1, _), (r2, p2, f2), (rh, ph, fh) = points["plain1"], points["plain2"], points["held2"]
    assert r1 < rh < r2  # fewer bits than plain quality 2, more than quality 1
    assert ph > p1 + (p2 - p1) * (rh - r1) / (r2 - r1) + 0.2
    assert fh < f2


def test_tiles_are_grouped_into_long_chunks_that_cost_fewer_bits(tmp_path):
    """Entropy-coded chunks gather temporal tiles up to CHUNK_LATENTS latent frames: only a
    chunk's first frame is coded on its own, so the file shrinks while (without a deadzone,
    which holds symbols within a chunk) the stored latents stay exactly the same."""
    from vaecodec.codec import CHUNK_LATENTS

    src = make_video(tmp_path / "long.mp4", size=(96, 64), frames=401)  # 101 latent frames
    files = {}
    for name, n in (("tiles", 1), ("grouped", None)):
        files[name] = tmp_path / f"{name}.vlat"
        Codec(device="cpu", deadzone=0.0, chunk_latents=n).encode(src, files[name])
    with VlatReader(files["grouped"]) as r:
        sizes = [int(c.meta["t"]) for c in r.chunks_of("latent")]
    with VlatReader(files["tiles"]) as r:
        assert len(r.chunks_of("latent")) > 3
    assert sum(sizes) == 101 and len(sizes) == 2 and sizes[0] >= CHUNK_LATENTS
    with vaecodec.open(files["tiles"], device="cpu") as a, vaecodec.open(files["grouped"], device="cpu") as b:
        assert torch.equal(a.latents(), b.latents())
        assert torch.equal(a.latents(200, 240), b.latents(200, 240))  # random access inside a long chunk
    assert files["grouped"].stat().st_size < 0.95 * files["tiles"].stat().st_size


def test_a_short_tail_joins_the_last_chunk():
    """With the stream's expected length, a chunk that would leave less than half a chunk
    behind takes it (one chunk start fewer); a wrong estimate never makes a chunk longer than
    twice the length, and without one the chunks are cut as they come."""
    from vaecodec.codec import ChunkGatherer
    from vaecodec.quant import Quantizer

    def chunks(total: int, expected: int | None, per: int = 8, block: int = 2) -> list[int]:
        g = ChunkGatherer(Quantizer("uniform", bits=8), per, expected)
        out = [g.add(torch.zeros(1, min(block, total - i), 1, 1)) for i in range(0, total, block)] + [g.rest()]
        return [z.shape[1] for z in out if z is not None]

    assert chunks(19, None) == [8, 8, 3]
    assert chunks(19, 19) == [8, 11]  # the tail of 3 joins
    assert chunks(22, 22) == [8, 8, 6]  # a tail of half a chunk or more stays a chunk of its own
    assert chunks(40, 19) == [8, 12, 8, 8, 4]  # an estimate too short: one chunk waits for an end that does not come
    assert chunks(19, 60) == [8, 8, 3]  # too long: the end comes early, nothing is held past it
    assert max(chunks(40, 41, per=8, block=16)) <= 2 * 8 + 16  # held blocks stop at twice the length


def test_an_encode_does_not_end_on_a_chunk_of_its_own(tmp_path):
    """65 latent frames with chunks of 64: the container's frame count tells the encoder the
    end is one latent frame away, so the last chunk takes it instead of coding it alone."""
    src = make_video(tmp_path / "a.mp4", size=(64, 48), frames=257)  # 1 + 64*4: 65 latent frames
    Codec(device="cpu", quality=3).encode(src, tmp_path / "a.vlat")
    with VlatReader(tmp_path / "a.vlat") as r:
        assert [int(c.meta["t"]) for c in r.chunks_of("latent")] == [65]


def test_chunk_length_is_capped_by_memory_and_checked():
    from vaecodec.codec import CHUNK_BUFFER_BYTES, CHUNK_LATENTS, default_chunk_latents
    from vaecodec.quant import Quantizer

    coder = Codec(device="cpu").model.entropy_coder
    entropy, uniform = Quantizer("entropy", coder=coder), Quantizer("uniform", bits=8)
    assert default_chunk_latents(entropy, 4 * 16 * 60 * 107) == CHUNK_LATENTS  # 480p: 64
    # 2x keeps whole chunks and the 3-3.5x canvases of the top qualities half of one: a chunk
    # start there is one intra-coded latent frame of ~100-155 KB
    assert default_chunk_latents(entropy, 4 * 16 * 120 * 214) == CHUNK_LATENTS
    assert default_chunk_latents(entropy, 4 * 16 * 188 * 345) >= CHUNK_LATENTS // 2 - 2
    assert default_chunk_latents(entropy, 4 * 16 * 219 * 402) >= CHUNK_LATENTS // 3
    assert default_chunk_latents(entropy, 4 * 16 * 270 * 480) == CHUNK_BUFFER_BYTES // (4 * 16 * 270 * 480)  # 4K: fewer
    assert default_chunk_latents(entropy, CHUNK_BUFFER_BYTES * 2) == 1
    assert default_chunk_latents(uniform, 1000) == 1
    with pytest.raises(UsageError, match="chunk-frames"):
        Codec(device="cpu", chunk_latents=0)


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory) -> Path:
    """The shipped sample's first 25 frames at full size (480x320), losslessly stored, no audio."""
    return _lossless(read_all(SAMPLE)[:25], tmp_path_factory.mktemp("sample") / "sample.mkv")


def test_half_size_coding_restores_the_size_and_wins_at_low_rate(sample_clip, tmp_path):
    """--scale 0.5 codes a 240x160 picture and decodes back to 480x320; at the low end its
    PSNR lies well above the full-size RD curve through qualities 1 and 2 at the same size."""
    from vaecodec.container import FLAG_RESAMPLED

    src = read_all(sample_clip)
    points = {}
    for name, quality, scale in (("full1", 1, 1.0), ("full2", 2, 1.0), ("half4", 4, 0.5)):
        path = tmp_path / f"{name}.vlat"
        r = Codec(device="cpu", quality=quality, scale=scale, camera=False).encode(sample_clip, path)
        assert (r.width, r.height, r.frames) == (480, 320, 25)
        with vaecodec.open(path, device="cpu") as f:
            frames = f.frames_tensor().numpy()
            assert frames.shape == src.shape
            if scale == 1.0:
                assert f.reader.flags == 0 and "coded_width" not in f.header["video"]  # readable by older vaecodec
            else:
                assert f.reader.flags == FLAG_RESAMPLED
                assert (f.header["video"]["coded_width"], f.header["video"]["coded_height"]) == (240, 160)
                assert f.latent_shape[2:] == (20, 30)
                assert np.array_equal(f.frames_tensor(9, 14).numpy(), frames[9:14])  # random access
        points[name] = (np.log(r.file_bytes), psnr(frames, src))
    (r1, p1), (r2, p2), (rh, ph) = points["full1"], points["full2"], points["half4"]
    assert rh < r2
    assert ph > p1 + (p2 - p1) * (rh - r1) / (r2 - r1) + 1.0


@pytest.mark.parametrize("options", [{"quality": "5"}, {"quality": 5.0}, {"quality": True}, {"bits": 6.5},
                                     {"motion": "no"}, {"scale": "1.5"}, {"deadzone": "0.1"}, {"refine": 1.5},
                                     {"entropy_workers": 1.5}, {"tile_frames": "2"}, {"model": None}])
def test_api_options_of_the_wrong_type_are_one_clear_error(options):
    """Python callers get the CLI's one clear line, not a TypeError deep inside or a header
    that records quality 5.0 or motion "no"."""
    (name, value), = options.items()
    with pytest.raises(UsageError, match=rf"{name}.*must be .*got {re.escape(repr(value))}$"):
        Codec(device="cpu", **options)


def test_a_small_tile_keeps_what_default_overlap_fits(tmp_path):
    """--tile-frames 1 or --tile-px 8 alone shrink the model's default overlaps to fit (an
    error about options the user never passed would say nothing useful); the file decodes."""
    src = make_video(tmp_path / "a.mp4", size=(64, 48), frames=9)
    r = Codec(device="cpu", tile_frames=1, tile_px=8).encode(src, tmp_path / "a.vlat")
    with vaecodec.open(r.path, device="cpu") as f:
        assert f.tiling.latent_frames == 1 and f.tiling.overlap_latents == 0 and f.tiling.overlap_px == 0
        assert f.frames_tensor().shape == (9, 48, 64, 3)
    with pytest.raises(UsageError, match="--tile-overlap-px must be a multiple of 8 from 0 to 0"):  # a clash the user asked for
        Codec(device="cpu", tile_px=8, tile_overlap_px=8).encode(src, tmp_path / "b.vlat")


def test_scale_is_checked():
    for bad in (0.0, 0.1, 4.5):
        with pytest.raises(UsageError, match="--scale"):
            Codec(device="cpu", scale=bad)


def test_top_of_the_ladder_codes_a_larger_picture(sample_clip, tmp_path):
    """At the top the model saturates at full size: quality 7 (the tables of quality 4 on a
    picture 2.5x as wide and high, 1200x800 for a 480x320 source) decodes back to the source
    size and lies well above the full-size RD curve through the finest tables (qualities 9
    and 10 at --scale 1) at its rate. The header names both the tables and the level."""
    from vaecodec.container import FLAG_RESAMPLED

    src = read_all(sample_clip)
    points = {}
    for name, quality, scale in (("full9", 9, 1.0), ("full10", 10, 1.0), ("level7", 7, None)):
        path = tmp_path / f"{name}.vlat"
        tables = {"full9": 7, "full10": 8}.get(name)  # the finest tables at the source size
        r = Codec(device="cpu", quality=quality, scale=scale, tables=tables, camera=False).encode(sample_clip, path)
        with vaecodec.open(path, device="cpu") as f:
            frames = f.frames_tensor().numpy()
            assert frames.shape == src.shape
            q = f.header["quantization"]
            assert (q["quality"], q.get("level")) == {"full9": (7, None), "full10": (8, None), "level7": (4, 7)}[name]
            if scale is None:
                assert f.reader.flags == FLAG_RESAMPLED and r.coded_size == (1200, 800)
                assert f.latent_shape[2:] == (100, 150)
                assert np.array_equal(f.frames_tensor(9, 14).numpy(), frames[9:14])  # random access
        points[name] = (np.log(r.file_bytes), psnr(frames, src))
    (r9, p9), (r10, p10), (rl, pl) = points["full9"], points["full10"], points["level7"]
    assert pl > p9 + (p10 - p9) * (rl - r9) / (r10 - r9) + 0.5


def test_smooth_pictures_take_finer_tables_at_the_top(tmp_path):
    """Quality 7 codes a smooth picture (one that survives halving and restoring) at 1.5x with
    tables 6, one of middle detail at 2x with tables 5, a busy one (or one that fades in from
    black, where the busiest frame decides) at 2.5x with tables 4;
    the file names the level either way.
    ``Codec(tables=...)`` overrides the table set and leaves the picture size to the level."""
    from vaecodec.quant import BUSY_DB, SMOOTH_DB
    from vaecodec.resample import fine_detail_db, resize_frames

    detailed = read_all(SAMPLE)[:9]
    smooth = resize_frames(resize_frames(detailed, 120, 80), 480, 320)
    middle = resize_frames(resize_frames(detailed, 320, 213), 480, 320)
    assert fine_detail_db(smooth[0]) >= SMOOTH_DB > fine_detail_db(middle[0]) >= BUSY_DB > fine_detail_db(detailed[0])
    fade_in = np.concatenate([np.zeros_like(detailed[:4]), detailed[:5]])  # starts black: not smooth
    for name, frames, want in (("smooth", smooth, (6, (720, 480))), ("middle", middle, (5, (960, 640))),
                               ("detailed", detailed, (4, (1200, 800))), ("fade_in", fade_in, (4, (1200, 800)))):
        clip = _lossless(frames, tmp_path / f"{name}.mkv")
        r = Codec(device="cpu", quality=7).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            q = f.header["quantization"]
            assert (q["quality"], q["level"], r.coded_size) == (want[0], 7, want[1])
            assert f.frames_tensor().shape[0] == 9
    # benchmarks may pick the table set themselves (Python only); the file then names no level
    r = Codec(device="cpu", quality=7, tables=8).encode(clip, tmp_path / "tables.vlat")
    with vaecodec.open(tmp_path / "tables.vlat", device="cpu") as f:
        assert f.header["quantization"]["quality"] == 8 and "level" not in f.header["quantization"]
        assert r.coded_size == (1200, 800)
    with pytest.raises(UsageError, match="tables=.*entropy coder"):
        Codec(device="cpu", bits=8, tables=8).encode(clip, tmp_path / "bits.vlat")


def test_quality_ladder_stays_within_its_pixel_cap_and_fits_large_sources():
    """The default (5) codes the source size with its own tables (the files of earlier
    versions); every level above codes a larger picture than 5, a busy picture the largest;
    enlarging stops at about 5 MP of coded pixels (3.5x a 480p picture) and never shrinks a
    source on its account, and where it stops short, finer tables make up for it."""
    from vaecodec.quant import BUSY_DB, BUSY_LADDER, LADDER, SMOOTH_DB, SMOOTH_LADDER, Level, fit_level, ladder_level
    from vaecodec.resample import MAX_UPSCALED_PIXELS, capped_scale, coded_size

    assert sorted(LADDER) == list(range(1, 11)) and LADDER[5] == Level(5, 1.0)
    for q in range(6, 11):
        busy, middle, smooth = (ladder_level(q, db) for db in (BUSY_DB - 1, (BUSY_DB + SMOOTH_DB) / 2, SMOOTH_DB))
        assert busy.scale >= middle.scale >= smooth.scale > 1 and middle == ladder_level(q) == LADDER[q]
    widest = max(lv.scale for lv in (*LADDER.values(), *BUSY_LADDER.values()))
    for w, h in ((854, 480), (1280, 720), (1600, 900), (1920, 1080), (3840, 2160)):
        cw, ch = coded_size(w, h, capped_scale(widest, w, h))
        assert cw >= w and ch >= h and cw * ch <= max(w * h, MAX_UPSCALED_PIXELS * 1.01)
    assert capped_scale(3.5, 854, 480) == 3.5 and 1.55 < capped_scale(3.5, 1920, 1080) < 1.56
    assert capped_scale(2.0, 3840, 2160) == 1.0 and capped_scale(0.5, 3840, 2160) == 0.5

    def fitted(ladder: dict, w: int, h: int) -> list[Level]:
        return [fit_level(ladder.get(q, LADDER[q]), capped_scale(ladder.get(q, LADDER[q]).scale, w, h), 8)
                for q in range(5, 11)]

    # where the picture may not grow as far, finer tables keep the top levels apart
    s1080, s720 = capped_scale(3.5, 1920, 1080), capped_scale(3.5, 1280, 720)
    assert fitted(LADDER, 1920, 1080) == [Level(5, 1.0), Level(5, 1.5), Level(6, s1080), Level(7, s1080),
                                          Level(8, s1080), Level(8, s1080)]
    assert fitted(BUSY_LADDER, 1920, 1080) == [Level(5, 1.0), Level(5, 1.5), Level(6, s1080), Level(7, s1080),
                                               Level(8, s1080), Level(8, s1080)]
    assert fitted(BUSY_LADDER, 1280, 720) == [Level(5, 1.0), Level(5, 1.5), Level(4, s720), Level(5, s720),
                                              Level(6, s720), Level(8, s720)]
    assert fitted(LADDER, 1280, 720) == [LADDER[q] for q in range(5, 11)]
    assert fitted(BUSY_LADDER, 854, 480) == [BUSY_LADDER.get(q, LADDER[q]) for q in range(5, 11)]
    # a --scale below the level's enlarges less, and finer tables make up for it (never coarser
    # than a lower level at that size); --scale up to 1 and levels up to 5 keep their tables
    assert [fit_level(LADDER[q], 1.0, 8).table for q in range(5, 11)] == [5, 6, 7, 8, 8, 8]
    assert [fit_level(BUSY_LADDER[q], 1.0, 8).table for q in range(7, 11)] == [7, 8, 8, 8]
    assert fit_level(BUSY_LADDER[8], 1.5, 8) == Level(7, 1.5) and fit_level(LADDER[2], 1.0, 8) == Level(2, 1.0)
    assert fit_level(LADDER[5], 0.5, 8) == Level(5, 0.5)
    with pytest.raises(UsageError, match="--quality must be from 1 to 10, got 11"):
        Codec(device="cpu", quality=11).encode(SAMPLE, "/nonexistent/x.vlat")


def test_each_quality_above_the_default_spends_more_bits_for_a_better_picture(tmp_path):
    """On a detailed real photo panning (not smooth, so the large rungs of levels 7-10), each
    level from 5 to 10 gives a larger file and a higher PSNR than the level below."""
    photo = read_all(SAMPLE)[0]
    src = np.stack([photo[40 + t:104 + t, 60 + 2 * t:156 + 2 * t] for t in range(9)])  # 9 x 64x96
    clip = _lossless(src, tmp_path / "pan.mkv")
    got = []
    for q in range(5, 11):
        r = Codec(device="cpu", quality=q).encode(clip, tmp_path / f"q{q}.vlat")
        with vaecodec.open(tmp_path / f"q{q}.vlat", device="cpu") as f:
            assert f.header["quantization"]["level"] == q
            got.append((q, r.coded_size, r.file_bytes, round(psnr(f.frames_tensor().numpy(), src), 2)))
    assert [g[1] for g in got[2:]] == [(240, 160), (288, 192), (288, 192), (336, 224)], got  # 2.5x, 3x, 3x, 3.5x
    assert all(a[2] < b[2] and a[3] < b[3] for a, b in zip(got, got[1:])), got


def test_low_qualities_code_a_smaller_picture_by_default(sample_clip, tmp_path):
    """Qualities 1-2 code half size and 3-4 three quarters (docs/MODEL.md): quality 2 keeps
    its PSNR level for well under half the bytes of full-size quality 2; 5 (the default) is
    full size, a file older vaecodec versions read."""
    src = read_all(sample_clip)
    got = {}
    for name, quality, scale in (("q2", 2, None), ("q2full", 2, 1.0), ("q3", 3, None), ("q5", 5, None)):
        r = Codec(device="cpu", quality=quality, scale=scale, camera=False).encode(sample_clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            got[name] = (r.coded_size, f.reader.flags, r.file_bytes, psnr(f.frames_tensor().numpy(), src))
    assert [got[k][:2] for k in ("q2", "q2full", "q3", "q5")] == [((240, 160), 1), ((480, 320), 0), ((360, 240), 1), ((480, 320), 0)]
    assert got["q2"][2] < 0.5 * got["q2full"][2]
    assert got["q2"][3] > got["q2full"][3] - 1.5


def test_motion_compensation_shrinks_a_pan_at_the_same_quality(tmp_path):
    """On a camera pan of a real photo (2 px right and 1 px down per frame), predicting each
    latent frame from the previous one moved by per-block vectors (the default) stores chunks
    whose flags say so (version 5, flags 1) and costs far fewer bits than the in-place
    prediction of --no-motion (flags 0), at no loss of PSNR; both decode. (The picture is not
    steadied first, which would leave the latents little motion to predict.)"""
    photo = read_all(SAMPLE)[0]
    src = np.stack([photo[40 + t:168 + t, 60 + 2 * t:252 + 2 * t] for t in range(25)])  # 25 x 128x192
    clip = _lossless(src, tmp_path / "pan.mkv")
    out = {}
    for name, motion in (("moved", None), ("in_place", False)):
        Codec(device="cpu", motion=motion, camera=False).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            assert f.header["quantization"]["motion"] is (motion is None)
            versions = {bytes(f.reader.read(e.index)[:3]) for e in f._latent_chunks}
            latent_bytes = sum(e.stored_size for e in f._latent_chunks)
            frames = f.frames_tensor().numpy()
        out[name] = (latent_bytes, psnr(frames, src), versions)
    (moved, p_moved, v_moved), (in_place, p_in_place, v_in_place) = out["moved"], out["in_place"]
    assert v_moved == {b"\x05\x10\x01"} and v_in_place == {b"\x05\x10\x00"}
    assert moved < 0.85 * in_place, (moved, in_place)
    assert p_moved > p_in_place - 0.1, (p_moved, p_in_place)

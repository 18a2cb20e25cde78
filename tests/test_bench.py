"""Baselines at matched rate and the bench report, on small real clips with real encoders."""

from __future__ import annotations

import io
import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from rich.console import Console

from vaecodec.baselines import BASELINES, check_baselines, decode, encode, match_rate
from vaecodec.bench import baseline_setting
from vaecodec.errors import InputError, UsageError
from vaecodec.metrics import bd_psnr, bd_rate, bits_per_pixel, score
from vaecodec.video import VideoReader

FPS = Fraction(25)


def _lavfi(size: tuple[int, int], frames: int, source: str = "testsrc2") -> np.ndarray:
    """uint8 [frames, H, W, 3] from an ffmpeg lavfi source through PyAV."""
    w, h = size
    with av.open(f"{source}=size={w}x{h}:rate=25", format="lavfi") as src:
        out = []
        for f in src.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == frames:
                break
    return np.stack(out)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """uint8 [20, 96, 160, 3]: a photograph (skimage 'astronaut') panning 2 px right, 1 px down per frame."""
    from skimage import data

    photo = data.astronaut()
    return np.stack([photo[150 + t : 246 + t, 140 + 2 * t : 300 + 2 * t] for t in range(20)])


def _chunks(frames: np.ndarray, n: int = 7):
    return lambda: (frames[i : i + n] for i in range(0, len(frames), n))


@pytest.fixture(scope="module")
def random_tiny(tmp_path_factory) -> str:
    """A real (randomly initialised) tiny VAE saved as safetensors: a 'tiny:PATH' model spec."""
    from safetensors.torch import save_file

    from vaecodec.models.tiny import TinyVAE

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny-random.safetensors"
    state = {f"model.{k}": v.contiguous() for k, v in TinyVAE().state_dict().items()}
    save_file(state, str(path), metadata={"model_id": "tiny-random-test"})
    return f"tiny:{path}"


def _clip(path: Path, frames: np.ndarray) -> Path:
    """Write frames as a high-quality H.264 file with plain PyAV (independent of the code under test)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"crf": "10", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for rgb in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")))
        out.mux(vs.encode(None))
    return path


@pytest.mark.parametrize("name", ["x264", "x264-444", "x265", "svtav1"])
def test_near_lossless_round_trip_is_accurate(name, frames):
    spec = BASELINES[name]
    q = 4 if name != "svtav1" else 4.0
    data, n = encode(_chunks(frames)(), spec, q, width=160, height=96, fps=FPS, threads=1)
    assert n == len(frames)
    assert data[4:8] == b"ftyp"  # a whole MP4 file, container included
    q_ = score(_chunks(frames)(), decode(data, width=160, height=96, threads=1))
    # Colour conversion must match both ways: a BT.601/709 mix-up alone costs ~10 dB here.
    assert q_.frames == len(frames)
    assert q_.psnr > 38 and q_.ssim_y > 0.98


def test_odd_frame_size_is_padded_then_cropped(frames):
    odd = np.ascontiguousarray(frames[:6, :31, :45])
    data, n = encode(iter([odd]), BASELINES["x264"], 10, width=45, height=31, fps=FPS, threads=1)
    out = np.concatenate(list(decode(data, width=45, height=31, threads=1)))
    assert out.shape == odd.shape == (6, 31, 45, 3)
    assert score([odd], [out]).psnr > 30


@pytest.mark.parametrize("name", ["x264", "x265", "svtav1"])
def test_match_rate_lands_on_target_and_interpolates(name, frames):
    spec = BASELINES[name]
    # A reachable target: the rate of an encode at an arbitrary setting of the same codec.
    ref, n = encode(_chunks(frames)(), spec, 27 if name != "svtav1" else 37, width=160, height=96, fps=FPS, threads=1)
    target = bits_per_pixel(len(ref), 160, 96, n) * 1.1  # not exactly any integer/2-decimal setting
    r = match_rate(_chunks(frames), spec, target, width=160, height=96, fps=FPS, threads=1)
    assert len(r.encodes) <= 6
    assert r.bpp == pytest.approx(bits_per_pixel(r.file_bytes, 160, 96, len(frames)))
    tol = 0.03 if not spec.integer_q else 0.15  # integer CRF steps are coarse on a tiny clip
    assert abs(math.log(r.bpp / target)) <= math.log1p(tol)
    assert r.psnr_at_target is not None
    (b0, p0), (b1, p1) = r.points()[0], r.points()[-1]
    assert b0 < target < b1 or b0 == pytest.approx(target, rel=tol)
    assert min(p0, p1) - 0.01 <= r.psnr_at_target <= max(p0, p1) + 0.01  # interpolated, not extrapolated
    assert p1 > p0  # more bits, more PSNR


def test_unknown_baseline_and_bad_target_are_usage_errors(frames):
    with pytest.raises(UsageError, match="unknown baseline 'x266'"):
        check_baselines(["x264", "x266"])
    with pytest.raises(UsageError, match="positive"):
        match_rate(_chunks(frames), BASELINES["x264"], 0.0, width=160, height=96, fps=FPS, threads=1)


def _strict_json(path: Path) -> dict:
    def no_constants(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def test_run_bench_single_point_report(tmp_path, random_tiny):
    from vaecodec.bench import run_bench

    clip = _clip(tmp_path / "clip.mp4", _lavfi((64, 48), 9))
    threads_before = torch.get_num_threads()
    log = io.StringIO()
    report = run_bench(
        [clip], codec_kwargs={"model": random_tiny, "device": "cpu"}, sweep=None, baselines=["x264"],
        threads=1, json_path=tmp_path / "r.json", plot_path=tmp_path / "r.png", console=Console(file=log),
    )
    torch.set_num_threads(threads_before)
    data = _strict_json(tmp_path / "r.json")
    assert [c["name"] for c in data["codecs"]] == ["vaecodec", "x264"]
    ours, x264 = data["codecs"]
    video_bytes = ours["file_bytes"] - ours["audio_bytes"]  # the rate is the video's, as the baselines'
    assert ours["bpp"] == pytest.approx(8 * video_bytes / (64 * 48 * 9))
    assert ours["ratio_vs_rgb"] == pytest.approx(64 * 48 * 3 * 9 / video_bytes)
    assert ours["ratio_vs_input"] == pytest.approx(clip.stat().st_size / ours["file_bytes"])
    assert len(ours["quality"]["per_frame_psnr"]) == 9
    assert ours["psnr"] == pytest.approx(np.mean(ours["quality"]["per_frame_psnr"]))
    stages = ours["stages_seconds"]
    assert set(stages) == {"read", "camera", "model_encode", "pack", "unpack", "model_decode", "view", "write"}
    assert all(v > 0 for k, v in stages.items() if k not in ("camera", "view"))
    # a model without an entropy coder quantizes uniformly and is not steadied: no motion search, no views
    assert stages["camera"] == stages["view"] == 0
    assert ours["stages_fps"]["camera"] is ours["stages_fps"]["view"] is None
    assert ours["peak_rss_bytes"] == max(ours["encode_peak_rss_bytes"], ours["decode_peak_rss_bytes"]) > 0
    assert ours["peak_gpu_bytes"] is None
    assert x264["target_bpp"] == ours["bpp"]
    assert x264["vaecodec_psnr_gain_db"] == pytest.approx(ours["psnr"] - x264["psnr_at_target"])
    env = data["environment"]
    assert env["model_id"] == "tiny-random-test" and len(env["weights_sha256"]) == 64
    assert env["baseline_threads"] == 1 and env["torch"] == torch.__version__
    assert report["codecs"][0]["bpp"] == ours["bpp"]
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "x264" in log.getvalue() and "model_decode" in log.getvalue()


def test_run_bench_takes_an_image_sequence(tmp_path, random_tiny):
    """A numbered-PNG pattern benches like a video file: every frame scored, the input's size
    the sequence's files (the work files are not named after the input, whose "%04d" would make
    them patterns), and a bad second input is refused before the first one runs."""
    from vaecodec.bench import run_bench

    src = _lavfi((48, 32), 5)
    (tmp_path / "seq").mkdir()
    pattern = tmp_path / "seq" / "%04d.png"
    with av.open(str(pattern), "w", format="image2") as out:  # 0001.png ... 0005.png
        vs = out.add_stream("png", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "rgb24"
        for rgb in src:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(vs.encode(None))
    kwargs = dict(codec_kwargs={"model": random_tiny, "device": "cpu"}, sweep=None, baselines=[], threads=1,
                  json_path=None, plot_path=None, console=Console(file=io.StringIO()))
    with pytest.raises(InputError, match="nope.mp4: no such file"):
        run_bench([pattern, tmp_path / "nope.mp4"], **kwargs)
    (ours,) = run_bench([pattern], **kwargs)["codecs"]
    assert len(ours["quality"]["per_frame_psnr"]) == 5
    on_disk = sum(f.stat().st_size for f in (tmp_path / "seq").iterdir())
    assert ours["ratio_vs_input"] == pytest.approx(on_disk / ours["file_bytes"])


def test_run_bench_takes_a_part_of_each_input(tmp_path, random_tiny):
    """start/frames bench a part of a long input: vaecodec codes exactly the file ``encode
    --start --frames`` writes, every codec is scored on those frames, and no ratio to the input
    file's size is claimed for a part of it."""
    from vaecodec.bench import run_bench
    from vaecodec.codec import Codec

    clip = _clip(tmp_path / "clip.mp4", _lavfi((64, 48), 20))
    report = run_bench(
        [clip], codec_kwargs={"model": random_tiny, "device": "cpu"}, sweep=None, baselines=["x264"], threads=1,
        json_path=None, plot_path=None, console=Console(file=io.StringIO()), start="0.2", frames=9,
    )
    assert report["inputs"][0]["frames"] == 9 and report["inputs"][0]["start"] == 0.2
    ours, x264 = report["codecs"]
    alone = Codec(model=random_tiny, device="cpu").encode(clip, tmp_path / "part.vlat", start="0.2", frames=9)
    assert ours["file_bytes"] == alone.file_bytes and alone.input_bytes == 0
    weights = random_tiny.split(":", 1)[1]
    decoded = np.concatenate(list(Codec(model_path=weights, device="cpu").decode_frames(tmp_path / "part.vlat")))
    with VideoReader(clip) as r:
        original = np.concatenate(list(r.chunks()))
    assert ours["psnr"] == pytest.approx(score([original[5:14]], [decoded]).psnr)  # scored on that part
    assert len(ours["quality"]["per_frame_psnr"]) == len(x264["quality"]["per_frame_psnr"]) == 9
    assert ours["ratio_vs_input"] == x264["ratio_vs_input"] == 0
    with pytest.raises(UsageError, match="not seconds"):
        run_bench([clip], codec_kwargs={}, sweep=None, baselines=[], threads=1, json_path=None, plot_path=None,
                  console=Console(file=io.StringIO()), start="soon")


def test_run_bench_sweep_gives_bd_figures(tmp_path, random_tiny):
    from vaecodec.bench import run_bench

    clip = _clip(tmp_path / "clip.mp4", _lavfi((64, 48), 5))
    report = run_bench(
        [clip], codec_kwargs={"model": random_tiny, "device": "cpu"}, sweep=[{"bits": b} for b in (4, 5, 6, 8)],
        baselines=["x264"], threads=1, json_path=None, plot_path=None,
        console=Console(file=io.StringIO()),
    )
    ours = [c for c in report["codecs"] if c["name"] == "vaecodec"]
    assert [c["setting"] for c in ours] == [{"bits": b} for b in (4, 5, 6, 8)]
    assert [c["bpp"] for c in ours] == sorted(c["bpp"] for c in ours)  # more bits per latent, more bits per pixel
    (bd,) = report["bd"]
    assert bd["anchor"] == "x264" and bd["points"][0] == 4
    theirs = sorted({(p["bpp"], p["psnr"]) for c in report["codecs"] if c["name"] == "x264" for p in c["rd_points"]})
    test = sorted((c["bpp"], c["psnr"]) for c in ours)
    args = ([b for b, _ in theirs], [p for _, p in theirs], [b for b, _ in test], [p for _, p in test])
    for key, fn in (("bd_rate_percent", bd_rate), ("bd_psnr_db", bd_psnr)):
        expected = fn(*args)
        if math.isnan(expected):  # a random model's PSNR is far below x264's: no common range
            assert bd[key] is None and "do not overlap" in bd["note"]
        else:
            assert bd[key] == pytest.approx(expected)


def test_run_bench_rejects_bad_input(tmp_path, random_tiny):
    from vaecodec.bench import run_bench

    kwargs = dict(codec_kwargs={"model": random_tiny, "device": "cpu"}, sweep=None, threads=1, json_path=None,
                  plot_path=None, console=Console(file=io.StringIO()))
    with pytest.raises(InputError, match="no such file"):
        run_bench([tmp_path / "missing.mp4"], baselines=[], **kwargs)
    with pytest.raises(UsageError, match="unknown baseline"):
        run_bench([tmp_path / "missing.mp4"], baselines=["mpeg1"], **kwargs)
    with pytest.raises(UsageError, match="may set only bits, quality"):
        run_bench([tmp_path / "missing.mp4"], baselines=[], **{**kwargs, "sweep": [{"tile_px": 64}]})
    with pytest.raises(UsageError, match="reads each input several times: name a file, not stdin"):
        run_bench(["-"], baselines=[], **kwargs)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")  # every input is opened before any run
    with pytest.raises(InputError, match="junk.mp4: cannot open as video"):
        run_bench([tmp_path / "junk.mp4", tmp_path / "missing.mp4"], baselines=[], **kwargs)


def test_bd_entry_uses_every_scored_point_and_needs_four():
    from vaecodec.bench import Source, _bd

    src = Source(Path("clip.mp4"), 64, 48, Fraction(25), 9, 1000)
    ours = [{"bpp": b, "psnr": p} for b, p in ((0.1, 30.0), (0.2, 32.5), (0.4, 35.0), (0.8, 37.0))]
    # Two baseline runs, each with the two encodes scored around its target: 4 distinct points.
    theirs = [
        {"rd_points": [{"bpp": 0.09, "psnr": 29.0}, {"bpp": 0.25, "psnr": 32.0}]},
        {"rd_points": [{"bpp": 0.5, "psnr": 34.5}, {"bpp": 0.95, "psnr": 36.5}]},
    ]
    bd = _bd(src, ours, theirs, "x264")
    anchor = ([0.09, 0.25, 0.5, 0.95], [29.0, 32.0, 34.5, 36.5])
    test = ([0.1, 0.2, 0.4, 0.8], [30.0, 32.5, 35.0, 37.0])
    assert bd["points"] == [4, 4]
    assert bd["bd_rate_percent"] == pytest.approx(bd_rate(*anchor, *test))
    assert bd["bd_psnr_db"] == pytest.approx(bd_psnr(*anchor, *test))
    assert bd["bd_rate_percent"] < 0 < bd["bd_psnr_db"]  # this made-up vaecodec curve is the better one
    short = _bd(src, ours[:3], theirs, "x264")
    assert short["bd_rate_percent"] is None and ">= 4" in short["note"]
    # two searches ending at the same coarsest encode: one point at that rate, PSNRs averaged
    floor = [{"rd_points": [{"bpp": 0.09, "psnr": 28.8}, {"bpp": 0.25, "psnr": 32.0}]}, *theirs]
    twice = _bd(src, ours, floor, "x264")
    assert twice["points"] == [4, 4]
    assert twice["bd_rate_percent"] == pytest.approx(bd_rate([0.09, 0.25, 0.5, 0.95], [28.9, 32.0, 34.5, 36.5], *test))


def test_frames_rereads_or_caches_the_same_frames(tmp_path, frames):
    from vaecodec.bench import Frames

    clip = _clip(tmp_path / "clip.mp4", frames[:10])
    for limit in (1 << 30, 1000):  # cached, and too big to cache
        source = Frames(clip, limit_bytes=limit)
        source.keep = True
        first = np.concatenate(list(source()))
        second = np.concatenate(list(source()))
        assert first.shape == (10, 96, 160, 3)
        assert np.array_equal(first, second)
        assert (source._cache is not None) == (limit > first.nbytes)


def test_unreachable_rate_stops_at_the_crf_limit_without_extrapolating(frames):
    # 40 bpp is far above what x264 spends even at CRF 0 on this clip.
    r = match_rate(_chunks(frames), BASELINES["x264"], 40.0, width=160, height=96, fps=FPS, threads=1)
    assert len(r.encodes) <= 6
    assert r.q == 0 and r.bpp < 40.0
    assert r.psnr_at_target is None
    # the report's row says why its encode is not at the rate it was matched to
    row = {"crf": r.q, "target_bpp": 40.0, "psnr_at_target": r.psnr_at_target}
    assert baseline_setting(row) == "crf 0 (target 40.0000 bpp not reached)"
    assert baseline_setting(row, short=True) == "0 (limit)"  # the terminal's table keeps its columns
    assert baseline_setting({**row, "crf": 23.5, "psnr_at_target": 31.0}) == "crf 23.5"


def test_sweep_rows_name_the_scale_a_quality_codes_at(tmp_path):
    """Qualities 1-4 of the embedded model code a smaller picture by default; the report says so
    (the camera left out: a canvas would add its margin to the latent shapes)."""
    from vaecodec.bench import run_bench

    clip = _clip(tmp_path / "clip.mp4", _lavfi((96, 64), 9))
    threads_before = torch.get_num_threads()
    report = run_bench(
        [clip], codec_kwargs={"device": "cpu", "camera": False}, sweep=[{"quality": 1}, {"quality": 5}, {"quality": 5, "scale": 0.75}],
        baselines=[], threads=1, json_path=None, plot_path=None, console=Console(file=io.StringIO()),
    )
    torch.set_num_threads(threads_before)
    assert [c["setting"] for c in report["codecs"]] == [{"quality": 1, "scale": 0.5}, {"quality": 5}, {"quality": 5, "scale": 0.75}]
    assert [c["latent_shape"][2:] for c in report["codecs"]] == [[4, 6], [8, 12], [6, 9]]


def test_refinement_is_a_sweep_setting_and_each_point_gets_its_own(tmp_path):
    """``bench --refine N`` adds refinement to every sweep point; the codec is reset after each."""
    from vaecodec.bench import run_bench

    clip = _clip(tmp_path / "clip.mp4", _lavfi((96, 64), 9))
    threads_before = torch.get_num_threads()
    report = run_bench(
        [clip], codec_kwargs={"device": "cpu"}, sweep=[{"quality": 5}, {"quality": 5, "refine": 3}],
        baselines=[], threads=1, json_path=None, plot_path=None, console=Console(file=io.StringIO()),
    )
    torch.set_num_threads(threads_before)
    plain, refined = report["codecs"]
    assert plain["setting"] == {"quality": 5} and refined["setting"] == {"quality": 5, "refine": 3}
    assert refined["stages_fps"]["refine"] > 0 and "refine" not in plain["stages_fps"]
    assert refined["quantization"]["refine"]["steps"] == 3 and "refine" not in plain["quantization"]

"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vaecodec import Codec
from vaecodec.cli import app
from vaecodec.container import VlatReader
from vaecodec.models import ModelRef, resolve
from vaecodec.models.tiny import WEIGHTS

from conftest import make_video, read_all


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120", "VAECODEC_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "vaecodec", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def invoke(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI in this process through typer's CliRunner: no interpreter start-up, for commands
    that end before any real work."""
    r = CliRunner().invoke(app, [*map(str, args)], env={"VAECODEC_DEBUG": "", **env})
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def one_line_error(p: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vaecodec: error:"), p.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    src = make_video(d / "in.mp4", size=(64, 48), frames=9)
    p = run("encode", src, d / "out.vlat", "--json")
    assert p.returncode == 0, p.stderr
    return d, src, json.loads(p.stdout)


def _piped(src: Path, *args: str) -> subprocess.CompletedProcess:
    """``vaecodec ARGS`` with ``src`` on stdin through a real pipe (not a seekable file)."""
    env = {**os.environ, "COLUMNS": "120", "VAECODEC_DEBUG": ""}
    with subprocess.Popen(["cat", str(src)], stdout=subprocess.PIPE) as cat:
        p = subprocess.run([sys.executable, "-m", "vaecodec", *map(str, args)], stdin=cat.stdout, capture_output=True,
                           text=True, env=env, timeout=300)
    return p


def test_encode_reads_a_url(tmp_path):
    """A URL input goes to FFmpeg's protocols as it is (typer's Path used to fold "http://" to
    "http:/"): here a real HTTP server on this machine; a missing one is one line with the
    server's answer."""
    import functools
    import http.server
    import threading

    src = make_video(tmp_path / "cam.mkv", size=(64, 48), frames=12, audio=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        p = run("encode", f"{url}/cam.mkv", tmp_path / "cam.vlat", "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["frames"] == 12
        assert VlatReader(tmp_path / "cam.vlat").header["source"] == {"name": "cam.mkv", "bytes": 0}
        one_line_error(run("encode", f"{url}/gone.mkv", tmp_path / "gone.vlat"), 1, "gone.mkv", "404")
    finally:
        server.shutdown()


def test_usage_mistakes_are_one_line():
    """A mistyped option, a missing argument, a value of the wrong type or an unknown command
    is one line naming the fix (click's usage panel was six), exit 2; help is still help."""
    for args, words in ((("encode", "a.mp4", "b.vlat", "--qualty", "3"), ("No such option: --qualty", "--quality")),
                        (("encode",), ("Missing argument 'src'", "vaecodec encode --help")),
                        (("decode", "a.vlat", "b.mp4", "--crf", "high"), ("'--crf'", "integer")),
                        (("bogus",), ("No such command 'bogus'", "vaecodec --help"))):
        one_line_error(run(*args), 2, *words)
    p = run("--help")
    assert p.returncode == 0 and "encode" in p.stdout and not p.stderr
    p = run()
    assert p.returncode == 2 and "Usage: vaecodec" in p.stdout + p.stderr


def test_encoding_a_vlat_or_decoding_a_video_says_which_it_is(encoded):
    """The two mix-ups a new user makes get told what the file is and which command takes it."""
    d, src, _ = encoded
    one_line_error(invoke("encode", d / "out.vlat", d / "again.vlat"), 1, "out.vlat is a .vlat file, not a video",
                   "vaecodec decode")
    one_line_error(invoke("decode", src, d / "back.mp4"), 1, "not a .vlat file", "looks like an MP4/MOV video",
                   "vaecodec encode")


def test_encode_reads_a_stream_from_stdin(tmp_path):
    """``-`` reads the input from a pipe (ffmpeg ... -f matroska - | vaecodec encode - out.vlat):
    every frame, the rate and the audio arrive; an MP4 whose index comes last cannot be read
    from a pipe and is refused in one line that says what to do; a .vlat cannot go to a pipe."""
    src = make_video(tmp_path / "in.mkv", size=(64, 48), frames=30, rate=24, audio=True)
    p = _piped(src, "encode", "-", tmp_path / "piped.vlat", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert (r["frames"], r["fps"], r["input_bytes"]) == (30, "24/1", 0)
    assert VlatReader(tmp_path / "piped.vlat").header["audio"]["codec"] == "aac"
    mp4 = make_video(tmp_path / "big.mp4", size=(320, 240), frames=60)  # index written last, past the pipe buffer
    one_line_error(_piped(mp4, "encode", "-", tmp_path / "no.vlat"), 1, "<stdin>", "faststart")
    assert not (tmp_path / "no.vlat").exists()
    one_line_error(invoke("encode", src, "-"), 2, "not a stream")


def test_encode_json_reports_the_figures(encoded):
    _, _, r = encoded
    assert r["frames"] == 9 and r["width"] == 64 and r["height"] == 48
    assert r["bpp"] > 0 and r["file_bytes"] > 0 and r["fps"] == "25/1"


def test_decode_and_info(encoded):
    d, _, _ = encoded
    p = run("decode", d / "out.vlat", d / "back.mp4", "--quiet")
    assert p.returncode == 0, p.stderr
    assert (d / "back.mp4").stat().st_size > 0
    p = run("info", d / "out.vlat", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["complete"] and info["header"]["video"]["width"] == 64
    assert info["header"]["quantization"]["motion"] is True  # the default
    assert {c["kind"] for c in info["chunks"]} >= {"latent", "summary"}
    p = run("info", d / "out.vlat")  # for people: the quality level asked for (the default)
    assert p.returncode == 0 and re.search(r"quantization\s*│ quality 5, ", p.stdout), p.stdout


def test_a_part_or_one_still(encoded):
    """--start/--frames pick the frames to decode or encode; a single .png is one frame;
    mistakes are one line."""
    d, src, _ = encoded
    p = run("encode", src, d / "tail.vlat", "--start", "0.2", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["frames"] == 4, p.stderr  # frames 5..8 of 9
    one_line_error(invoke("encode", src, d / "none.vlat", "--start", "0.36"), 1, "past its last frame")
    one_line_error(invoke("encode", src, d / "none.vlat", "--start", "-1"), 2, "'-1'")
    p = run("decode", d / "out.vlat", d / "part.mkv", "--codec", "ffv1", "--start", "0:00.1", "--frames", "3", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["frames"] == 3 and read_all(d / "part.mkv").shape[0] == 3
    assert run("decode", d / "out.vlat", d / "still.png", "--start", "0.2", "-q").returncode == 0
    with av.open(str(d / "still.png")) as c:  # frame 5 of the three from 0.1 s (frames 3, 4, 5)
        assert np.array_equal(next(c.decode(video=0)).to_ndarray(format="rgb24"), read_all(d / "part.mkv")[2])
    one_line_error(invoke("decode", d / "out.vlat", d / "two.png", "--frames", "2"), 2, "one frame")
    one_line_error(invoke("decode", d / "out.vlat", d / "x.mp4", "--start", "9"), 2, "past the last frame", "9 frames")
    one_line_error(invoke("decode", d / "out.vlat", d / "x.mp4", "--start", "soon"), 2, "'soon'")
    assert not list(d.glob("*two*")) and not list(d.glob("*x.mp4*")) and not list(d.glob("*none*"))


def test_several_inputs_encode_into_a_folder(encoded, tmp_path):
    """A training set is many clips: one command (one model load) encodes each into FOLDER/NAME.vlat,
    the same bytes as one at a time; an unreadable input is named and the rest go on (exit 1);
    clashes are refused before any work; --skip-existing resumes a batch."""
    d, src, _ = encoded
    other = make_video(tmp_path / "other.mkv", size=(48, 32), frames=5)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "latents"
    out.mkdir()
    p = run("encode", src, tmp_path / "broken.mp4", other, out)
    assert p.returncode == 1, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(errors) == 2 and "broken.mp4: cannot open as video" in errors[0] and "1 of 3 inputs" in errors[1], p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["in.vlat", "other.vlat"]
    assert (out / "in.vlat").read_bytes() == (d / "out.vlat").read_bytes()  # as encode in.mp4 out.vlat wrote it
    before = {f: f.stat().st_mtime_ns for f in out.iterdir()}
    one_line_error(invoke("encode", src, other, out), 2, "in.vlat and 1 more exist", "--skip-existing")
    one_line_error(invoke("encode", src, d / "in.mkv", out), 2, "would both be encoded to")
    one_line_error(invoke("encode", src, other, d / "x.vlat"), 2, "not a folder")
    (out / "other.vlat").unlink()
    p = run("encode", src, other, out, "--skip-existing", "--json")
    assert p.returncode == 0, p.stderr
    assert [r["input"] for r in json.loads(p.stdout)] == [str(other)] and (out / "other.vlat").exists()
    assert (out / "in.vlat").stat().st_mtime_ns == before[out / "in.vlat"]


def test_info_checks_several_files_in_one_call(encoded, tmp_path):
    """A latent cache is checked in one call: a row per file, each damaged chunk named, a file
    that is no .vlat at all a row of its own, exit 1 when any has a problem (0 when none)."""
    d, _, _ = encoded
    damaged = bytearray((d / "out.vlat").read_bytes())
    with VlatReader(d / "out.vlat") as r:  # a byte in the middle of the first latent chunk's payload
        victim = next(c for c in r.chunks if c.kind == "latent")
        damaged[r.chunks[victim.index + 1].offset - victim.stored_size // 2 - 1] ^= 0xFF
    (tmp_path / "damaged.vlat").write_bytes(bytes(damaged))
    (tmp_path / "notes.vlat").write_text("not a vlat")
    (tmp_path / "good.vlat").write_bytes((d / "out.vlat").read_bytes())
    p = run("info", "good.vlat", "good.vlat", "--verify", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.count("verified") == 2, p.stdout + p.stderr
    p = run("info", "good.vlat", "damaged.vlat", "notes.vlat", "--verify", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    rows = {ln.split()[0]: ln for ln in p.stdout.splitlines() if ".vlat" in ln}
    assert "verified" in rows["good.vlat"] and "1 problem(s)" in rows["damaged.vlat"], p.stdout
    assert "too short to be a .vlat" in rows["notes.vlat"], p.stdout
    assert re.search(r"problem: damaged.vlat: chunk \d+ at byte \d+", p.stderr), p.stderr
    assert p.stderr.strip().splitlines()[-1] == "vaecodec: error: 2 of 3 files have problems"
    listed = json.loads(run("info", "good.vlat", "damaged.vlat", "--json", cwd=tmp_path).stdout)
    assert [len(x["problems"]) for x in listed] == [0, 0]  # damage shows when the chunks are read
    listed = json.loads(run("info", "good.vlat", "damaged.vlat", "--json", "--verify", cwd=tmp_path).stdout)
    assert [len(x["problems"]) for x in listed] == [0, 1]


def test_decode_to_stdout_streams_matroska(encoded, tmp_path):
    """`vaecodec decode x.vlat - | ffplay -`: the video (FFV1 here, so exact) goes to stdout as
    Matroska, the summary to stderr; a reader that quits early ends it with one line."""
    import io

    d, _, _ = encoded
    env = {**os.environ, "COLUMNS": "120", "VAECODEC_DEBUG": ""}
    cmd = [sys.executable, "-m", "vaecodec", "decode"]
    p = subprocess.run([*cmd, str(d / "out.vlat"), "-", "--codec", "ffv1"], capture_output=True, env=env, timeout=300)
    assert p.returncode == 0 and p.stdout[:4] == b"\x1a\x45\xdf\xa3", p.stderr  # EBML: Matroska
    assert b"decoded out.vlat" in p.stderr and b"stdout" in p.stderr
    assert run("decode", d / "out.vlat", d / "file.mkv", "--codec", "ffv1", "-q").returncode == 0
    with av.open(io.BytesIO(p.stdout)) as c:
        piped = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert np.array_equal(piped, read_all(d / "file.mkv"))
    one_line_error(invoke("decode", d / "out.vlat", "-", "--json"), 2, "--json")
    one_line_error(invoke("decode", d / "out.vlat", "-", "--codec", "png"), 2, "PNG frames need a file")
    big = make_video(tmp_path / "big.mp4", size=(320, 240), frames=30)  # FFV1 frames far beyond a pipe's buffer
    assert run("encode", big, tmp_path / "big.vlat", "-q").returncode == 0
    with subprocess.Popen([*cmd, str(tmp_path / "big.vlat"), "-", "--codec", "ffv1", "-q"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env) as proc:
        proc.stdout.read(1000)
        proc.stdout.close()  # the player quits
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=300)
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), 141, "stdout closed")


def test_info_names_the_level_and_its_table_set(encoded):
    """A top level codes other tables than its number; info says both, the header keeps both."""
    d, src, _ = encoded
    p = run("encode", src, d / "q8.vlat", "--quality", "8", "--quiet")
    assert p.returncode == 0, p.stderr
    p = run("info", d / "q8.vlat")
    assert p.returncode == 0 and re.search(r"quality 8 \(table set [467]\)", p.stdout), p.stdout
    with VlatReader(d / "q8.vlat") as f:
        assert f.header["quantization"]["level"] == 8 and f.header["quantization"]["quality"] in (4, 6, 7)  # busy, middle or smooth
    p = run("info", d / "out.vlat")
    assert p.returncode == 0 and "bits/pixel" in p.stdout


def test_decode_preset_reaches_the_encoder(encoded):
    """x264 records its settings in the stream: ultrafast turns CABAC off, veryfast keeps it."""
    d, _, _ = encoded
    for preset, cabac in (("ultrafast", b"cabac=0"), ("veryfast", b"cabac=1")):
        out = d / f"{preset}.mp4"
        p = run("decode", d / "out.vlat", out, "--preset", preset, "-q")
        assert p.returncode == 0, p.stderr
        assert cabac in out.read_bytes()
    one_line_error(run("decode", d / "out.vlat", d / "x.mp4", "--preset", "warp"), 2, "warp")
    assert not (d / "x.mp4").exists()


def test_output_exists_needs_overwrite(encoded):
    d, src, _ = encoded
    before = (d / "out.vlat").read_bytes()
    one_line_error(run("encode", src, d / "out.vlat"), 2, "exists")
    assert (d / "out.vlat").read_bytes() == before
    assert run("encode", src, d / "out.vlat", "-y", "-q").returncode == 0


def test_no_motion_writes_in_place_chunks(encoded, tmp_path):
    _, src, _ = encoded
    p = run("encode", src, tmp_path / "still.vlat", "--no-motion", "--quiet")
    assert p.returncode == 0, p.stderr
    info = json.loads(run("info", tmp_path / "still.vlat", "--json").stdout)
    assert info["header"]["quantization"]["motion"] is False
    with VlatReader(tmp_path / "still.vlat") as r:  # chunk version 5, flags 0: no motion vectors
        assert {bytes(r.read(c.index)[:3]) for c in r.chunks_of("latent")} == {b"\x05\x10\x00"}


def test_bad_inputs_give_one_line_and_nonzero_exit(encoded, tmp_path):
    d, src, _ = encoded
    one_line_error(run("encode", tmp_path / "nope.mp4", tmp_path / "x.vlat"), 1, "nope.mp4")
    (tmp_path / "text.mp4").write_text("hello")
    one_line_error(run("encode", tmp_path / "text.mp4", tmp_path / "x.vlat"), 1)
    (tmp_path / "junk.vlat").write_bytes(os.urandom(256))
    one_line_error(run("decode", tmp_path / "junk.vlat", tmp_path / "x.mp4"), 1, "junk.vlat")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--model", "nosuchmodel"), 1, "nosuchmodel")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--bits", "3"), 2, "--bits")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--device", "tpu"), 2, "--device")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--deadzone", "0.5"), 2, "--deadzone")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--bits", "8", "--deadzone", "0.1"), 2, "--deadzone")
    one_line_error(run("bench", src, "--deadzone", "0.6", "--baselines", "none"), 2, "--deadzone")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--bits", "8", "--motion"), 2, "--motion")
    one_line_error(run("bench", src, "--bits", "8", "--motion", "--baselines", "none"), 2, "--motion")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--scale", "5"), 2, "--scale")
    one_line_error(run("bench", src, "--scale", "0", "--baselines", "none"), 2, "--scale")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--refine", "-1"), 2, "--refine")
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--bits", "8", "--refine", "4"), 2, "--refine")
    one_line_error(run("bench", src, "--refine", "5000", "--baselines", "none"), 2, "--refine")
    damaged = bytearray((d / "out.vlat").read_bytes())
    damaged[20] ^= 0x55  # inside the header JSON
    (tmp_path / "damaged.vlat").write_bytes(bytes(damaged))
    one_line_error(run("info", tmp_path / "damaged.vlat"), 1, "header")
    assert not (tmp_path / "x.vlat").exists() and not (tmp_path / "x.mp4").exists()


def test_models_lists_backends(tmp_path):
    (tmp_path / "ltx2-test.safetensors").write_bytes(b"")
    p = run("models", "--model-dir", tmp_path, "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["kind"]: r for r in json.loads(p.stdout)["models"]}
    assert rows["tiny"]["embedded"] and rows["ltx2"]["found"] == [str(tmp_path / "ltx2-test.safetensors")]


def test_model_directory_names_say_the_kind(encoded, tmp_path):
    """NAME in the model directory is KIND or KIND-...; anything else is listed with the reason
    and refused by name with the naming it needs; a missing directory is reported as such."""
    _, src, _ = encoded
    md = tmp_path / "md"
    md.mkdir()
    (md / "tiny-mine.safetensors").symlink_to(WEIGHTS)  # the shipped weights under a name that says tiny
    (md / "mine.safetensors").symlink_to(WEIGHTS)  # the same weights under a name that does not
    (md / "ltxdir").mkdir()  # a diffusers folder whose name does not say ltxv
    (md / "ltxdir" / "config.json").write_text('{"_class_name": "AutoencoderKLLTXVideo"}')
    (md / "ltxv-0.9").mkdir()
    (md / "ltx2-vae").mkdir()  # ltx2 weights are one file, not a folder
    (md / "notes.txt").write_text("where the weights came from")
    (md / ".DS_Store").write_bytes(b"")

    p = invoke("models", "--model-dir", md, "--json")
    assert p.returncode == 0, p.stderr
    listing = json.loads(p.stdout)
    found = {r["kind"]: r["found"] for r in listing["models"]}
    assert found == {"tiny": [str(md / "tiny-mine.safetensors")], "ltx2": [], "ltxv": [str(md / "ltxv-0.9")]}
    why = {Path(u["path"]).name: u["reason"] for u in listing["unusable"]}
    assert set(why) == {"mine.safetensors", "ltxdir", "ltx2-vae", "notes.txt"}
    assert "KIND-" in why["mine.safetensors"] and "ltx2-mine.safetensors" in why["mine.safetensors"]
    assert "ltxv-ltxdir/" in why["ltxdir"]
    assert "one .safetensors file" in why["ltx2-vae"] and "neither" in why["notes.txt"]
    p = invoke("models", "--model-dir", md)
    assert p.returncode == 0 and "not usable" in p.stdout and "mine.safetensors" in p.stdout

    assert resolve("tiny-mine", md) == ModelRef("tiny", md / "tiny-mine.safetensors")
    p = invoke("encode", src, tmp_path / "ok.vlat", "--model-dir", md, "-m", "tiny-mine", "-q")
    assert p.returncode == 0, p.stderr
    one_line_error(invoke("encode", src, tmp_path / "x.vlat", "--model-dir", md, "-m", "mine"), 1,
                   "ltx2-mine.safetensors", f"--model KIND:{md / 'mine.safetensors'}")
    one_line_error(invoke("encode", src, tmp_path / "x.vlat", "--model-dir", md, "-m", "ltx2-vae"), 1, "one .safetensors file")
    one_line_error(invoke("models", "--model-dir", tmp_path / "nonexist"), 1, "nonexist", "--model-dir", "does not exist")
    one_line_error(invoke("models", VAECODEC_MODELS=str(tmp_path / "nonexist")), 1, "$VAECODEC_MODELS", "does not exist")
    one_line_error(invoke("encode", src, tmp_path / "x.vlat", "--model-dir", tmp_path / "nonexist", "-m", "ltx2-vae"), 1,
                   "does not exist")
    assert not (tmp_path / "x.vlat").exists()


def test_bits_conflicts_with_entropy_options(encoded, tmp_path):
    """--bits is uniform quantization: the entropy coder's options clash with it, whatever the model."""
    _, src, _ = encoded
    for option in (["--deadzone", "0.2"], ["--quality", "3"], ["--refine", "2"], ["--motion"], ["--no-motion"]):
        one_line_error(invoke("encode", src, tmp_path / "x.vlat", "--bits", "6", *option), 2,
                       "--bits", "cannot be combined", option[0])
    one_line_error(invoke("bench", src, "--bits", "4,6", "--quality", "3", "--no-motion"), 2, "--bits", "--no-motion")
    assert not (tmp_path / "x.vlat").exists()


def test_options_out_of_range_name_the_option_and_the_range(encoded, tmp_path):
    _, src, _ = encoded
    out = tmp_path / "x.vlat"
    for args, words in (
        (["--tile-overlap-px", "-8", "--tile-px", "64"], ["--tile-overlap-px", "from 0 to 56", "-8"]),
        (["--tile-overlap-px", "64", "--tile-px", "64"], ["--tile-overlap-px", "from 0 to 56"]),
        (["--tile-px", "12"], ["--tile-px", "multiple of 8", "12"]),
        (["--tile-frames", "0"], ["--tile-frames", "at least 1"]),
        (["--tile-frames", "4", "--tile-overlap", "1"], ["--tile-overlap", "causal state", "no overlap"]),
        (["--zstd-threads", "-1"], ["--zstd-threads", "0 or more"]),
    ):
        one_line_error(invoke("encode", src, out, *args), 2, *words)
    for name in ("out.mp4", "out.MKV", "out.avi"):  # a .vlat under a video's name
        one_line_error(invoke("encode", src, tmp_path / name), 2, name, ".vlat")
        assert not (tmp_path / name).exists()
    assert not out.exists()


def test_help_matches_what_is_accepted():
    params = {(c.name, p.name): p.help for c in typer.main.get_command(app).commands.values() for p in c.params}
    assert "0 <= D < 0.5" in params["encode", "deadzone"]  # 0.5 itself is refused
    assert "vp9" in params["decode", "codec"]


def test_bench_checks_its_report_paths_before_running(encoded, tmp_path):
    """Paths that could only fail after the whole run are refused first; -y replaces a report."""
    _, src, _ = encoded
    old = tmp_path / "r.json"
    old.write_text("earlier report")
    bench = ("bench", src, "--baselines", "none")
    for args, words in (
        (["--plot", tmp_path / "p.txt"], ["--plot", ".txt", ".png"]),
        (["--plot", tmp_path / "p"], ["--plot", "extension"]),
        (["--json", tmp_path / "nodir" / "r.json"], ["--json", "nodir"]),
        (["--json", tmp_path], ["--json", "folder"]),
        (["--json", old], ["--json", "exists", "-y"]),
        (["--json", src, "-y"], ["--json", "input"]),
        (["--json", tmp_path / "r.svg", "--plot", tmp_path / "r.svg", "-y"], ["--plot", "--json file"]),
    ):
        p = invoke(*bench, *args)
        one_line_error(p, 2, *words)
        assert p.stdout == ""  # nothing ran
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        one_line_error(invoke(*bench, "--json", locked / "r.json"), 2, "--json", "locked")
        locked.rmdir()
    assert list(tmp_path.iterdir()) == [old] and old.read_text() == "earlier report"

    p = invoke(*bench, "--json", old, "--plot", tmp_path / "rd.svg", "-y")
    assert p.returncode == 0, p.stderr
    assert json.loads(old.read_text())["codecs"][0]["name"] == "vaecodec"
    assert (tmp_path / "rd.svg").read_bytes().startswith(b"<?xml")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_piped_bench_table_keeps_its_numbers(tmp_path):
    """Outside a terminal (a pipe, a CI log) rich would cut the table to 80 columns and turn
    numbers into '0.03…'; without COLUMNS the table keeps every column whole."""
    src = make_video(tmp_path / "a.mp4", size=(64, 48), frames=9)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "vaecodec", "bench", str(src), "--quality", "1,5", "--baselines", "none"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.strip().startswith("vaecodec  quality=")]
    assert len(rows) == 2 and all("…" not in row for row in rows)
    assert "quality=1,scale=0.5" in rows[0] and re.search(r" 0\.\d{4} ", rows[1])


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _workers_of(pid: int) -> list[int]:
    """Entropy worker processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"vaecodec.workers" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; POSIX signals")
def test_a_full_disk_is_one_line_naming_the_output(tmp_path):
    """Writes that fail midway (a full disk; here a file-size limit, which fails them the same
    way without a special filesystem) give one line naming the output the user asked for, not
    the hidden temp file, and leave nothing behind."""
    import resource

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    src = make_video(tmp_path / "in.mp4", size=(96, 64), frames=40, source="mandelbrot", audio=True)
    out = tmp_path / "out"
    out.mkdir()
    p = run("encode", src, out / "big.vlat")
    assert p.returncode == 0 and (out / "big.vlat").stat().st_size > 6000, p.stderr
    for args, name in ((("encode", src, out / "x.vlat"), "x.vlat"), (("decode", out / "big.vlat", out / "x.mkv"), "x.mkv")):
        env = {**os.environ, "COLUMNS": "120", "VAECODEC_DEBUG": ""}
        p = subprocess.run([sys.executable, "-m", "vaecodec", *map(str, args)], capture_output=True, text=True,
                           env=env, timeout=300, preexec_fn=small_files)
        one_line_error(p, 1, f"{out / name}: File too large", "no partial output")
    assert sorted(f.name for f in out.iterdir()) == ["big.vlat"]


def test_termination_signals_leave_no_partial_output(tmp_path):
    """SIGTERM (twice, as `timeout` sends it) and SIGHUP mid-run: one stderr line, exit 128 +
    signal, no output or .part file or folder left, and no entropy worker left running."""
    env = {**os.environ, "VAECODEC_DEBUG": ""}
    jobs = []  # (process, its output folder, the signal to send)

    def start(name: str, sig: int, *args: object) -> None:
        folder = tmp_path / name
        folder.mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "vaecodec", *map(str, args)], cwd=folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # even if we run nohup'd
        jobs.append((proc, folder, sig))

    src = make_video(tmp_path / "in.mp4", size=(320, 240), frames=240)  # seconds of work on 2 cores
    vlat = tmp_path / "in.vlat"  # made first, so that no job can finish before the watch below starts
    Codec(device="cpu").encode(make_video(tmp_path / "short.mp4", size=(320, 240), frames=49), vlat)
    start("encode", signal.SIGTERM, "encode", src, "out.vlat", "--entropy-workers", "1")
    start("png", signal.SIGTERM, "decode", vlat, "frames/%05d.png")
    start("mp4", signal.SIGHUP, "decode", vlat, "back.mp4")

    workers = []
    pending = list(jobs)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for job in list(pending):
            proc, folder, sig = job
            assert proc.poll() is None, f"{folder.name} ended before the signal: {proc.communicate()}"
            if any(folder.iterdir()) and (folder.name != "encode" or _workers_of(proc.pid)):  # under way
                workers += _workers_of(proc.pid)
                os.kill(proc.pid, sig)
                if sig == signal.SIGTERM:
                    time.sleep(0.02)
                    os.kill(proc.pid, sig)
                pending.remove(job)
        time.sleep(0.01)
    assert not pending, "no partial output appeared"
    assert workers
    for proc, folder, sig in jobs:
        _, stderr = proc.communicate(timeout=60)
        one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), 128 + sig,
                       f"terminated by {signal.Signals(sig).name}", "no partial output")
        assert list(folder.iterdir()) == [], folder.name
    # A worker the parent reaps is gone at once. One that an interrupt caught inside Popen is
    # unknown to the pool, but its stdin closed with the parent, so it ends on its own; a
    # container's init may then leave it a zombie (state Z), which is ended too.
    deadline = time.monotonic() + 20
    while [pid for pid in workers if _running(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _running(pid)]


def test_encode_steadies_a_pan_unless_told_not_to(tmp_path):
    """A camera pan (a real photo, moving 2 px per frame) is steadied by default: the JSON and
    `info` name the canvas; `--no-camera` codes the picture as it is."""
    from test_camera import render

    from conftest import read_all
    from test_codec import SAMPLE, _lossless

    photo = read_all(SAMPLE)[0]
    clip = _lossless(render(photo, 160, 128, [40 + 2 * t for t in range(9)], [30] * 9, [1.0] * 9), tmp_path / "pan.mkv")
    steadied = run("encode", clip, tmp_path / "a.vlat", "--json")
    plain = run("encode", clip, tmp_path / "b.vlat", "--json", "--no-camera")
    assert steadied.returncode == 0 and plain.returncode == 0, steadied.stderr + plain.stderr
    canvas = json.loads(steadied.stdout)["canvas"]
    assert canvas[0] > 160 and canvas[1] >= 128 and json.loads(plain.stdout)["canvas"] is None
    assert json.loads(steadied.stdout)["window_moves"] == 0  # the margin holds this pan
    info = run("info", tmp_path / "a.vlat")
    assert info.returncode == 0 and f"steadied on a {canvas[0]}x{canvas[1]} canvas" in info.stdout, info.stdout
    assert "window moved" not in info.stdout  # the margin holds this pan
    assert "canvas" not in run("info", tmp_path / "b.vlat").stdout


def test_a_signal_that_a_library_turned_into_another_error_still_reads_as_the_signal(capsys):
    """SIGTERM landing inside code that catches everything and raises its own error (the
    weights loader did: "cannot read tiny model weights ...", exit 1) still ends the command as
    terminated, exit 143: the signal is recorded before the exception is raised."""
    from vaecodec.cli import guarded
    from vaecodec.errors import ModelError

    @guarded
    def load() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        except BaseException as e:  # as a library wrapping whatever it was interrupted by
            raise ModelError(f"cannot read weights: {e!r}") from None

    with pytest.raises(typer.Exit) as exit_info:
        load()
    assert exit_info.value.exit_code == 128 + signal.SIGTERM
    assert "terminated by SIGTERM" in capsys.readouterr().err

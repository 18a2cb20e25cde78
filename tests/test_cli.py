"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaecodec.container import VlatReader

from conftest import make_video


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120", "VAECODEC_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "vaecodec", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


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
    one_line_error(run("encode", src, tmp_path / "x.vlat", "--scale", "3"), 2, "--scale")
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

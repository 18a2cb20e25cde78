"""Entropy decoding in worker processes (``vaecodec.workers``): real children, real files."""

from __future__ import annotations

import pytest
import torch

from vaecodec.codec import MAX_ENTROPY_WORKERS, Codec, default_entropy_workers
from vaecodec.container import VlatReader
from vaecodec.errors import FormatError, UsageError, VaecodecError
from vaecodec.workers import CoderPool

from conftest import make_video


@pytest.fixture(scope="module")
def vlat(tmp_path_factory):
    """A file of many small latent chunks (one latent frame each) from a real clip."""
    d = tmp_path_factory.mktemp("workers")
    src = make_video(d / "src.mp4", size=(96, 64), frames=21)
    path = d / "w.vlat"
    Codec(device="cpu", tile_frames=2, chunk_latents=1).encode(src, path)
    return path


def test_workers_decode_the_same_latents_and_frames(vlat):
    with Codec(device="cpu").open(vlat) as f:
        z0, x0 = f.latents(), f.frames_tensor()
    with Codec(device="cpu", entropy_workers=2).open(vlat) as f:
        z2, x2 = f.latents(), f.frames_tensor()
        procs = f._pool.procs
        assert len(procs) == 2
        zr = f.latents(9, 17)  # random access reuses the pool
        it = f.iter_latents()
        head = next(it)
        it.close()  # a reader that stops early, with chunks still in flight ...
        assert torch.equal(f.latents(), z0)  # ... which the next read does not take for its own
    assert torch.equal(z0, z2) and torch.equal(x0, x2) and torch.equal(head, z0[:, : head.shape[1]])
    assert torch.equal(zr, z0[:, 3:5])
    assert all(p.poll() is not None for p in procs)  # closing the file ended the children


def test_worker_reports_a_damaged_payload_and_keeps_decoding(vlat):
    with Codec(device="cpu").open(vlat) as f:
        quant = f.quantizer
        entry = f._latent_chunks[1]
        payload, shape = f.reader.read(entry.index), f._chunk_shape(entry)
        want = quant.unpack(payload, entry.meta, shape)  # in this process
    pool = CoderPool(1, quant.coder)
    try:
        pool.decode(payload[:-3], shape, quant.quality)  # coder words cut short
        with pytest.raises(FormatError, match="latent chunk"):
            pool.result()
        pool.decode(payload, shape, quant.quality)
        assert torch.equal(quant.dequantize(pool.result()), want)
    finally:
        pool.close()


def test_damaged_container_chunk_with_workers_is_reported_like_without(vlat, tmp_path):
    with VlatReader(vlat) as r:
        victim = r.chunks_of("latent")[2]
    data = bytearray(vlat.read_bytes())
    data[victim.offset + victim.stored_size // 2] ^= 0xFF
    bad = tmp_path / "bad.vlat"
    bad.write_bytes(bytes(data))
    results = []
    for workers in (0, 2):
        with Codec(device="cpu", entropy_workers=workers).open(bad) as f:
            with pytest.raises(FormatError) as lost:
                f.latents()
            results.append((str(lost.value), f.latents(conceal=True), [p for p in f.problems if "lost" in p]))
    (e0, z0, p0), (e2, z2, p2) = results
    assert e0 == e2 and f"chunk {victim.index} at byte {victim.offset}" in e0
    assert p0 and p0 == p2 and torch.equal(z0, z2)


def test_worker_count_defaults_and_validation():
    assert default_entropy_workers(torch.device("cpu")) == 0
    assert 0 <= default_entropy_workers(torch.device("cuda")) <= MAX_ENTROPY_WORKERS
    with pytest.raises(UsageError):
        Codec(device="cpu", entropy_workers=-1)


def test_a_dead_worker_is_one_clear_error(vlat):
    with Codec(device="cpu").open(vlat) as f:
        quant, entry = f.quantizer, f._latent_chunks[0]
        payload, shape = f.reader.read(entry.index), f._chunk_shape(entry)
    pool = CoderPool(1, quant.coder)
    pool.procs[0].kill()
    pool.procs[0].wait()
    with pytest.raises(VaecodecError, match="worker process died"):
        pool.decode(payload, shape, quant.quality)
        pool.result()
    assert pool.procs == []  # the pool closed itself


def test_a_read_that_loses_its_worker_fails_cleanly_and_the_next_one_works(vlat):
    with Codec(device="cpu", entropy_workers=1).open(vlat) as f:
        z = f.latents()
        f._pool.procs[0].kill()
        with pytest.raises(VaecodecError, match="worker process died"):
            f.latents()
        assert torch.equal(f.latents(), z)  # on a fresh pool


@pytest.mark.parametrize("chunk_latents,motion,flags", [(1, None, 1), (4, None, 1), (1, False, 0)])
def test_encode_with_workers_writes_the_same_bytes(tmp_path, capfd, chunk_latents, motion, flags):
    """Latent chunks quantized (motion search included) and coded by workers are written in
    encode order, audio interleaved as demuxed: the file does not depend on the worker count."""
    src = make_video(tmp_path / "a.mp4", size=(96, 64), frames=41, audio=True)
    files = []
    for n in (0, 2):
        files.append(tmp_path / f"w{n}.vlat")
        Codec(device="cpu", tile_frames=2, chunk_latents=chunk_latents, motion=motion,
              entropy_workers=n).encode(src, files[-1])
    with VlatReader(files[0]) as r:
        latent = r.chunks_of("latent")
        assert len(latent) > 2 and r.chunks_of("audio")
        assert {bytes(r.read(c.index)[:3]) for c in latent} == {bytes([5, 16, flags])}  # flags 1: motion
        assert max(int(c.meta["t"]) for c in latent) > 1  # later frames are predicted
    assert files[0].read_bytes() == files[1].read_bytes()
    assert "Warning" not in capfd.readouterr().err  # the workers say nothing on the user's terminal


def test_cli_takes_entropy_workers(tmp_path):
    from test_cli import one_line_error, run

    src = make_video(tmp_path / "in.mp4", size=(64, 48), frames=9)
    assert run("encode", src, tmp_path / "o.vlat", "--entropy-workers", "1", "-q").returncode == 0
    assert run("decode", tmp_path / "o.vlat", tmp_path / "o.mkv", "--entropy-workers", "1", "-q").returncode == 0
    one_line_error(run("decode", tmp_path / "o.vlat", tmp_path / "p.mkv", "--entropy-workers", "-1"), 2, "entropy-workers")


def test_closing_with_results_owed_ends_every_child(vlat):
    with Codec(device="cpu").open(vlat) as f:
        quant, entry = f.quantizer, f._latent_chunks[0]
        payload, shape = f.reader.read(entry.index), f._chunk_shape(entry)
    pool = CoderPool(2, quant.coder)
    procs = list(pool.procs)
    pool.decode(payload, shape, quant.quality)
    pool.decode(payload, shape, quant.quality)
    pool.close()  # two results never read
    assert all(p.poll() is not None for p in procs) and pool.procs == []

"""Reading damaged .vlat files through the codec: a real encode, real byte damage, and what the
Python API, ``Codec.decode`` (what the CLI runs) and the CLI do with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import vaecodec
from vaecodec.codec import Codec
from vaecodec.container import ChunkEntry, VlatReader
from vaecodec.errors import FormatError, UsageError

from conftest import make_video, read_all

FRAMES = 38  # 11 latent frames (1 + 10*4 = 41 frames) of which the last holds 2 padding frames
LOST = "latent frame 4 (frames 13..16) lost"  # latent k >= 1 holds frames 1+(k-1)*4 .. 4k


@dataclass
class Encoded:
    path: Path
    chunks: list[ChunkEntry]
    latents: torch.Tensor  # the intact file's, [C, 11, h, w]
    frames: torch.Tensor  # the intact file's decoded frames, [38, H, W, 3]

    def latent(self, t0: int) -> ChunkEntry:
        return next(c for c in self.chunks if c.kind == "latent" and c.meta["t0"] == t0)

    def damaged(self, dst: Path, offset: int | None = None, cut: int | None = None) -> Path:
        """A copy with the byte at ``offset`` flipped and/or cut before byte ``cut``."""
        data = bytearray(self.path.read_bytes())
        if offset is not None:
            data[offset] ^= 0xFF
        dst.write_bytes(bytes(data[:cut]))
        return dst


@pytest.fixture(scope="module")
def enc(tmp_path_factory) -> Encoded:
    """One latent frame per chunk (the first chunk holds two), no audio: chunk index = t0 - 1."""
    d = tmp_path_factory.mktemp("damage")
    path = d / "clip.vlat"
    Codec(device="cpu", tile_frames=1, chunk_latents=1).encode(
        make_video(d / "clip.mp4", size=(32, 32), frames=FRAMES), path
    )
    with VlatReader(path) as r:
        chunks = r.chunks
    with vaecodec.open(path, device="cpu") as f:
        assert f.header["video"]["frames"] == FRAMES and f.latent_shape[1] == 11
        return Encoded(path, chunks, f.latents(), f.frames_tensor())


def _payload_byte(enc: Encoded, victim: ChunkEntry) -> int:
    """A byte in the middle of ``victim``'s payload, which ends where the next record starts."""
    return enc.chunks[victim.index + 1].offset - victim.stored_size // 2 - 1


def test_api_raises_for_a_damaged_payload_and_reads_intact_ranges(enc, tmp_path):
    victim = enc.latent(4)
    bad = enc.damaged(tmp_path / "bad.vlat", _payload_byte(enc, victim))
    lost = f"{LOST}: chunk {victim.index} at byte {victim.offset}: payload checksum mismatch"
    with vaecodec.open(bad, device="cpu") as f:
        for read, request in [(f.latents, "frames 0..37 (latent frames 0..10)"),
                              (lambda: f.latents(10, 20), "frames 10..19 (latent frames 3..5)"),
                              (f.frames_tensor, "frames 0..37"),
                              (lambda: f.frames_tensor(20, 24), "frames 20..23")]:  # its tiles read latent 4
            with pytest.raises(FormatError, match="conceal=True") as e:
                read()
            assert f"cannot read {request}" in str(e.value) and lost in str(e.value)
        assert torch.equal(f.latents(0, 13), enc.latents[:, :4])  # frames 0..12: latents 0..3
        assert torch.equal(f.latents(17, 100), enc.latents[:, 5:])
        # the decoder's causal memory ties latent 8's frames (29..32) to latents 4..8 (the model's
        # reach): reading them fails, a read that starts with latent 9 never touches latent 4
        with pytest.raises(FormatError, match=re.escape(LOST)):
            f.frames_tensor(32, 38)
        assert torch.equal(f.frames_tensor(33, 38), enc.frames[33:])
        z = f.latents(conceal=True)
        assert z.shape == enc.latents.shape and torch.equal(z[:, 4], z[:, 3])  # filler, on request only
        assert torch.equal(z[:, :4], enc.latents[:, :4]) and torch.equal(z[:, 5:], enc.latents[:, 5:])
        assert [p for p in f.problems if "lost" in p] == [next(p for p in f.problems if p.startswith(lost))]


def test_decode_conceals_lost_frames_and_says_which(enc, tmp_path):
    victim = enc.latent(4)
    bad = enc.damaged(tmp_path / "bad.vlat", _payload_byte(enc, victim))
    r = Codec(device="cpu").decode(bad, tmp_path / "out.mkv", codec="ffv1")
    assert r.frames == FRAMES
    assert any(w.startswith(f"{LOST}: chunk {victim.index} at byte {victim.offset}: payload") for w in r.warnings)
    out = read_all(tmp_path / "out.mkv")
    assert np.array_equal(out[30:], enc.frames[30:].numpy())  # beyond the decoder's reach of latent 4: untouched
    assert not np.array_equal(out[29], enc.frames[29].numpy())  # latent 8's first frame: within it
    with pytest.raises(FormatError, match=re.escape(LOST)):
        Codec(device="cpu").decode(bad, tmp_path / "strict.mkv", codec="ffv1", conceal=False)
    assert not (tmp_path / "strict.mkv").exists()


def test_damaged_record_header_names_the_frames_from_its_neighbours(enc, tmp_path):
    victim = enc.latent(4)
    bad = enc.damaged(tmp_path / "bad.vlat", victim.offset + 8)  # its stored size: the record cannot be trusted
    lost = f"{LOST}: chunk {victim.index} at byte {victim.offset}: chunk record header checksum mismatch"
    with vaecodec.open(bad, device="cpu") as f:
        assert [p for p in f.problems if str(victim.offset) in p] == [next(p for p in f.problems if p.startswith(lost))]
        with pytest.raises(FormatError, match=re.escape(lost)):
            f.latents()
        assert torch.equal(f.latents(17, 38), enc.latents[:, 5:])
        assert torch.equal(f.latents(conceal=True)[:, 4], enc.latents[:, 3])

    # without the footer the reader scans: the record's index is unknown, its place is not
    cut = enc.damaged(tmp_path / "cut.vlat", victim.offset + 8, cut=enc.chunks[-1].offset)  # before the summary
    with vaecodec.open(cut, device="cpu") as f:
        assert f.frames == FRAMES
        assert any(p.startswith(f"{LOST}: byte {victim.offset}: chunk record header checksum") for p in f.problems)
        assert "file is incomplete: 34 frames recovered from its intact chunks, 4 more lost between them " \
               "(concealed when decoding)" in f.problems


def test_losing_the_summary_keeps_the_frame_count(enc, tmp_path):
    summary = enc.chunks[-1]
    assert summary.kind == "summary"
    cut = enc.damaged(tmp_path / "cut.vlat", cut=summary.offset)
    with vaecodec.open(cut, device="cpu") as f:
        assert (f.frames, f.latent_shape) == (FRAMES, enc.latents.shape)  # the header's count fits 11 latents
        assert "file is incomplete: 38 frames recovered from its intact chunks" in f.problems
        assert torch.equal(f.frames_tensor(), enc.frames)

    bad = enc.damaged(tmp_path / "bad.vlat", summary.offset + 10)  # its record header; the footer is intact
    r = Codec(device="cpu").decode(bad, tmp_path / "out.mkv", codec="ffv1")
    assert r.frames == FRAMES and read_all(tmp_path / "out.mkv").shape[0] == FRAMES
    assert "the summary chunk is missing: 38 frames recovered from its intact chunks" in r.warnings
    assert not any("incomplete" in w for w in r.warnings)


def test_truncated_file_holds_the_frames_of_its_latents(enc, tmp_path):
    victim = enc.latent(6)
    cut = enc.damaged(tmp_path / "cut.vlat", cut=victim.offset + 40)  # inside chunk 5's record: latents 0..5 left
    with vaecodec.open(cut, device="cpu") as f:
        assert f.frames == 21  # 1 + 5*4: all real frames; the header's 38 needs 11 latents
        assert "file is incomplete: 21 frames recovered from its intact chunks" in f.problems
        assert torch.equal(f.latents(), enc.latents[:, :6])
        assert f.frames_tensor(17, 21).shape[0] == 4
        for read in (f.latents, f.frames_tensor):
            with pytest.raises(UsageError, match=r"frame range \[25, 30\) is empty or outside 0..21 \(all that"):
                read(25, 30)


@pytest.mark.parametrize("start,stop", [(5, 5), (10, 5), (-1, 3), (100, 120), (0, 0)])
def test_empty_or_outside_ranges_are_one_clear_error(enc, start, stop):
    with vaecodec.open(enc.path, device="cpu") as f:
        for read in (f.latents, f.frames_tensor, lambda a, b: list(f.iter_frames(a, b))):
            with pytest.raises(UsageError, match=rf"^frame range \[{start}, {stop}\) is empty or outside 0..38$"):
                read(start, stop)
        with pytest.raises(UsageError, match=rf"^latent frame range \[{start}, {stop}\) is empty or outside 0..11$"):
            list(f.iter_latents(start, stop))  # latent frames: the same checks


def test_no_intact_latent_chunk_is_one_clear_error(enc, tmp_path):
    from test_cli import one_line_error, run

    cut = enc.damaged(tmp_path / "cut.vlat", cut=enc.chunks[0].offset)  # the header and nothing else
    with pytest.raises(FormatError, match="no intact latent chunks"):
        vaecodec.open(cut, device="cpu")
    one_line_error(run("decode", cut, tmp_path / "out.mkv"), 1, "no intact latent chunks", "truncated")
    assert not (tmp_path / "out.mkv").exists()

"""Tests for the .vlat container: round trip, golden bytes, every validation path, recovery, atomic writes.

Damaged files are made by editing real files byte by byte at the offsets docs/FORMAT.md
specifies (and re-computing a CRC where a test needs a header that checks out).
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import pytest
import zstandard

from vaecodec.container import MAGIC, MAX_CHUNK_BYTES, MAX_HEADER_BYTES, VERSION, VlatReader, VlatWriter, describe
from vaecodec.errors import FormatError, InputError, UsageError

HEADER = {
    "model_id": "vaecodec-tiny-v1",
    "weights_sha256": "ab" * 32,
    "latent": {"shape": [16, 3, 4, 4]},
    "fps": [30, 1],
}
RECORD = struct.Struct("<4sIQQIBBH")  # FORMAT.md "Chunk record", the first 32 bytes


def _payloads() -> list[tuple[str, bytes, dict, str]]:
    rng = random.Random(7)
    noise = bytes(rng.getrandbits(8) for _ in range(700))
    return [
        ("latent", b"latent tile 0 " * 60, {"t0": 0, "t1": 2, "scale": 0.125}, "zstd"),
        ("latent", noise, {"t0": 2, "t1": 4}, "raw"),
        ("latent", b"", {"t0": 4, "t1": 4}, "zstd"),
        ("audio", bytes(range(256)) * 3, {"codec": "pcm_s16le"}, "zstd"),
        ("audio", b"", {}, "raw"),
    ]


def _write(path: Path, **kw) -> list:
    with VlatWriter(path, HEADER, **kw) as w:
        entries = [w.add_chunk(k, p, m, coding=c) for k, p, m, c in _payloads()]
    assert w.bytes_written == path.stat().st_size
    return entries


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _patch_record(path: Path, offset: int, **fields: int) -> None:
    """Rewrite fixed fields of the chunk record at ``offset`` and fix its record CRC, so it checks out."""
    data = bytearray(path.read_bytes())
    names = ["magic", "index", "stored_size", "raw_size", "payload_crc", "coding", "kind_len", "meta_len"]
    values = dict(zip(names, RECORD.unpack_from(data, offset)))
    values.update(fields)
    RECORD.pack_into(data, offset, *values.values())
    hlen = RECORD.size + values["kind_len"] + values["meta_len"]
    struct.pack_into("<I", data, offset + hlen, zlib.crc32(data[offset : offset + hlen]))
    path.write_bytes(bytes(data))


def _file_with_header_json(path: Path, header_json: bytes) -> None:
    pre = MAGIC + struct.pack("<HHI", VERSION, 0, len(header_json)) + header_json
    path.write_bytes(pre + struct.pack("<I", zlib.crc32(pre)))


# ---------------------------------------------------------------- round trip and golden bytes


def test_round_trip_header_and_both_codings(tmp_path: Path) -> None:
    path = tmp_path / "a.vlat"
    written = _write(path)
    with VlatReader(path) as r:
        assert r.header == HEADER
        assert r.complete and r.problems == []
        assert r.chunks == written
        assert r.file_size == path.stat().st_size
        for (kind, payload, meta, coding), entry in zip(_payloads(), r.chunks):
            assert (entry.kind, entry.meta, entry.coding, entry.raw_size) == (kind, meta, coding, len(payload))
            assert r.read(entry.index) == payload
        assert [c.index for c in r.chunks_of("audio")] == [3, 4]
        assert [c.index for c in r.chunks_of("latent")] == [0, 1, 2]
    # zstd actually compressed the repetitive chunk; raw stored as-is
    assert written[0].stored_size < written[0].raw_size
    assert written[1].stored_size == written[1].raw_size == 700
    info = describe(path, verify=True)
    json.dumps(info)  # JSON-able
    assert info["complete"] and info["problems"] == [] and len(info["chunks"]) == 5
    assert info["by_kind"]["latent"]["count"] == 3
    assert info["payload_bytes"] + info["overhead_bytes"] == path.stat().st_size
    assert info["verified_chunks"] == 5 and describe(path)["verified_chunks"] is None  # says whether it read them


def test_golden_bytes(tmp_path: Path) -> None:
    """The whole file, byte for byte, for a fixed header and one raw chunk (level/threads pinned)."""
    path = tmp_path / "g.vlat"
    with VlatWriter(path, {"b": [1, 2], "a": "\u00e9"}, level=3, threads=0) as w:
        w.add_chunk("audio", b"abc", {"t": 0}, coding="raw")
    golden = bytes.fromhex(
        "89564c41540d0a1a" "0100" "0000" "18000000"  # magic, version 1, flags 0, header_len 24
        + b'{"a":"\\u00e9","b":[1,2]}'.hex()  # sorted keys, compact, \u escapes
        + "00ea9c4b"  # header CRC-32 over bytes 0..40
        # chunk record at 44: magic, index 0, stored 3, raw 3, payload crc32("abc"), coding raw, K=5, M=7
        + "564c434b" "00000000" "0300000000000000" "0300000000000000" "c2412435" "00" "05" "0700"
        + b'audio{"t":0}'.hex()
        + "6b3ac4a5"  # record CRC-32
        + b"abc".hex()
        + "564c4958" "01000000" "2c00000000000000" "97ef6771"  # footer at 95: 1 chunk at offset 44, CRC
        + "5f00000000000000" + b"VLAT-END".hex()  # trailer: footer offset 95
    )
    assert path.read_bytes() == golden
    # the pinned CRCs are the CRC variant FORMAT.md names, over the ranges it names
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert zlib.crc32(golden[:40]) == 0x4B9CEA00
    assert zlib.crc32(golden[44:88]) == 0xA5C43A6B
    assert zlib.crc32(golden[95:111]) == 0x7167EF97


def test_level_and_threads_keep_the_data(tmp_path: Path) -> None:
    payload = b"".join(b"frame %d " % (i % 97) for i in range(20000))
    outs = {}
    for level, threads in [(1, 0), (19, 0), (3, 2)]:
        p = tmp_path / f"l{level}t{threads}.vlat"
        with VlatWriter(p, HEADER, level=level, threads=threads) as w:
            w.add_chunk("latent", payload)
        with VlatReader(p) as r:
            assert r.read(0) == payload
        outs[(level, threads)] = p.read_bytes()
    assert len(outs[(19, 0)]) < len(outs[(1, 0)])


# ---------------------------------------------------------------- fatal header errors


def test_missing_and_empty_and_not_vlat(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        VlatReader(tmp_path / "nope.vlat")
    (tmp_path / "empty.vlat").write_bytes(b"")
    with pytest.raises(FormatError, match="too short"):
        VlatReader(tmp_path / "empty.vlat")
    (tmp_path / "x.vlat").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(FormatError, match=r"byte 0: bad magic.*not a \.vlat"):
        VlatReader(tmp_path / "x.vlat")


def test_wrong_version_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "v.vlat"
    _write(path)
    data = bytearray(path.read_bytes())
    data[8:10] = struct.pack("<H", 2)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="byte 8: unsupported .vlat version 2"):
        VlatReader(path)
    data[8:12] = struct.pack("<HH", 1, 0x10)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="byte 10: unknown flags"):
        VlatReader(path)


def test_known_flags_round_trip_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    from vaecodec.container import FLAG_RESAMPLED

    path = tmp_path / "f.vlat"
    _write(path, flags=FLAG_RESAMPLED)
    assert path.read_bytes()[10:12] == b"\x01\x00"
    with VlatReader(path) as r:
        assert r.flags == FLAG_RESAMPLED
    with pytest.raises(ValueError, match="unknown .vlat flags"):
        VlatWriter(tmp_path / "g.vlat", HEADER, flags=0x8000)
    assert not list(tmp_path.glob("*g.vlat*"))  # refused before any file was made


def test_flags_found_while_writing_land_in_the_preamble(tmp_path: Path) -> None:
    """A flag the chunks turn out to need (the shift flag, set by the first chunk that lists a
    memory move) is rewritten into the preamble at close, with a header CRC that checks; the
    chunks are untouched. An unfinished file never shows it (it is never renamed into place)."""
    from vaecodec.container import FLAG_CANVAS, FLAG_SHIFT

    plain, late = tmp_path / "plain.vlat", tmp_path / "late.vlat"
    _write(plain, flags=FLAG_CANVAS)
    with VlatWriter(late, HEADER, flags=FLAG_CANVAS) as w:
        for i, (k, p, m, c) in enumerate(_payloads()):
            w.add_chunk(k, p, m, coding=c)
            if i == 1:
                w.add_flags(FLAG_SHIFT)
                with pytest.raises(ValueError, match="unknown .vlat flags"):
                    w.add_flags(0x8000)
    a, b = plain.read_bytes(), late.read_bytes()
    assert b[10:12] == b"\x06\x00" and a[10:12] == b"\x02\x00" and a[:10] + a[12:] != b[:10] + b[12:]
    hend = 16 + struct.unpack_from("<I", b, 12)[0]
    assert a[hend + 4 :] == b[hend + 4 :]  # chunks, footer and trailer as written
    with VlatReader(late) as r:
        assert r.flags == FLAG_CANVAS | FLAG_SHIFT and r.complete and not r.problems
        assert [r.read(c.index) for c in r.chunks] == [p for _, p, _, _ in _payloads()]


def test_header_length_limits(tmp_path: Path) -> None:
    path = tmp_path / "h.vlat"
    _write(path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 12, MAX_HEADER_BYTES + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="byte 12: header length 1048577 exceeds"):
        VlatReader(path)
    struct.pack_into("<I", data, 12, len(data))
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="byte 12: header of .* runs past the end"):
        VlatReader(path)
    with pytest.raises(ValueError, match="header is"):
        VlatWriter(tmp_path / "big.vlat", {"x": "y" * MAX_HEADER_BYTES})
    assert not (tmp_path / "big.vlat").exists()


def test_header_checksum(tmp_path: Path) -> None:
    path = tmp_path / "c.vlat"
    _write(path)
    _flip(path, 20)  # inside the JSON
    with pytest.raises(FormatError, match=r"byte \d+: header checksum mismatch"):
        VlatReader(path)


@pytest.mark.parametrize(
    "text, reason",
    [
        (b'{"a": 1', "bad JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_header_bad_json(tmp_path: Path, text: bytes, reason: str) -> None:
    path = tmp_path / "j.vlat"
    _file_with_header_json(path, text)
    with pytest.raises(FormatError, match=f"byte 16: header is not a JSON object: .*{reason}"):
        VlatReader(path)


# ---------------------------------------------------------------- damaged chunks


def test_payload_crc_mismatch_fails_only_that_chunk(tmp_path: Path) -> None:
    path = tmp_path / "p.vlat"
    entries = _write(path)
    _flip(path, entries[1].offset + 36 + len("latent") + len(json.dumps(entries[1].meta, separators=(",", ":"))) + 100)
    with VlatReader(path) as r:
        assert r.complete and r.problems == []  # record headers are intact; payloads are checked on read
        with pytest.raises(FormatError, match=rf"chunk 1 at byte {entries[1].offset}: payload checksum mismatch"):
            r.read(1)
        for (_, payload, _, _), e in zip(_payloads(), entries):
            if e.index != 1:
                assert r.read(e.index) == payload
    problems = describe(path, verify=True)["problems"]
    assert len(problems) == 1 and "chunk 1" in problems[0]


def test_record_header_damage_with_footer(tmp_path: Path) -> None:
    path = tmp_path / "r.vlat"
    entries = _write(path)
    _flip(path, entries[2].offset + 33)  # a byte of the kind string
    with VlatReader(path) as r:
        assert r.complete
        assert [c.index for c in r.chunks] == [0, 1, 3, 4]
        assert any(f"chunk 2 at byte {entries[2].offset}" in p and "record header checksum" in p for p in r.problems)
        with pytest.raises(FormatError, match="chunk 2 at byte"):
            r.read(2)
        assert r.read(3) == _payloads()[3][1]


def test_record_index_must_match_its_position(tmp_path: Path) -> None:
    path = tmp_path / "i.vlat"
    entries = _write(path)
    _patch_record(path, entries[1].offset, index=7)  # a record that checks out but sits where chunk 1 belongs
    with VlatReader(path) as r:
        assert r.complete and [c.index for c in r.chunks] == [0, 2, 3, 4]
        assert any("footer entry 1 points at a record with index 7" in p for p in r.problems)
        with pytest.raises(FormatError, match="chunk 1 at byte"):
            r.read(1)
        with pytest.raises(FormatError, match="chunk 7: not in this file"):
            r.read(7)


def test_truncated_file_keeps_intact_chunks(tmp_path: Path) -> None:
    path = tmp_path / "t.vlat"
    entries = _write(path)
    full = path.read_bytes()
    cut = entries[3].offset + 80  # inside chunk 3's payload (its record header is 62 bytes)
    path.write_bytes(full[:cut])
    with VlatReader(path) as r:
        assert not r.complete
        assert any(p.startswith("footer:") for p in r.problems)
        assert any(f"chunk 3 at byte {entries[3].offset}" in p and "runs past" in p for p in r.problems)
        assert [c.index for c in r.chunks] == [0, 1, 2]
        for i in range(3):
            assert r.read(i) == _payloads()[i][1]
        with pytest.raises(FormatError, match="chunk 3 at byte .*runs past"):
            r.read(3)
    # every cut point: opening never fails, and the listed chunks are exactly the ones wholly before the cut
    for n in range(entries[0].offset, len(full), 3):
        path.write_bytes(full[:n])
        with VlatReader(path) as r:
            assert not r.complete
            assert [c.index for c in r.chunks] == [e.index for e in entries if _record_end(e, entries, full) <= n]
            for c in r.chunks:
                assert r.read(c.index) == _payloads()[c.index][1]


def _record_end(e, entries, full: bytes) -> int:
    """Byte just past chunk ``e``'s record: the next record's offset, or the footer's."""
    nxt = [x.offset for x in entries if x.index == e.index + 1]
    return nxt[0] if nxt else struct.unpack_from("<Q", full, len(full) - 16)[0]


def test_scan_resyncs_past_damaged_record_header(tmp_path: Path) -> None:
    path = tmp_path / "s.vlat"
    entries = _write(path)
    full = path.read_bytes()
    path.write_bytes(full[: entries[4].offset + 10])  # footer gone
    _flip(path, entries[1].offset + 8)  # chunk 1's stored_size: its header CRC fails, its size can't be trusted
    with VlatReader(path) as r:
        assert not r.complete
        assert [c.index for c in r.chunks] == [0, 2, 3]
        assert any(f"byte {entries[1].offset}: chunk record header checksum" in p for p in r.problems)
        assert any("[1]" in p and "missing" in p for p in r.problems)
        for i in (0, 2, 3):
            assert r.read(i) == _payloads()[i][1]


def test_damaged_footer_falls_back_to_scan(tmp_path: Path) -> None:
    path = tmp_path / "f.vlat"
    _write(path)
    size = path.stat().st_size
    _flip(path, size - 16 - 4 - 3)  # inside the footer's offset table
    with VlatReader(path) as r:
        assert not r.complete
        assert any("footer" in p and "checksum mismatch" in p for p in r.problems)
        assert len(r.problems) == 1
        assert [r.read(c.index) for c in r.chunks] == [p[1] for p in _payloads()]


def test_declared_raw_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "m.vlat"
    entries = _write(path)
    _patch_record(path, entries[0].offset, raw_size=entries[0].raw_size - 1)
    _patch_record(path, entries[1].offset, raw_size=5)  # a raw chunk must have raw_size == stored_size
    with VlatReader(path) as r:
        with pytest.raises(FormatError, match=rf"chunk 0 at byte \d+: zstd frame declares {entries[0].raw_size} bytes"):
            r.read(0)
        with pytest.raises(FormatError, match="chunk 1 at byte .*raw chunk declares stored size 700 but raw size 5"):
            r.read(1)
        assert r.read(3) == _payloads()[3][1]


def _bomb_frame() -> bytes:
    """A 12-byte zstd frame whose header claims 1 TiB of content (FCS field 8 bytes, single segment)."""
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", 1 << 40) + b"\x01\x00\x00"
    assert zstandard.frame_content_size(frame) == 1 << 40
    return frame


def test_decompression_bomb_rejected_before_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "b.vlat"
    bomb = _bomb_frame()
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"z" * 5000)
    with VlatWriter(path, HEADER) as w:
        a = w.add_chunk("latent", bomb, coding="raw")
        b = w.add_chunk("latent", bomb, coding="raw")
        c = w.add_chunk("latent", unsized, coding="raw")
        w.add_chunk("latent", b"fine")
    _patch_record(path, a.offset, coding=1)  # zstd, raw_size stays 16: the frame's 1 TiB claim disagrees
    _patch_record(path, b.offset, coding=1, raw_size=1 << 40)  # the record itself claims 1 TiB
    _patch_record(path, c.offset, coding=1, raw_size=5000)
    with VlatReader(path) as r:
        assert r.complete
        with pytest.raises(FormatError, match=rf"chunk 0 at byte {a.offset}: zstd frame declares {1 << 40} bytes"):
            r.read(0)
        assert any(f"chunk 1 at byte {b.offset}" in p and "exceeds" in p for p in r.problems)
        limit = f"chunk 1 at byte {b.offset}: declared size .* exceeds the {MAX_CHUNK_BYTES}"
        with pytest.raises(FormatError, match=limit):
            r.read(1)
        with pytest.raises(FormatError, match="chunk 2 at byte .*does not declare its content size"):
            r.read(2)
        assert r.read(3) == b"fine"


def test_chunk_size_beyond_file_end(tmp_path: Path) -> None:
    path = tmp_path / "e.vlat"
    entries = _write(path)
    size = path.stat().st_size
    last = entries[-1]
    _patch_record(path, last.offset, stored_size=size, raw_size=size)
    with VlatReader(path) as r:
        assert any(f"chunk 4 at byte {last.offset}" in p and "runs past" in p for p in r.problems)
        with pytest.raises(FormatError, match="chunk 4 at byte .*runs past"):
            r.read(4)
        assert r.read(3) == _payloads()[3][1]
    path.write_bytes(path.read_bytes()[: last.offset + 60])  # and without a footer, the scan says the same
    with VlatReader(path) as r:
        assert not r.complete and [c.index for c in r.chunks] == [0, 1, 2, 3]
        with pytest.raises(FormatError, match="chunk 4 at byte .*runs past"):
            r.read(4)


# ---------------------------------------------------------------- atomic writes and writer validation


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path: Path, exc: type[BaseException]) -> None:
    path = tmp_path / "out.vlat"
    with pytest.raises(exc):
        with VlatWriter(path, HEADER) as w:
            w.add_chunk("latent", b"x" * 1000)
            temps = [p.name for p in tmp_path.iterdir()]
            assert len(temps) == 1 and temps[0].startswith(".out.vlat.") and temps[0].endswith(".part")
            assert not path.exists()
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.vlat"
    path.write_bytes(b"precious")
    with pytest.raises(UsageError, match="already exists"):
        VlatWriter(path, HEADER)
    assert path.read_bytes() == b"precious"
    with pytest.raises(ValueError):
        with VlatWriter(path, HEADER, overwrite=True) as w:
            w.add_chunk("BAD KIND", b"")
    assert path.read_bytes() == b"precious" and len(list(tmp_path.iterdir())) == 1
    with VlatWriter(path, HEADER, overwrite=True) as w:
        w.add_chunk("latent", b"new")
    with VlatReader(path) as r:
        assert r.read(0) == b"new"
    assert len(list(tmp_path.iterdir())) == 1


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="level"):
        VlatWriter(tmp_path / "a.vlat", HEADER, level=30)
    with pytest.raises(UsageError, match="threads"):
        VlatWriter(tmp_path / "a.vlat", HEADER, threads=-2)
    with pytest.raises(UsageError, match="directory"):
        VlatWriter(tmp_path, HEADER)
    with pytest.raises(UsageError, match="cannot create"):
        VlatWriter(tmp_path / "no" / "such" / "dir.vlat", HEADER)
    with pytest.raises(ValueError, match="JSON"):
        VlatWriter(tmp_path / "a.vlat", {"x": float("nan")})
    with VlatWriter(tmp_path / "a.vlat", HEADER) as w:
        with pytest.raises(ValueError, match="coding"):
            w.add_chunk("latent", b"", coding="lzma")
        with pytest.raises(ValueError, match="meta"):
            w.add_chunk("latent", b"", {"x": "y" * 20000})
    assert [p.name for p in tmp_path.iterdir()] == ["a.vlat"]

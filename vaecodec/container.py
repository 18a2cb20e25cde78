"""Reader and writer for the ``.vlat`` container; docs/FORMAT.md is the normative spec.

The container knows nothing about VAEs: it stores a JSON header and a sequence of
checksummed, self-delimiting chunks, and guarantees that (a) a file under the final
name is always complete, (b) a damaged or truncated file still yields every intact
chunk, (c) no field read from a file can make us allocate beyond the stated limits.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import secrets
import shutil
import struct
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from vaecodec.errors import FormatError, InputError, UsageError

MAGIC = b"\x89VLAT\r\n\x1a"
# (offset, bytes, what): how common video files begin, to tell a user who decodes one what it is
_VIDEO_SIGNS = ((4, b"ftyp", "an MP4/MOV video"), (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
                (0, b"RIFF", "an AVI video"))
VERSION = 1
CHUNK_MAGIC = b"VLCK"
FOOTER_MAGIC = b"VLIX"
END_MAGIC = b"VLAT-END"

MAX_HEADER_BYTES = 1 << 20
MAX_META_BYTES = 16 << 10
MAX_KIND_BYTES = 32
MAX_CHUNK_BYTES = 256 << 20
MAX_CHUNKS = 1 << 20

# magic, version, flags, header_len
_PREAMBLE = struct.Struct("<8sHHI")
# magic, index, stored_size, raw_size, payload_crc, coding, kind_len, meta_len
_RECORD = struct.Struct("<4sIQQIBBH")
# magic, count
_FOOTER = struct.Struct("<4sI")
# footer_offset, end magic
_TRAILER = struct.Struct("<Q8s")
_CRC = struct.Struct("<I")

# Preamble flags: features a reader must understand to read the file right (docs/FORMAT.md).
FLAG_RESAMPLED = 0x0001  # the picture was coded at the header's video.coded_* size
FLAG_CANVAS = 0x0002  # the model coded a steadied canvas; latent chunks carry each frame's view
FLAG_SHIFT = 0x0004  # the decoder's memory moves with the canvas where latent chunks list camera_shift
FLAG_ZOOM = 0x0008  # latent chunks that list camera_zoom predict those latent frames through the zoom
KNOWN_FLAGS = FLAG_RESAMPLED | FLAG_CANVAS | FLAG_SHIFT | FLAG_ZOOM

_CODINGS = {"raw": 0, "zstd": 1}
_CODING_NAMES = {v: k for k, v in _CODINGS.items()}
_KIND_RE = re.compile(r"[a-z][a-z0-9_.-]*")


@dataclass(frozen=True)
class ChunkEntry:
    """One chunk as listed by a reader or returned by a writer.

    ``offset`` is where the chunk *record* starts (its ``VLCK`` magic), which is the
    offset error messages name; the payload follows the record header.
    """

    index: int
    kind: str
    offset: int
    stored_size: int
    raw_size: int
    coding: str
    meta: dict = field(default_factory=dict)


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _encode_json(obj: Any, what: str) -> bytes:
    """Canonical JSON bytes, so equal headers give byte-identical files."""
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a dict, got {type(obj).__name__}")
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} is not JSON-serializable: {e}") from None
    return text.encode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _decode_json(data: bytes) -> dict:
    """Strict JSON object parse; raises ValueError with a short reason."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"bad JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"JSON is a {type(obj).__name__}, not an object")
    return obj


def _check_kind(kind: str) -> bytes:
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind) or len(kind) > MAX_KIND_BYTES:
        raise ValueError(f"chunk kind {kind!r} must match [a-z][a-z0-9_.-]* and be at most {MAX_KIND_BYTES} chars")
    return kind.encode("ascii")


# Every temp file or folder this process created; those still there after an interrupt are
# removed by remove_partial_outputs().
_TEMPS: list[str] = []


def create_temp(path: Path, directory: bool = False) -> tuple[int | None, str]:
    """Exclusive-create a hidden temp file (fd, name) or directory (None, name) next to ``path``;
    mode 0o666 / 0o777 so the umask applies as for a normal file (mkstemp's 0600 would not)."""
    for _ in range(100):
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(4)}.part"))
        try:
            _TEMPS.append(tmp)  # before it exists: an interrupt may land just after
            if directory:
                os.mkdir(tmp, 0o777)
                return None, tmp
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot create a file in {path.parent}: {e.strerror}") from None
    raise UsageError(f"cannot create a temporary file in {path.parent}")


def output_name(path: str) -> str:
    """The file a temp of ``create_temp`` stands for (``out/.x.mp4.1a2b3c4d.part`` ->
    ``out/x.mp4``); any other path as it is. Errors name what the user asked for."""
    p = Path(path)
    m = re.fullmatch(r"\.(.+)\.[0-9a-f]{8}\.part", p.name)
    return str(p.with_name(m.group(1))) if m else str(path)


def remove_partial_outputs() -> None:
    """Delete this process's temp files and folders that were neither renamed into place nor
    removed. Each writer removes its own on error; this catches an interrupt (Ctrl-C, SIGTERM)
    that lands between a temp's creation and the writer arming its clean-up."""
    for tmp in _TEMPS:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    _TEMPS.clear()


def _discard(fh: BinaryIO, tmp: str) -> None:
    """Close and delete an unfinished temp file; used on error and by the GC finalizer."""
    try:
        fh.close()
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """Give a write error (a full disk: errno only) the output's name, for the one-line report."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None


class VlatWriter:
    """Writes a .vlat atomically: everything goes to a hidden ``.part`` file in the
    destination directory, which is renamed over the final name only by ``close()``.

    Use as a context manager: an exception (KeyboardInterrupt included) inside the
    ``with`` deletes the temp file and leaves any existing file untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        header: dict,
        *,
        overwrite: bool = False,
        level: int = 9,
        threads: int = 0,
        flags: int = 0,
    ) -> None:
        self.path = Path(path)
        if flags & ~KNOWN_FLAGS:
            raise ValueError(f"unknown .vlat flags 0x{flags:04x}")
        self.overwrite = overwrite
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
            raise UsageError(f"zstd level must be an integer from 1 to 22, got {level!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < -1:
            raise UsageError(
                f"zstd threads must be -1 (all cores), 0 (single-threaded) or a positive count, got {threads!r}"
            )
        if self.path.is_dir():
            raise UsageError(f"{self.path} is a directory, not an output file")
        if self.path.exists() and not overwrite:
            raise UsageError(f"{self.path} already exists (use overwrite to replace it)")
        header_bytes = _encode_json(header, "header")
        if len(header_bytes) > MAX_HEADER_BYTES:
            raise ValueError(f"header is {len(header_bytes)} bytes of JSON, limit is {MAX_HEADER_BYTES}")
        # write_content_size lets the reader check the frame's declared size before decompressing.
        self._zstd = zstandard.ZstdCompressor(
            level=level, threads=threads, write_checksum=True, write_content_size=True
        )
        fd, self._tmp = create_temp(self.path)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._finalizer = weakref.finalize(self, _discard, self._fh, self._tmp)
        self.chunks: list[ChunkEntry] = []
        self._offsets: list[int] = []
        self.bytes_written = 0
        self._closed = False
        self.flags = self._flags_written = flags
        self._header_bytes = header_bytes
        try:
            self._write(self._preamble())
        except BaseException:
            self.abort()
            raise

    def _preamble(self) -> bytes:
        pre = _PREAMBLE.pack(MAGIC, VERSION, self.flags, len(self._header_bytes)) + self._header_bytes
        return pre + _CRC.pack(_crc(pre))

    def add_flags(self, flags: int) -> None:
        """Set flags that the chunks written turned out to need; ``close`` rewrites the preamble."""
        if flags & ~KNOWN_FLAGS:
            raise ValueError(f"unknown .vlat flags 0x{flags:04x}")
        self.flags |= flags

    def _write(self, data: bytes) -> None:
        with _named(self.path):
            self._fh.write(data)
        self.bytes_written += len(data)

    def add_chunk(self, kind: str, payload: bytes, meta: dict | None = None, coding: str = "zstd") -> ChunkEntry:
        """Append one chunk; ``coding="raw"`` for payloads that are already entropy coded."""
        if self._closed:
            raise ValueError("add_chunk on a closed VlatWriter")
        kind_b = _check_kind(kind)
        meta_b = _encode_json({} if meta is None else meta, "chunk meta")
        if len(meta_b) > MAX_META_BYTES:
            raise ValueError(f"chunk meta is {len(meta_b)} bytes of JSON, limit is {MAX_META_BYTES}")
        if coding not in _CODINGS:
            raise ValueError(f"chunk coding must be one of {sorted(_CODINGS)}, got {coding!r}")
        if len(self.chunks) >= MAX_CHUNKS:
            raise UsageError(f"a .vlat holds at most {MAX_CHUNKS} chunks")
        raw = bytes(payload)
        if len(raw) > MAX_CHUNK_BYTES:
            raise UsageError(f"chunk of {len(raw)} bytes exceeds the {MAX_CHUNK_BYTES}-byte chunk limit; split it")
        stored = self._zstd.compress(raw) if coding == "zstd" else raw
        if len(stored) > MAX_CHUNK_BYTES:
            raise UsageError(f"compressed chunk of {len(stored)} bytes exceeds the {MAX_CHUNK_BYTES}-byte chunk limit")
        index = len(self.chunks)
        rec = (
            _RECORD.pack(
                CHUNK_MAGIC, index, len(stored), len(raw), _crc(stored), _CODINGS[coding], len(kind_b), len(meta_b)
            )
            + kind_b
            + meta_b
        )
        entry = ChunkEntry(index, kind, self.bytes_written, len(stored), len(raw), coding, json.loads(meta_b))
        try:
            self._write(rec + _CRC.pack(_crc(rec)))
            self._write(stored)
        except BaseException:
            self.abort()
            raise
        self.chunks.append(entry)
        self._offsets.append(entry.offset)
        return entry

    def close(self) -> None:
        """Write footer and trailer, fsync, and rename into place; a no-op when already closed."""
        if self._closed:
            return
        try:
            n = len(self._offsets)
            footer = _FOOTER.pack(FOOTER_MAGIC, n) + struct.pack(f"<{n}Q", *self._offsets)
            footer_offset = self.bytes_written
            self._write(footer + _CRC.pack(_crc(footer)))
            self._write(_TRAILER.pack(footer_offset, END_MAGIC))
            with _named(self.path):  # buffered bytes meet a full disk here too
                if self.flags != self._flags_written:  # flags found while writing (the file is ours alone)
                    self._fh.seek(0)
                    self._fh.write(self._preamble())
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            # Re-check: another process may have created the output since __init__.
            if not self.overwrite and self.path.exists():
                raise UsageError(f"{self.path} already exists (use overwrite to replace it)")
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Drop the unfinished file; the final name is never touched."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> VlatWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; not possible on every OS/filesystem, so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _BadRecord(Exception):
    """A chunk record header that cannot be trusted; ``index`` is set when it is known."""

    def __init__(self, msg: str, index: int | None = None) -> None:
        super().__init__(msg)
        self.index = index


class VlatReader:
    """Opens a .vlat for random access to its chunks.

    Opening fails (FormatError) only when the preamble or header is bad. Damage to the
    footer or to single chunks is recorded in ``problems``; every intact chunk stays
    readable. ``complete`` is True when the footer and trailer are present and valid.
    ``damaged`` maps the offset of each record that could not be accepted to its problem:
    its own fields cannot be trusted, so a reader of the payloads locates what it lost by
    the intact records around it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{self.path} is a directory, not a .vlat file") from None
        except OSError as e:
            raise InputError(f"cannot open {self.path}: {e.strerror}") from None
        self._mm: mmap.mmap | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self.file_size = os.fstat(self._fh.fileno()).st_size
        where = f"{self.path}: byte 0"
        if self.file_size < _PREAMBLE.size:
            raise FormatError(f"{where}: file is {self.file_size} bytes, too short to be a .vlat")
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        mm = self._mm
        magic, version, flags, hlen = _PREAMBLE.unpack_from(mm, 0)
        if magic != MAGIC:
            video = next((kind for at, sign, kind in _VIDEO_SIGNS if mm[at:at + len(sign)] == sign), None)
            hint = f"; it looks like {video} (encode it first: vaecodec encode)" if video else ""
            raise FormatError(f"{where}: bad magic {magic!r}, not a .vlat file{hint}")
        if version != VERSION:
            raise FormatError(
                f"{self.path}: byte 8: unsupported .vlat version {version} (this vaecodec reads version {VERSION})"
            )
        if flags & ~KNOWN_FLAGS:
            raise FormatError(
                f"{self.path}: byte 10: unknown flags 0x{flags & ~KNOWN_FLAGS:04x} (this vaecodec knows 0x{KNOWN_FLAGS:04x});"
                " the file needs a newer vaecodec"
            )
        self.flags = flags
        if hlen > MAX_HEADER_BYTES:
            raise FormatError(f"{self.path}: byte 12: header length {hlen} exceeds the {MAX_HEADER_BYTES}-byte limit")
        hend = _PREAMBLE.size + hlen
        if hend + 4 > self.file_size:
            raise FormatError(
                f"{self.path}: byte 12: header of {hlen} bytes runs past the end of the file ({self.file_size} bytes)"
            )
        (stored_crc,) = _CRC.unpack_from(mm, hend)
        computed = _crc(mm[:hend])
        if stored_crc != computed:
            raise FormatError(
                f"{self.path}: byte {hend}: header checksum mismatch (stored {stored_crc:08x}, computed {computed:08x})"
            )
        try:
            self.header: dict = _decode_json(mm[_PREAMBLE.size : hend])
        except ValueError as e:
            raise FormatError(f"{self.path}: byte {_PREAMBLE.size}: header is not a JSON object: {e}") from None
        self.version = version
        self._data_start = hend + 4
        self.problems: list[str] = []
        self.chunks: list[ChunkEntry] = []
        self._payload_at: dict[int, int] = {}
        self._by_index: dict[int, ChunkEntry] = {}
        self._bad: dict[int, str] = {}
        self.damaged: dict[int, str] = {}
        footer = self._read_footer()
        self.complete = footer is not None
        if footer is not None:
            self._load_from_footer(*footer)
        else:
            self._scan()

    def _read_footer(self) -> tuple[int, list[int]] | None:
        """(footer_offset, record offsets), or None after recording why the footer is unusable."""
        mm, size = self._mm, self.file_size
        if size < self._data_start + _FOOTER.size + 4 + _TRAILER.size:
            self.problems.append(f"footer: file ends at byte {size}, before any footer (truncated?)")
            return None
        foff, end = _TRAILER.unpack_from(mm, size - _TRAILER.size)
        if end != END_MAGIC:
            self.problems.append(f"footer: no end magic at byte {size - _TRAILER.size} (truncated or not finished)")
            return None
        if not self._data_start <= foff <= size - _TRAILER.size - _FOOTER.size - 4:
            self.problems.append(f"footer: trailer points at byte {foff}, outside the chunk area")
            return None
        magic, count = _FOOTER.unpack_from(mm, foff)
        flen = _FOOTER.size + 8 * count
        if magic != FOOTER_MAGIC:
            self.problems.append(f"footer: byte {foff}: bad footer magic {magic!r}")
            return None
        if count > MAX_CHUNKS or foff + flen + 4 + _TRAILER.size != size:
            self.problems.append(f"footer: byte {foff + 4}: chunk count {count} does not fit the footer size")
            return None
        (stored_crc,) = _CRC.unpack_from(mm, foff + flen)
        computed = _crc(mm[foff : foff + flen])
        if stored_crc != computed:
            self.problems.append(
                f"footer: byte {foff + flen}: checksum mismatch (stored {stored_crc:08x}, computed {computed:08x})"
            )
            return None
        offsets = list(struct.unpack_from(f"<{count}Q", mm, foff + _FOOTER.size))
        prev = self._data_start - 1
        for i, off in enumerate(offsets):
            if not prev < off < foff:
                self.problems.append(f"footer: entry {i} points at byte {off}, outside the chunk area or out of order")
                return None
            prev = off
        return foff, offsets

    def _parse_record(self, off: int, limit: int) -> tuple[ChunkEntry, int]:
        """Parse and verify the record header at ``off``; the payload must end by ``limit``.

        Returns (entry, payload offset). Raises _BadRecord naming what is wrong.
        """
        mm = self._mm
        if off + _RECORD.size + 4 > limit:
            raise _BadRecord(f"byte {off}: chunk record header cut off ({limit - off} bytes left)")
        magic, index, stored, raw, _pcrc, coding, klen, mlen = _RECORD.unpack_from(mm, off)
        if magic != CHUNK_MAGIC:
            raise _BadRecord(f"byte {off}: bad chunk magic {magic!r}")
        if not 1 <= klen <= MAX_KIND_BYTES or not 2 <= mlen <= MAX_META_BYTES:
            raise _BadRecord(f"byte {off}: kind length {klen} / meta length {mlen} out of range")
        hlen = _RECORD.size + klen + mlen
        if off + hlen + 4 > limit:
            raise _BadRecord(f"byte {off}: chunk record header cut off ({limit - off} bytes left)")
        (stored_crc,) = _CRC.unpack_from(mm, off + hlen)
        computed = _crc(mm[off : off + hlen])
        if stored_crc != computed:
            raise _BadRecord(
                f"byte {off}: chunk record header checksum mismatch (stored {stored_crc:08x}, computed {computed:08x})"
            )
        # From here the header is what the writer wrote, so the index can be named.
        where = f"chunk {index} at byte {off}"
        kind = mm[off + _RECORD.size : off + _RECORD.size + klen].decode("ascii", "replace")
        if not _KIND_RE.fullmatch(kind):
            raise _BadRecord(f"{where}: invalid kind {kind!r}", index)
        try:
            meta = _decode_json(mm[off + _RECORD.size + klen : off + hlen])
        except ValueError as e:
            raise _BadRecord(f"{where}: meta is not a JSON object: {e}", index) from None
        if coding not in _CODING_NAMES:
            raise _BadRecord(f"{where}: unknown coding {coding}", index)
        if stored > MAX_CHUNK_BYTES or raw > MAX_CHUNK_BYTES:
            raise _BadRecord(
                f"{where}: declared size (stored {stored}, raw {raw}) exceeds the {MAX_CHUNK_BYTES}-byte chunk limit",
                index,
            )
        if coding == _CODINGS["raw"] and stored != raw:
            raise _BadRecord(f"{where}: raw chunk declares stored size {stored} but raw size {raw}", index)
        payload_at = off + hlen + 4
        if payload_at + stored > limit:
            raise _BadRecord(
                f"{where}: payload of {stored} bytes runs past byte {limit} (end of the chunk area), truncated", index
            )
        return ChunkEntry(index, kind, off, stored, raw, _CODING_NAMES[coding], meta), payload_at

    def _accept(self, entry: ChunkEntry, payload_at: int) -> None:
        self.chunks.append(entry)
        self._by_index[entry.index] = entry
        self._payload_at[entry.index] = payload_at

    def _load_from_footer(self, foff: int, offsets: list[int]) -> None:
        for i, off in enumerate(offsets):
            limit = offsets[i + 1] if i + 1 < len(offsets) else foff
            try:
                entry, payload_at = self._parse_record(off, limit)
            except _BadRecord as e:
                self._reject(off, str(e) if e.index is not None else f"chunk {i} at {e}", i)
                continue
            if entry.index != i:
                self._reject(
                    off, f"chunk {i} at byte {off}: footer entry {i} points at a record with index {entry.index}", i
                )
                continue
            self._accept(entry, payload_at)

    def _reject(self, off: int, problem: str, index: int | None) -> None:
        """Record a record that cannot be accepted; ``index`` when it is known."""
        self.problems.append(problem)
        self.damaged[off] = problem
        if index is not None:
            self._bad.setdefault(index, problem)

    def _scan(self) -> None:
        """Walk records from the end of the header; resynchronise on the next valid record after damage."""
        mm, end = self._mm, self.file_size
        pos = self._data_start
        while pos < end:
            if mm[pos : pos + 4] == FOOTER_MAGIC:
                break
            try:
                entry, payload_at = self._parse_record(pos, end)
            except _BadRecord as e:
                self._reject(pos, str(e), e.index if e.index not in self._payload_at else None)
                nxt = mm.find(CHUNK_MAGIC, pos + 1)
                if nxt < 0:
                    break
                pos = nxt
                continue
            if entry.index in self._payload_at:
                self.problems.append(f"chunk {entry.index} at byte {pos}: duplicate index, ignored")
            else:
                self._bad.pop(entry.index, None)
                self._accept(entry, payload_at)
            pos = payload_at + entry.stored_size
        self.chunks.sort(key=lambda c: c.index)
        expected = set(range(max(self._payload_at, default=-1) + 1))
        missing = sorted(expected - set(self._payload_at) - set(self._bad))
        if missing:
            self.problems.append(f"chunks {missing} are missing (not found while scanning)")

    def _entry(self, i: int) -> ChunkEntry:
        if i in self._by_index:
            return self._by_index[i]
        if i in self._bad:
            raise FormatError(f"{self.path}: {self._bad[i]}")
        readable = [c.index for c in self.chunks]
        raise FormatError(f"{self.path}: chunk {i}: not in this file (readable chunks: {readable})")

    def read(self, i: int) -> bytes:
        """Decoded bytes of the chunk with index ``i``, after checking its CRC and sizes."""
        if self._mm is None:
            raise ValueError("read on a closed VlatReader")
        entry = self._entry(i)
        where = f"{self.path}: chunk {i} at byte {entry.offset}"
        start = self._payload_at[i]
        stored = self._mm[start : start + entry.stored_size]
        (pcrc,) = _CRC.unpack_from(self._mm, entry.offset + 24)
        computed = _crc(stored)
        if pcrc != computed:
            raise FormatError(f"{where}: payload checksum mismatch (stored {pcrc:08x}, computed {computed:08x})")
        if entry.coding == "raw":
            return stored
        return self._unzstd(stored, entry.raw_size, where)

    @staticmethod
    def _unzstd(stored: bytes, raw_size: int, where: str) -> bytes:
        """Decompress one frame, refusing before any allocation if its declared size is wrong."""
        try:
            declared = zstandard.frame_content_size(stored)
        except zstandard.ZstdError:
            raise FormatError(f"{where}: payload is not a zstd frame") from None
        if declared < 0:
            raise FormatError(f"{where}: zstd frame does not declare its content size")
        if declared != raw_size:
            raise FormatError(f"{where}: zstd frame declares {declared} bytes but the chunk declares {raw_size}")
        try:
            out = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_size, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise FormatError(f"{where}: zstd payload is corrupt ({e})") from None
        if len(out) != raw_size:
            raise FormatError(f"{where}: decompressed to {len(out)} bytes, chunk declares {raw_size}")
        return out

    def chunks_of(self, kind: str) -> list[ChunkEntry]:
        return [c for c in self.chunks if c.kind == kind]

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._fh.close()

    def __enter__(self) -> VlatReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def describe(path: str | os.PathLike, *, verify: bool = False) -> dict:
    """JSON-able summary for ``vaecodec info``; ``verify`` also reads every chunk (slower)."""
    with VlatReader(path) as r:
        problems = list(r.problems)
        if verify:
            for c in r.chunks:
                try:
                    r.read(c.index)
                except FormatError as e:
                    problems.append(str(e).removeprefix(f"{r.path}: "))
        by_kind: dict[str, dict[str, int]] = {}
        for c in r.chunks:
            k = by_kind.setdefault(c.kind, {"count": 0, "stored_bytes": 0, "raw_bytes": 0})
            k["count"] += 1
            k["stored_bytes"] += c.stored_size
            k["raw_bytes"] += c.raw_size
        payload = sum(c.stored_size for c in r.chunks)
        return {
            "path": str(r.path),
            "version": r.version,
            "flags": r.flags,
            "file_size": r.file_size,
            "complete": r.complete,
            "header": r.header,
            "chunks": [asdict(c) for c in r.chunks],
            "by_kind": by_kind,
            "payload_bytes": payload,
            "overhead_bytes": r.file_size - payload,
            "verified_chunks": len(r.chunks) if verify else None,  # chunks read and checked (--verify)
            "problems": problems,
        }

"""Entropy coding of latent chunks in worker processes.

On a GPU the model runs faster than one CPU thread can entropy-code (and the coder holds the
GIL, so threads do not help). ``CoderPool`` runs ``python -m vaecodec.workers`` children that
each encode or decode whole chunks, so coding scales with the host's cores and runs while the
GPU computes. Children are plain subprocesses speaking a tiny binary protocol over their
pipes: no fork (unsafe beside CUDA and torch's threads), no re-import of the user's main
script (what multiprocessing's spawn does), and no pickle.

Protocol, little-endian: the parent first sends the coder tables as one safetensors blob
(u64 length + bytes). Each request is u32 op (0 = decode, 1 = encode symbols, 2 = quantize
and encode), u32 quality, 4 x u32 shape [C, t, h, w], u32 length, then the chunk's bytes
(decode), its int32 symbols (op 1), or f64 deadzone, u32 motion block edge (0: no motion
compensation) and its float32 latents in steps (op 2, so that the motion search runs in the
workers too, beside the GPU). Ops 0 and 2 put the chunk's zooms first (``motion.Zooms``):
u32 count, then count x 4 i64 (latent frame, a, bx, by). Each reply is u8 status: 0 = ok,
followed by the int32 symbols
of that shape (decode) or u32 length + the chunk's bytes (encode); 1 = a FormatError, 2 = any
other error, each followed by u32 length + a UTF-8 message. Each worker has at most one
request in flight, and results are taken in the order the requests were sent.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .errors import FormatError, VaecodecError

if TYPE_CHECKING:
    import torch

    from .motion import Zooms

_REQUEST = struct.Struct("<7I")
DECODE, ENCODE, QUANTIZE = 0, 1, 2
_QUANTIZE = struct.Struct("<dI")
_ZOOM = struct.Struct("<4q")


def _pack_zooms(zooms: Zooms | None) -> bytes:
    items = sorted((zooms or {}).items())
    return struct.pack("<I", len(items)) + b"".join(_ZOOM.pack(j, *z) for j, z in items)


def _unpack_zooms(data: bytes) -> tuple[Zooms, int]:
    """(the zooms at the front of ``data``, the offset after them)"""
    (n,) = struct.unpack_from("<I", data)
    rows = [_ZOOM.unpack_from(data, 4 + i * _ZOOM.size) for i in range(n)]
    return {j: (a, bx, by) for j, a, bx, by in rows}, 4 + n * _ZOOM.size


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


class CoderPool:
    """``workers`` child processes: queue chunks with ``decode``/``encode`` while ``idle``, and
    take their ``result``s in the same order."""

    def __init__(self, workers: int, coder) -> None:
        from safetensors.torch import save

        tables = save(coder.to_tensors())
        # the children import this very package, wherever the parent found it
        here = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))}
        self.procs: list[subprocess.Popen] = []
        self.sent = self.taken = 0
        self.in_flight: deque[tuple[int, tuple[int, ...]]] = deque()  # (op, shape), oldest first
        try:
            for _ in range(workers):
                # own session: a Ctrl-C or a SIGTERM to the group reaches the parent only, which
                # then closes the pool
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "vaecodec.workers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    env=env, start_new_session=True))
            for p in self.procs:
                p.stdin.write(struct.pack("<Q", len(tables)) + tables)
                p.stdin.flush()
        except BrokenPipeError:  # a child could not start
            raise self._died() from None
        except BaseException:  # interrupted while starting (Ctrl-C, SIGTERM): no child outlives the pool
            for p in self.procs:
                p.kill()
            self.close()
            raise

    @property
    def idle(self) -> bool:
        """Whether the next worker in turn can take a request (each holds at most one)."""
        return self.sent - self.taken < len(self.procs)

    def decode(self, payload: bytes, shape: tuple[int, int, int, int], quality: int,
               zooms: Zooms | None = None) -> None:
        """Queue a chunk's bytes; its ``result`` is the int32 symbols [C, t, h, w]."""
        self._submit(DECODE, _pack_zooms(zooms) + payload, shape, quality)

    def encode(self, q: np.ndarray, quality: int) -> None:
        """Queue int32 symbols [C, t, h, w], coded without motion vectors; their ``result`` is
        the chunk's bytes."""
        self._submit(ENCODE, np.ascontiguousarray(q, np.int32).tobytes(), q.shape, quality)

    def quantize(self, x: torch.Tensor, quality: int, deadzone: float, motion_block: int | None,
                 zooms: Zooms | None = None) -> None:
        """Queue float latents in steps [C, t, h, w] to be quantized (``quant.chunk_symbols``)
        and coded; their ``result`` is the chunk's bytes."""
        head = _pack_zooms(zooms) + _QUANTIZE.pack(deadzone, motion_block or 0)
        self._submit(QUANTIZE, head + np.ascontiguousarray(x.numpy(), np.float32).tobytes(), tuple(x.shape), quality)

    def _submit(self, op: int, data: bytes, shape: tuple[int, ...], quality: int) -> None:
        if not self.procs:
            raise self._died()
        assert self.idle
        p = self.procs[self.sent % len(self.procs)]
        try:
            p.stdin.write(_REQUEST.pack(op, quality, *shape, len(data)) + data)
            p.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        self.in_flight.append((op, tuple(shape)))
        self.sent += 1

    def result(self) -> np.ndarray | bytes:
        """The oldest request's result (see ``decode``/``encode``); FormatError for a damaged chunk."""
        if not self.procs:
            raise self._died()
        p = self.procs[self.taken % len(self.procs)]
        op, shape = self.in_flight.popleft()
        self.taken += 1
        try:
            status = _read(p.stdout, 1)[0]
            if status == 0 and op == DECODE:
                return np.frombuffer(_read(p.stdout, 4 * int(np.prod(shape))), np.int32).reshape(shape)
            (n,) = struct.unpack("<I", _read(p.stdout, 4))
            if status == 0:
                return _read(p.stdout, n)
            message = _read(p.stdout, n).decode("utf-8", "replace")
        except EOFError:
            raise self._died() from None
        raise (FormatError if status == 1 else VaecodecError)(message)

    def _died(self) -> VaecodecError:
        self.close()
        return VaecodecError("an entropy-coding worker process died; retry with --entropy-workers 0")

    def close(self) -> None:
        """End the children and reap them: idle ones by closing their stdin (which ends their
        loop), all of them at once if results are still owed (nobody will read those)."""
        owed = self.sent > self.taken
        for p in self.procs:
            if owed:
                p.kill()
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
        self.procs = []


def main() -> None:
    """Worker loop: tables once, then coding requests until stdin closes."""
    from safetensors.torch import load

    import torch

    from .entropy import EntropyCoder
    from .quant import chunk_symbols

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        (n,) = struct.unpack("<Q", _read(inp, 8))
        coder = EntropyCoder.from_tensors(load(_read(inp, n)))
        while True:
            op, quality, c, t, h, w, size = _REQUEST.unpack(_read(inp, _REQUEST.size))
            data = _read(inp, size)
            try:
                if op == DECODE:
                    zooms, at = _unpack_zooms(data)
                    reply = b"\0" + coder.decode(data[at:], (c, t, h, w), quality, zooms).tobytes()
                else:
                    if op == QUANTIZE:
                        zooms, at = _unpack_zooms(data)
                        deadzone, block = _QUANTIZE.unpack_from(data, at)
                        x = np.frombuffer(data, np.float32, offset=at + _QUANTIZE.size).reshape(c, t, h, w)
                        x = torch.from_numpy(x.copy())  # a writable array: torch warns on read-only ones
                        q, motion = chunk_symbols(x, deadzone, block or None, coder, quality, zooms)
                        chunk = coder.encode(q, quality, motion, zooms)
                    else:
                        chunk = coder.encode(np.frombuffer(data, np.int32).reshape(c, t, h, w), quality)
                    reply = b"\0" + struct.pack("<I", len(chunk)) + chunk
            except Exception as e:  # reported to the parent, which decides what it means
                message = str(e).encode()
                reply = bytes([1 if isinstance(e, FormatError) else 2]) + struct.pack("<I", len(message)) + message
            out.write(reply)
            out.flush()
    except (EOFError, BrokenPipeError):  # the parent closed our stdin, or stopped reading: done
        return


if __name__ == "__main__":
    main()

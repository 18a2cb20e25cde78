"""Entropy decoding of latent chunks in worker processes.

On a GPU the model decodes faster than one CPU thread can entropy-decode (and the coder holds
the GIL, so threads do not help). ``DecodePool`` runs ``python -m vaecodec.workers`` children
that each decode whole chunks, so decoding scales with the host's cores and runs while the
GPU computes. Children are plain subprocesses speaking a tiny binary protocol over their
pipes: no fork (unsafe beside CUDA and torch's threads), no re-import of the user's main
script (what multiprocessing's spawn does), and no pickle.

Protocol, little-endian: the parent first sends the coder tables as one safetensors blob
(u64 length + bytes). Each request is u32 quality, 4 x u32 shape [C, t, h, w], u32 payload
length, payload; each reply is u8 status (0 = ok: int32 symbols of that shape follow; 1 = a
FormatError, 2 = any other error: u32 length + UTF-8 message follow). Each worker has at most
one request in flight, so neither side can block on a full pipe.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import FormatError, VaecodecError

_REQUEST = struct.Struct("<6I")


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


class DecodePool:
    """``workers`` child processes; ``submit`` chunks in order, take ``result``s in the same order."""

    def __init__(self, workers: int, coder) -> None:
        from safetensors.torch import save

        tables = save(coder.to_tensors())
        # the children import this very package, wherever the parent found it
        here = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))}
        # own session: a Ctrl-C reaches the parent only, which then closes the pool
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "vaecodec.workers"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, start_new_session=True)
            for _ in range(workers)
        ]
        self.sent = self.taken = 0
        self.shapes: list[tuple[int, int, int, int]] = []  # of the requests in flight, oldest first
        try:
            for p in self.procs:
                p.stdin.write(struct.pack("<Q", len(tables)) + tables)
                p.stdin.flush()
        except BrokenPipeError:  # a child could not start
            raise self._died() from None

    @property
    def idle(self) -> bool:
        """Whether the next worker in turn can take a request (each holds at most one)."""
        return self.sent - self.taken < len(self.procs)

    def submit(self, payload: bytes, shape: tuple[int, int, int, int], quality: int) -> None:
        if not self.procs:
            raise self._died()
        assert self.idle
        p = self.procs[self.sent % len(self.procs)]
        try:
            p.stdin.write(_REQUEST.pack(quality, *shape, len(payload)) + payload)
            p.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        self.shapes.append(shape)
        self.sent += 1

    def result(self) -> np.ndarray:
        """int32 symbols [C, t, h, w] of the oldest submitted chunk; FormatError if it is damaged."""
        if not self.procs:
            raise self._died()
        p = self.procs[self.taken % len(self.procs)]
        shape = self.shapes.pop(0)
        self.taken += 1
        try:
            status = _read(p.stdout, 1)[0]
            if status == 0:
                return np.frombuffer(_read(p.stdout, 4 * int(np.prod(shape))), np.int32).reshape(shape)
            (n,) = struct.unpack("<I", _read(p.stdout, 4))
            message = _read(p.stdout, n).decode("utf-8", "replace")
        except EOFError:
            raise self._died() from None
        raise (FormatError if status == 1 else VaecodecError)(message)

    def _died(self) -> VaecodecError:
        self.close()
        return VaecodecError("an entropy-decoding worker process died; retry with --entropy-workers 0")

    def close(self) -> None:
        """End the children (closing their stdin ends their loop) and reap them."""
        for p in self.procs:
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
    """Worker loop: tables once, then decode requests until stdin closes."""
    from safetensors.torch import load

    from .entropy import EntropyCoder

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        (n,) = struct.unpack("<Q", _read(inp, 8))
        coder = EntropyCoder.from_tensors(load(_read(inp, n)))
        while True:
            quality, c, t, h, w, size = _REQUEST.unpack(_read(inp, _REQUEST.size))
            payload = _read(inp, size)
            try:
                reply = b"\0" + coder.decode(payload, (c, t, h, w), quality).tobytes()
            except Exception as e:  # reported to the parent, which decides what it means
                message = str(e).encode()
                reply = bytes([1 if isinstance(e, FormatError) else 2]) + struct.pack("<I", len(message)) + message
            out.write(reply)
            out.flush()
    except EOFError:  # the parent closed our stdin: done
        return


if __name__ == "__main__":
    main()

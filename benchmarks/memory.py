"""Peak memory is bounded by the tile, not the video: encode/decode clips of growing length
(and one 4K clip) in fresh processes and report each process's peak RSS.

    .venv/bin/python benchmarks/memory.py --seconds 2 60 --size 640x480 [--uhd]

Writes a markdown table on stdout (docs/BENCHMARKS.md quotes it with the command).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av


def make_clip(path: Path, seconds: float, size: str, rate: int = 25) -> Path:
    """A lavfi test pattern (moving, textured) as H.264, written with PyAV: no ffmpeg binary needed."""
    src = av.open(f"testsrc2=size={size}:rate={rate}:duration={seconds}", format="lavfi")
    with av.open(str(path), "w") as out:
        w, h = map(int, size.split("x"))
        s = out.add_stream("libx264", rate=Fraction(rate))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        for frame in src.decode(video=0):
            frame.pts = None
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    src.close()
    return path


def run(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "vaecodec", *args, "--json", "-y"], capture_output=True, text=True)
    if p.returncode:
        sys.exit(p.stderr)
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[2, 60])
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--uhd", action="store_true", help="also encode 8 frames of 3840x2160")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--threads", default="2")
    a = ap.parse_args()
    cases = [(s, a.size) for s in a.seconds] + ([(8 / 25, "3840x2160")] if a.uhd else [])
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, threads {a.threads}\n")
    print("| clip | frames | encode peak RSS | encode fps | decode peak RSS | decode fps | bpp |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for seconds, size in cases:
            clip = make_clip(Path(d) / f"{size}_{seconds}.mp4", seconds, size)
            e = run("encode", str(clip), f"{d}/c.vlat", "--model", a.model, "--threads", a.threads)
            r = run("decode", f"{d}/c.vlat", f"{d}/c.mp4", "--threads", a.threads)
            mib = 1 << 20
            print(
                f"| {size} {seconds:g} s | {e['frames']} | {e['peak_rss_bytes'] / mib:.0f} MiB | {e['fps_processed']:.1f} "
                f"| {r['peak_rss_bytes'] / mib:.0f} MiB | {r['fps_processed']:.1f} | {e['bpp']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

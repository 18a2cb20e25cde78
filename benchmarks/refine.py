"""What encoder-side latent refinement (``--refine``) buys, per clip: RD, flicker, cost.

    .venv/bin/python benchmarks/refine.py CLIP [CLIP ...] --qualities 2,3,5,7 --steps 20 [--rate-weight W] [--json out.json]

Runs ``vaecodec bench``'s own measurement (``run_bench``: real encode, real decode, streamed
scores) on each clip twice over the same quality sweep, without and with refinement, and
prints each point's rate, PSNR, flicker, encode speed and peak memory, then the BD-rate and
BD-PSNR of the refined curve against the plain one (with >= 4 qualities). ``--baselines x264``
adds x264 at the refined points' rates, so the bench's BD against x264 comes out too.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch
from rich.console import Console

from vaecodec.bench import run_bench
from vaecodec.metrics import bd_psnr, bd_rate
from vaecodec.refine import RATE_WEIGHT, RefineSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--qualities", default="2,3,5,7")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rate-weight", type=float, default=RATE_WEIGHT)
    ap.add_argument("--baselines", default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    qualities = [int(q) for q in a.qualities.split(",")]
    baselines = [] if a.baselines == "none" else a.baselines.split(",")
    results = {}
    for clip in a.clips:
        runs = {}
        for steps in (0, a.steps):
            torch.set_num_threads(a.threads)
            refine = RefineSettings(steps, rate_weight=a.rate_weight) if steps else 0
            runs[steps] = run_bench([clip], codec_kwargs={"device": "cpu", "refine": refine},
                                    sweep=[{"quality": q} for q in qualities],
                                    baselines=baselines if steps else [], threads=a.threads,
                                    json_path=None, plot_path=None, console=Console(file=io.StringIO()))
        results[clip.name] = runs
        print(f"\n{clip.name}: refine {a.steps} steps (rate weight {a.rate_weight:g}) vs plain")
        print("| quality | plain bpp | plain PSNR | refined bpp | refined PSNR | flicker plain / refined | encode fps plain / refined | peak RSS MiB plain / refined |")
        print("|---|---:|---:|---:|---:|---|---|---|")
        mine = {s: [c for c in r["codecs"] if c["name"] == "vaecodec"] for s, r in runs.items()}
        for q, p, r in zip(qualities, mine[0], mine[a.steps]):
            print(f"| {q} | {p['bpp']:.4f} | {p['psnr']:.2f} | {r['bpp']:.4f} | {r['psnr']:.2f} | "
                  f"{p['quality']['temporal_error']:.2f} / {r['quality']['temporal_error']:.2f} | "
                  f"{p['encode_fps']:.1f} / {r['encode_fps']:.2f} | "
                  f"{p['peak_rss_bytes'] / 2**20:.0f} / {r['peak_rss_bytes'] / 2**20:.0f} |")
        if len(qualities) >= 4:
            curves = [([c["bpp"] for c in mine[s]], [c["psnr"] for c in mine[s]]) for s in (0, a.steps)]
            print(f"BD-rate refined vs plain: {bd_rate(*curves[0], *curves[1]):+.1f} %, "
                  f"BD-PSNR {bd_psnr(*curves[0], *curves[1]):+.2f} dB")
        for b in runs[a.steps]["bd"]:
            print(f"BD vs {b['anchor']}: rate {b['bd_rate_percent']}, PSNR {b['bd_psnr_db']}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

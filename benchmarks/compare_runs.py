"""Two benchmark runs' vaecodec curves against one anchor (docs/BENCHMARKS.md quotes it).

    git show REV:docs/benchmarks.json > old.json
    .venv/bin/python benchmarks/compare_runs.py old.json docs/benchmarks.json [--anchors x264,x265]

Each run of ``run_benchmarks.py`` searches its baseline points at its own vaecodec rates, so
the BD figures of two runs use different anchor curves and PSNR ranges, and a codec that
only got better can read worse. Here each input's anchor is the baseline's points of both
runs pooled (sorted by rate, keeping only points that raise both rate and PSNR), and both
runs' vaecodec points are measured against it: BD-PSNR (dB) and BD-rate (%) per input.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from vaecodec.metrics import bd_psnr, bd_rate


def points(run: dict, clip: str, codec: str) -> list[tuple[float, float]]:
    return sorted((c["bpp"], c["psnr"]) for c in run["codecs"]
                  if c["name"] == codec and Path(c["input"]).name == clip)


def monotone(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points that each raise both rate and PSNR over the last one kept."""
    kept: list[tuple[float, float]] = []
    for r, p in pts:
        if not kept or (r > kept[-1][0] * 1.001 and p > kept[-1][1]):
            kept.append((r, p))
    return kept


def bd(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> str:
    args = ([r for r, _ in anchor], [p for _, p in anchor], [r for r, _ in test], [p for _, p in test])
    out = []
    for fn, fmt in ((bd_psnr, "{:+.2f} dB"), (bd_rate, "{:+.1f} %")):
        try:
            value = fn(*args)
        except ValueError:  # e.g. repeated rates along the integration axis
            value = math.nan
        out.append("-" if math.isnan(value) else fmt.format(value))  # nan: no overlap
    return " / ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--anchors", default="x264,x265")
    args = ap.parse_args()
    old, new = (json.loads(p.read_text()) for p in (args.old, args.new))
    clips = [Path(i["path"]).name for i in new["inputs"]]
    print("| input | anchor (pooled points) | old: BD-PSNR / BD-rate | new: BD-PSNR / BD-rate |")
    print("|---|---|---|---|")
    for clip in clips:
        for name in args.anchors.split(","):
            anchor = monotone(sorted(set(points(old, clip, name) + points(new, clip, name))))
            print(f"| {clip} | {name} ({len(anchor)}) | {bd(anchor, points(old, clip, 'vaecodec'))} | "
                  f"{bd(anchor, points(new, clip, 'vaecodec'))} |")


if __name__ == "__main__":
    main()

"""BD figures of several models' `scale.py` sweeps against the first one's (docs/MODEL.md quotes it).

    .venv/bin/python benchmarks/scale.py CLIPS --scales default --qualities 1,2,3,4,5,6,7,8 \\
        --model tiny:OLD.safetensors > old.jsonl          # the same for each candidate: new.jsonl ...
    .venv/bin/python benchmarks/compare_models.py old.jsonl new.jsonl [more.jsonl ...]

For each clip and each later file: BD-PSNR / BD-rate against the first file's points (the same
clips and qualities), then per quality the PSNR and the bits' change, which say more than a
BD figure where two models code the same latents (a decoder-only change moves PSNR alone).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare_runs import bd


def sweep(path: Path) -> dict[str, dict[int, dict]]:
    """{clip: {quality: scale.py's JSON line}} from one sweep's output."""
    out: dict[str, dict[int, dict]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("{") and '"quality"' in line:
            row = json.loads(line)
            out.setdefault(row["clip"], {})[row["quality"]] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("anchor", type=Path)
    ap.add_argument("tests", type=Path, nargs="+")
    args = ap.parse_args()
    anchor = sweep(args.anchor)
    for test_path in args.tests:
        test = sweep(test_path)
        for clip, base in anchor.items():
            qs = sorted(set(base) & set(test.get(clip, {})))
            if not qs:
                continue
            pts = [[(rows[q]["bpp"], rows[q]["psnr"]) for q in qs] for rows in (base, test[clip])]
            print(f"{clip} {test_path.name} vs {args.anchor.name}: {bd(*pts)}")
            for q in qs:
                a, b = base[q], test[clip][q]
                print(f"  quality {q}: {a['psnr']:.2f} -> {b['psnr']:.2f} dB, bits {100 * (b['bpp'] / a['bpp'] - 1):+.1f} %, "
                      f"flicker {a['flicker']:.2f} -> {b['flicker']:.2f}")


if __name__ == "__main__":
    main()

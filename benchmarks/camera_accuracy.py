"""How close ``camera.estimate`` lands to the true zoom and shift between two frames.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/camera_accuracy.py [--pairs 12] [--data data]

Each pair is two 640x360 views of a held-out photo (``zoom_jumps.view``, bicubic) whose true
motion is known: the second is zoomed by up to 1.5 % against the first and shifted by up to
4 px across and 3 px down (seeded, so every run and every commit sees the same pairs). The
error of a pair is the largest distance, in pixels, between where the estimate and the truth
put the picture's four corner pixels. One JSON line per photo: mean and largest error, and
how many pairs got no estimate. Copy it into an older checkout to compare estimators (it uses
only ``Patches`` and ``estimate``). Needs the photos (scripts/fetch_training_data.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_benchmarks import load_photo  # noqa: E402
from zoom_jumps import view  # noqa: E402

from vaecodec import camera  # noqa: E402

PHOTOS = ("mate:LadyBird", "lomiri:life_by_Aitzol_Berasategi", "plasma:Path", "skimage:chelsea")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    w, h = 640, 360
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
    for key in PHOTOS:
        photo = load_photo(key, a.data)
        H, W = photo.shape[:2]
        errors, missed = [], 0
        for _ in range(a.pairs):
            z0 = rng.uniform(0.9, 1.4) if W > 1200 else rng.uniform(1.0, 1.2)  # photo pixels per view pixel, inverse
            z1 = z0 * rng.uniform(0.985, 1.015)
            cx0, cy0 = W / 2 + rng.uniform(-50, 50), H / 2 + rng.uniform(-30, 30)
            cx1, cy1 = cx0 + rng.uniform(-4, 4) / z0, cy0 + rng.uniform(-3, 3) / z0
            # view pixel u shows photo point c - size/2/z + u/z, so the first view's pixel p is
            # the second's s p + t with s = z1 / z0
            s = z1 / z0
            t = np.array([z1 * (cx0 - cx1) - w / 2 * s + w / 2, z1 * (cy0 - cy1) - h / 2 * s + h / 2])
            m = camera.estimate(camera.Patches(view(photo, z0, cx0, cy0, w, h)),
                                camera.Patches(view(photo, z1, cx1, cy1, w, h)))
            if m is None:
                missed += 1
                continue
            errors.append(float(np.abs(corners * m[0, 0] + m[:, 2] - (corners * s + t)).max()))
        print(json.dumps({"photo": key, "pairs": a.pairs, "no_estimate": missed,
                          "mean_px": round(float(np.mean(errors)), 4), "max_px": round(float(np.max(errors)), 4)}),
              flush=True)


if __name__ == "__main__":
    main()

"""How many bits could a richer entropy model save on a real .vlat? (docs/MODEL.md quotes it)

    .venv/bin/python benchmarks/entropy_headroom.py out.vlat [more.vlat ...]

For each file (entropy-coded with the embedded model) it prints, in bits per pixel:

* ``payload``: the latent chunks' real coded size;
* ``fitted``, ``+ctx``: empirical entropies of the file's own quantized latents, coded
  directly (intra) or as frame-to-frame residuals, with tables fitted to this very clip
  (an optimistic bound), without and with a context from the previous latent frame's local
  activity (3x3 sum of |q|, 7 buckets).

The gap between ``fitted`` and ``+ctx`` is what per-symbol context modelling could add.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from vaecodec import entropy
from vaecodec.codec import LatentFile


def cond_entropy_bits(sym: np.ndarray, ctx: np.ndarray) -> float:
    """Total -log2 p(sym | ctx) with p the empirical frequencies of the same data."""
    key = ctx.astype(np.int64) * entropy.ALPHABET + sym
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    _, cinv, ccnt = np.unique(ctx, return_inverse=True, return_counts=True)
    return float(-np.log2(cnt[inv] / ccnt[cinv]).sum())


def activity_buckets(q: np.ndarray) -> np.ndarray:
    """[C, T, h, w]: bucketed 3x3 sum of |q| of the previous latent frame (0 before frame 0)."""
    c, t, h, w = q.shape
    prev = np.zeros_like(q)
    prev[:, 1:] = np.abs(q[:, :-1])
    s = F.avg_pool2d(torch.from_numpy(prev.astype(np.float32)).view(c * t, 1, h, w), 3, 1, 1, count_include_pad=False)
    return np.digitize(s.numpy().reshape(c, t, h, w) * 9, [1, 2, 3, 5, 9, 17])


def report(path: str) -> dict[str, float]:
    f = LatentFile(path)
    quant = f.header["quantization"]
    if quant["scheme"] != "entropy":
        sys.exit(f"{path}: not entropy-coded")
    step = np.asarray(quant["step"], np.float32)[:, None, None, None]
    q = np.round(f.latents(0, None).numpy() / step).astype(np.int64)  # [C, T, h, w]
    c = q.shape[0]
    res = np.zeros_like(q)
    res[:, 1:] = q[:, 1:] - q[:, :-1]
    ctx = activity_buckets(q)
    sym_q, sym_r = entropy._symbols(q), entropy._symbols(res)
    pixels = f.frames * f.width * f.height
    rows = {
        "payload": 8.0 * sum(e.stored_size for e in f._latent_chunks),
        "fitted intra": sum(cond_entropy_bits(sym_q[i].ravel(), np.zeros(sym_q[i].size)) for i in range(c)),
        "fitted intra +ctx": sum(cond_entropy_bits(sym_q[i].ravel(), ctx[i].ravel()) for i in range(c)),
        "fitted residual": sum(cond_entropy_bits(sym_r[i, 1:].ravel(), np.zeros(sym_r[i, 1:].size)) for i in range(c)),
        "fitted residual +ctx": sum(cond_entropy_bits(sym_r[i, 1:].ravel(), ctx[i, 1:].ravel()) for i in range(c)),
    }
    return {k: v / pixels for k, v in rows.items()}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reports = {path: report(path) for path in sys.argv[1:]}
    names = next(iter(reports.values())).keys()
    print("| file (bpp) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for path, r in reports.items():
        print(f"| {path.rsplit('/', 1)[-1]} | " + " | ".join(f"{v:.4f}" for v in r.values()) + " |")


if __name__ == "__main__":
    main()

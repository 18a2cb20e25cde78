"""How much of a clip the tiny autoencoder itself keeps, before any coding decision.

    .venv/bin/python benchmarks/ae_ceiling.py samples/testsrc2.mp4 CLIP ... [--scales 1,3] [--steps 0,0.722,0.2]
        [--models shipped,runs/NAME/last.safetensors,...]

For each clip (its first ``--frames`` frames, optionally enlarged bicubically by each of
``--scales``) and each model (``shipped``, a weights file, or a training checkpoint), prints
the PSNR of the latent means decoded as they are (step 0) and rounded at each quantization
step. Where rounding at quality 8's step costs next to nothing and the PSNR is still low,
the autoencoder, not the coder, is the limit (docs/MODEL.md, "Drawn scenes for graphics").
No camera, motion, deadzone or ladder: the network alone, one call each way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from vaecodec.models import tiny
from vaecodec.video import VideoReader


def clip_tensor(path: Path, frames: int, scale: float) -> torch.Tensor:
    """[1, 3, T, H, W] in [-1, 1], the first ``frames`` frames, enlarged by ``scale``, cropped to /8."""
    with VideoReader(path, limit=frames) as reader:
        rgb = np.concatenate(list(reader.chunks()))  # [T, H, W, 3] uint8
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    if scale != 1:
        x = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
    h, w = x.shape[-2:]
    return x[..., : h // 8 * 8, : w // 8 * 8].permute(1, 0, 2, 3)[None]


def load_model(name: str) -> tiny.TinyVAE:
    """``shipped``, a weights file, or a training checkpoint (its weight average if it kept one)."""
    if name == "shipped":
        return tiny.load(None, torch.device("cpu"), torch.float32)
    with safe_open(name, "pt") as f:
        if "model_id" in (f.metadata() or {}):  # a weights file
            return tiny.load(name, torch.device("cpu"), torch.float32)
    tensors = load_file(name)
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."  # a run's weight average (--ema)
    state = {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    blocks8 = len({k.split(".")[2] for k in state if k.startswith("decoder.frame_blocks.")})
    latent = state["decoder.inp.weight"].shape[1]
    refine = any(k.startswith("decoder.refine.") for k in state)
    model = tiny.TinyVAE(tiny.Arch(latent=latent, refine=refine, blocks8=blocks8))
    model.load_state_dict(state)
    return model.eval()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / ((a - b) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--models", default="shipped")
    ap.add_argument("--scales", default="1")
    ap.add_argument("--steps", default="0,0.722,0.2", help="0 = unquantized")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = [float(s) for s in args.steps.split(",")]
    data = [(f"{c.name} x{s}", clip_tensor(c, args.frames, float(s))) for c in args.clips for s in args.scales.split(",")]
    print("| model | clip | " + " | ".join("unquantized" if s == 0 else f"step {s}" for s in steps) + " |")
    print("|---|---|" + "---:|" * len(steps))
    for name in args.models.split(","):
        model = load_model(name)
        with torch.inference_mode():
            for label, x in data:
                mean = model.encode(x)[0]
                cells = [psnr(x, model.decode(mean if s == 0 else torch.round(mean / s) * s).clamp(-1, 1)) for s in steps]
                print(f"| {name} | {label} | " + " | ".join(f"{v:.2f}" for v in cells) + " |", flush=True)


if __name__ == "__main__":
    main()

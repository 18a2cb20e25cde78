"""Train/test match: the model card's validation figures against real files on the same clips.

The training validation (and the model card written by ``python -m vaecodec.train export``)
measures PSNR and bits inside Python on float clips. This script writes the same held-out
clips as lossless PNG sequences, runs them through the real pipeline (``Codec.encode`` to a
.vlat, ``Codec.decode_frames`` back to 8-bit RGB) and compares, per quality:

    .venv/bin/python benchmarks/train_test_match.py [--data data] [--weights W]

Needs the held-out photos (``bash scripts/fetch_training_data.sh``). PSNR is over all clips
(mean squared error pooled, as in training); bpp counts the latent chunks' stored bytes
(*payload*) and the whole file (*file*: header, index and footer included, which weighs a
lot on 192x192x9 clips). Each quality is encoded with the deadzone and motion compensation its
card point was measured with (none for cards older than the temporal deadzone or motion);
``--motion on`` codes with motion compensation whatever the card says, as default files are.
Files are coded without camera motion compensation (``camera=False``): the card describes the
model and its coder, and a steadied canvas makes the card's panning clips cheaper than that.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

from vaecodec import Codec
from vaecodec.container import describe
from vaecodec.metrics import luma, psnr_from_mse, ssim
from vaecodec.models.tiny import WEIGHTS, load, model_card
from vaecodec.train.train import Config, _val_clips


def _write_pngs(clip: np.ndarray, folder: Path) -> None:
    """uint8 [T, H, W, 3] -> folder/000001.png ... (lossless)."""
    folder.mkdir(parents=True)
    for i, frame in enumerate(clip, 1):
        av.VideoFrame.from_ndarray(frame, format="rgb24").to_image().save(folder / f"{i:06d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data")
    ap.add_argument("--weights", default=None, help="tiny weights file (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--motion", choices=("card", "on", "off"), default="card",
                    help="motion compensation as the card measured it (default), or forced on/off")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else WEIGHTS
    model = load(weights, torch.device("cpu"), torch.float32)
    card = model_card(model.metadata)
    cfg = Config(data=args.data)
    clips = _val_clips(cfg)  # the card's validation clips: [n, 3, 9, S, S] in [-1, 1]
    u8 = ((clips + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    n, t, h, w, _ = u8.shape
    pixels = n * t * h * w
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, clip in enumerate(u8):
            _write_pngs(clip, Path(tmp) / f"clip{i}")
        for point in card["validation"]["points"]:
            # the card's own quantization (its temporal deadzone and motion; cards before them: none),
            # at full size and without a steadied canvas, as the card measured the model and its coder
            motion = point.get("motion", False) if args.motion == "card" else args.motion == "on"
            codec = Codec(f"tiny:{weights}", device="cpu", tables=point["quality"], deadzone=point.get("deadzone", 0.0),
                          motion=motion, scale=1.0, camera=False)
            se, payload, total, ssims = 0.0, 0, 0, []
            for i, clip in enumerate(u8):
                out = Path(tmp) / f"clip{i}-q{point['quality']}.vlat"
                codec.encode(Path(tmp) / f"clip{i}", out, overwrite=True)
                info = describe(out)
                payload += info["by_kind"]["latent"]["stored_bytes"]
                total += info["file_size"]
                rec = np.concatenate(list(codec.decode_frames(out)))
                se += float(np.sum((rec.astype(np.float64) - clip) ** 2))
                ssims.append(ssim(luma(torch.from_numpy(rec).float()), luma(torch.from_numpy(clip).float())))
            file_psnr = psnr_from_mse(se / (pixels * 3))
            rows.append((point["quality"], point["psnr"], point.get("ssim"), point["bpp"], file_psnr,
                         torch.cat(ssims).mean().item(), 8 * payload / pixels, 8 * total / pixels))
    print(f"model `{model.model_id}`, {card['validation']['clips']} from {', '.join(card['validation']['photos'])}\n")
    print("| quality | card PSNR | file PSNR | Δ dB | card SSIM-Y | file SSIM-Y | card bpp | payload bpp | Δ % | file bpp |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for q, cp, cs, cb, fp, fs, pb, fb in rows:
        card_ssim = "-" if cs is None else f"{cs:.4f}"  # cards before vaecodec-tiny-v6 have none
        print(f"| {q} | {cp:.2f} | {fp:.2f} | {fp - cp:+.2f} | {card_ssim} | {fs:.4f} | {cb:.4f} | {pb:.4f} "
              f"| {100 * (pb / cb - 1):+.1f} | {fb:.4f} |")


if __name__ == "__main__":
    main()

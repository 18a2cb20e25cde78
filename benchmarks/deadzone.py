"""Rate/quality of the encoder's temporal deadzone (docs/MODEL.md quotes it)

    .venv/bin/python benchmarks/deadzone.py CLIP.mp4 [CLIP.mp4 ...] --frames 97 \\
        --deadzones 0,0.05,0.1,0.15,0.2,0.3 --jsonl rows.jsonl

Each clip is encoded once by the embedded model (the real tiled encoder, its tiles gathered
into chunks as ``vaecodec encode`` does, or per ``--chunk-frames``); then, per quality
level and deadzone, its chunk latents go through ``Quantizer.symbols`` and the real entropy
coder (bpp = coded payload bytes) and back through the real tiled decoder (RGB PSNR and the
bench's frame-to-frame error, *flicker*, against the clip's own frames). It prints one table
per clip and the BD-rate / BD-PSNR of every constant deadzone, and of the shipped
per-quality default, against plain rounding (deadzone 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vaecodec import metrics
from vaecodec.codec import ChunkGatherer, Codec, _pad_to_grid
from vaecodec.quant import Quantizer, default_deadzone
from vaecodec.resample import to_uint8_frames
from vaecodec.tiling import decoder_for, encoder_for
from vaecodec.video import VideoReader


def measure(codec: Codec, clip: Path, frames: int, qualities: list[int], deadzones: list[float],
            chunk_latents: int | None = None) -> list[dict]:
    model = codec.model
    s = model.spatial
    with VideoReader(clip) as r:
        info = r.info
        src = np.concatenate(list(r.chunks()))[:frames]
    hp, wp = -(-info.height // s) * s, -(-info.width // s) * s
    runner = codec._runner(model, codec._tiling(model, hp, wp))
    enc = encoder_for(runner, model.temporal)
    with torch.inference_mode():
        x = torch.from_numpy(_pad_to_grid(src, s)).permute(3, 0, 1, 2)
        blocks = list(enc.push(x)) + list(enc.finish())
    gather = ChunkGatherer(Quantizer("entropy", coder=model.entropy_coder), chunk_latents)  # as Codec.encode
    chunks = [c for c in [*map(gather.add, blocks), gather.rest()] if c is not None]
    n_lat = sum(z.shape[1] for z in chunks)
    rows = []
    for quality in qualities:
        for dz in sorted(set(deadzones) | {default_deadzone(quality)}):
            quant = Quantizer("entropy", quality=quality, coder=model.entropy_coder, deadzone=dz)
            nbytes, out = 0, []
            dec = decoder_for(runner, model.temporal, n_lat, model.reach)
            with torch.inference_mode():
                for z in chunks:
                    p = quant.pack(z)
                    nbytes += len(p.payload)
                    for _, y in dec.push(quant.unpack(p.payload, p.meta, tuple(z.shape))):
                        out.append(to_uint8_frames(y, info.height, info.width))
            q = metrics.score([src], [np.concatenate(out)[: len(src)]], with_ssim=False)
            row = {"clip": clip.name, "quality": quality, "deadzone": dz,
                   "bpp": 8 * nbytes / (info.width * info.height * len(src)), "psnr": q.psnr,
                   "flicker": q.temporal_error, "default": dz == default_deadzone(quality)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bd(rows: list[dict], pick) -> tuple[float, float]:
    base = sorted((r for r in rows if r["deadzone"] == 0), key=lambda r: r["quality"])
    test = sorted((r for r in rows if pick(r)), key=lambda r: r["quality"])
    a = ([r["bpp"] for r in base], [r["psnr"] for r in base])
    b = ([r["bpp"] for r in test], [r["psnr"] for r in test])
    return metrics.bd_rate(*a, *b), metrics.bd_psnr(*a, *b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=97)
    ap.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--deadzones", default="0,0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--jsonl", type=Path, help="also write every row here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-frames", type=int, help="latent frames per chunk, at least (default: the encoder's)")
    ap.add_argument("--model", default="tiny", help="as vaecodec encode --model, e.g. tiny:other.safetensors")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    codec = Codec(a.model, device="cpu")
    qualities = [int(v) for v in a.qualities.split(",")]
    deadzones = [float(v) for v in a.deadzones.split(",")]
    every = []
    for clip in a.clips:
        rows = measure(codec, clip, a.frames, qualities, deadzones, a.chunk_frames)
        every += rows
        print(f"\n{clip.name}: bpp / PSNR dB / flicker per quality\n")
        print("| deadzone | " + " | ".join(f"q{q}" for q in qualities) + " | BD-rate | BD-PSNR |")
        print("|---" * (len(qualities) + 3) + "|")
        for dz in sorted({r["deadzone"] for r in rows}) + ["default"]:
            pick = (lambda r: r["default"]) if dz == "default" else (lambda r, dz=dz: r["deadzone"] == dz)
            cells = {r["quality"]: r for r in rows if pick(r)}
            if len(cells) != len(qualities):
                continue
            rate, psnr = bd(rows, pick) if len(qualities) > 1 else (float("nan"), float("nan"))
            print(f"| {dz} | " + " | ".join(
                f"{cells[q]['bpp']:.4f} / {cells[q]['psnr']:.2f} / {cells[q]['flicker']:.2f}" for q in qualities)
                + f" | {rate:+.1f} % | {psnr:+.3f} |")
    if a.jsonl:
        a.jsonl.write_text("".join(json.dumps(r) + "\n" for r in every))


if __name__ == "__main__":
    main()

"""``python -m vaecodec.train {train,export,speed}``: train the tiny model, export its weights, time it."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from vaecodec.device import DTYPES
from vaecodec.errors import VaecodecError
from vaecodec.train.train import Config, export, train


HELP = {
    "data": "prepared data folder (scripts/fetch_training_data.sh, then python -m vaecodec.train.data prepare)",
    "run": "run folder: checkpoints, state.json, log.jsonl (resumed if it holds a checkpoint)",
    "device": "cpu | cuda | mps (bf16 autocast on CUDA)",
    "steps": "optimiser steps (with --time-budget: an upper bound)",
    "batch": "clips per step",
    "size": "clip side in pixels (a multiple of 8)",
    "frames": "frames per clip (1 + 4k)",
    "lr": "Adam learning rate (warm-up, then a cosine decay to 10 %% over the last fifth of the run)",
    "lam": "rate weight: loss = MSE + lam * bits/pixel + kl * KL (+ the optional terms below)",
    "kl": "weight of the KL term that keeps the log-variance a real posterior",
    "step_min": "smallest quantization step trained on (steps are drawn log-uniformly per clip)",
    "step_max": "largest quantization step trained on",
    "val_every": "steps between validations on the held-out photos",
    "ckpt_every": "steps between checkpoints",
    "threads": "torch CPU threads",
    "seed": "seed of the clip stream and initialisation",
    "log_every": "steps between progress lines in log.jsonl",
    "val_size": "validation clip side in pixels",
    "val_clips": "validation clips (9 frames each, fixed seed)",
    "latent": "latent channels (architecture)",
    "refine": "half-resolution refine branch in the decoder (architecture)",
    "blocks8": "per-frame residual blocks at 1/8 resolution in the decoder (architecture)",
    "enc_blocks": "causal blocks at the latent rate in the encoder (architecture)",
    "workers": "clip-making CPU processes (0 = clips made in the training process on --device, a GPU too; resumes exactly)",
    "flicker": "weight of the squared frame-to-frame change of the error (on [0,1]) in the loss",
    "equivariance": "weight of the mismatch between the latents of a clip moved by 1-7 px and the clip's "
                    "latents moved by the coder's bilinear rule (shift-equivariant latents cost fewer inter bits)",
    "motion": "rate term: predict each latent frame from the previous one moved along the coder's "
              "motion vectors (as default files do), not in place",
    "prefetch": "with --workers 0, make the next batch in a background thread while this one trains",
    "time_budget": "seconds of training; the run ends, and its lr decays, by wall time (0 = by --steps)",
    "init": "start from this smaller trained model (checkpoint or weights file); its output is kept",
    "freeze_init": "train only the parts --init lacks (and the rate prior)",
    "freeze_decoder": "train only the encoder (and the rate prior); the decoder keeps its weights",
    "freeze_encoder": "train only the decoder: the latents, and so the rate of every file, stay as they are",
    "graphics": "share of training scenes drawn instead of photographed: flat saturated fills, hard edges, "
                "text (screen content, test patterns)",
    "ema": "decay of a moving average of the weights (e.g. 0.999; 0 = none): validation scores it, checkpoints "
           "keep it beside the weights, export takes it",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vaecodec.train",
                                 epilog="Training data: bash scripts/fetch_training_data.sh, then "
                                        "python -m vaecodec.train.data prepare (docs/MODEL.md, Data).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train (resumes from RUN/last.safetensors if present)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(Config):
        if f.name in ("photos", "val_photos"):
            continue
        flag, helptext = "--" + f.name.replace("_", "-"), HELP.get(f.name)
        if isinstance(f.default, bool):
            tr.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=helptext)
        else:
            tr.add_argument(flag, type=type(f.default), default=f.default, help=helptext)
    tr.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ex = sub.add_parser("export", help="write the shipped weights file from a checkpoint")
    ex.add_argument("--run", default="runs/tiny")
    ex.add_argument("--weights", default=None,
                    help="instead of a run: keep this weights file's network, rebuild its entropy tables")
    # no defaults: new weights need a new id (files name the model they need) and a new file
    ex.add_argument("--out", required=True, help="e.g. vaecodec/models/weights/tiny-v10.safetensors")
    ex.add_argument("--model-id", required=True, help="e.g. vaecodec-tiny-v10")
    ex.add_argument("--version", required=True, help="e.g. 10")
    ex.add_argument("--which", choices=["best", "last"], default="best")
    ex.add_argument("--clips", type=int, default=48, help="training clips for the entropy tables")
    ex.add_argument("--context-clips", type=int, default=480,
                    help="training clips for the context tables of chunk version 5 (0: none, version 4 chunks)")
    ex.add_argument("--coarsest", type=float, default=None,
                    help="step of quality 1 (default: the coarsest trained step)")
    ex.add_argument("--finest", type=float, default=None,
                    help="step of quality 8 (default: the finest trained step)")
    ex.add_argument("--blend-with", default=None,
                    help="a weights file of the same architecture: ship a blend of it and the run's network")
    ex.add_argument("--blend", type=float, default=0.5, help="the run's share of the blend (with --blend-with)")
    sp = sub.add_parser("speed", help="fps of encode/decode incl. entropy coding, per stage too")
    sp.add_argument("--weights", default=None, help="weights file (default: the shipped one)")
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--frames", type=int, default=33)
    sp.add_argument("--height", type=int, default=480)
    sp.add_argument("--width", type=int, default=856)
    sp.add_argument("--repeats", type=int, default=2)
    sp.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    sp.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    sp.add_argument("--profile", action="store_true",
                    help="print torch.profiler tables of one model encode and decode instead of fps")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "train":
            cfg = Config(**{f.name: getattr(args, f.name) for f in fields(Config)
                            if f.name not in ("photos", "val_photos")})
            print(json.dumps(train(cfg, resume=not args.fresh)))
        elif args.cmd == "speed":
            from vaecodec.train.speed import measure, profile

            if args.profile:
                print(profile(args.weights, args.threads, args.frames, args.height, args.width,
                              device=args.device, dtype=args.dtype))
            else:
                print(json.dumps(measure(args.weights, args.threads, args.frames, args.height, args.width,
                                         args.repeats, device=args.device, dtype=args.dtype)))
        else:
            card = export(args.run, args.out, args.model_id, args.which, args.clips, args.version, args.coarsest,
                          args.finest, args.weights, args.context_clips, args.blend_with, args.blend)
            print(json.dumps(card["validation"], indent=1))
    except VaecodecError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

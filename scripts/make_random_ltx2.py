"""Write a random full-size LTX-2 video VAE checkpoint in the released layout, for end-to-end checks.

The file looks like the VAE part of the released LTX-2 checkpoint: ``vae.encoder.*``,
``vae.decoder.*`` and ``vae.per_channel_statistics.*`` keys (including the statistics the
codec ignores) and the architecture as JSON in the safetensors metadata under ``config``,
``{"vae": {...}}``, which is where ltx-core reads it from. Tensors are generated and written
one at a time, so memory stays at one tensor whatever the model size.

    python scripts/make_random_ltx2.py OUT.safetensors [--dtype bf16|fp32] [--seed 0] [--bare]
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path

import torch

from vaecodec.models.ltx2 import RELEASED_CONFIG, LTX2VAE

_DTYPES = {"bf16": (torch.bfloat16, "BF16"), "fp32": (torch.float32, "F32")}


def random_tensor(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Plausible random values: 1/sqrt(fan_in) weights, small biases/tables, positive stds."""
    if name.endswith("std-of-means"):
        return torch.rand(shape, generator=g) + 0.5
    if name.endswith("timestep_scale_multiplier"):
        return torch.full(shape, 1000.0)
    if len(shape) >= 2 and "table" not in name:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return torch.randn(shape, generator=g) * 0.02


def write(path: Path, dtype_name: str, seed: int, prefix: str) -> int:
    """Stream a safetensors file (header, then tensors in order); returns the parameter count."""
    torch_dtype, st_dtype = _DTYPES[dtype_name]
    with torch.device("meta"):
        model = LTX2VAE(RELEASED_CONFIG)
    shapes = {prefix + k: tuple(v.shape) for k, v in model.state_dict().items()}
    c = RELEASED_CONFIG["latent_channels"]
    # statistics the released file carries but the codec does not use
    shapes[prefix + "per_channel_statistics.channel"] = (c,)
    shapes[prefix + "per_channel_statistics.mean-of-stds"] = (c,)
    width = torch.empty((), dtype=torch_dtype).element_size()
    header: dict = {"__metadata__": {"config": json.dumps({"vae": RELEASED_CONFIG})}}
    offset = 0
    for name, shape in shapes.items():
        n = math.prod(shape) * width
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in shapes.items():
            t = random_tensor(name, shape, g).to(torch_dtype).contiguous()
            f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bare", action="store_true", help="VAE-only key names (no 'vae.' prefix)")
    args = ap.parse_args()
    n = write(args.out, args.dtype, args.seed, "" if args.bare else "vae.")
    print(f"wrote {args.out}: {n:,} parameters, {args.out.stat().st_size / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()

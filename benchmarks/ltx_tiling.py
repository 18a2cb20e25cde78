"""LTX-2 tiled decode: vaecodec's tiling vs ltx-core's own ``VideoDecoder.tiled_decode``.

A small random LTX-2 VAE (the released block types, patch 4, every compression stage, tiny
width; built by ``tests/test_ltx2.py``'s helpers with a fixed seed) is saved in the real
checkpoint layout and loaded twice: through vaecodec (``vaecodec.models.ltx2.load``) and as an
ltx-core ``VideoDecoder``. One random latent is decoded four ways, each in a fresh subprocess:

  vaecodec untiled      LTX2VAE.decode on the whole latent (reference for vaecodec tiled)
  ltx-core untiled      VideoDecoder.forward on the whole latent (reference for ltx-core tiled)
  vaecodec tiled        StreamingDecoder + TileRunner, as ``LatentFile.iter_frames`` drives them
  ltx-core tiled        VideoDecoder.tiled_decode(TilingConfig(spatial, temporal))

at the same tile sizes: vaecodec ``Tiling(L, O, P, Q)`` <-> ltx-core
``SpatialTilingConfig(P, Q)`` + ``TemporalTilingConfig(8*L, 8*O)``.

With random weights only the error of a tiled decode against the untiled decode of the same
implementation means anything (pixels [-1, 1] -> 0..255, clamped). The seam metric is the mean
abs error on the frames/rows/columns covered by more than one tile of that variant's own tile
plan (within 2 px / 1 frame of a
tile's start or end inside the video), divided by the mean abs error everywhere else. Peak memory
is the peak RSS (VmHWM) of each fresh subprocess during the decode calls (the high-water mark is
reset after the model is loaded), next to the RSS just before decoding, so the decode's own
growth (activations, tile buffers, the full output video) is the difference.

    .venv/bin/python benchmarks/ltx_tiling.py            # writes a markdown section on stdout
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- model


def _test_helpers():
    """The parity tests' builders (small_config, build_reference, save_checkpoint)."""
    spec = importlib.util.spec_from_file_location("_test_ltx2", ROOT / "tests" / "test_ltx2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_config() -> dict:
    """tests/test_ltx2.py's small plain config with decoder noise injection off.

    ltx-core draws injected noise per tile (and from the global RNG without a generator) while
    vaecodec's default decode is noise-free, so noise would swamp the tiling error.
    """
    cfg = _test_helpers().small_config(timestep=False)
    cfg["decoder_blocks"] = [[n, {**p, "inject_noise": False} if n == "res_x" else p] for n, p in cfg["decoder_blocks"]]
    return cfg


def build_checkpoint(path: Path, seed: int) -> dict:
    t = _test_helpers()
    cfg = bench_config()
    enc, dec = t.build_reference(cfg, seed=seed)
    t.save_checkpoint(path, enc, dec, cfg)
    return cfg


def load_ltx_core_decoder(path: Path):
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        cfg = json.loads(f.metadata()["config"])["vae"]
        sd = {}
        for k in f.keys():  # noqa: SIM118 (safe_open, not a dict)
            if k.startswith("vae.decoder."):
                sd[k[len("vae.decoder.") :]] = f.get_tensor(k)
            elif k.split(".")[-1] in ("std-of-means", "mean-of-means") and k.startswith("vae.per_channel_statistics."):
                sd["per_channel_statistics." + k.split(".")[-1]] = f.get_tensor(k)
    dec = VideoDecoderConfigurator.from_config({"vae": cfg})
    dec.load_state_dict(sd, strict=True)
    return dec.eval()


# ----------------------------------------------------------------------------- tilings


def ltx_tiling_config(tiling):
    from ltx_core.model.video_vae.tiling import (
        SpatialTilingConfig,
        TemporalTilingConfig,
        TilingConfig,
    )

    return TilingConfig(
        spatial_config=SpatialTilingConfig(tiling.tile_px, tiling.overlap_px),
        temporal_config=TemporalTilingConfig(8 * tiling.latent_frames, 8 * tiling.overlap_latents),
    )


def vaecodec_plan(shape, tiling, spatial=32, temporal=8):
    """Per-axis pixel intervals [a, b) of vaecodec's tiles for a latent [C, T, h, w]."""
    from vaecodec.tiling import _spans, temporal_tiles

    _, T, h, w = shape
    tt = [(tl.start * temporal, tl.end * temporal + 1) for tl in temporal_tiles(T, tiling)]
    tl, ov = tiling.tile_px // spatial, tiling.overlap_px // spatial
    hs = [(s * spatial, (s + n) * spatial) for s, n in _spans(h, tl, ov)]
    ws = [(s * spatial, (s + n) * spatial) for s, n in _spans(w, tl, ov)]
    return tt, hs, ws


def ltx_plan(shape, tiling):
    """Per-axis pixel intervals of ltx-core's tiles (from its own _prepare_tiles)."""
    from types import SimpleNamespace

    from ltx_core.model.video_vae.video_vae import (
        SpatioTemporalScaleFactors,
        VideoDecoder,
    )

    # _prepare_tiles only reads video_downscale_factors, so no model is needed for the plan
    dec = SimpleNamespace(video_downscale_factors=SpatioTemporalScaleFactors(time=8, width=32, height=32))
    tiles = VideoDecoder._prepare_tiles(dec, torch.empty(1, *shape, device="meta"), ltx_tiling_config(tiling))
    axes = []
    for d in (2, 3, 4):
        seen = []
        for t in tiles:
            s = (t.out_coords[d].start, t.out_coords[d].stop)
            if s not in seen:
                seen.append(s)
        axes.append(seen)
    return axes, len(tiles)


def seam_mask(plan, out_shape, band_px: int = 2, band_frames: int = 1) -> torch.Tensor:
    """[T, H, W] bool: positions within ``band`` of an interior tile edge (where a tile starts or ends).

    An edge at index e (between e-1 and e) marks [e - band, e + band) along its axis.
    """
    masks = []
    for axis, (intervals, n) in enumerate(zip(plan, out_shape)):
        k = band_frames if axis == 0 else band_px
        m = torch.zeros(n, dtype=torch.bool)
        for a, b in intervals:
            for e in (a, min(b, n)):
                if 0 < e < n:
                    m[max(0, e - k) : e + k] = True
        masks.append(m)
    t, h, w = masks
    return t[:, None, None] | h[None, :, None] | w[None, None, :]


# ----------------------------------------------------------------------------- worker


def proc_status_kib(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(a) -> None:
    torch.set_num_threads(a.threads)
    from vaecodec.models import ltx2
    from vaecodec.models.base import Tiling
    from vaecodec.tiling import StreamingDecoder, TileRunner

    tiling = Tiling(*a.tiling)
    z = torch.load(a.latent)
    cpu = torch.device("cpu")
    if a.variant.startswith("vaecodec"):
        model = ltx2.load(a.ckpt, cpu, torch.float32)

        if a.variant == "vaecodec-untiled":

            def run():
                return model.decode(z)
        else:

            def run():  # as LatentFile.iter_frames: one temporal tile at a time, spatially split
                runner = TileRunner(None, lambda t: model.decode(t), model.spatial, tiling)
                dec = StreamingDecoder(runner, model.temporal, z.shape[2])
                parts, nxt = [], 0
                for f0, x in dec.push(z[0]):
                    assert f0 == nxt
                    parts.append(x)
                    nxt += x.shape[1]
                return torch.cat(parts, dim=1)[None]
    else:
        dec = load_ltx_core_decoder(Path(a.ckpt))
        if a.variant == "ltx-core-untiled":

            def run():
                return dec(z)
        else:
            cfg = ltx_tiling_config(tiling)

            def run():
                return torch.cat(list(dec.tiled_decode(z, cfg)), dim=2)

    # ru_maxrss is not used: Linux carries the parent's high-water mark into a forked child.
    # VmHWM belongs to the exec'd process's own address space; reset it after loading so the
    # peak below is the decode's (RSS before + growth), not the checkpoint load's.
    load_peak = proc_status_kib("VmHWM")
    with torch.no_grad():
        gc.collect()
        rss_before = proc_status_kib("VmRSS")
        was_reset = reset_peak_rss()
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t0)
    peak = proc_status_kib("VmHWM")
    torch.save(out.float().contiguous(), a.out)
    Path(a.out + ".json").write_text(
        json.dumps({"seconds": min(times), "all_seconds": times, "rss_before_kib": rss_before,
                    "load_peak_kib": load_peak,
                    "hwm_reset": was_reset, "peak_kib": peak})
    )


# ----------------------------------------------------------------------------- driver


def to255(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).clamp(0, 255)


def metrics(out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None) -> dict:
    e = (to255(out) - to255(ref)).abs()[0].mean(0)  # [T, H, W], mean over RGB
    mse = ((to255(out) - to255(ref)) ** 2).mean().item()
    m = {
        "max": (to255(out) - to255(ref)).abs().max().item(),
        "mean": e.mean().item(),
        "psnr": float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item(),
    }
    if mask is not None:
        on, off = e[mask].mean().item(), e[~mask].mean().item() if (~mask).any() else float("nan")
        m |= {"seam_on": on, "seam_off": off, "seam_ratio": on / off if off > 0 else float("inf"),
              "seam_frac": mask.float().mean().item()}
    return m


def fmt(v, p=2):
    if isinstance(v, float) and v == float("inf"):
        return "inf"
    return f"{v:.{p}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", default="7x12x12", help="latent T x h x w (default 7x12x12 -> 49 frames 384x384)")
    ap.add_argument("--tile-latents", type=int, default=3, help="vaecodec latent_frames; ltx-core 8x frames")
    ap.add_argument("--overlap-latents", type=int, default=1)
    ap.add_argument("--tile-px", type=int, default=192)
    ap.add_argument("--overlap-px", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="decodes per variant, best time reported")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the spatial-only / temporal-only rows")
    ap.add_argument("--worker", nargs=4, metavar=("VARIANT", "CKPT", "LATENT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--tiling", nargs=4, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.variant, a.ckpt, a.latent, a.out = a.worker
        worker(a)
        return

    torch.set_num_threads(a.threads)
    from vaecodec.models.base import Tiling
    from vaecodec.tiling import check_tiling

    T, h, w = map(int, a.latent.split("x"))
    tiling = Tiling(a.tile_latents, a.overlap_latents, a.tile_px, a.overlap_px)
    check_tiling(tiling, 32)
    ltx_tiling_config(tiling)  # raises on settings ltx-core rejects (e.g. temporal tile < 16 frames)
    tmp = Path(tempfile.mkdtemp(prefix="ltx_tiling_"))
    ckpt = tmp / "ltx-2-small.safetensors"
    cfg = build_checkpoint(ckpt, a.seed)
    C = cfg["latent_channels"]
    z = torch.randn(1, C, T, h, w, generator=torch.Generator().manual_seed(a.seed + 100))
    torch.save(z, tmp / "z.pt")

    # (label, worker variant, tiling): the main comparison, then (--breakdown) each axis alone
    runs = [("vaecodec untiled", "vaecodec-untiled", tiling), ("ltx-core untiled", "ltx-core-untiled", tiling),
            ("vaecodec tiled", "vaecodec-tiled", tiling), ("ltx-core tiled", "ltx-core-tiled", tiling)]
    if a.breakdown:
        sp = replace(tiling, latent_frames=T)  # one temporal tile
        tm = replace(tiling, tile_px=32 * max(h, w))  # one spatial tile
        runs += [("vaecodec spatial only", "vaecodec-tiled", sp), ("ltx-core spatial only", "ltx-core-tiled", sp),
                 ("vaecodec temporal only", "vaecodec-tiled", tm), ("ltx-core temporal only", "ltx-core-tiled", tm)]
    res, outs = {}, {}
    for i, (label, v, til) in enumerate(runs):
        out = str(tmp / f"{i}-{v}.pt")
        cmd = [sys.executable, __file__, "--worker", v, str(ckpt), str(tmp / "z.pt"), out,
               "--tiling", *map(str, (til.latent_frames, til.overlap_latents, til.tile_px, til.overlap_px)),
               "--threads", str(a.threads), "--repeat", str(a.repeat)]
        subprocess.run(cmd, check=True, cwd=ROOT)
        outs[label] = torch.load(out)
        res[label] = json.loads(Path(out + ".json").read_text())

    out_shape = tuple(outs["vaecodec untiled"].shape[2:])
    v_plan = vaecodec_plan((C, T, h, w), tiling)
    l_plan, l_ntiles = ltx_plan((C, T, h, w), tiling)
    v_ntiles = len(v_plan[0]) * len(v_plan[1]) * len(v_plan[2])
    masks, refs = {}, {}
    for label, v, til in runs:
        if v == "vaecodec-tiled":
            masks[label], refs[label] = seam_mask(vaecodec_plan((C, T, h, w), til), out_shape), "vaecodec untiled"
        elif v == "ltx-core-tiled":
            masks[label], refs[label] = seam_mask(ltx_plan((C, T, h, w), til)[0], out_shape), "ltx-core untiled"
        else:
            refs[label] = "vaecodec untiled"
    cross = (outs["vaecodec untiled"] - outs["ltx-core untiled"]).abs().max().item()

    argv = " ".join(shlex.quote(x) for x in sys.argv[1:])
    lines = [
        "## LTX-2 tiled decode: vaecodec vs ltx-core (random small config)",
        "",
        "```sh",
        f".venv/bin/python benchmarks/ltx_tiling.py {argv}".rstrip(),
        "```",
        "",
        (f"- Machine: {platform.machine()}, nproc={os.cpu_count()}, torch {torch.__version__} (CPU, "
        f"{a.threads} thread(s)), Python {platform.python_version()}; ltx-core "
        f"{_version('ltx-core')}. Times are indicative: small random models, best of --repeat decodes."),
        (f"- Model: tests/test_ltx2.py small_config(timestep=False) (latent_channels {C}, decoder_base_channels "
        f"{cfg['decoder_base_channels']}, patch 4, 3 compress_all stages), decoder inject_noise off, "
        f"random weights seed {a.seed}; latent [1, {C}, {T}, {h}, {w}] ~ N(0,1) -> video {list(outs['vaecodec untiled'].shape[1:])}."),
        (f"- vaecodec: Tiling(latent_frames={tiling.latent_frames}, overlap_latents={tiling.overlap_latents}, "
        f"tile_px={tiling.tile_px}, overlap_px={tiling.overlap_px}) -> {v_ntiles} tile decodes; "
        f"frames {v_plan[0]}, rows {v_plan[1]}, cols {v_plan[2]}."),
        (f"- ltx-core: TilingConfig(SpatialTilingConfig({tiling.tile_px}, {tiling.overlap_px}), "
        f"TemporalTilingConfig({8 * tiling.latent_frames}, {8 * tiling.overlap_latents})) -> {l_ntiles} tile decodes; "
        f"frames {l_plan[0]}, rows {l_plan[1]}, cols {l_plan[2]}."),
        f"- Untiled sanity: max |vaecodec untiled - ltx-core untiled| = {cross:.2e} (in [-1,1] units).",
        ("- Errors in 0..255 units vs the untiled decode of the same implementation (clamped). Seam: mean abs err "
        "on the frames/rows/cols within 1 frame / 2 px of an interior edge (start or end) of that variant's own "
        "tiles / mean abs err elsewhere; "
        "`seam px` = share of the video in that zone. Peak RSS = VmHWM of a fresh subprocess per variant "
        "during the decodes (reset via /proc/self/clear_refs after loading; includes interpreter, torch, model "
        "and the whole output video); `RSS before` = VmRSS just before the first decode; `growth` = the "
        f"difference. Time = best of {a.repeat} decodes. `spatial only` / `temporal only` rows use the same "
        f"settings with one tile along the other axis (latent_frames={T} / tile_px={32 * max(h, w)})."),
        "",
        "| variant | vs | max abs err | mean abs err | PSNR dB | seam err | non-seam err | seam ratio | seam px | time s | peak RSS MiB | RSS before MiB | growth MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v, _, _ in runs:
        r = res[v]
        m = metrics(outs[v], outs[refs[v]], masks.get(v)) if v != refs[v] else None
        if m is None:
            cells = ["(reference)", "0", "0", "inf", "-", "-", "-", "-"]
        else:
            seam = [fmt(m["seam_on"], 3), fmt(m["seam_off"], 3), fmt(m["seam_ratio"]), f"{100 * m['seam_frac']:.0f}%"] if "seam_on" in m else ["-"] * 4
            cells = [refs[v], fmt(m["max"], 3), fmt(m["mean"], 4), fmt(m["psnr"]), *seam]
        lines.append(
            f"| {v} | " + " | ".join(cells) + f" | {r['seconds']:.2f} | {r['peak_kib'] / 1024:.0f} | {r['rss_before_kib'] / 1024:.0f} | "
            f"{(r['peak_kib'] - r['rss_before_kib']) / 1024:.0f} |"
        )
    print("\n".join(lines))


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()

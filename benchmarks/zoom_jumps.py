"""What a zoom past ``camera.MAX_ZOOM`` costs: the bytes of each latent frame around the new
reference it starts, and how much of it a prediction from the old latents, resampled by the
zoom, could save (docs/MODEL.md, "What a zoom jump costs").

    PYTHONPATH=$PWD .venv/bin/python benchmarks/zoom_jumps.py [--qualities 3,5,8] [--work DIR]
    PYTHONPATH=$PWD .venv/bin/python benchmarks/zoom_jumps.py --headroom
    PYTHONPATH=$PWD .venv/bin/python benchmarks/zoom_jumps.py --fast
    PYTHONPATH=$PWD .venv/bin/python benchmarks/zoom_jumps.py --limits 0.2,0.1,0.3
    PYTHONPATH=$PWD .venv/bin/python benchmarks/zoom_jumps.py --limits 0.2/0.3,0.2/0.4,0.2/0.5 --ways out
    PYTHONPATH=$PWD .venv/bin/python benchmarks/zoom_jumps.py --refine 8 --qualities 5

A 4 s 640x360 zoom into each of two held-out photos (1.5x, with a slow drift) is rendered
losslessly; the steadier starts one new reference in it. Each clip is encoded whole and cut
after 49, 53, ..., 65 frames (the steadier decides causally, so the cut files share their
segments); the differences of their latent bytes are the bytes of latent frames 12-15, the
new reference's first latent frame among them. The whole file is decoded too, for its PSNR;
since the coder predicts that frame through the zoom, each row lists it
(``predicted_through_zoom``, the chunks' ``camera_zoom``).

``--headroom`` encodes one 640x360 view of each photo and the same view zoomed 1.2x (and
1/1.2x) about its centre, rounds the latents at the steps of qualities 3, 5 and 8, and prices
the zoomed view's symbols by their order-0 entropy per channel (a proxy, not the coder) as
they are (intra), as residuals against the first view's symbols in place, and against its
latents resampled by the zoom (bilinear on the latent grid); a 3 px shift in place, the
kind of residual the coder meets on a pan, is the yardstick.
``--fast`` encodes zooms that pass 20 % within the frames that size the canvas (2 s 640x360:
2x in over 2 s and over 1 s, 2x out over 2 s; and the 4 s 1.5x zoom played backwards, a zoom
out) at qualities 3 and 5, steadied and with ``camera=False`` (the frames as they are: what
vaecodec did with such zooms before their new references were predicted through the zoom).
``--limits`` encodes the 4 s zoom and the same clip played backwards (a zoom out) at
qualities 3, 5 and 8 with each zoom limit (``camera.MAX_ZOOM`` and ``MAX_ZOOM_OUT`` both set to
it, or to IN and OUT of a pair IN/OUT) and gives each limit's BD-rate and BD-PSNR against the
first one's; ``--ways out`` encodes the zoom out alone.
``--refine N`` encodes the 4 s zoom at each of ``--qualities`` plain and with ``--refine N``
(encoder-side latent refinement, whose rate term predicts the jump through the zoom too).
Needs the photos (scripts/fetch_training_data.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_benchmarks import load_photo  # noqa: E402

from vaecodec.codec import Codec  # noqa: E402
from vaecodec.metrics import score  # noqa: E402
from vaecodec.container import VlatReader  # noqa: E402
from vaecodec.video import VideoWriter  # noqa: E402

PHOTOS = ("mate:LadyBird", "lomiri:life_by_Aitzol_Berasategi")
CUTS = (49, 53, 57, 61, 65)


def view(photo: np.ndarray, zoom: float, cx: float, cy: float, width: int = 640, height: int = 360) -> np.ndarray:
    """uint8 [height, width, 3]: the photo around (cx, cy), its pixels 1/zoom photo pixels
    apart (bicubic)."""
    img = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    H, W = photo.shape[:2]
    px = cx - width / 2 / zoom + torch.arange(width, dtype=torch.float64) / zoom
    py = cy - height / 2 / zoom + torch.arange(height, dtype=torch.float64) / zoom
    grid = torch.stack(torch.meshgrid((2 * py + 1) / H - 1, (2 * px + 1) / W - 1, indexing="ij")[::-1], -1)
    f = F.grid_sample(img, grid[None].float(), mode="bicubic", padding_mode="border", align_corners=False)
    return f[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def zoom_clip(photo: np.ndarray, n: int = 100) -> np.ndarray:
    """uint8 [n, 360, 640, 3]: a 1.5x zoom over n frames towards a point drifting right and down."""
    H, W = photo.shape[:2]
    return np.stack([view(photo, 1.5 ** (t / (n - 1)), W / 2 + 60 * t / (n - 1), H / 2 + 20 * t / (n - 1))
                     for t in range(n)])


def latent_bytes(clip: Path, out: Path, quality: int) -> tuple[int, list, list]:
    """Latent chunk bytes of the clip's file, the frames its chunks list as moved, and those
    predicted through a zoom (``camera_zoom``)."""
    Codec("tiny", device="cpu", quality=quality).encode(clip, out, overwrite=True)
    with VlatReader(out) as f:
        chunks = list(f.chunks_of("latent"))
        return (sum(c.stored_size for c in chunks), sum((c.meta.get("camera_moved", []) for c in chunks), []),
                [m[0] for c in chunks for m in c.meta.get("camera_zoom", [])])


def order0_bytes(symbols: torch.Tensor) -> float:
    """Order-0 entropy of integer symbols [C, h, w], per channel, summed, in bytes."""
    total = 0.0
    for plane in symbols:
        counts = torch.unique(plane, return_counts=True)[1].double()
        total -= float((counts * torch.log2(counts / counts.sum())).sum())
    return total / 8


def zoomed(latent: torch.Tensor, zoom: float, width: int, height: int) -> torch.Tensor:
    """[C, h, w] latents of a width x height picture, resampled as the picture zoomed by
    ``zoom`` about its centre: cell j (pixel centre 8j + 3.5) reads the old picture's pixel
    c + (8j + 3.5 - c) / zoom."""
    _, h, w = latent.shape

    def axis(n: int, size: int) -> torch.Tensor:
        centre = size / 2 - 0.5
        old = centre + (torch.arange(n, dtype=torch.float64) * 8 + 3.5 - centre) / zoom  # old pixels
        return (2 * ((old - 3.5) / 8) + 1) / n - 1  # grid_sample's coordinates of old cells
    grid = torch.stack(torch.meshgrid(axis(h, height), axis(w, width), indexing="ij")[::-1], -1)[None].float()
    return F.grid_sample(latent[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


@torch.inference_mode()
def headroom(data: Path) -> None:
    from vaecodec.models.tiny import load

    model = load(None, torch.device("cpu"), torch.float32).eval()

    def latent(frame: np.ndarray) -> torch.Tensor:  # [C, h, w] means of a one-frame clip
        x = torch.from_numpy(frame).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1
        return model.encode(x)[0][0, :, 0]

    for key in PHOTOS:
        photo = load_photo(key, data)
        cx, cy = photo.shape[1] / 2, photo.shape[0] / 2
        first = latent(view(photo, 1.0, cx, cy))
        for quality, step in ((3, 1.7), (5, 0.722), (8, 0.2)):
            def sym(z: torch.Tensor) -> torch.Tensor:  # the symbols at this quality's step
                return torch.round(z / step)

            row = {"photo": key, "quality": quality, "step": step,
                   "pan 3 px, in place": order0_bytes(sym(latent(view(photo, 1.0, cx + 3, cy))) - sym(first))}
            for zoom in (1.2, 1 / 1.2):
                later = sym(latent(view(photo, zoom, cx, cy)))
                name = f"zoom {zoom:.3f}"
                row[f"{name}, intra"] = order0_bytes(later)
                row[f"{name}, in place"] = order0_bytes(later - sym(first))
                row[f"{name}, resampled"] = order0_bytes(later - sym(zoomed(first, zoom, 640, 360)))
            print(json.dumps({k: round(v) if isinstance(v, float) and k != "step" else v for k, v in row.items()}),
                  flush=True)


def fast(data: Path, work: Path) -> None:
    for key in PHOTOS:
        photo = load_photo(key, data)
        H, W = photo.shape[:2]
        clips = {"in 2x / 2 s": [2.0 ** (t / 49) for t in range(50)],
                 "in 2x / 1 s": [2.0 ** (min(t, 24) / 24) for t in range(50)],
                 "out 2x / 2 s": [2.0 ** (1 - t / 49) for t in range(50)]}
        for name, zooms in clips.items():
            clips[name] = np.stack([view(photo, z, W / 2 + 30 * t / 49, H / 2 + 10 * t / 49)
                                    for t, z in enumerate(zooms)])
        clips["out 1.5x / 4 s"] = zoom_clip(photo)[::-1].copy()
        for name, frames in clips.items():
            clip = work / "fast.mkv"
            with VideoWriter(clip, frames.shape[2], frames.shape[1], Fraction(25), codec="ffv1", overwrite=True) as w:
                w.write(frames)
            for q in (3, 5):
                row = {"photo": key, "clip": name, "quality": q}
                for camera in (None, False):
                    codec = Codec("tiny", device="cpu", quality=q, camera=camera)
                    r = codec.encode(clip, work / "x.vlat", overwrite=True)
                    back = np.concatenate(list(codec.decode_frames(work / "x.vlat")))
                    with VlatReader(work / "x.vlat") as f:
                        lat = sum(c.stored_size for c in f.chunks_of("latent"))
                    row["steadied" if camera is None else "as is"] = {
                        "latent_bytes": lat, "psnr": round(score([frames], [back], with_ssim=False).psnr, 3),
                        "canvas": r.canvas}
                print(json.dumps(row), flush=True)


def limits(data: Path, work: Path, values: list[tuple[float, float]], ways: list[str]) -> None:
    from vaecodec import camera as cam
    from vaecodec.metrics import bd_psnr, bd_rate

    points: dict = {}
    for key in PHOTOS:
        frames = zoom_clip(load_photo(key, data))
        for way, clip in (("in", frames), ("out", frames[::-1].copy())):
            if way not in ways:
                continue
            path = work / f"{way}.mkv"
            with VideoWriter(path, clip.shape[2], clip.shape[1], Fraction(25), codec="ffv1", overwrite=True) as w:
                w.write(clip)
            for limit in values:
                cam.MAX_ZOOM, cam.MAX_ZOOM_OUT = limit
                row = points.setdefault((key, way, limit), [])
                for q in (3, 5, 8):
                    codec = Codec("tiny", device="cpu", quality=q)
                    codec.encode(path, work / "x.vlat", overwrite=True)
                    back = np.concatenate(list(codec.decode_frames(work / "x.vlat")))
                    with VlatReader(work / "x.vlat") as f:
                        row.append((sum(c.stored_size for c in f.chunks_of("latent")),
                                    score([clip], [back], with_ssim=False).psnr))
                first = points[(key, way, values[0])]
                print(json.dumps({"photo": key, "zoom": way, "limit": "/".join(map(str, limit)), "points": row,
                                  "bd_rate": round(bd_rate(*zip(*first), *zip(*row)), 2),
                                  "bd_psnr": round(bd_psnr(*zip(*first), *zip(*row)), 3)}), flush=True)


def refined(data: Path, work: Path, qualities: list[int], steps: int) -> None:
    """The 4 s zoom at each quality, plain and with ``--refine steps``."""
    for key in PHOTOS:
        frames = zoom_clip(load_photo(key, data))
        path = work / "zoom.mkv"
        with VideoWriter(path, frames.shape[2], frames.shape[1], Fraction(25), codec="ffv1", overwrite=True) as w:
            w.write(frames)
        for q in qualities:
            row = {"photo": key, "quality": q}
            for refine in (0, steps):
                codec = Codec("tiny", device="cpu", quality=q, refine=refine)
                codec.encode(path, work / "x.vlat", overwrite=True)
                back = np.concatenate(list(codec.decode_frames(work / "x.vlat")))
                with VlatReader(work / "x.vlat") as f:
                    row[f"refine {refine}"] = {"latent_bytes": sum(c.stored_size for c in f.chunks_of("latent")),
                                               "psnr": round(score([frames], [back], with_ssim=False).psnr, 3),
                                               "zooms": [m for c in f.chunks_of("latent")
                                                         for m in c.meta.get("camera_zoom", [])]}
            print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qualities", default="3,5,8")
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--work", type=Path, default=None, help="keep the clips here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--headroom", action="store_true", help="price a resampled prediction instead")
    ap.add_argument("--fast", action="store_true", help="zooms past 20 %% from the start, steadied and as they are")
    ap.add_argument("--limits", default=None,
                    help="zoom limits to compare, the first the anchor: 0.2,0.1 or IN/OUT pairs (0.2/0.3,0.2/0.5)")
    ap.add_argument("--ways", default="in,out", help="with --limits: the zoom in, out or both")
    ap.add_argument("--refine", type=int, default=0, help="the 4 s zoom plain and with --refine N")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.headroom:
        headroom(a.data)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if a.fast:
            fast(a.data, work)
            return
        if a.refine:
            refined(a.data, work, [int(v) for v in a.qualities.split(",")], a.refine)
            return
        if a.limits:
            limits(a.data, work, [(float(v.split("/")[0]), float(v.split("/")[-1])) for v in a.limits.split(",")],
                   a.ways.split(","))
            return
        for key in PHOTOS:
            frames = zoom_clip(load_photo(key, a.data))
            height, width = frames.shape[1:3]
            clips = {}
            for n in (*CUTS, len(frames)):
                clips[n] = work / f"{key.split(':')[1]}_zoom_{n}.mkv"
                with VideoWriter(clips[n], width, height, Fraction(25), codec="ffv1", overwrite=True) as w:
                    w.write(frames[:n])
            for q in (int(v) for v in a.qualities.split(",")):
                whole, moved, zooms = latent_bytes(clips[len(frames)], work / "x.vlat", q)
                back = np.concatenate(list(Codec(device="cpu").decode_frames(work / "x.vlat")))
                sizes = [latent_bytes(clips[n], work / "x.vlat", q)[0] for n in CUTS]
                psnr = round(score([frames], [back], with_ssim=False).psnr, 3)
                print(json.dumps({"photo": key, "quality": q, "file_bytes": whole, "psnr": psnr,
                                  "new_reference_at": moved, "predicted_through_zoom": zooms,
                                  "bytes_to_frame": dict(zip(CUTS, sizes)),
                                  "latent_frame_bytes": {f"{m}-{m + 3}": later - sooner for m, sooner, later
                                                         in zip(CUTS, sizes, sizes[1:])}}), flush=True)


if __name__ == "__main__":
    main()

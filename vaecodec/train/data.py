"""Training data: real photographs turned into synthetic video clips on the fly.

We have no video corpus offline, so motion is synthesised from still photos (pans, zooms,
rotations, moving foreground patches, fades, cuts, lighting drift, noise, blur); a share of
scenes can be drawn instead (``--graphics``: fills, stripes, shapes, text, scrolling). The
photos come from Debian wallpaper packages and scikit-image's bundled images, fetched by
``scripts/fetch_training_data.sh``; ``HELD_OUT`` photos never enter training so the
validation numbers (and the bench) measure generalisation.

``python -m vaecodec.train.data prepare --data DIR`` downscales the extracted photos into
``DIR/photos/*.png`` (downscaling first removes JPEG blocking the model should not learn).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vaecodec.errors import InputError

_LOMIRI16 = "lomiri-wallpapers-16.04/usr/share/backgrounds/"
_LOMIRI20 = "lomiri-wallpapers-20.04/usr/share/backgrounds/"
_MATE = "mate-backgrounds/usr/share/backgrounds/mate/nature/"
_PLASMA = "plasma-workspace-wallpapers/usr/share/wallpapers/"

# Photographs only (renders and illustrations in the same packages are left out on purpose:
# their flat gradients and hard vector edges are not what cameras produce).
# key -> path under DATA/extract, or "skimage:NAME" for scikit-image's bundled photos.
PHOTOS: dict[str, str] = {
    **{f"lomiri:{n}": f"{_LOMIRI16}{n}.jpg" for n in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
        "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
        "analogpattern_by_Peter_Nerlich", "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi",
        "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
        "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
        "sunset_by_Aitzol_Berasategi")},
    "lomiri:Kleiber_by_Lukas_Baubkus": f"{_LOMIRI20}Kleiber_by_Lukas_Baubkus.jpg",
    **{f"mate:{n}": f"{_MATE}{n}.jpg" for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
        "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")},
    **{f"plasma:{n}": f"{_PLASMA}{n}/contents/images/1920x1080.jpg" for n in (
        "BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
        "Kite", "OneStandsOut", "Path", "summer_1am")},
    "plasma:ColorfulCups": f"{_PLASMA}ColorfulCups/contents/images/2560x1600.jpg",
    **{f"skimage:{n}": f"skimage:{n}" for n in (
        "astronaut", "chelsea", "coffee", "rocket", "camera", "brick",
        "grass", "gravel", "hubble_deep_field")},
}

# Fixed validation photos: never trained on (also used by the bench for evaluation).
HELD_OUT: tuple[str, ...] = (
    "lomiri:life_by_Aitzol_Berasategi",
    "mate:LadyBird",
    "plasma:EveningGlow",
    "plasma:Path",
    "skimage:chelsea",
)
TRAIN: tuple[str, ...] = tuple(k for k in PHOTOS if k not in HELD_OUT)

SHORT_SIDE = 720  # stored resolution: >= 1.5x downscale of every wallpaper


def photo_file(data_dir: str | Path, key: str) -> Path:
    """Where ``prepare`` stores the downscaled photo ``key``."""
    return Path(data_dir) / "photos" / (key.replace(":", "__") + ".png")


def prepare(data_dir: str | Path, keys: list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """Downscale the photos ``keys`` (default: all of ``PHOTOS``) to ``SHORT_SIDE``, saved as PNG."""
    from PIL import Image

    data_dir = Path(data_dir)
    (data_dir / "photos").mkdir(parents=True, exist_ok=True)
    out = []
    for key in PHOTOS if keys is None else keys:
        if key not in PHOTOS:
            raise InputError(f"unknown training photo {key!r}")
        src = PHOTOS[key]
        dst = photo_file(data_dir, key)
        out.append(dst)
        if dst.exists():
            continue
        if src.startswith("skimage:"):
            import skimage.data

            arr = np.asarray(getattr(skimage.data, src.split(":", 1)[1])())
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            im = Image.fromarray(arr[:, :, :3].astype(np.uint8))  # skimage photos are small: keep size
        else:
            path = data_dir / "extract" / src
            if not path.exists():
                raise InputError(f"missing training photo {path}: run scripts/fetch_training_data.sh")
            im = Image.open(path).convert("RGB")
            scale = SHORT_SIDE / min(im.size)
            if scale < 1:
                im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.LANCZOS)
        im.save(dst)
    return out


def load_photos(data_dir: str | Path, keys: tuple[str, ...] | list[str]) -> list[torch.Tensor]:
    """uint8 tensors [3, H, W] for ``keys`` (prepared photos)."""
    from PIL import Image

    photos = []
    for key in keys:
        path = photo_file(data_dir, key)
        if not path.exists():
            raise InputError(f"missing prepared photo {path}: run scripts/fetch_training_data.sh")
        arr = np.asarray(Image.open(path).convert("RGB"))
        photos.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())
    return photos


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of [N, 3, H, W]."""
    k = _gauss_kernel(sigma).to(x.device)
    r = k.numel() // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


class ClipSampler:
    """Makes random video clips [3, T, S, S] in [-1, 1] from a list of photos.

    Each clip is a camera path over one photo (sub-pixel pan, zoom, rotation, shake) with
    optional moving foreground patches, fades, a scene cut, lighting drift, sensor noise,
    defocus and colour jitter. All randomness comes from the sampler's own CPU generator, so a
    seed reproduces the exact clip sequence on any ``device``. On a GPU the photos live in
    device memory and the pixel work (resampling, compositing, blur, noise) runs there, so
    the training process makes its own clips instead of waiting for CPU workers.

    ``graphics`` is the share of scenes drawn instead of filmed (``_graphic``): flat saturated
    fills, hard edges and text, which no photograph teaches. At 0 the sampler makes no extra
    random draws, so the clips of a seed are those of before (the validation clips included).
    """

    def __init__(self, photos: list[torch.Tensor], frames: int, size: int, seed: int,
                 device: torch.device | str = "cpu", graphics: float = 0.0) -> None:
        if not photos:
            raise InputError("no training photos")
        if not 0.0 <= graphics <= 1.0:
            raise InputError(f"the share of graphics scenes must be in [0, 1], got {graphics}")
        self.frames, self.size, self.device, self.graphics = frames, size, torch.device(device), graphics
        self.g = torch.Generator().manual_seed(seed)
        # two pyramid levels so zoomed-out views are not aliased
        self.levels = []
        for p in photos:
            f = p.to(self.device).float() / 255.0
            self.levels.append((f, F.avg_pool2d(f[None], 2)[0]))

    def _u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.g).item()

    def _n(self) -> float:
        return torch.randn((), generator=self.g).item()

    def _pick(self) -> torch.Tensor:
        i = int(torch.randint(len(self.levels), (), generator=self.g))
        full, half = self.levels[i]
        img = half if (self._u() < 0.5 and min(half.shape[1:]) > self.size * 1.5) else full
        return img.flip(-1) if self._u() < 0.5 else img

    def _camera(self, img: torch.Tensor, size: int, zoom: float = 1.0) -> torch.Tensor:
        """A moving view of ``img``: [T, 3, size, size] in [0, 1]; ``zoom`` > 1 shows more of it."""
        T = self.frames
        _, H, W = img.shape
        t = torch.arange(T, dtype=torch.float32)
        moving = self._u() > 0.2
        speed = (abs(self._n()) * 3.0 + self._u() * 2.0) if moving else 0.0
        ang = self._u(0, 2 * math.pi)
        vx, vy = speed * math.cos(ang), speed * math.sin(ang)
        zr = self._u(-0.03, 0.03) if self._u() < 0.3 else 0.0  # log zoom per frame
        rr = self._u(-0.02, 0.02) if self._u() < 0.25 else 0.0  # radians per frame
        shake = self._u(0.0, 1.0) if self._u() < 0.2 else 0.0
        scale0 = zoom * math.exp(self._u(-0.3, 0.7))  # >1 = zoomed out (source px per output px)
        scale = scale0 * torch.exp(zr * t)
        theta = rr * t
        # keep the whole path inside the image
        span = size * float(scale.max()) * 1.5
        mx, my = abs(vx) * T + span / 2, abs(vy) * T + span / 2
        if 2 * mx >= W or 2 * my >= H:
            vx = vy = 0.0
            scale = torch.full_like(scale, min(scale0, 0.6 * min(H, W) / size / 1.5))
            span = size * float(scale.max()) * 1.5
            mx = my = span / 2
        cx0 = self._u(mx, W - mx) - vx * T / 2
        cy0 = self._u(my, H - my) - vy * T / 2
        cx = cx0 + vx * t + shake * torch.randn(T, generator=self.g)
        cy = cy0 + vy * t + shake * torch.randn(T, generator=self.g)
        # output pixel centres relative to the view centre; the [T] path moves to the photo's device
        u = torch.arange(size, dtype=torch.float32, device=img.device) - (size - 1) / 2
        uy, ux = torch.meshgrid(u, u, indexing="ij")  # [S, S]
        cx, cy, scale, theta = (v.to(img.device) for v in (cx, cy, scale, theta))
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        s = scale[:, None, None]
        sx = cx[:, None, None] + s * (cos * ux - sin * uy)  # [T, S, S] source x
        sy = cy[:, None, None] + s * (sin * ux + cos * uy)
        grid = torch.stack(((sx + 0.5) / W * 2 - 1, (sy + 0.5) / H * 2 - 1), dim=-1)
        return F.grid_sample(img[None].expand(T, -1, -1, -1), grid, mode="bilinear",
                             padding_mode="reflection", align_corners=False)

    def _foreground(self, clip: torch.Tensor) -> torch.Tensor:
        """Composite a soft-edged patch of another photo moving across the clip."""
        T, _, S, _ = clip.shape
        ps = int(S * self._u(0.25, 0.6))
        patch = self._camera(self._pick(), ps, zoom=S / ps)  # [T, 3, ps, ps], itself possibly moving
        ramp = torch.linspace(-1, 1, ps, device=clip.device)
        yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
        if self._u() < 0.5:
            d = torch.sqrt(xx**2 + yy**2)
        else:
            d = torch.maximum(xx.abs(), yy.abs())
        mask = ((1 - d) * self._u(4, 20)).clamp(0, 1)  # soft edge
        x0, y0 = self._u(-ps / 2, S - ps / 2), self._u(-ps / 2, S - ps / 2)
        vx, vy = self._n() * 3, self._n() * 3
        out = clip.clone()
        canvas = clip.new_zeros(T, 4, S + 2 * ps, S + 2 * ps)
        for i in range(T):
            # sub-pixel placement via a translated grid on the padded canvas
            px, py = x0 + vx * i + ps, y0 + vy * i + ps
            ix, iy = int(math.floor(px)), int(math.floor(py))
            fx, fy = px - ix, py - iy
            rgba = torch.cat((patch[i], mask[None]), 0)
            shifted = F.pad(rgba[None], (1, 1, 1, 1))[0]
            shifted = (1 - fx) * (1 - fy) * shifted[:, 1:-1, 1:-1] + fx * (1 - fy) * shifted[:, 1:-1, :-2] \
                + (1 - fx) * fy * shifted[:, :-2, 1:-1] + fx * fy * shifted[:, :-2, :-2]
            ix, iy = max(0, min(ix, S + ps)), max(0, min(iy, S + ps))
            canvas[i].zero_()
            canvas[i, :, iy:iy + ps, ix:ix + ps] = shifted[:, : S + 2 * ps - iy, : S + 2 * ps - ix]
        a = canvas[:, 3:4, ps:ps + S, ps:ps + S]
        out = out * (1 - a) + canvas[:, :3, ps:ps + S, ps:ps + S] * a
        return out

    def _colour(self) -> tuple[int, int, int]:
        """Half the time a corner of the RGB cube (primaries, secondaries, black, white)."""
        if self._u() < 0.5:
            return tuple(255 * int(self._u() < 0.5) for _ in range(3))
        return tuple(int(self._u(0, 256)) for _ in range(3))

    def _text(self, n: int) -> str:
        return "".join(chr(int(self._u(33, 127))) for _ in range(n))

    def _graphic_still(self, side: int):
        """A PIL picture of screen or broadcast graphics: a fill or gradient, stripes, shapes,
        checkerboards and text, all with hard edges and colours anywhere in the RGB cube."""
        from PIL import Image, ImageDraw, ImageFont

        if self._u() < 0.4:  # a gradient between two colours, horizontal or vertical
            a, b = (np.array(self._colour(), np.float32) for _ in range(2))
            ramp = np.linspace(0, 1, side, dtype=np.float32)[:, None]
            line = a + (b - a) * ramp  # [side, 3]
            img = np.broadcast_to(line[None] if self._u() < 0.5 else line[:, None], (side, side, 3))
            im = Image.fromarray(np.ascontiguousarray(img).astype(np.uint8))
        else:
            im = Image.new("RGB", (side, side), self._colour())
        d = ImageDraw.Draw(im)
        if self._u() < 0.35:  # stripes of random widths across the picture
            x, vertical = 0, self._u() < 0.5
            while x < side:
                w = int(self._u(side / 16, side / 3))
                box = (x, 0, x + w, side) if vertical else (0, x, side, x + w)
                d.rectangle(box, fill=self._colour())
                x += w
        for _ in range(int(self._u(3, 16))):
            x0, y0 = self._u(-side / 8, side), self._u(-side / 8, side)
            box = (x0, y0, x0 + self._u(3, side / 2), y0 + self._u(3, side / 2))
            kind = self._u()
            if kind < 0.55:
                d.rectangle(box, fill=self._colour())
            elif kind < 0.75:
                d.ellipse(box, fill=self._colour())
            elif kind < 0.9:
                d.line(box, fill=self._colour(), width=int(self._u(1, 6)))
            else:  # a checkerboard of 1-8 px cells, whole cells from the box's corner on
                cell = int(self._u(1, 9))
                a, b = self._colour(), self._colour()
                x0, y0 = int(box[0]), int(box[1])
                rows, cols = len(range(y0, int(box[3]), cell)), len(range(x0, int(box[2]), cell))
                odd = np.add.outer(np.arange(rows * cell) // cell, np.arange(cols * cell) // cell) % 2
                im.paste(Image.fromarray(np.where(odd[..., None] == 1, a, b).astype(np.uint8)), (x0, y0))
        for _ in range(int(self._u(0, 7))):
            font = ImageFont.load_default(size=int(self._u(8, 41)))
            xy, text = (self._u(-20, side), self._u(-10, side)), self._text(int(self._u(2, 20)))
            if self._u() < 0.4:  # a caption box behind the text
                d.rectangle(d.textbbox(xy, text, font=font), fill=self._colour())
            d.text(xy, text, font=font, fill=self._colour())
        return im

    def _graphic(self) -> torch.Tensor:
        """Moving graphics [T, 3, S, S] in [0, 1]: a whole-pixel scroll of a drawn picture (or a
        still one), a sprite moving over it and, half the time, a caption that changes every frame."""
        from PIL import Image, ImageDraw, ImageFont

        T, S = self.frames, self.size
        vx, vy = (int(self._u(-4, 5)) if self._u() < 0.5 else 0 for _ in range(2))
        margin = 4 * T + 1
        base = torch.from_numpy(np.array(self._graphic_still(S + 2 * margin))).permute(2, 0, 1).to(self.device)
        x0, y0 = margin - vx * T // 2, margin - vy * T // 2
        clip = torch.stack([base[:, y0 + vy * t:y0 + vy * t + S, x0 + vx * t:x0 + vx * t + S] for t in range(T)])
        sprite = torch.tensor(self._colour(), dtype=clip.dtype, device=self.device).view(3, 1, 1)
        side = int(self._u(4, S / 3))
        px, py, svx, svy = self._u(0, S - side), self._u(0, S - side), self._u(-6, 6), self._u(-6, 6)
        for t in range(T):
            x, y = int(px + svx * t) % (S - side), int(py + svy * t) % (S - side)
            clip[t, :, y:y + side, x:x + side] = sprite
        if self._u() < 0.5:  # a counter or clock whose digits change every frame
            font, (bx, by) = ImageFont.load_default(size=int(self._u(10, 33))), (self._u(0, S / 2), self._u(0, S / 2))
            ink, start = self._colour(), int(self._u(0, 1e6))
            for t in range(T):
                im = Image.fromarray(clip[t].permute(1, 2, 0).cpu().numpy())
                ImageDraw.Draw(im).text((bx, by), f"{start + t:07d}", font=font, fill=ink)
                clip[t] = torch.from_numpy(np.array(im)).permute(2, 0, 1).to(self.device)
        return clip.float() / 255.0

    def _scene(self) -> torch.Tensor:
        if self.graphics and self._u() < self.graphics:
            return self._graphic()
        for _ in range(3):  # flat sky crops teach little: retry a couple of times
            clip = self._camera(self._pick(), self.size)
            if float(clip.std()) > 0.05:
                break
        if self._u() < 0.3:
            clip = self._foreground(clip)
        return clip

    def sample(self) -> torch.Tensor:
        """One clip [3, T, S, S] in [-1, 1]."""
        T = self.frames
        clip = self._scene()
        t = torch.arange(T, dtype=torch.float32, device=self.device)[:, None, None, None]
        r = self._u()
        if r < 0.08 and T > 1:  # hard scene cut
            k = int(torch.randint(1, T, (), generator=self.g))
            clip = torch.cat((clip[:k], self._scene()[k:]), 0)
        elif r < 0.16 and T > 1:  # cross-fade into another scene
            w = (t / (T - 1)).clamp(0, 1)
            clip = clip * (1 - w) + self._scene() * w
        elif r < 0.22 and T > 1:  # fade from/to black
            w = t / (T - 1)
            clip = clip * (w if self._u() < 0.5 else 1 - w)
        if self._u() < 0.2:  # lighting drift
            clip = clip * (1 + self._u(-0.25, 0.25) * t / max(1, T - 1))
        # colour jitter: per-channel gain, saturation, gamma
        gain = 1 + 0.08 * torch.randn(3, generator=self.g)
        clip = clip * gain.to(self.device).view(1, 3, 1, 1)
        grey = clip.mean(1, keepdim=True)
        clip = grey + (clip - grey) * self._u(0.6, 1.3)
        clip = clip.clamp(0, 1) ** math.exp(self._u(-0.25, 0.25))
        if self._u() < 0.15:  # defocus
            clip = _blur(clip, self._u(0.5, 2.0))
        if self._u() < 0.2:  # sensor noise, fresh every frame
            # drawn on the CPU generator even on a GPU (the training thread does not wait for it:
            # train._Prefetch). Any change to the draws changes the validation clips, and with
            # them the model card's figures that train_test_match.py reproduces.
            clip = clip + self._u(0.0, 0.03) * torch.randn(clip.shape, generator=self.g).to(self.device)
        return (clip.clamp(0, 1) * 2 - 1).permute(1, 0, 2, 3).contiguous()

    def batch(self, n: int) -> torch.Tensor:
        """[n, 3, T, S, S]."""
        return torch.stack([self.sample() for _ in range(n)])


class ClipStream(torch.utils.data.IterableDataset):
    """Endless batches from one ``ClipSampler`` per DataLoader worker, so a GPU is not kept waiting.

    Worker ``i`` draws from seed ``seed + 1000 * (i + 1)``: the clips are reproducible for a given
    worker count, but a resumed run draws new ones (only the in-process sampler resumes exactly).
    """

    def __init__(self, photos: list[torch.Tensor], frames: int, size: int, batch: int, seed: int,
                 graphics: float = 0.0) -> None:
        self.photos, self.frames, self.size, self.n, self.seed = photos, frames, size, batch, seed
        self.graphics = graphics

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        torch.set_num_threads(1)
        sampler = ClipSampler(self.photos, self.frames, self.size, self.seed + 1000 * ((info.id if info else 0) + 1),
                              graphics=self.graphics)
        while True:
            yield sampler.batch(self.n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vaecodec.train.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="downscale extracted photos into DATA/photos")
    p.add_argument("--data", default="data")
    args = ap.parse_args(argv)
    paths = prepare(args.data)
    print(f"{len(paths)} photos in {Path(args.data) / 'photos'} ({len(HELD_OUT)} held out)")


if __name__ == "__main__":
    main()

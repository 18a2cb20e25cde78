"""Camera motion compensation (``vaecodec.camera``): estimation, the canvas, the stored views,
and what it does to real files."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zstandard

import vaecodec
from conftest import psnr, read_all
from test_codec import SAMPLE, _lossless
from test_cli import invoke
from vaecodec import camera as cam
from vaecodec.codec import Codec
from vaecodec.container import FLAG_CANVAS, FLAG_SHIFT, FLAG_ZOOM, VlatReader, VlatWriter
from vaecodec.errors import FormatError


def render(photo: np.ndarray, width: int, height: int, xs: list[float], ys: list[float], zooms: list[float]) -> np.ndarray:
    """uint8 [n, height, width, 3]: windows of ``photo`` whose top-left pixel centre is at
    (x, y) in photo pixels and whose pixels are 1/zoom photo pixels apart (bicubic; an
    independent renderer, not the one under test)."""
    img = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    H, W = photo.shape[:2]
    out = []
    for x0, y0, z in zip(xs, ys, zooms):
        px = x0 + torch.arange(width, dtype=torch.float64) / z
        py = y0 + torch.arange(height, dtype=torch.float64) / z
        grid = torch.stack(torch.meshgrid((2 * py + 1) / H - 1, (2 * px + 1) / W - 1, indexing="ij")[::-1], -1)
        f = F.grid_sample(img, grid[None].float(), mode="bicubic", padding_mode="border", align_corners=False)
        out.append(f[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return read_all(SAMPLE)[0]  # a real photograph, 480x320


@pytest.fixture(scope="module")
def pan(photo) -> np.ndarray:
    """25 frames of 224x160 panning 1.7 px right and 0.6 px down per frame, zooming in 0.2 %
    per frame."""
    n = 25
    return render(photo, 224, 160, [40 + 1.7 * t for t in range(n)], [30 + 0.6 * t for t in range(n)],
                  [1.002**t for t in range(n)])


def test_estimate_recovers_a_sub_pixel_pan_and_zoom(photo):
    """Frame 1 shows photo point p at (p - origin) * zoom; the estimate maps frame-0 pixels to
    frame-1 pixels, so it must be that map within hundredths of a pixel."""
    for dx, dy, z in ((0.37, -0.21, 1.0), (3.6, 1.25, 1.0), (-2.2, 0.8, 1.004), (0.0, 0.0, 0.995)):
        f = render(photo, 320, 224, [60, 60 + dx], [40, 40 + dy], [1.0, z])
        m = cam.estimate(cam.Patches(f[0]), cam.Patches(f[1]))
        assert m is not None
        # frame-0 pixel q is photo point 60 + q; in frame 1 it is at (60 + q - 60 - dx) * z
        want = np.array([[z, 0, -dx * z], [0, z, -dy * z]])
        corners = np.array([[0, 0, 1], [319, 223, 1]], dtype=np.float64)
        assert np.abs(corners @ m.T - corners @ want.T).max() < 0.06, (dx, dy, z, m)


def test_estimate_gives_up_on_cuts_and_flat_frames(photo):
    a = render(photo, 224, 160, [20], [20], [1.0])[0]
    b = render(photo[::-1, ::-1].copy(), 224, 160, [20], [20], [1.0])[0]
    flat = np.full_like(a, 128)
    assert cam.estimate(cam.Patches(a), cam.Patches(b)) is None
    assert cam.estimate(cam.Patches(flat), cam.Patches(flat)) is None
    assert cam.estimate(cam.Patches(a), cam.Patches(a)) is not None  # still: identity
    assert cam.plan_canvas(np.stack([a] * 9), 896) == (232, 168)  # a still camera: the least margin


def test_a_canvas_wherever_the_motion_can_be_followed(photo):
    """A canvas for any camera whose motion can be followed, with a margin for the motion seen;
    none for motion that cannot be followed. A camera too slow to be worth steadying is left
    alone: its frames go into the canvas as they are (whole-pixel views, all the same), while a
    faster one is steadied (sub-pixel views)."""
    def pan(speed: float, n: int = 17) -> np.ndarray:
        return render(photo, 224, 160, [40 + speed * t for t in range(n)], [30] * n, [1.0] * n)

    def views(frames: np.ndarray) -> np.ndarray:
        path = cam.estimate_path(frames)
        st = cam.Steadier(224, 160, cam.plan_canvas(frames, 896, path), 4, torch.device("cpu"), path)
        return np.concatenate([p for _, p, *_ in list(st.push(frames)) + list(st.finish())])

    slow, fast = cam.plan_canvas(pan(0.2), 896), cam.plan_canvas(pan(0.8), 896)
    assert slow is not None and fast is not None and 224 < slow[0] < fast[0]
    left_alone, steadied = views(pan(0.2)), views(pan(0.8))
    assert (left_alone == left_alone[0]).all() and left_alone[0, 0] == 0 and not (left_alone[:, 1:] % cam.FRAC_SHIFT).any()
    assert (steadied[:, 1:] % cam.FRAC_SHIFT).any() and len(np.unique(steadied[:, 1])) > 10
    other = render(photo[::-1, ::-1].copy(), 224, 160, [20] * 17, [20] * 17, [1.0] * 17)
    flicking = np.where((np.arange(17) % 2 == 1)[:, None, None, None], other, pan(2.0))  # every step a cut
    assert cam.plan_canvas(flicking, 896) is None


def test_params_round_trip_and_bad_ones_are_refused():
    params = np.array([[0, 5120, 2048], [-3100, 5500, 2200], [-6300, 5901, 2351], [2**19, -7, 0]])
    text = cam.pack(params)
    assert (cam.unpack(text, 4) == params).all() and (cam.unpack(text, 9) == params).all()
    odd = base64.b64encode(zstandard.ZstdCompressor().compress(bytes(20))).decode()  # not whole frames
    bomb = base64.b64encode(zstandard.ZstdCompressor().compress(bytes(1 << 20))).decode()  # small, says 1 MiB
    for bad, most in ((text, 3), ("not base64!", 4), (odd, 4), (None, 4), (bomb, 4),
                      (cam.pack(np.array([[2**19 + 1, 0, 0]])), 4)):
        with pytest.raises(FormatError, match="camera motion"):
            cam.unpack(bad, most)


def test_the_canvas_holds_the_pan_still_and_gives_the_frames_back(pan):
    """Steadied, the 25-frame pan changes several times less from frame to frame; segments
    start at latent-frame boundaries; cutting the views back out of the canvas (no coding in
    between) gives the frames back far above any codec's PSNR."""
    n, h, w = pan.shape[:3]
    canvas = cam.plan_canvas(pan[: cam.LOOKAHEAD], 896)
    assert canvas is not None and canvas[0] > w and canvas[1] > h and canvas[0] % 8 == canvas[1] % 8 == 0
    st = cam.Steadier(w, h, canvas, 4, torch.device("cpu"))
    segments = list(st.push(pan[:10])) + list(st.push(pan[10:])) + list(st.finish())
    assert [len(s[0]) for s in segments] == [len(s[1]) for s in segments]
    lengths = [len(s[0]) for s in segments]
    assert sum(lengths) == n and lengths[0] % 4 == 1 and all(k % 4 == 0 for k in lengths[1:-1])
    pictures = np.concatenate([s[0] for s in segments])
    params = np.concatenate([s[1] for s in segments])
    assert pictures.shape == (n, canvas[1], canvas[0], 3)
    first = segments[0][0].astype(np.float64)
    still = np.abs(np.diff(first, axis=0)).mean()
    moving = np.abs(np.diff(pan[: len(first)].astype(np.float64), axis=0)).mean()
    assert still < 0.3 * moving, (still, moving)
    x = torch.from_numpy(pictures).permute(3, 0, 1, 2).float()
    back = cam.unwarp(x, params, w, h).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert psnr(back[:, 4:-4, 4:-4], pan[:, 4:-4, 4:-4]) > 40


def test_a_chunk_is_cut_out_in_one_pass_exactly_as_frame_by_frame(monkeypatch):
    """On a GPU ``unwarp`` takes a whole decoded chunk in one pass (the frames' rows and
    columns offset into one index, each frame with its own taps); on the CPU it goes frame by
    frame in bands (here also bands of a few lines, as a large frame's are). All give the same
    numbers, also when the frames' zooms need different kernels (enlarging: 4 taps;
    shrinking: antialiased, wider) and the output is resized."""
    x = torch.rand(3, 4, 72, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    params = np.stack([cam.to_params(np.array([[z, 0, tx], [0, z, ty]]))
                       for z, tx, ty in ((1.0, 3.0, 2.0), (1.07, 4.25, 1.5), (0.55, 0.6, 0.3), (0.93, 2.0, 5.75))])
    frames = torch.cat([cam.unwarp(x[:, i : i + 1], params[i : i + 1], 50, 40, (60, 48)) for i in range(4)], 1)
    scale, tx, ty = (torch.from_numpy(a)[:, None] for a in cam._lines(params))
    ys = scale * 1.2 * torch.arange(40, dtype=torch.float64) + ty + scale * 0.1
    xs = scale * 1.2 * torch.arange(50, dtype=torch.float64) + tx + scale * 0.1
    rows, cols = cam._taps(ys, 72, scale[:, 0] * 1.2), cam._taps(xs, 96, scale[:, 0] * 1.2)
    assert rows[0].shape[0] > 4  # the shrunk frame widened every frame's taps
    planes = x.reshape(12, 72, 96, 1)
    for at_once, piece in ((True, cam.PIECE_FLOATS), (False, cam.PIECE_FLOATS), (False, 300)):
        monkeypatch.setattr(cam, "PIECE_FLOATS", piece)  # 300: bands of 3 lines in the first pass, 7 in the second
        out = torch.empty(12, 50, 40, 1)
        cam._resample(planes, tuple(t.repeat(1, 3, 1) for t in rows), tuple(t.repeat(1, 3, 1) for t in cols),
                      out, at_once=at_once)
        assert torch.equal(out.view(3, 4, 50, 40).transpose(2, 3), frames)
    assert torch.equal(cam.unwarp(x, params, 50, 40, (60, 48)), frames)
    still = cam.unwarp(x[:, :1], params[:1], 96 - 8, 72 - 8)  # zoom 1, whole-pixel shift: a plain crop
    assert torch.equal(still, x[:, :1, 2 : 2 + 64, 3 : 3 + 88])


def test_a_steadied_pan_costs_far_fewer_bits(pan, tmp_path):
    """The real pipeline: with the camera steadied (the default) the file is flagged, names its
    canvas, decodes to the source's size and frame count, and is much smaller at no loss of
    PSNR than the same quality coded with --no-camera."""
    clip = _lossless(pan, tmp_path / "pan.mkv")
    got = {}
    for name, camera in (("steadied", None), ("plain", False)):
        r = Codec(device="cpu", quality=5, camera=camera).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            frames = f.frames_tensor().numpy()
            got[name] = (r.file_bytes, psnr(frames, pan), f.reader.flags, f.header["video"], r.canvas)
        assert frames.shape == pan.shape
    (steadied, p_steadied, flags, video, canvas), (plain, p_plain, plain_flags, plain_video, _) = got.values()
    assert flags == FLAG_CANVAS and plain_flags == 0 and "canvas_width" not in plain_video
    assert (tmp_path / "steadied.vlat").read_bytes()[10:12] == b"\x02\x00"  # preamble flags, little-endian
    assert (video["canvas_width"], video["canvas_height"]) == canvas and canvas[0] > 224
    assert steadied < 0.75 * plain, (steadied, plain)
    assert p_steadied > p_plain - 0.2, (p_steadied, p_plain)


def test_a_canvas_outgrows_the_tile_where_the_picture_fits_in_one(photo, tmp_path):
    """A 768 px wide picture panning 8 px a frame wants a canvas wider than the 896 px tile.
    Clamped to the tile (what --tile-px asks for), the window has to move along the pan and
    costs many more bits; by default the canvas gets its margin and the file's tile grows
    with it, so the canvas is still coded in one tile."""
    n = 25
    clip = _lossless(render(photo, 768, 96, [10 + 8 / 2.2 * t for t in range(n)], [100.0] * n, [2.2] * n),
                     tmp_path / "wide.mkv")
    got = {}
    for name, tile in (("grown", None), ("fitted", 896)):
        r = Codec(device="cpu", quality=5, tile_px=tile).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            got[name] = (r.file_bytes, psnr(f.frames_tensor().numpy(), read_all(clip)), r.canvas, f.tiling.tile_px)
    (grown, p_grown, canvas, tile), (fitted, p_fitted, fitted_canvas, fitted_tile) = got.values()
    assert canvas[0] > 896 and tile == max(canvas), (canvas, tile)
    assert fitted_canvas[0] <= 896 and fitted_tile == 896, (fitted_canvas, fitted_tile)
    # about 30 % fewer bytes (v8: 3,384 against 4,784, v9: 3,336 against 4,740) for 0.08-0.11 dB;
    # 0.2 dB would be worth about 5 % of the bytes on this clip's curve
    assert grown < 0.9 * fitted and p_grown > p_fitted - 0.2, (grown, fitted, p_grown, p_fitted)


def test_a_pan_after_a_still_start_is_steadied_and_a_still_camera_costs_little(photo, tmp_path):
    """The first frames decide the canvas, so a still start gets one too, with the least margin:
    while the camera stands still its frames go in as they are (a moving object is not the
    camera's motion), for a few percent more bytes than --no-camera at the same PSNR; when it
    starts to pan, the pan is steadied. Models without an entropy coder are not steadied by
    default (their latents must line up with the picture)."""
    def coded(frames: np.ndarray, name: str) -> dict[str, tuple[int, float, np.ndarray, list[float]]]:
        clip, got = _lossless(frames, tmp_path / f"{name}.mkv"), {}
        for how, camera in (("default", None), ("plain", False)):
            r = Codec(device="cpu", camera=camera).encode(clip, tmp_path / f"{name}_{how}.vlat")
            with vaecodec.open(tmp_path / f"{name}_{how}.vlat", device="cpu") as f:
                views = f._frame_views(0, f.frames) if r.canvas else None
                back = f.frames_tensor().numpy()
                got[how] = (r.file_bytes, psnr(back, frames), views, [psnr(a, b) for a, b in zip(back, frames)])
        return got

    still = render(photo, 160, 128, [50] * 13, [40] * 13, [1.0] * 13)
    still[:, 40:60, 50:70] = np.arange(13)[:, None, None, None] * 20  # something moves, not the camera
    got = coded(still, "still")
    (b_default, p_default, views, _), (b_plain, p_plain, _, _) = got["default"], got["plain"]
    assert (views == views[0]).all() and views[0, 0] == 0 and not (views[0, 1:] % cam.FRAC_SHIFT).any()
    assert b_default < 1.15 * b_plain and abs(p_default - p_plain) < 0.3, (b_default, b_plain, p_default, p_plain)

    n_still, n_pan = 13, 40
    xs = [40.0] * n_still + [40 + 1.7 * t for t in range(1, n_pan + 1)]
    late = render(photo, 224, 160, xs, [30 + 0.6 * max(0, i - n_still) for i in range(len(xs))], [1.0] * len(xs))
    got = coded(late, "late")
    (b_default, p_default, views, per_frame), (b_plain, p_plain, _, _) = got["default"], got["plain"]
    assert (views[:n_still] == views[0]).all() and (views[n_still + 4 :, 1:] % cam.FRAC_SHIFT).any()
    # the steadied pan goes on from where the still frames stood: no jump of the canvas, so no
    # frame that the causal decoder's memory of the old picture spoils
    assert min(per_frame) > np.mean(per_frame) - 1.0, per_frame
    assert b_default < 0.75 * b_plain and p_default > p_plain - 0.2, (b_default, b_plain, p_default, p_plain)

    pan_clip = _lossless(late[n_still:], tmp_path / "pan.mkv")
    assert Codec(device="cpu", bits=8).encode(pan_clip, tmp_path / "u.vlat").canvas is None
    assert Codec(device="cpu", bits=8, camera=True).encode(pan_clip, tmp_path / "v.vlat").canvas is not None


def test_fades_and_zooms_after_a_still_start_lose_no_picture(photo, tmp_path):
    """While the camera is left alone the canvas beyond the picture repeats each frame's edges:
    held from the first frame, a fade-in from black kept a black frame around the picture and
    lost 0.9 dB against --no-camera. A zoom that passes 20 % starts a new reference, whose
    first frame decodes from a memory resampled through the zoom (decoded from the old
    canvas's memory it came out 4 dB below its neighbours)."""
    def both(frames: np.ndarray, name: str) -> tuple[float, float, list[float]]:
        clip, got = _lossless(frames, tmp_path / f"{name}.mkv"), []
        for camera in (None, False):
            Codec(device="cpu", camera=camera).encode(clip, tmp_path / f"{name}_{camera}.vlat")
            with vaecodec.open(tmp_path / f"{name}_{camera}.vlat", device="cpu") as f:
                back = f.frames_tensor().numpy()
            got.append((psnr(back, frames), [psnr(a, b) for a, b in zip(back, frames)]))
        return got[0][0], got[1][0], got[0][1]

    n = 24
    still = render(photo, 224, 160, [40] * n, [30] * n, [1.0] * n).astype(np.float64)
    fade_in = (still * np.linspace(0.05, 1, n)[:, None, None, None]).round().astype(np.uint8)
    steadied, plain, _ = both(np.concatenate([fade_in, still.astype(np.uint8)]), "fade")
    assert steadied > plain - 0.3, (steadied, plain)

    # still beyond the first 33 frames, then a zoom past 20 %
    zoom = render(photo, 224, 160, [40 + 0.5 * t for t in range(28)], [30 + 0.3 * t for t in range(28)],
                  [1.012**t for t in range(28)])
    steady = render(photo, 224, 160, [40] * 36, [30] * 36, [1.0] * 36)
    steadied, plain, per_frame = both(np.concatenate([steady, zoom]), "zoom")
    assert steadied > plain - 0.3, (steadied, plain)
    dips = [per_frame[i] - (per_frame[i - 1] + per_frame[i + 1]) / 2 for i in range(1, len(per_frame) - 1)]
    assert min(dips) > -1.5, per_frame


def test_a_chunk_with_unusable_camera_motion_is_lost_alone(pan, tmp_path):
    """Views travel in each latent chunk's meta. A chunk whose views do not decode (written
    here with a valid record CRC, so only the camera check can catch it) is reported by index
    and byte offset and its frames are lost; concealed, the rest of the file decodes."""
    clip = _lossless(pan, tmp_path / "pan.mkv")
    Codec(device="cpu", quality=3, chunk_latents=2, tile_frames=2).encode(clip, tmp_path / "good.vlat")
    with VlatReader(tmp_path / "good.vlat") as r:
        header, flags = r.header, r.flags
        chunks = [(c.kind, r.read(c.index), dict(c.meta), c.coding) for c in r.chunks]
    latent = [i for i, c in enumerate(chunks) if c[0] == "latent"]
    assert len(latent) >= 3 and all("camera" in chunks[i][2] for i in latent)
    victim = latent[1]
    chunks[victim][2]["camera"] = cam.pack(np.zeros((1, 3), np.int64))[:-4] + "AAAA"
    with VlatWriter(tmp_path / "bad.vlat", header, flags=flags) as w:
        for kind, payload, meta, coding in chunks:
            w.add_chunk(kind, payload, meta, coding=coding)
    with vaecodec.open(tmp_path / "bad.vlat", device="cpu") as f:
        assert any(f"chunk {victim} at byte" in p and "camera motion" in p for p in f.problems), f.problems
        with pytest.raises(FormatError, match="lost"):
            f.frames_tensor()
        frames = f.frames_tensor(conceal=True).numpy()
        t0, t = chunks[victim][2]["t0"], chunks[victim][2]["t"]
    assert frames.shape == pan.shape
    keep = np.r_[0 : 1 + 4 * (t0 - 1), 1 + 4 * (t0 + t - 1) + 4 : len(pan)]  # frames of intact tiles
    assert psnr(frames[keep], pan[keep]) > 20


def test_a_window_that_runs_out_of_canvas_moves_by_whole_cells(pan):
    """On a canvas only 16 px larger than the picture the pan soon leaves the window: the next
    segment keeps the reference and moves the window by whole 8 px cells (the views jump by a
    multiple of 8 px on top of the camera's smooth motion), and the frames still come back."""
    n, h, w = pan.shape[:3]
    st = cam.Steadier(w, h, (w + 16, h + 16), 4, torch.device("cpu"))
    segments = list(st.push(pan)) + list(st.finish())
    assert len(segments) >= 3
    params = np.concatenate([s[1] for s in segments])
    tx = params[:, 1] / cam.FRAC_SHIFT
    starts = np.cumsum([len(s[0]) for s in segments])[:-1]
    jumps = [(tx[i] - tx[i - 1]) - (tx[i - 1] - tx[i - 2]) for i in starts]  # the camera's own motion is smooth
    assert all(abs(j - 8 * round(j / 8)) < 0.3 for j in jumps) and any(abs(j) >= 7.7 for j in jumps), jumps
    pictures = np.concatenate([s[0] for s in segments])
    x = torch.from_numpy(pictures).permute(3, 0, 1, 2).float()
    back = cam.unwarp(x, params, w, h).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert psnr(back[:, 4:-4, 4:-4], pan[:, 4:-4, 4:-4]) > 40


def test_a_pan_across_a_cut(photo, tmp_path):
    """A pan, a hard cut to another picture, another pan: the estimate gives up at the cut, the
    frame counts as still and the canvas shows the new scene from there; the file decodes as
    well as without a canvas, in fewer bytes."""
    a = render(photo, 192, 128, [40 + 1.5 * t for t in range(13)], [30] * 13, [1.0] * 13)
    b = render(photo[::-1].copy(), 192, 128, [60 - 1.2 * t for t in range(12)], [40 + 0.5 * t for t in range(12)],
               [1.0] * 12)
    src = np.concatenate([a, b])
    path = cam.estimate_path(src)
    assert path[12] is None and sum(p is None for p in path) == 1
    clip = _lossless(src, tmp_path / "cut.mkv")
    got = {}
    for name, camera in (("steadied", None), ("plain", False)):
        r = Codec(device="cpu", quality=5, camera=camera).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            got[name] = (r.file_bytes, psnr(f.frames_tensor().numpy(), src), r.canvas)
    assert got["steadied"][2] is not None
    assert got["steadied"][1] > got["plain"][1] - 0.3, got
    assert got["steadied"][0] < got["plain"][0], got


@pytest.mark.parametrize("tile", [None, 96])
def test_the_decoders_memory_moves_with_the_window(photo, tmp_path, tile):
    """A pan that speeds up after the 33 frames that sized the canvas makes the window move by
    whole cells. The chunk lists each move (frame, dx, dy), the file carries the shift flag
    (older readers refuse it), and the model's memory moves with the canvas's content on both
    sides: the frames right after a move decode as well as their neighbours, while a decoder
    that left its memory where it was decodes them worse (it remembers the old window); also
    in small spatial tiles, whose memory moves across their edges. A listed move that is not a
    whole-cell move before a latent frame loses its chunk alone."""
    xs = np.cumsum([0.0] + [0.5] * 32 + [3.0] * 12) + 30
    src = render(photo, 160, 128, list(xs), [40] * len(xs), [1.0] * len(xs))
    clip = _lossless(src, tmp_path / "faster.mkv")
    result = Codec(device="cpu", quality=5, chunk_latents=2, tile_px=tile).encode(clip, tmp_path / "f.vlat")
    with vaecodec.open(tmp_path / "f.vlat", device="cpu") as f:
        assert f.reader.flags == FLAG_CANVAS | FLAG_SHIFT and f._shifts and not f._moved, f.header["video"]
        moved = [1 + 4 * (j - 1) for j in sorted(f._shifts)]  # the first frames of the latent frames
        out = f.frames_tensor().numpy()
        part = f.frames_tensor(moved[-1] - 2, moved[-1] + 6).numpy()  # a seek: a cold start, then the move
        f._shifts.clear()  # a decoder that does not move its memory
        stayed = f.frames_tensor().numpy()
    assert (part == out[moved[-1] - 2 : moved[-1] + 6]).all()
    per_frame = np.array([psnr(a, b) for a, b in zip(out, src)])
    assert per_frame[moved].min() > np.median(per_frame) - 1.0, (moved, per_frame.round(1))
    worse = np.array([psnr(a, b) for a, b in zip(stayed, src)])[moved]
    assert (worse < per_frame[moved] - 0.5).all(), (worse, per_frame[moved])
    with VlatReader(tmp_path / "f.vlat") as r:
        header, flags = r.header, r.flags
        chunks = [(c.kind, r.read(c.index), dict(c.meta), c.coding) for c in r.chunks]
    n_moves = sum(len(c[2].get("camera_shift", [])) for c in chunks)
    assert result.window_moves == n_moves == len(moved)
    info = invoke("info", tmp_path / "f.vlat")
    assert info.returncode == 0 and f"its window moved {n_moves} time" in info.stdout, info.stdout
    victim = next(i for i, c in enumerate(chunks) if "camera_shift" in c[2])
    frame, dx, dy = chunks[victim][2]["camera_shift"][0]
    for bad in ([frame, dx + 4, dy], [frame + 1, dx, dy], [frame, dx]):
        chunks[victim][2]["camera_shift"] = [bad]
        with VlatWriter(tmp_path / "bad.vlat", header, flags=flags, overwrite=True) as w:
            for kind, payload, meta, coding in chunks:
                w.add_chunk(kind, payload, meta, coding=coding)
        with vaecodec.open(tmp_path / "bad.vlat", device="cpu") as f:
            assert [p for p in f.problems if "camera_shift" in p] == [
                p for p in f.problems if f"chunk {victim} at byte" in p], f.problems
            assert len(f.problems) == 1


def test_refinement_follows_the_window_moves(photo, tmp_path):
    """--refine searches the latents through a decoder whose memory moves where the window
    moves, as the real decoder's does: the refined file keeps its moves, and decodes as well as
    the plain one, the frames after a move included."""
    xs = np.cumsum([0.0] + [0.5] * 32 + [3.0] * 12) + 30
    src = render(photo, 160, 128, list(xs), [40] * len(xs), [1.0] * len(xs))
    clip = _lossless(src, tmp_path / "faster.mkv")
    got = {}
    for name, refine in (("plain", 0), ("refined", 2)):
        Codec(device="cpu", quality=5, refine=refine).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            moved = [1 + 4 * (j - 1) for j in sorted(f._shifts)]
            out = f.frames_tensor().numpy()
        got[name] = (moved, psnr(out, src), min(psnr(out[m], src[m]) for m in moved))
    assert got["refined"][0] == got["plain"][0] and got["plain"][0], got
    assert got["refined"][1] > got["plain"][1] - 0.1 and got["refined"][2] > got["plain"][2] - 0.3, got


def test_refinement_works_on_the_canvas(photo, tmp_path):
    """--refine searches the latents of the canvas (the model's input), all of it: the file
    is steadied, decodes, and is no worse than without the search."""
    src = render(photo, 128, 96, [40 + 1.5 * t for t in range(9)], [30 + 0.5 * t for t in range(9)], [1.0] * 9)
    clip = _lossless(src, tmp_path / "pan.mkv")
    got = {}
    for name, refine in (("plain", 0), ("refined", 3)):
        r = Codec(device="cpu", quality=5, refine=refine, tile_frames=2).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            got[name] = (r.canvas, psnr(f.frames_tensor().numpy(), src))
    assert got["plain"][0] is not None and got["refined"][0] == got["plain"][0]
    assert got["refined"][1] > got["plain"][1] - 0.2, got


def _canvas_read(canvas: np.ndarray, m: np.ndarray) -> np.ndarray:
    """float [H, W, 3]: ``canvas`` [H, W, 3] read at m(Q) for every pixel Q (bilinear, edges repeated)."""
    H, W = canvas.shape[:2]
    qy, qx = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = m[0, 0] * qx + m[0, 1] * qy + m[0, 2], m[1, 0] * qx + m[1, 1] * qy + m[1, 2]
    grid = torch.from_numpy(np.stack([(2 * x + 1) / W - 1, (2 * y + 1) / H - 1], -1))[None].float()
    img = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)[0].permute(1, 2, 0).numpy()


def test_a_new_reference_after_a_zoom_says_where_its_canvas_was_before(photo):
    """A zoom past 20 % starts a new reference; its segment gives the transform from its canvas
    pixels to the canvas before, and the old canvas read through it shows the new one's first
    frame (far closer than the old canvas in place)."""
    n, w, h = 40, 224, 160
    frames = render(photo, w, h, [120 - 1.0 * t for t in range(n)], [80 - 0.6 * t for t in range(n)],
                    [1.012**t for t in range(n)])
    st = cam.Steadier(w, h, (w + 32, h + 32), 4, torch.device("cpu"))
    segments = list(st.push(frames)) + list(st.finish())
    jumps = [i for i, s in enumerate(segments) if s[4] is not None]
    assert jumps and jumps[0] > 0 and all(segments[i][2] for i in jumps), [s[2:] for s in segments]
    for i in jumps:
        m, old, new = segments[i][4], segments[i - 1][0][-1], segments[i][0][0].astype(np.float64)
        assert 0.75 < m[0, 0] < 0.9 and m[0, 0] == m[1, 1] and m[0, 1] == m[1, 0] == 0  # a zoom in, about 1.2x
        inner = (slice(24, -24), slice(24, -24))  # within the picture: the canvas's margin holds older views
        followed, in_place = psnr(_canvas_read(old, m)[inner], new[inner]), psnr(old[inner], new[inner])
        assert followed > 32 and followed > in_place + 8, (followed, in_place)


def test_a_zoom_past_its_reference_is_predicted_through_the_zoom(photo, tmp_path):
    """The chunk lists the new reference's first latent frame with the zoom on the latent grid
    (camera_zoom, under the zoom flag that older readers refuse), the coder predicts it from
    the frame before resampled, the model's memory is resampled likewise on both sides, and
    it decodes as well as its neighbours (not cut from the next frame). A decoder that leaves
    its memory where it was gets the jump's first frame worse; one that ignores the zoom gets
    the frames from there on wrong. A bad entry, or one in a file without the flag, loses its
    chunk alone. Without motion compensation the jump is coded as before."""
    steady = render(photo, 224, 160, [40] * 36, [30] * 36, [1.0] * 36)
    zoom = render(photo, 224, 160, [40 + 0.5 * t for t in range(28)], [30 + 0.3 * t for t in range(28)],
                  [1.012**t for t in range(28)])
    src = np.concatenate([steady, zoom])
    clip = _lossless(src, tmp_path / "zoom.mkv")
    Codec(device="cpu", quality=5, chunk_latents=4).encode(clip, tmp_path / "z.vlat")
    with vaecodec.open(tmp_path / "z.vlat", device="cpu") as f:
        assert f.reader.flags & (FLAG_CANVAS | FLAG_ZOOM) == FLAG_CANVAS | FLAG_ZOOM and f._zooms and not f._moved
        (index, zooms), = f._zooms.items()
        entry = next(e for e in f.reader.chunks_of("latent") if e.index == index)
        j, (a, _, _) = next(iter(zooms.items()))
        jump = 1 + 4 * (entry.meta["t0"] + j - 1)  # the new reference's first frame
        assert entry.meta["camera_zoom"][0][0] == jump and 0.75 * (1 << 16) < a < 0.9 * (1 << 16)
        out = f.frames_tensor().numpy()
        f._zoom_moves.clear()  # a decoder that leaves its memory where it was
        stayed = f.frames_tensor().numpy()
        f._zooms.clear()  # and predicts the frame from the old latents in place
        wrong = f.frames_tensor().numpy()
    per_frame = np.array([psnr(a, b) for a, b in zip(out, src)])
    assert per_frame[jump:jump + 4].min() > np.median(per_frame) - 1.5, (jump, per_frame.round(1))
    assert psnr(wrong[:jump], out[:jump]) > 45 and psnr(stayed[:jump], out[:jump]) > 45  # calls cut elsewhere: float noise
    assert psnr(stayed[jump], src[jump]) < per_frame[jump] - 3, (psnr(stayed[jump], src[jump]), per_frame[jump])
    assert psnr(wrong[jump:jump + 4], src[jump:jump + 4]) < per_frame[jump:jump + 4].min() - 3
    info = invoke("info", tmp_path / "z.vlat")
    assert info.returncode == 0 and "(1 predicted through the zoom)" in info.stdout, info.stdout
    with VlatReader(tmp_path / "z.vlat") as r:
        header, flags = r.header, r.flags
        chunks = [(c.kind, r.read(c.index), dict(c.meta), c.coding) for c in r.chunks]
    victim = next(i for i, c in enumerate(chunks) if "camera_zoom" in c[2])
    frame, a, bx, by = chunks[victim][2]["camera_zoom"][0]
    for bad, bad_flags in (([frame + 1, a, bx, by], flags), ([frame, 0, bx, by], flags), ([frame, a, bx], flags),
                           ([frame, a, bx, by], flags & ~FLAG_ZOOM)):
        chunks[victim][2]["camera_zoom"] = [bad]
        with VlatWriter(tmp_path / "bad.vlat", header, flags=bad_flags, overwrite=True) as w:
            for kind, payload, meta, coding in chunks:
                w.add_chunk(kind, payload, meta, coding=coding)
        with vaecodec.open(tmp_path / "bad.vlat", device="cpu") as f:
            assert len(f.problems) == 1 and f"chunk {victim} at byte" in f.problems[0], f.problems
            assert "camera_zoom" in f.problems[0] and ("zoom flag" in f.problems[0]) == (bad_flags != flags)
            frames = f.frames_tensor(conceal=True).numpy()
        assert frames.shape == src.shape
    # a jump at a chunk's first latent frame (here every chunk is one): coded on its own, the memory still follows
    Codec(device="cpu", quality=5, chunk_latents=1).encode(clip, tmp_path / "one.vlat")
    with vaecodec.open(tmp_path / "one.vlat", device="cpu") as f:
        assert (jump - 1) // 4 + 1 in f._zoom_moves and not f._moved, (f._zoom_moves, f._moved)
        each = np.array([psnr(a, b) for a, b in zip(f.frames_tensor().numpy(), src)])
    assert each[jump:jump + 4].min() > np.median(each) - 1.5, (jump, each.round(1))
    # without motion compensation nothing follows the zoom: the frame is cut from the next one, as before
    Codec(device="cpu", quality=5, chunk_latents=4, motion=False).encode(clip, tmp_path / "still.vlat")
    with vaecodec.open(tmp_path / "still.vlat", device="cpu") as f:
        assert not f._zooms and not f.reader.flags & FLAG_ZOOM and jump in f._moved, (f._moved, jump)


def test_refinement_codes_a_zoom_jump_through_the_zoom(photo, tmp_path):
    """--refine on a clip whose zoom starts a new reference: the refined file lists the same
    jump, and its frames there decode as well as their neighbours and as the plain file's."""
    steady = render(photo, 224, 160, [40] * 20, [30] * 20, [1.0] * 20)
    zoom = render(photo, 224, 160, [40 + 0.5 * t for t in range(28)], [30 + 0.3 * t for t in range(28)],
                  [1.012**t for t in range(28)])
    src = np.concatenate([steady, zoom])
    clip = _lossless(src, tmp_path / "zoom.mkv")
    got = {}
    for name, refine in (("plain", 0), ("refined", 2)):
        Codec(device="cpu", quality=5, chunk_latents=4, refine=refine).encode(clip, tmp_path / f"{name}.vlat")
        with vaecodec.open(tmp_path / f"{name}.vlat", device="cpu") as f:
            jumps = [1 + 4 * (e.meta["t0"] + j - 1) for e in f.reader.chunks_of("latent") if e.index in f._zooms
                     for j in f._zooms[e.index]]
            each = np.array([psnr(a, b) for a, b in zip(f.frames_tensor().numpy(), src)])
        got[name] = (jumps, each)
    (jumps, plain), (refined_jumps, refined) = got["plain"], got["refined"]
    assert jumps and refined_jumps == jumps, (jumps, refined_jumps)
    jump = jumps[0]
    assert refined[jump:jump + 4].min() > np.median(refined) - 1.5, (jump, refined.round(1))
    assert refined.mean() > plain.mean() - 0.2 and refined[jump:jump + 4].mean() > plain[jump:jump + 4].mean() - 0.3


def test_a_fast_zoom_from_the_start_is_steadied(photo, tmp_path):
    """A zoom out past 20 % within the frames that size the canvas still gets one (new
    references predicted through the zoom), and costs fewer bytes than the frames coded as they
    are (what it got before: 19 % more here), at a better PSNR."""
    n = 40
    src = render(photo, 224, 160, [90 - 1.2 * t for t in range(n)], [60 - 0.8 * t for t in range(n)],
                 [1.5 * 1.5 ** (-t / (n - 1)) for t in range(n)])
    clip = _lossless(src, tmp_path / "out.mkv")
    got = {}
    for camera in (None, False):
        r = Codec(device="cpu", quality=5, camera=camera).encode(clip, tmp_path / f"{camera}.vlat")
        with vaecodec.open(tmp_path / f"{camera}.vlat", device="cpu") as f:
            zooms = sum(len(z) for z in f._zooms.values())
            got[camera] = (r.file_bytes, psnr(f.frames_tensor().numpy(), src), r.canvas, zooms)
    assert got[None][2] is not None and got[None][3] >= 1 and got[False][2] is None, got
    assert got[None][0] < 0.85 * got[False][0] and got[None][1] > got[False][1], got


def test_a_zoom_resamples_the_memory_of_small_spatial_tiles_too(photo, tmp_path):
    """In spatial tiles of 96 px the memory is resampled through the zoom on the whole
    picture's state, as a window move is: the jump's frames decode as well as their
    neighbours, and better than with each tile's memory left where it was."""
    steady = render(photo, 224, 160, [40] * 36, [30] * 36, [1.0] * 36)
    zoom = render(photo, 224, 160, [40 + 0.5 * t for t in range(28)], [30 + 0.3 * t for t in range(28)],
                  [1.012**t for t in range(28)])
    src = np.concatenate([steady, zoom])
    Codec(device="cpu", quality=5, tile_px=96).encode(_lossless(src, tmp_path / "zoom.mkv"), tmp_path / "t.vlat")
    with vaecodec.open(tmp_path / "t.vlat", device="cpu") as f:
        (lat,) = f._zoom_moves
        jump = 1 + 4 * (lat - 1)
        out = f.frames_tensor().numpy()
        f._zoom_moves.clear()
        stayed = f.frames_tensor().numpy()
    per_frame = np.array([psnr(a, b) for a, b in zip(out, src)])
    assert per_frame[jump:jump + 4].min() > np.median(per_frame) - 1.5, (jump, per_frame.round(1))
    assert psnr(stayed[jump], src[jump]) < per_frame[jump] - 3

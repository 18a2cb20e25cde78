"""Shared fixtures: small real videos made with PyAV's lavfi sources, and a tiny analytic VAE."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vaecodec.models.base import Tiling, VideoVAE

ROOT = Path(__file__).resolve().parent.parent


class PoolVAE(VideoVAE):
    """Average-pool encoder / nearest-upsample decoder with the causal 1 + k*t frame rule.

    It has no learned weights and no temporal context, so tiled and untiled runs must agree
    exactly: a precise check of the tiling arithmetic that a trained model cannot give.
    """

    kind = "pool"
    spatial, temporal, latent_channels = 4, 4, 3

    def __init__(self, tiling: Tiling) -> None:
        super().__init__()
        self.tiling = tiling
        self.model_id, self.weights_sha256 = "pool", ""

    def encode(self, x):  # [B,3,1+k*t,H,W] -> [B,3,1+k,H/s,W/s]
        x = torch.cat([x[:, :, :1].expand(-1, -1, self.temporal - 1, -1, -1), x], dim=2)
        return F.avg_pool3d(x, (self.temporal, self.spatial, self.spatial)), None

    def decode(self, z):  # [B,3,1+k,h,w] -> [B,3,1+k*t,H,W]
        x = z.repeat_interleave(self.temporal, 2).repeat_interleave(self.spatial, 3).repeat_interleave(self.spatial, 4)
        return x[:, :, self.temporal - 1 :]


def make_video(path: Path, size=(64, 48), frames=10, rate=25, source="testsrc2", audio=False, codec="libx264"):
    """Write a small real video with PyAV from an ffmpeg lavfi source (no ffmpeg binary needed)."""
    w, h = size
    src = av.open(f"{source}=size={w}x{h}:rate={rate}", format="lavfi")
    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=Fraction(rate))
    vs.width, vs.height = w, h
    vs.pix_fmt = "yuv444p" if codec == "libx264" and (w % 2 or h % 2) else ("yuv420p" if codec == "libx264" else vs.pix_fmt)
    if codec == "libx264":
        vs.options = {"crf": "12", "preset": "veryfast"}
    asrc = astream = None
    if audio:
        asrc = av.open(f"sine=frequency=440:duration={frames / rate}", format="lavfi")
        astream = out.add_stream("aac", rate=44100)
    n = 0
    for frame in src.decode(video=0):
        frame.pts = None
        for p in vs.encode(frame.reformat(format=vs.pix_fmt)):
            out.mux(p)
        n += 1
        if n == frames:
            break
    for p in vs.encode():
        out.mux(p)
    if astream is not None:
        for af in asrc.decode(audio=0):
            af.pts = None
            for p in astream.encode(af):
                out.mux(p)
        for p in astream.encode():
            out.mux(p)
        asrc.close()
    src.close()
    out.close()
    return path


def read_all(path: Path) -> np.ndarray:
    """All frames of a video as uint8 [n, H, W, 3] (test clips are tiny)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 64x48, 10-frame H.264 test pattern."""
    return make_video(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)

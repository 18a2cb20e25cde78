"""The contract between the codec pipeline and a video VAE backend.

Every backend (the embedded model, LTX-2, LTX-Video) is a ``VideoVAE``: the pipeline
(tiling, quantization, container) only ever touches what is declared here, so a new
backend never needs changes elsewhere.

Conventions, shared by all backends:
  pixels  x: float tensor [B, 3, T, H, W], RGB in [-1, 1]
  latents z: float tensor [B, C, t, h, w]
  T = 1 + k * temporal   (causal rule: the first frame is coded alone, then groups)
  t = 1 + k              (latent frames)
  H = h * spatial, W = w * spatial
The pipeline pads inputs to satisfy these rules and crops the output back.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class Tiling:
    """Tile sizes for one model; recorded in every .vlat so decode tiles the same way.

    ``latent_frames`` is the temporal tile length in latent frames (a pixel tile spans
    1 + latent_frames * temporal frames) and ``overlap_latents`` how many latent frames
    neighbouring tiles share. ``tile_px``/``overlap_px`` are the spatial tile edge and
    overlap in pixels (multiples of the spatial factor); frames no larger than ``tile_px``
    in both dimensions are not split spatially.
    """

    latent_frames: int
    overlap_latents: int
    tile_px: int
    overlap_px: int

    def to_dict(self) -> dict:
        return asdict(self)


class VideoVAE(nn.Module):
    """Base class of every backend. Subclasses set the class attributes and the two methods."""

    kind: str = ""  # registry kind: "tiny", "ltx2", "ltxv"
    spatial: int = 8  # pixels per latent cell along H and W
    temporal: int = 4  # frames per latent frame (after the first)
    latent_channels: int = 16
    min_latent: int = 1  # the fewest latent rows/columns the decoder takes
    tiling: Tiling = Tiling(latent_frames=8, overlap_latents=1, tile_px=512, overlap_px=64)

    def __init__(self) -> None:
        super().__init__()
        self.model_id = ""  # names model + version, e.g. "vaecodec-tiny-v1"
        self.weights_sha256 = ""  # of the weights file the model was loaded from

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B,3,1+k*temporal,H,W] in [-1,1] -> (mean, logvar) each [B,C,1+k,H/s,W/s].

        logvar may be None for deterministic autoencoders. Inference uses the mean.
        """
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B,C,1+k,h,w] -> [B,3,1+k*temporal,h*s,w*s], roughly in [-1,1] (caller clamps)."""
        raise NotImplementedError

    # A causal model whose state between calls is small sets ``streams`` and implements the two
    # ``*_step`` methods: the pipeline then runs temporal tiles one after another with no
    # overlap, and tiled calls give exactly what one whole-clip call gives. ``reach``: how many
    # latent frames a decode stream started cold must run before its output is exact (a seek
    # starts that far before the first frame it needs).
    streams: bool = False
    reach: int = 0
    # A streaming model whose state is a list of tensors [B, C, h, w] on its tile's latent grid
    # sets ``state_on_grid``: the pipeline can then move that state by whole latent cells when
    # the picture's content moves (a steadied canvas's window: ``tiling.move_states``).
    state_on_grid: bool = False

    def encode_step(self, x: torch.Tensor, state: object | None) -> tuple[torch.Tensor, object]:
        """Continue an encode stream (``state`` None starts one): [B,3,1+k*temporal,H,W] at the
        start, [B,3,k*temporal,H,W] after it -> (mean [B,C,1+k or k,h,w], the next call's state)."""
        raise NotImplementedError

    def decode_step(self, z: torch.Tensor, state: object | None) -> tuple[torch.Tensor, object]:
        """Continue a decode stream (``state`` None starts one): [B,C,t,h,w] -> (frames
        [B,3,1+(t-1)*temporal at the start or t*temporal after it,H,W], the next call's state)."""
        raise NotImplementedError

    @property
    def entropy_coder(self):
        """A ``vaecodec.entropy`` coder with bit-exact integer tables, or None (zstd fallback)."""
        return None

    def tiling_for(self, height: int, width: int) -> Tiling:
        """Default tiles for frames of this (padded) size; the file records them for decode."""
        return self.tiling

    def frames_for_latents(self, t: int) -> int:
        """Pixel frames produced by decoding ``t`` latent frames."""
        return 1 + (t - 1) * self.temporal

    def latents_for_frames(self, n: int) -> int:
        """Latent frames needed to cover ``n`` pixel frames (after padding to 1 + k*temporal)."""
        return 1 + max(0, -(-(n - 1) // self.temporal))

    def describe(self) -> dict:
        """The facts a .vlat header records about the model."""
        return {
            "kind": self.kind,
            "id": self.model_id,
            "sha256": self.weights_sha256,
            "spatial": self.spatial,
            "temporal": self.temporal,
            "channels": self.latent_channels,
        }


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed (weights files can be many GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()

"""The embedded default model: a small causal video VAE built for CPU speed.

Design (our own; the causal "memory" idea — mixing each frame with the previous one —
and temporal pooling/growing by channel folding follow madebyollin/taehv):

* Everything is conv2d on frames folded into the batch, so it runs well on CPU/MPS.
* Pixels go to 1/4 resolution at once (the encoder's 4x4 stem of stride 4, the decoder's
  pixel-shuffle by 4); the only full-frame-rate work happens at 1/4 and 1/8 resolution, the
  heavy blocks run at 1/8 resolution and 1/4 frame rate.
* Causality: the first frame is replicated 3x in front so a clip of 1 + 4k frames becomes
  4(k+1) frames, pooled in groups of 4 -> 1 + k latent frames. Memory blocks only look at
  the previous frame, so ``encode``/``decode`` calls start from zero memory and are
  self-contained, while ``encode_step``/``decode_step`` hand the last frame's memory on
  (``Carry``): the pipeline streams tiles through them with no overlap.

Shapes for one 480p frame (854x480 padded to 856x480): pixels [3, 480, 856], stem (4x4,
stride 4) -> [32, 120, 214], down -> [64, 60, 107], pool 4 frames -> latent-rate blocks at
[64, 60, 107], head -> mean/logvar [16, 60, 107]. The decoder mirrors this.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from vaecodec.errors import ModelError
from vaecodec.models.base import Tiling, VideoVAE, sha256_file

WEIGHTS = Path(__file__).parent / "weights" / "tiny-v10.safetensors"

C1 = 32  # channels at 1/4 resolution
C2 = 64  # channels at 1/8 resolution
C0 = 16  # channels at 1/2 resolution (refine branch)


@dataclass(frozen=True)
class Arch:
    """What differs between tiny model versions; stored as JSON in the weights metadata.

    ``latent``: latent channels. ``refine``: a half-resolution detail branch added to the
    decoder's output. ``blocks8``: per-frame residual blocks at 1/8 resolution in the decoder.
    ``enc_blocks``: the encoder's causal blocks at the latent rate (v1: 16 channels, no
    branch, no blocks8, 3 encoder blocks).
    """

    latent: int = 16
    refine: bool = False
    blocks8: int = 0
    enc_blocks: int = 3

    def __post_init__(self) -> None:
        ok = (type(self.latent) is int and 1 <= self.latent <= 256 and type(self.refine) is bool
              and type(self.blocks8) is int and 0 <= self.blocks8 <= 16
              and type(self.enc_blocks) is int and 1 <= self.enc_blocks <= 16)
        if not ok:
            raise ValueError(f"invalid tiny architecture {self}")

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> "Arch":
        return cls(**json.loads(meta["arch"])) if "arch" in meta else cls()

    def to_meta(self) -> str:
        return json.dumps(asdict(self))


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """Memory view [N, H, W, C] of a channels_last tensor [N, C, H, W] (no copy)."""
    return x.permute(0, 2, 3, 1)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """channels_last view [N, C, H, W] of an [N, H, W, C] tensor (no copy)."""
    return x.permute(0, 3, 1, 2)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1x1 conv as one GEMM over the channels_last memory: [N, I, H, W] -> [N, O, H, W].

    PyTorch's CPU conv dispatch sends many 1x1 convs to a slow im2col path with extra copies;
    a plain matmul on the NHWC view is both faster and layout-preserving.
    """
    return _nchw(F.linear(_nhwc(x), weight.reshape(weight.shape[0], -1), bias))


# Per-frame stages run on chunks of frames of about this many output pixels on CPU:
# small enough that the intermediates stay in cache and below glibc's mmap threshold (big
# tensors there come back as fresh pages, and page faults cost as much as the convs).
CPU_CHUNK_PIXELS = 1 << 20


# The activations are channels_last by construction (the GEMMs above work on NHWC views), so
# the conv weights should match: oneDNN on CPUs and cuDNN's tensor-core kernels both prefer
# NHWC, and mismatched layouts make every conv convert its input. (MPS keeps its NCHW default.)
CHANNELS_LAST_DEVICES = ("cpu", "cuda")


def frames_per_chunk(pixels_per_frame: int, device: torch.device) -> int:
    """How many frames the per-frame stages take at once (all of them off the CPU)."""
    if device.type != "cpu":
        return 1 << 30
    return max(1, CPU_CHUNK_PIXELS // pixels_per_frame)


def _zero(conv: nn.Conv2d) -> None:
    """Zero a residual branch's last conv: a part grown onto a trained model starts as a no-op,
    so the grown model starts as the trained one."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)


class ResBlock(nn.Module):
    """conv3x3 -> relu -> conv, residual; per frame (no temporal mixing)."""

    def __init__(self, c: int, k2: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, k2, padding=k2 // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x), inplace=True)
        if self.b.kernel_size == (1, 1):
            return x + _pointwise(h, self.b.weight, self.b.bias)
        return x + self.b(h)


class MemBlock(nn.Module):
    """Residual block whose first conv sees [frame, previous frame]: causal temporal mixing.

    ``a`` is a conv over the concatenation [x_t, x_{t-1}] (zeros before the first frame);
    it is evaluated as two convs over x, the second shifted by one frame, which is the same
    sum without materialising the concatenation. ``light`` uses a 1x1 mixing conv (for
    full-frame-rate stages) instead of a 3x3 one.
    """

    def __init__(self, c: int, light: bool = False) -> None:
        super().__init__()
        k = 1 if light else 3
        self.a = nn.Conv2d(2 * c, c, k, padding=k // 2)
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor, t: int, carry: "Carry | None" = None) -> torch.Tensor:
        # x: [B*t, C, H, W]; ``carry``: continue a stream (the frame before this call's first)
        n, c, h, w = x.shape
        wa = self.a.weight  # [C, 2C, k, k]
        if self.a.kernel_size == (1, 1):
            cur, prev = _pointwise(x, wa[:, :c], self.a.bias), _pointwise(x, wa[:, c:], None)
        else:
            cur = F.conv2d(x, wa[:, :c], self.a.bias, padding=self.a.padding)
            prev = F.conv2d(x, wa[:, c:], None, padding=self.a.padding)
        cur5, prev5 = cur.view(n // t, t, c, h, w), prev.view(n // t, t, c, h, w)
        cur5[:, 1:] += prev5[:, :-1]  # frame i also sees frame i-1
        if carry is not None:
            before = carry.take()
            if before is not None:
                cur5[:, 0] += before
            carry.keep(prev5[:, -1].clone())  # what the next call's first frame sees of this one's last
        return x + self.b(F.relu(cur, inplace=True))


class Carry:
    """The causal state one streamed call hands to the next: each memory block's view of the
    last frame it saw (its ``prev`` conv of that frame, [B, C, h, w]), in block order.

    The blocks only look one frame back, so this is all a call needs to continue exactly where
    the previous one stopped: tiles decoded one after another with a carry give the frames of
    one whole-clip call, with no overlap to recompute and no seams to blend. ``Carry()`` starts
    a stream (its first call gets the causal warm-up); ``Carry(previous.kept)`` continues it.
    """

    def __init__(self, given: list[torch.Tensor] | None = None) -> None:
        self.given = given or []
        self.kept: list[torch.Tensor] = []

    @property
    def starts(self) -> bool:
        return not self.given

    def take(self) -> torch.Tensor | None:
        return self.given[len(self.kept)] if self.given else None

    def keep(self, prev: torch.Tensor) -> None:
        self.kept.append(prev)


class TinyEncoder(nn.Module):
    def __init__(self, latent: int, blocks: int = 3) -> None:
        super().__init__()
        self.latent = latent
        self.stem = nn.Conv2d(48, C1, 1)
        self.down = nn.Conv2d(C1, C2, 3, stride=2, padding=1)
        self.mem = MemBlock(C2, light=True)
        self.pool = nn.Conv2d(4 * C2, C2, 1)
        self.blocks = nn.ModuleList([MemBlock(C2) for _ in range(blocks)])
        for blk in self.blocks[3:]:  # blocks beyond v1's three
            _zero(blk.b)
        self.head = nn.Conv2d(C2, 2 * latent, 3, padding=1)
        with torch.no_grad():  # start with unit-scale means and a narrow posterior, so the
            self.head.weight[:latent] *= 30.0  # first quantization steps do not erase them
            self.head.bias[latent:] = -8.0

    def forward(self, x: torch.Tensor, carry: Carry | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, 1+4k, H, W] (or 4k frames continuing a ``carry``) -> (mean, logvar) [B, latent, 1+k (k), H/8, W/8]."""
        b, _, t, h, w = x.shape
        h8, w8 = h // 8, w // 8
        # causal warm-up at the stream start: frame 0 three times in front (the per-frame
        # stages give identical features for identical frames, so it is copied after them)
        lead = 3 if carry is None or carry.starts else 0
        f5 = x.new_empty(b, t + lead, h8, w8, C2)  # [B, 4(k+1), h, w, C2]
        n = frames_per_chunk(h * w, x.device)
        for i in range(b):
            for j in range(0, t, n):
                f5[i, lead + j : lead + j + n] = _nhwc(self._features(x[i, :, j : j + n]))
        f5[:, :lead] = f5[:, lead : lead + 1]
        tp = t + lead
        f = F.relu(self.mem(_nchw(f5.reshape(b * tp, h8, w8, C2)), tp, carry), inplace=True)
        tl = tp // 4
        # fold groups of 4 frames into channels (frame-major): [B*t_lat, 4*C2, h, w]
        g = _nhwc(f).reshape(b * tl, 4, h8, w8, C2).permute(0, 2, 3, 1, 4).reshape(b * tl, h8, w8, 4 * C2)
        f = F.relu(_pointwise(_nchw(g), self.pool.weight, self.pool.bias), inplace=True)
        for blk in self.blocks:
            f = F.relu(blk(f, tl, carry), inplace=True)
        c = self.latent
        f = _nhwc(self.head(f)).reshape(b, tl, h8, w8, 2 * c).permute(0, 4, 1, 2, 3)
        mean, logvar = f[:, :c], f[:, c:].clamp(-30.0, 20.0)
        return mean.contiguous(), logvar.contiguous()

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame stages: pixels [3, n, H, W] -> [n, C2, H/8, W/8] channels_last."""
        # The stem is stored as a 1x1 conv on pixels unshuffled by 4 (input channels: colour, row,
        # column), which is a 4x4 conv of stride 4 on the pixels themselves; run as that, it
        # skips the unshuffle's copy of the frames (half the stem's time on 2 CPU cores).
        w = self.stem.weight.reshape(C1, 3, 4, 4)
        f = F.conv2d(x.transpose(0, 1), w, self.stem.bias, stride=4)  # [n, C1, H/4, W/4]
        f = F.relu(f.contiguous(memory_format=torch.channels_last), inplace=True)
        return F.relu(self.down(f), inplace=True)


def _shuffle2(f: torch.Tensor, conv: nn.Conv2d, c: int) -> torch.Tensor:
    """1x1 ``conv`` to 4c channels + pixel-shuffle x2, as one GEMM and one copy.

    [N, I, h, w] channels_last -> [N, c, 2h, 2w] channels_last. The weight rows are read in
    (dy, dx, channel) order, so the shuffle moves runs of ``c`` contiguous floats instead of
    single elements (same parameters and result as ``pixel_shuffle(conv(f), 2)``).
    """
    n, _, h, w = f.shape
    wt = conv.weight.view(c, 4, -1).transpose(0, 1).reshape(4 * c, -1)
    b = conv.bias.view(c, 4).t().reshape(-1)
    u = F.linear(_nhwc(f), wt, b).view(n, h, w, 2, 2, c).transpose(2, 3)  # [N, h, dy, w, dx, c]
    return _nchw(u.reshape(n, 2 * h, 2 * w, c))


class Refine(nn.Module):
    """Half-resolution detail branch: [N, C1, H/4, W/4] features -> RGB residual
    [N, 12, H/2, W/2] (channels = colour x 2x2 sub-pixels, pixel-shuffle order). Its last
    conv starts at zero, so adding the branch to a trained decoder leaves its output unchanged
    until training moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Conv2d(C1, 4 * C0, 1)
        self.mid = nn.Conv2d(C0, C0, 3, padding=1)
        self.out = nn.Conv2d(C0, 12, 3, padding=1)
        _zero(self.out)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        u = F.relu(_shuffle2(f, self.up, C0), inplace=True)  # [N, C0, H/2, W/2]
        return self.out(F.relu(self.mid(u), inplace=True))


class TinyDecoder(nn.Module):
    def __init__(self, latent: int, refine: bool, blocks8: int) -> None:
        super().__init__()
        self.latent = latent
        self.inp = nn.Conv2d(latent, C2, 3, padding=1)
        self.blocks = nn.ModuleList([MemBlock(C2) for _ in range(3)])
        self.grow = nn.Conv2d(C2, 4 * C2, 1)
        self.mem = MemBlock(C2, light=True)
        self.frame_blocks = nn.ModuleList([ResBlock(C2) for _ in range(blocks8)])
        for blk in self.frame_blocks:
            _zero(blk.b)
        self.up = nn.Conv2d(C2, 4 * C1, 1)
        self.res = ResBlock(C1, k2=1)
        self.out = nn.Conv2d(C1, 48, 1)
        self.refine = Refine() if refine else None

    def forward(self, z: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        """[B, latent, t, h, w] -> [B, 3, 1+4(t-1), 8h, 8w] (4t frames continuing a ``carry``)."""
        b, _, tl, h, w = z.shape
        f = _nchw(z.permute(0, 2, 3, 4, 1).reshape(b * tl, h, w, self.latent))  # [B*t, latent, h, w] channels_last
        f = F.relu(self.inp(f), inplace=True)
        for blk in self.blocks:
            f = F.relu(blk(f, tl, carry), inplace=True)
        # unfold 4 frames out of channels (frame-major): [B*4t, C2, h, w]
        g = F.linear(_nhwc(f), self.grow.weight.flatten(1), self.grow.bias).reshape(b * tl, h, w, 4, C2).permute(0, 3, 1, 2, 4).reshape(b * tl * 4, h, w, C2)
        tp = tl * 4
        f = F.relu(self.mem(F.relu(_nchw(g)), tp, carry), inplace=True)
        # drop the stream start's 3 warm-up frames now: everything below is per frame
        lead = 3 if carry is None or carry.starts else 0
        t = tp - lead
        f = _nhwc(f).reshape(b, tp, h, w, C2)[:, lead:]  # [B, T, h, w, C2]
        y = f.new_empty(b, 3, t, 8 * h, 8 * w)
        n = frames_per_chunk(64 * h * w, z.device)
        # gradients outside training come from the encoder's latent refinement: it keeps one
        # chunk's full-resolution activations at a time and recomputes them in the backward pass
        refining = torch.is_grad_enabled() and not self.training
        for i in range(b):
            for j in range(0, t, n):
                part = _nchw(f[i, j : j + n].reshape(-1, h, w, C2))  # one copy, [n, C2, h, w]
                if refining:
                    y[i, :, j : j + n] = checkpoint(self._new_pixels, part, use_reentrant=False)
                else:
                    self._pixels(part, y[i, :, j : j + n])
        return y

    def _new_pixels(self, f: torch.Tensor) -> torch.Tensor:
        """``_pixels`` into a fresh [3, n, 8h, 8w] tensor."""
        n, _, h, w = f.shape
        y = f.new_empty(3, n, 8 * h, 8 * w)
        self._pixels(f, y)
        return y

    def _pixels(self, f: torch.Tensor, y: torch.Tensor) -> None:
        """Per-frame stages: [n, C2, h, w] features -> RGB written into ``y`` [3, n, 8h, 8w]."""
        n, _, h, w = f.shape
        for blk in self.frame_blocks:
            f = F.relu(blk(f), inplace=True)
        f = F.relu(_shuffle2(f, self.up, C1), inplace=True)  # [n, C1, H/4, W/4]
        f = F.relu(self.res(f), inplace=True)
        # 1x1 conv to 4x4 RGB patches, pixel-shuffled by 4 straight into y
        o = F.linear(_nhwc(f), self.out.weight.flatten(1), self.out.bias).view(n, 2 * h, 2 * w, 3, 4, 4)
        y.view(3, n, 2 * h, 4, 2 * w, 4).copy_(o.permute(3, 0, 1, 4, 2, 5))
        if self.refine is not None:  # add the half-resolution branch's 2x2 sub-pixels in place
            r = _nhwc(self.refine(f)).view(n, 4 * h, 4 * w, 3, 2, 2).permute(3, 0, 1, 4, 2, 5)
            if r.device.type == "cpu" and r.dtype != torch.float32:  # a strided bf16 add is slow on a
                r = r.contiguous()  # CPU: a permuting copy and a plain add take half its time
            y.view(3, n, 4 * h, 2, 4 * w, 2).add_(r)


class TinyVAE(VideoVAE):
    """Embedded default backend: 8x8 spatial x 4 temporal, ``arch.latent`` latent channels."""

    kind = "tiny"
    spatial = 8
    temporal = 4
    # Three memory blocks at the latent rate, then one at the frame rate, each one frame back:
    # a latent frame's pixels depend on the 4 latent frames before it, no further.
    streams = True
    reach = 4
    state_on_grid = True  # every memory block works at 1/8 resolution (``Carry``)
    # tiling_for picks the temporal tile (8 latent frames is only a fallback). 896 px keeps 480p
    # (854x480) in one spatial tile (no seams, no overlap work) while 1080p tiles stay ~1 GB of activations;
    # 64 px overlap covers most of the ~70 px receptive field of the 1/8-resolution stack.
    tiling = Tiling(latent_frames=8, overlap_latents=0, tile_px=896, overlap_px=64)
    tile_budget = 33 * 1920 * 1088  # pixel-frames in one temporal tile: a 33-frame 1080p tile

    def __init__(self, arch: Arch = Arch()) -> None:
        super().__init__()
        self.arch = arch
        self.latent_channels = arch.latent
        self.encoder = TinyEncoder(arch.latent, arch.enc_blocks)
        self.decoder = TinyDecoder(arch.latent, arch.refine, arch.blocks8)
        self._coder = None
        self.metadata: dict[str, str] = {}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,3,1+4k,H,W] in [-1,1] -> (mean, logvar) [B,latent,1+k,H/8,W/8]."""
        _, _, t, h, w = x.shape
        if (t - 1) % 4 or h % 8 or w % 8:
            raise ValueError(f"tiny VAE needs T=1+4k and H, W multiples of 8, got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B,latent,1+k,h,w] -> [B,3,1+4k,8h,8w]."""
        return self.decoder(z)

    def encode_step(self, x: torch.Tensor, state: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        start = state is None
        t, h, w = x.shape[2:]
        if (t - start) % 4 or t < (1 if start else 4) or h % 8 or w % 8:
            raise ValueError(f"a tiny encode stream takes {'1+4k' if start else '4k'} frames per call and H, W "
                             f"multiples of 8, got {tuple(x.shape)}")
        carry = Carry(state)
        return self.encoder(x, carry)[0], carry.kept

    def decode_step(self, z: torch.Tensor, state: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        carry = Carry(state)  # a new one per call: a checkpointed call may run twice
        return self.decoder(z, carry), carry.kept

    @property
    def entropy_coder(self):
        return self._coder

    def tiling_for(self, height: int, width: int) -> Tiling:
        """The model streams, so a temporal tile's length changes neither the latents nor the
        frames, only speed and memory. On a CPU 2 latent frames (8 pixel frames) are as fast
        as 12 at 480p in half the memory (0.6 GB decode) and 11 % faster than 4 on a 3x 480p
        picture in 2.2 GB instead of 3.7 (small tensors stay in cache and below glibc's mmap
        threshold). A GPU wants big batches: up to 12 latent frames, no tile holding more
        pixels than a 33-frame 1080p one."""
        if self.encoder.stem.weight.device.type == "cpu":
            return replace(self.tiling, latent_frames=2)
        frames = self.tile_budget // max(1, height * width)
        return replace(self.tiling, latent_frames=min(12, max(4, (frames - 1) // 4)))


def load(path: str | Path | None, device: torch.device, dtype: torch.dtype) -> TinyVAE:
    """Load tiny weights (``None`` = the shipped file) with their entropy-coder tables."""
    from vaecodec.entropy import EntropyCoder

    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise ModelError(f"tiny model weights not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ModelError(f"cannot read tiny model weights {path}: {e}") from e
    try:
        model = TinyVAE(Arch.from_meta(meta))
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: unknown tiny architecture {meta.get('arch')!r}") from e
    state = {k[len("model."):]: v.float() for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{path} is not a vaecodec tiny model: {str(e).splitlines()[0]}") from e
    coder_t = {k[len("entropy."):]: v for k, v in tensors.items() if k.startswith("entropy.")}
    if coder_t:
        model._coder = EntropyCoder.from_tensors(coder_t)
    model.metadata = meta
    model.model_id = meta.get("model_id", "vaecodec-tiny-unknown")
    model.weights_sha256 = sha256_file(path)
    model = model.to(device=device, dtype=dtype).eval()
    if device.type in CHANNELS_LAST_DEVICES:
        model = model.to(memory_format=torch.channels_last)
    return model


def model_card(meta: dict[str, str]) -> dict:
    """The JSON model card stored in the weights metadata, parsed."""
    return json.loads(meta.get("card", "{}"))

"""vaecodec: video compression with video VAEs.

    import vaecodec
    vaecodec.encode("in.mp4", "out.vlat")            # embedded model
    with vaecodec.open("out.vlat") as f:
        z = f.latents(0, 17)                         # torch [C, t, h, w], only the chunks needed
        frames = f.frames_tensor(0, 17)              # uint8 [n, H, W, 3]
    vaecodec.decode("out.vlat", "back.mp4")
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .errors import FormatError, InputError, ModelError, UsageError, VaecodecError  # noqa: E402

if TYPE_CHECKING:
    from .codec import Codec, DecodeResult, EncodeResult, LatentFile
    from .refine import RefineSettings


def __getattr__(name: str):
    """Import the pipeline (torch, PyAV) only when it is used, so light imports stay light."""
    if name in ("Codec", "DecodeResult", "EncodeResult", "LatentFile"):
        from . import codec

        return getattr(codec, name)
    if name == "RefineSettings":
        from .refine import RefineSettings

        return RefineSettings
    raise AttributeError(f"module 'vaecodec' has no attribute {name!r}")


def encode(src, dst, **kwargs) -> EncodeResult:
    """Encode ``src`` to ``dst`` with a one-off Codec; kwargs split between Codec and Codec.encode."""
    run = {k: kwargs.pop(k) for k in ("overwrite", "progress", "frames", "start") if k in kwargs}
    from .codec import Codec

    return Codec(**kwargs).encode(src, dst, **run)


def decode(src, dst, **kwargs) -> DecodeResult:
    """Decode ``src`` to the video ``dst``; kwargs split between Codec and Codec.decode."""
    run = {k: kwargs.pop(k) for k in ("overwrite", "progress", "codec", "crf", "preset", "conceal", "start", "frames") if k in kwargs}
    from .codec import Codec

    return Codec(**kwargs).decode(src, dst, **run)


def open(path, **codec_kwargs) -> LatentFile:  # noqa: A001 - mirrors the built-in on purpose
    """Open a .vlat for reading latents and frames; codec_kwargs pick device/dtype/model paths."""
    from .codec import Codec, LatentFile

    return LatentFile(path, Codec(**codec_kwargs))


__all__ = [
    "Codec", "DecodeResult", "EncodeResult", "FormatError", "InputError", "LatentFile", "ModelError",
    "RefineSettings", "UsageError", "VaecodecError", "__version__", "decode", "encode", "open",
]

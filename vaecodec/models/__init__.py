"""Model registry: turns ``--model`` specs into loaded ``VideoVAE`` backends.

Specs:
  ``tiny``          the embedded default (weights ship inside the package)
  ``KIND:PATH``     weights the user brings, e.g. ``ltx2:/models/ltx-2.safetensors``
  ``NAME``          ``NAME.safetensors`` or ``NAME/`` in the model directory (``--model-dir`` or
                    ``$VAECODEC_MODELS``); NAME is ``KIND`` or starts with ``KIND-``
                    (``ltx2-19b.safetensors`` is an ``ltx2`` model), and the entry has the form
                    that kind's weights take (a file, or a folder for ``ltxv``).
The name, not the content, says the kind: decoding finds a file's weights by that name, and a
safetensors file of bare ``encoder.*`` tensors could be an LTX-2 VAE or LTX-Video weights.
Backends are imported only when used, so the CLI starts fast and a broken optional backend
cannot break the others.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .base import Tiling, VideoVAE, sha256_file

__all__ = [
    "DEFAULT_MODEL", "KINDS", "ModelRef", "Tiling", "VideoVAE", "check_weights", "list_models", "load_model",
    "model_dir", "ref_for_file", "resolve", "sha256_file",
]

DEFAULT_MODEL = "tiny"


@dataclass(frozen=True)
class Backend:
    module: str
    needs: str
    embedded: bool = False
    folder: bool = False  # weights are a folder (else one .safetensors file)
    entropy: bool = False  # its weights may carry an entropy coder (else: uniform --bits only)


KINDS: dict[str, Backend] = {
    "tiny": Backend("vaecodec.models.tiny", "nothing: weights ship with vaecodec", embedded=True, entropy=True),
    "ltx2": Backend("vaecodec.models.ltx2", "an LTX-2 checkpoint (.safetensors, full or VAE-only)"),
    "ltxv": Backend("vaecodec.models.ltxv", "an LTX-Video 0.9 VAE folder (diffusers layout: config.json + safetensors)",
                    folder=True),
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved spec: which backend, and which weights (None = embedded)."""

    kind: str
    path: Path | None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def model_dir(explicit: str | Path | None = None) -> Path | None:
    d = explicit or os.environ.get("VAECODEC_MODELS")
    return Path(d).expanduser() if d else None


def _existing_dir(explicit: str | Path | None) -> Path | None:
    """The model directory, or None without one; a ModelError naming where a missing one came
    from, so that a typo does not read as "no such model here"."""
    d = model_dir(explicit)
    if d is not None and not d.is_dir():
        source = "--model-dir" if explicit else "$VAECODEC_MODELS"
        raise ModelError(f"model directory {d} ({source}) {'is not a folder' if d.exists() else 'does not exist'}")
    return d


def _entries(d: Path) -> list[Path]:
    """The directory's entries but dotfiles (.DS_Store, unfinished downloads), in name order."""
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def _classify(entry: Path) -> tuple[str | None, str]:
    """(kind, "") for a model-directory entry that names its kind as a backend takes it, else
    (None, why vaecodec cannot use it)."""
    is_weights = entry.is_file() and entry.suffix == ".safetensors"
    if not is_weights and not entry.is_dir():
        return None, "neither a .safetensors file nor a folder"
    name = entry.stem if is_weights else entry.name
    kind = name.split("-")[0]
    if kind not in KINDS:
        example = "ltx2-" + entry.name if is_weights else f"ltxv-{name}/"
        return None, f"the name must be KIND or start with KIND- ({', '.join(KINDS)}) to say which model it is, e.g. {example}"
    if KINDS[kind].folder != entry.is_dir():
        return None, f"{kind} weights are {'a folder' if KINDS[kind].folder else 'one .safetensors file'}"
    return kind, ""


def _known(kind: str) -> Backend:
    if kind not in KINDS:
        raise ModelError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]


def resolve(spec: str, directory: str | Path | None = None) -> ModelRef:
    """Parse a ``--model`` spec; raises ModelError naming what is missing."""
    kind, sep, path = spec.partition(":")
    if sep:
        _known(kind)
        p = Path(path).expanduser()
        if not p.exists():
            raise ModelError(f"model weights not found: {p}")
        return ModelRef(kind, p)
    if spec in KINDS and KINDS[spec].embedded:
        return ModelRef(spec, None)
    d = _existing_dir(directory)
    if d is not None:
        for cand in (d / f"{spec}.safetensors", d / spec):
            if cand.exists():
                kind, why = _classify(cand)
                if kind is None:
                    raise ModelError(f"cannot use {cand} as a model: {why} (or pass --model KIND:{cand})")
                return ModelRef(kind, cand)
    where = f" in {d}" if d else " (no model directory: set --model-dir or $VAECODEC_MODELS)"
    if spec in KINDS:
        raise ModelError(f"model {spec!r} needs {KINDS[spec].needs}; pass --model {spec}:PATH or put it{where}")
    raise ModelError(f"unknown model {spec!r}: no {spec}.safetensors or {spec}/{where}")


def load_model(ref: ModelRef | str, device: torch.device, dtype: torch.dtype, directory=None) -> VideoVAE:
    """Import the backend and load its weights onto ``device`` in ``dtype``, frozen: the codec
    never trains them, and latent refinement wants gradients for the latents only."""
    if isinstance(ref, str):
        ref = resolve(ref, directory)
    module = importlib.import_module(_known(ref.kind).module)
    return module.load(ref.path, device, dtype).requires_grad_(False)


def ref_for_file(model: dict, model_path: str | Path | None, directory: str | Path | None) -> ModelRef:
    """Which weights decode a .vlat whose header names ``model`` (kind, id, sha256)."""
    kind = model.get("kind", "")
    _known(kind)
    if model_path is not None:
        return resolve(f"{kind}:{model_path}")
    if KINDS[kind].embedded:
        return ModelRef(kind, None)
    d = _existing_dir(directory)
    if d is not None:
        for cand in _entries(d):
            if _classify(cand)[0] == kind:
                return ModelRef(kind, cand)
    raise ModelError(
        f"this file was encoded with {model.get('id') or kind} (weights sha256 {model.get('sha256', '?')[:12]}…); "
        f"pass --model-path with those weights or put them in the model directory"
    )


def list_models(directory: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """What ``vaecodec models`` shows: a row per backend (what it needs, what the model directory
    holds for it), and the directory's entries that no backend can use, each with the reason."""
    d = _existing_dir(directory)
    found = [(p, *_classify(p)) for p in (_entries(d) if d is not None else [])]
    rows = [
        {"kind": kind, "needs": b.needs, "embedded": b.embedded, "found": [str(p) for p, k, _ in found if k == kind]}
        for kind, b in KINDS.items()
    ]
    unusable = [{"path": str(p), "reason": why} for p, k, why in found if k is None]
    return rows, unusable


def check_weights(model: VideoVAE, expected: dict) -> None:
    """Refuse to decode with weights other than the ones that encoded the file."""
    want = expected.get("sha256")
    if want and model.weights_sha256 and want != model.weights_sha256:
        raise ModelError(
            f"weights mismatch: the file needs {expected.get('id')} (sha256 {want[:12]}…), "
            f"loaded {model.model_id} (sha256 {model.weights_sha256[:12]}…); pass --model-path with those weights"
        )


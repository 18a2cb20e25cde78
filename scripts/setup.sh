#!/usr/bin/env bash
# One-step setup on a fresh machine: a virtualenv in .venv with vaecodec (editable) and
# everything its tests need. Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip_q() { python -m pip install -q --disable-pip-version-check "$@"; }
# torch first, pinned to the CPU build this machine keeps on disk; a bare "torch" could pull a
# multi-GB CUDA build. Any torch in pyproject's range that is already installed is kept.
python -c "import torch" 2>/dev/null || pip_q "torch==2.13.0"
pip_q -e ".[test,plot]"
# Reference implementations for the LTX parity tests (test-only, never runtime dependencies).
# diffusers comes with the test extra; ltx-core's full dependency set conflicts through
# torchaudio, so it is installed without its dependencies (it needs only einops, also in the extra).
python -c "import ltx_core" 2>/dev/null || pip_q --no-deps "ltx-core==1.0.0"

#!/usr/bin/env bash
# Fetch the offline training photos for the embedded model into data/ (git-ignored).
# Sources: Debian wallpaper packages (photographs) and scikit-image's bundled photos.
# Licences are recorded in docs/DATA_LICENSES.md. Idempotent: re-running skips what exists.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${1:-$ROOT/data}"
PKGS=(lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds plasma-workspace-wallpapers)
mkdir -p "$DATA/debs" "$DATA/extract"
if ! apt-cache show "${PKGS[0]}" >/dev/null 2>&1; then
  apt-get update -qq
fi
cd "$DATA/debs"
for p in "${PKGS[@]}"; do
  if ! ls "${p}"_*.deb >/dev/null 2>&1; then
    apt-get download "$p"
  fi
  if [ ! -d "$DATA/extract/$p" ]; then
    dpkg -x "${p}"_*.deb "$DATA/extract/$p"
  fi
done
# Record exact package versions for the licence/provenance record.
for f in *.deb; do dpkg-deb -f "$f" Package Version; done > "$DATA/packages.txt"
# Downscale + select photos into data/photos (Python does the filtering; see vaecodec/train/data.py).
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"  # the project's environment (scripts/setup.sh), else the PATH's
[ -x "$PY" ] || PY=python3
"$PY" -m vaecodec.train.data prepare --data "$DATA"

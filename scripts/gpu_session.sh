#!/usr/bin/env bash
# The prepared commands for a session lent a GPU, so that its few device minutes go to measuring
# and training rather than to setting up (docs/MODEL.md, "A leased GPU").
#
# Default (train):
#   1. installs the carried wheels (.whl/, made by `scripts/gpu_session.sh --prepare` here);
#   2. measures the model and the entropy coder at 480p in bf16 and fp16, and entropy decoding
#      on 1, 4 and 8 worker processes (speed.txt; SPEED=0 skips it);
#   3. trains from the shipped weights for TRAIN_SECONDS with clips made on the GPU, copying
#      the run's checkpoints and logs to $OUT every 20 s, so a cut-off call still returns them.
# `pipeline`: whole-file encode and decode of a 10 s 480p clip (benchmarks/gpu_pipeline.py,
#   pipeline.txt): the end-to-end decode fps, and the encode with --refine 20. Needs PyAV, whose wheel (35 MB) does not fit
#   the 64 MiB carry beside the photos, hence its own call (on the warm machine: no start-up).
#
# Here, once:   bash scripts/gpu_session.sh --prepare   (wheels for the GPU machine's Python, the clip)
# There:        run(command="bash scripts/gpu_session.sh", carry=[".whl", "data/photos"], timeout_s=590)
#               run(command="bash scripts/gpu_session.sh pipeline", carry=[".whl", ".whl-av", "data/gpu"], timeout_s=180)
#   v8's session (15 min of device time): SPEED=0 TRAIN_SECONDS=530 for the first call (562 s of command,
#   595 s of device time with the start), then at once on the warm machine the pipeline call with
#   PIPELINE_EXTRA="--dtypes bf16 --refine 0 --loop 6 --no-mp4 --workers 8 12 0" (59 s; a 60 s clip's
#   decode throughput: a 10 s clip had two chunks (one since chunks are 64 latent frames), its figure is latency), then give_back.
#   2026-11-27's session ran TRAIN_EXTRA="--blocks8 3" (no better than more training of v8, not
#   shipped) and then the pipeline with "--qualities 5 8", which ran out of its 240 s in quality 8's
#   encode (the camera stage on the host, since halved). Next session, pipeline first, one quality
#   per call on the warm machine:
#     PIPELINE_EXTRA="--dtypes bf16 --refine 0 --loop 6 --no-mp4 --workers 8 12 0 --qualities 5"  (timeout_s 200)
#     PIPELINE_EXTRA="--dtypes bf16 --refine 0 --loop 2 --no-mp4 --workers 12 --qualities 8"       (timeout_s 300)
#   (the first checks the one-pass cut-out and the streaming tiles against the 856-895 fps of 2026-11-27; since the ladder
#   went to 3.5x, quality 8 codes this busy clip at 3x, 2.25x the pixels of the 2x it had: use
#   --loop 2 there, or `--qualities 7` for 2.5x), then train with what is left, e.g.
#   TRAIN_EXTRA="--flicker 1" (docs/MODEL.md: halved the boundary flicker on the CPU).
# Dry run here: OUT=/tmp/out DEVICE=cpu SPEED_DTYPES=fp32 SPEED_FRAMES=9 WORKER_COUNTS=1 TRAIN_SECONDS=60 PY=.venv/bin/python \
#   TRAIN_EXTRA="--batch 1 --size 64 --frames 9 --val-every 10 --ckpt-every 10 --val-clips 1" bash scripts/gpu_session.sh
#               OUT=/tmp/out DEVICE=cpu PIPELINE_EXTRA="--dtypes fp32 --workers 0 2 --refine 1" PY=.venv/bin/python \
#   bash scripts/gpu_session.sh pipeline
# Afterwards:   copy the returned files to runs/gpu and `python -m vaecodec.train export --run runs/gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."

wheels() {  # DIR PACKAGE...: cp312 manylinux wheels for the GPU machine's Python
    local dir=$1; shift
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" "$@"
}

if [ "${1:-}" = "--prepare" ]; then  # the GPU machine has torch, numpy, safetensors, typer, rich
    [ -d data/photos ] || bash scripts/fetch_training_data.sh  # the photos: carried, and the clip's source
    wheels .whl constriction==0.5.0 zstandard==0.25.0
    wheels .whl-av "av==$(.venv/bin/python -c 'import av; print(av.__version__)')"
    mkdir -p data/gpu  # the 10 s pan over a held-out photo that docs/BENCHMARKS.md times on the H100
    .venv/bin/python -c "
import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path
from run_benchmarks import load_photo, make_clip
make_clip(load_photo('lomiri:life_by_Aitzol_Berasategi', Path('data')), Path('data/gpu/l480_10s.mp4'), 854, 480, 10, 25)"
    ls -l .whl .whl-av data/gpu
    exit 0
fi

OUT=${OUT:?set OUT to the folder whose files come back}
DEVICE=${DEVICE:-cuda}
TRAIN_SECONDS=${TRAIN_SECONDS:-330}
SPEED_FRAMES=${SPEED_FRAMES:-45}
SPEED_DTYPES=${SPEED_DTYPES:-bf16 fp16}
WORKER_COUNTS=${WORKER_COUNTS:-1 4 8}
RUN=${RUN:-/tmp/gpurun}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null && [ "$DEVICE" = cuda ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl $(compgen -G ".whl-av/*.whl" || true)
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi

if [ "${1:-}" = pipeline ]; then
    $PY benchmarks/gpu_pipeline.py data/gpu/l480_10s.mp4 --device "$DEVICE" ${PIPELINE_EXTRA:-} > "$OUT/pipeline.txt" 2>&1 \
        || echo "pipeline measurement failed (see pipeline.txt)"
    cat "$OUT/pipeline.txt"
    exit 0
fi

[ "${SPEED:-1}" = 0 ] || {
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    $PY -c "import torch; print('torch', torch.__version__)"
    for dtype in $SPEED_DTYPES; do
        $PY -m vaecodec.train speed --device "$DEVICE" --dtype "$dtype" --frames "$SPEED_FRAMES" --repeats 3 --threads 8
    done
    $PY -m vaecodec.train speed --device "$DEVICE" --dtype "${SPEED_DTYPES%% *}" --frames "$SPEED_FRAMES" --repeats 1 --threads 8 --profile
    $PY benchmarks/entropy_threads.py --device "$DEVICE" --threads 1 --processes $WORKER_COUNTS
} > "$OUT/speed.txt" 2>&1 || echo "speed measurement failed (see speed.txt)"

copy_run() {
    for f in last.safetensors best.safetensors state.json log.txt val.jsonl; do
        [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/" || true
    done
}
train() {  # EXTRA...: one training process in its own session, its files copied out every 20 s
    setsid $PY -m vaecodec.train train --run "$RUN" --device "$DEVICE" \
        --init vaecodec/models/weights/tiny-v8.safetensors --refine --blocks8 2 \
        --batch 16 --size 192 --frames 17 --lr 2e-4 --workers 0 --time-budget "$TRAIN_SECONDS" \
        --steps 1000000 --val-every 500 --ckpt-every 250 --log-every 50 --threads 2 ${TRAIN_EXTRA:-} "$@" \
        >> "$OUT/train.txt" 2>&1 &
    local trainer=$!
    while kill -0 "$trainer" 2>/dev/null; do
        sleep 20
        copy_run
    done
    wait "$trainer"
}
# the clip prefetch thread (CUDA stream of its own) is new since the last GPU run: if training
# fails, go on from its last checkpoint with the clips made in line, as the v5 run did
train || { echo "training exited with an error (see train.txt); retrying with --no-prefetch"; train --no-prefetch; } \
    || echo "training exited with an error again (see train.txt)"
copy_run
ls -l "$OUT"

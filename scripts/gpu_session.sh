#!/usr/bin/env bash
# The prepared commands for a session lent a GPU, so that its few device minutes go to measuring
# and training rather than to setting up (docs/MODEL.md, "A leased GPU").
#
# Default (train):
#   1. installs the carried wheels (.whl/, made by `scripts/gpu_session.sh --prepare` here);
#   2. measures the model and the entropy coder at 480p in bf16 and fp16, and entropy decoding
#      on 1, 4 and 8 worker processes (speed.txt; SPEED=0 skips it);
#   3. trains from the shipped weights for TRAIN_SECONDS with clips made on the GPU, one run per
#      entry of VARIANTS side by side (default one, "run:"), packing each run's best checkpoint,
#      state and logs into $OUT/NAME.tar every 20 s, so a cut-off call still returns them.
# `pipeline`: whole-file encode and decode of a 10 s 480p clip (benchmarks/gpu_pipeline.py,
#   pipeline.txt): the end-to-end decode fps, and the encode with --refine 20. Needs PyAV, whose
#   wheel (35 MB) does not fit the 64 MiB carry beside the photos, hence its own call.
#
# Here, once:   bash scripts/gpu_session.sh --prepare   (wheels for the GPU machine's Python, the clip)
# There (15 min of device time, start-up included; the machine stays warm 30 s after a call):
#   1. run(command='PIPELINE_EXTRA="--dtypes bf16 --refine 0 --loop 6 --no-mp4 --workers 8 12 0 --qualities 5"
#          bash scripts/gpu_session.sh pipeline', carry=[".whl", ".whl-av", "data/gpu"], timeout_s=200)
#      94 s of command on 2026-11-27 (15:29 UTC), 128 s of device time with the start;
#   2. at once, on the warm machine: run(command='SPEED=0 TRAIN_SECONDS=S VARIANTS="a:;b:--flag x"
#          bash scripts/gpu_session.sh', carry=[".whl", "data/photos"], timeout_s=600), with S at most
#      about 560 (a call runs 600 s at most, and the runs need ~30 s to start and to finish; the
#      2026-11-27 call set 640, was cut at 600 s, and a third call fetched the finished runs);
#   3. give_back.
#   Two runs side by side took 147-151 ms a step each, as one run alone did (160 ms in v8's run):
#   a step of this model leaves most of an H200 idle, so a comparison costs no steps.
#   2026-11-27 17:27 UTC: the pipeline at quality 8 (124 s of command; busy pan: 96 fps decode,
#   6 fps encode), then VARIANTS="plain:;b32:--batch 32;b48:--batch 48" with TRAIN_SECONDS=530
#   (564 s of command): three runs slow each other (190/340/440 ms a step) and none beat v9.
#   2026-11-28 01:44 UTC: SPEED=0 TRAIN_SECONDS=515 VARIANTS="gfx:--graphics 0.2 --ema 0.998;
#   gfxdec:--graphics 0.2 --ema 0.998 --freeze-encoder" (544 s of command, 588 s of device time):
#   v10 is gfxdec's decoder blended half with v9's (export --blend-with; docs/MODEL.md, "Where it
#   stands"). Next session, the same call from v10 with the graphics pushed further, e.g.
#   VARIANTS="dec:--graphics 0.3 --ema 0.998 --freeze-encoder;rate:--graphics 0.2 --ema 0.998 --lam 0.015"
#   (the whole-model run spent 2-6 % more bits on the photos at --lam 0.01), then ae_ceiling.py
#   and scale.py on the photo pans and testsrc2 before exporting, the blend share swept.
#   The camera stage that bounded the GPU encode is a fifth to a third faster on the host since
#   the twentieth session (2-core figures, docs/BENCHMARKS.md): the pipeline call re-measures it.
# Dry run here: OUT=/tmp/out DEVICE=cpu SPEED_DTYPES=fp32 SPEED_FRAMES=9 WORKER_COUNTS=1 TRAIN_SECONDS=60 PY=.venv/bin/python \
#   VARIANTS="a:;b:--flicker 1;c:--batch 2" TRAIN_EXTRA="--batch 1 --size 64 --frames 9 --val-every 10 --ckpt-every 10 --val-clips 1" \
#   bash scripts/gpu_session.sh
#               OUT=/tmp/out DEVICE=cpu PIPELINE_EXTRA="--dtypes fp32 --workers 0 2 --refine 1" PY=.venv/bin/python \
#   bash scripts/gpu_session.sh pipeline
# Afterwards:   `mkdir -p runs/NAME && tar -xf NAME.tar -C runs/NAME` here, then
#               `python -m vaecodec.train export --run runs/NAME ...`.
# The history of each lease is in docs/MODEL.md ("A leased GPU").
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

# VARIANTS: runs trained side by side on the one GPU (a step of this small model leaves most of an
# H200 idle), ";"-separated "name:extra flags", each from the shipped weights in $RUN/name, its
# files (best checkpoint, state, log, stdout) packed into $OUT/name.tar every 20 s, with its last
# checkpoint beside it as name.last.safetensors, so a cut-off call still returns them (two files per
# run: a call returns 8 files at most).
VARIANTS=${VARIANTS:-"run:"}
copy_run() {  # NAME
    local files=()
    for f in best.safetensors state.json log.txt train.txt; do
        [ -f "$RUN/$1/$f" ] && files+=("$f")
    done
    [ ${#files[@]} = 0 ] || { tar -cf "$OUT/.$1.tar" -C "$RUN/$1" "${files[@]}" && mv "$OUT/.$1.tar" "$OUT/$1.tar"; }
    # the last checkpoint on its own (a file comes back only under 16 MiB): validation scores the
    # photos, so with --graphics the best one can be an early one
    [ ! -f "$RUN/$1/last.safetensors" ] || { cp "$RUN/$1/last.safetensors" "$OUT/.$1.last" && mv "$OUT/.$1.last" "$OUT/$1.last.safetensors"; }
}
train() {  # NAME EXTRA...: one training process in its own session
    local name=$1; shift
    mkdir -p "$RUN/$name"
    # shellcheck disable=SC2086
    setsid $PY -m vaecodec.train train --run "$RUN/$name" --device "$DEVICE" \
        --init vaecodec/models/weights/tiny-v10.safetensors --refine --blocks8 2 \
        --batch 16 --size 192 --frames 17 --lr 2e-4 --workers 0 --time-budget "$TRAIN_SECONDS" \
        --steps 1000000 --val-every 500 --ckpt-every 250 --log-every 50 --threads 2 ${TRAIN_EXTRA:-} "$@" \
        >> "$RUN/$name/train.txt" 2>&1
}
# the clip prefetch thread (CUDA stream of its own) is new since v5's run: if training fails, go on
# from its last checkpoint with the clips made in line, as the v5 run did
variant() {  # NAME EXTRA...
    train "$@" || { echo "$1 exited with an error (see train.txt in $1.tar); retrying with --no-prefetch"; train "$@" --no-prefetch; } \
        || echo "$1 exited with an error again (see train.txt in $1.tar)"
}
names=()
IFS=';' read -ra specs <<< "$VARIANTS"
for spec in "${specs[@]}"; do
    name=${spec%%:*}
    names+=("$name")
    # shellcheck disable=SC2086
    variant "$name" ${spec#*:} &
done
while [ -n "$(jobs -rp)" ]; do
    sleep 20
    for name in "${names[@]}"; do copy_run "$name"; done
done
wait
for name in "${names[@]}"; do copy_run "$name"; done
ls -lR "$OUT"

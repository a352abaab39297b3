#!/usr/bin/env bash
# The GPU machine's one prepared run (docs/transformer.md, "GPU run"). That machine has JAX and
# PyTorch but no TensorFlow and no network, and takes 64 MiB of files, so it gets:
#   .whl/      keras, namex, optree wheels for its Python (pip download, see the doc)
#   .gpucheck/ encoder/ (bench/gpu.py encoder: the checkpoint in float16, 45 MB) and data/
#              (the two CSVs)
# and does, with the project's own CLI on Keras's JAX backend:
#   1. fintweet train --models transformer (GPU visible: mixed bfloat16 automatically)
#   2. bench/gpu.py prepare + run: serving rate at batch 1024 and agreement
#   3. packs the float16 model copy into 15 MiB parts (the device returns files of 16 MiB at
#      most) so the CPU side can check and use it: cat parts | tar -x, then bench/gpu.py
#      run --n 0 (TensorFlow's agreement) and bench/gpu.py adopt (a models-folder artifact).
# With SEEDS="0 1 2", step 1 trains one model per seed and writes each one's holdout
# probabilities to OUT/holdout-<seed>.npz (bench/gpu.py holdout; bench/seed_average.py compares
# them back here); steps 2 and 3 use the first seed's model that trained (SEEDS is a list of
# numbers; a --seed in TRAIN_ARGS would override the loop's). JAX's persistent compilation cache
# (JAX_COMPILATION_CACHE_DIR, default under WORK) lets every run after the first skip most of
# the ~2 minutes of XLA compiling: 223 s for the first 8-epoch training, 60-70 s for the next.
# Settings from the environment: EPOCHS (8), TRAIN_S (time limit of each training, 330), N
# (100000), SEEDS (0), MAX_ROWS (none; --max-rows for train and holdout), TRAIN_ARGS (extra
# train options), OUT (where results go), DATA (.gpucheck/data), ENCODER
# (.gpucheck/encoder), PYTHON (python3), SKIP_WHEELS (set: Keras is already importable),
# KERAS_BACKEND (tried first; then jax, then torch), PRECISIONS (serving checks: "auto
# float32"; empty skips them), PACK (1; 0 returns only the logs, for a second training in the
# same call: the device returns 64 MiB at most, one packed model is ~45). A dry run on a CPU
# (tests/test_transformer.py runs one on TensorFlow): SKIP_WHEELS=1 EPOCHS=1 N=300 MAX_ROWS=300
# TRAIN_ARGS="--encoder-layers 1".
set -uo pipefail
out=${OUT:-out/gpu}
mkdir -p "$out"
work=${WORK:-/tmp/fintweet-gpu}
rm -rf "$work"
mkdir -p "$work"
py=${PYTHON:-python3}
if [ -z "${SKIP_WHEELS:-}" ]; then  # for the interpreter that runs them: the wheels are cp312
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$work/site" .whl/*.whl || exit 1
fi
export PYTHONPATH="$work/site:$PWD" PYTHONUNBUFFERED=1
data=${DATA:-.gpucheck/data}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# Keras on the machine's JAX was never run before this call: one fit step of a tiny model
# first, and PyTorch's backend instead if that fails.
smoke='import keras, numpy as np
m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
m.compile("adamw", "sparse_categorical_crossentropy")
m.fit(np.ones((8, 4)), np.zeros(8), verbose=0)
print("keras", keras.__version__, keras.backend.backend(), keras.distribution.list_devices())'
# A preset KERAS_BACKEND is tried first, then jax and torch. The choice is kept apart from
# KERAS_BACKEND: testing that variable after the loop passed whenever it was preset, even when
# its smoke test had failed, and training then ran on the broken backend.
chosen=""
tried=""
for backend in ${KERAS_BACKEND:-} jax torch; do
    case " $tried " in *" $backend "*) continue ;; esac
    tried="$tried $backend"
    if KERAS_BACKEND=$backend "$py" -c "$smoke"; then chosen=$backend; break; fi
    echo "Keras on $backend fails its smoke test"
done
[ -n "$chosen" ] || { echo "no Keras backend runs here (tried$tried): stop"; exit 1; }
export KERAS_BACKEND=$chosen

export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$work/jax-cache}
seeds=${SEEDS:-0}
rows=()  # expanded as ${rows[@]+"${rows[@]}"}: an empty array is unset to bash < 4.4 under set -u
[ -n "${MAX_ROWS:-}" ] && rows=(--max-rows "$MAX_ROWS")
model=""
: > "$out/train.log"
for seed in $seeds; do
    started=$(date +%s)
    echo "== seed $seed" | tee -a "$out/train.log"
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
    timeout "${TRAIN_S:-330}" "$py" -m fintweet.cli.main train --models transformer \
        --epochs "${EPOCHS:-8}" --no-refit --seed "$seed" --data-dir "$data" \
        ${rows[@]+"${rows[@]}"} --encoder "${ENCODER:-.gpucheck/encoder}" \
        --out "$work/models-$seed" ${TRAIN_ARGS:-} \
        2>&1 | tr '\r' '\n' | grep -v -E '[0-9]+/[0-9]+ \[' | tee -a "$out/train.log"
    echo "train exit ${PIPESTATUS[0]}, wall $(( $(date +%s) - started )) s" | tee -a "$out/train.log"
    [ -e "$work/models-$seed/transformer/current" ] || continue
    [ -n "$model" ] || model="$work/models-$seed/transformer/current"  # the first that trained
    "$py" bench/gpu.py holdout --model "$work/models-$seed/transformer/current" \
        --data-dir "$data" ${rows[@]+"${rows[@]}"} --out "$out/holdout-$seed.npz"
done

[ -n "$model" ] || { echo "no trained model: stop"; exit 1; }
precisions=${PRECISIONS-auto float32}
[ -z "$precisions" ] && [ "${PACK:-1}" = 0 ] && exit 0
"$py" bench/gpu.py prepare --model "$model" --data "$data/topic_train.csv" --holdout \
    --out "$work/check" || exit 1
# for bench/gpu.py adopt: the manifest, the figures, and the rows it trained on
cp "$model"/metrics.json "$model"/artifact.json "$model"/trained_rows.npz "$work/check/"
for precision in $precisions; do
    "$py" bench/gpu.py run --check "$work/check" --n "${N:-100000}" --batch 1024 \
        --precision "$precision" | tee -a "$out/rate.jsonl"
done
[ "${PACK:-1}" = 0 ] && exit 0
tar -C "$work" -cf - check | split -b 15M - "$out/model.tar.part-"
ls -l "$out"

#!/usr/bin/env bash
# The first GPU run of crpbot, prepared: every step under its own timeout, every number kept.
#
# What it carries (the device tool's carry: [".gpu_carry"]; 64 MiB at most, ../shared does not
# travel), written by `bash scripts/gpu_run.sh --prepare` here (needs `make bundle
# BUNDLE_PYTHON=3.12` first):
#   .gpu_carry/crpbot-offline-py3.12-x86_64.tar.xz (+ .sha256)  the offline bundle, ~38 MiB
#   .gpu_carry/BTC-USD_1m.parquet                                 the full BTC bars, ~12.5 MiB
#   .gpu_carry/wheels/                                            pytest 9.2, pytest-timeout 2.4
#                                                                 and their deps, ~2 MiB (py3)
# On the device (the image has CUDA torch and Python 3.12):
#   OUT=/somewhere bash scripts/gpu_run.sh                 # every step, in order
#   STEPS="06 07" OUT=/somewhere bash scripts/gpu_run.sh   # a subset, e.g. a rerun
# Each step's log is $OUT/NN-step.log; "NN-step rc=.. seconds=.. expected=.." is appended to
# $OUT/summary.txt as each step ends, so a run cut off still returns every finished number. A
# step past its timeout is killed and `ray stop --force` cleans up after it. Ray's non-empty error
# logs are copied to $OUT/ray-logs at the end. The code measured is this checkout's (PYTHONPATH
# puts it before the bundle's copy of crpbot); Ray starts with every CPU of the machine. Without
# CUDA (a dry run on a CPU host) each GPU step says "no CUDA" in one line and the summary is
# still written.
#
# Steps, with their expected seconds on one H100 (about 5.5 min to 08; the rest if time remains):
#   01-env           5  nvidia-smi, CPUs, /dev/shm, xz, gcc, python, torch
#   02-install      15  the bundle into $PREFIX (skipped when that bundle is installed there)
#   03-doctor       25  crpbot doctor
#   04-gpu-tests    25  pytest -m "gpu and not ray" tests/test_gpu.py (no Ray)
#   05-ray-train    60  bench_gpu (c): Ray Train with 1 GPU vs plain fit at batch 32 and 512
#   06-packed       80  bench_gpu (d): 1, 2, 4, 8 packed trials of the gpu budget
#   07-full-btc     60  bench_gpu (f): full-BTC epochs of both budgets' configs, both projections
#   08-ensemble     45  crpbot ensemble --gpu --gpu-share 0.5, 2 seeds of gpu.yaml on full BTC
#   09-ray-tests   120  pytest -m "gpu and ray" tests/test_gpu.py (Ray Train, packing, pipeline)
#   10-kernels      60  bench_gpu (a), (b) on full BTC, (e) CUDA graphs
#   11-scoring      40  bench_scoring: one thread vs claimed CPUs vs a claimed GPU
#   12-pipeline    150  crpbot pipeline --budget smoke --gpu, 3 coins
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
carry="$repo/.gpu_carry"
bundle_name=crpbot-offline-py3.12-x86_64.tar.xz

if [ "${1:-}" = "--prepare" ]; then  # here, before the run: fill .gpu_carry
  set -e
  mkdir -p "$carry/wheels"
  cp "$repo/dist/$bundle_name" "$repo/dist/$bundle_name.sha256" "$carry/"
  cp "${SHARED:-$repo/../shared}/data/ohlcv/BTC-USD_1m.parquet" "$carry/"  # SHARED: another shared/
  "${PYTHON:-python3}" -m pip download --quiet --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 -d "$carry/wheels" pytest==9.2.0 pytest-timeout==2.4.0
  du -sh "$carry"
  exit 0
fi

: "${OUT:?set OUT to the folder for logs and results}"
mkdir -p "$OUT"
export OUT REPO="$repo" CARRY="$carry" BUNDLE_NAME="$bundle_name"
export PREFIX=${PREFIX:-/tmp/crpbot-offline} WORK=${WORK:-/tmp/crpbot-gpu-run}
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$WORK"
touch "$WORK/started"  # Ray sessions newer than this are this run's
cd "$repo" || exit 1

# The bundle's crpbot, Ray and Optuna on the path, then this checkout before it, and pytest.
in_env() {
  if [ -f "$PREFIX/activate" ]; then
    # shellcheck disable=SC1091
    . "$PREFIX/activate"
  fi
  export PYTHONPATH="$REPO:$WORK/test-site${PYTHONPATH:+:$PYTHONPATH}"
  export CRPBOT_TEST_RAY_CPUS
  CRPBOT_TEST_RAY_CPUS=$(nproc)
  "$@"
}

no_cuda() {  # true, after one line saying so, without CUDA: the dry run's GPU steps
  in_env "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && return 1
  echo "no CUDA: skipped"
}

cuda() { no_cuda || in_env "$@"; }

bench() { cuda "$PYTHON" benchmarks/bench_gpu.py --out "$OUT/bench" --input data/sample/BTC-USD_1m.parquet "$@"; }

step_env() {
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader || echo "nvidia-smi: none"
  echo "CPUs: $(nproc); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  df -h /dev/shm | tail -1 | awk '{print "/dev/shm: " $2 " (" $4 " free)"}'
  for tool in xz gcc; do echo "$tool: $(command -v "$tool" || echo MISSING)"; done
  "$PYTHON" -c 'import platform, torch; print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}, CUDA available {torch.cuda.is_available()}")'
  echo "carried: $(du -sh "$CARRY" 2>/dev/null | cut -f1 || echo none)"
}

step_install() {
  bash scripts/install_offline.sh "$CARRY/$BUNDLE_NAME" "$PREFIX" || return 1
  if ! in_env "$PYTHON" -c 'import pytest, pytest_timeout' 2>/dev/null; then  # the carried wheels
    mkdir -p "$WORK/test-site"
    for wheel in "$CARRY"/wheels/*.whl; do
      "$PYTHON" -m zipfile -e "$wheel" "$WORK/test-site"
    done
    echo "pytest from the carried wheels: $WORK/test-site"
  fi
}

step_doctor() { in_env "$PYTHON" -m crpbot doctor; }

step_gpu_tests() {
  cuda "$PYTHON" -m pytest -m "gpu and not ray" tests/test_gpu.py -q -rs -p no:cacheprovider --timeout=240
}

step_ray_train() { bench --parts c; }

step_packed() { bench --parts d; }

step_full_btc() { bench --parts f --full-input "$CARRY/BTC-USD_1m.parquet"; }

step_ensemble() {
  # gpu.yaml on 131,072 train windows of full BTC (validation and the temperature fit see all of it)
  no_cuda && return 0
  in_env "$PYTHON" -c "
import yaml
config = yaml.safe_load(open('tune_configs/gpu.yaml'))
config.update(max_train_windows=131072, max_epochs=2)
yaml.safe_dump(config, open('$WORK/ensemble.yaml', 'w'))" || return 1
  rm -rf "$WORK/ensemble"
  in_env "$PYTHON" -m crpbot ensemble --coin BTC --config "$WORK/ensemble.yaml" --seeds 2 --gpu --gpu-share 0.5 \
    --input "$CARRY/BTC-USD_1m.parquet" --out "$WORK/ensemble"
}

step_ray_tests() {
  cuda "$PYTHON" -m pytest -m "gpu and ray" tests/test_gpu.py -q -rs -p no:cacheprovider --timeout=240
}

step_kernels() { bench --parts a b e --full-input "$CARRY/BTC-USD_1m.parquet"; }

step_scoring() { cuda "$PYTHON" benchmarks/bench_scoring.py --repeats 1; }

step_pipeline() {
  rm -rf "$WORK/pipeline" "$WORK/models"
  cuda "$PYTHON" -m crpbot pipeline --budget smoke --gpu --run-dir "$WORK/pipeline" --registry "$WORK/models"
}

export -f in_env no_cuda cuda bench step_env step_install step_doctor step_gpu_tests step_ray_train step_packed \
  step_full_btc step_ensemble step_ray_tests step_kernels step_scoring step_pipeline

# id name function timeout expected-seconds
STEP_TABLE="
01 env step_env 60 5
02 install step_install 180 15
03 doctor step_doctor 150 25
04 gpu-tests step_gpu_tests 180 25
05 ray-train step_ray_train 240 60
06 packed step_packed 300 80
07 full-btc step_full_btc 240 60
08 ensemble step_ensemble 240 45
09 ray-tests step_ray_tests 300 120
10 kernels step_kernels 240 60
11 scoring step_scoring 180 40
12 pipeline step_pipeline 420 150
"

wanted() { [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]; }

echo "gpu_run.sh $(date -u +%FT%TZ) on $(hostname): STEPS=${STEPS:-all}" >>"$OUT/summary.txt"
while read -r id name function limit expected; do
  [ -n "$id" ] && wanted "$id" || continue
  log="$OUT/$id-$name.log"
  echo "=== $id-$name (timeout $limit s, expected $expected s)"
  started=$SECONDS
  timeout --kill-after=15 "$limit" bash -c "$function" >"$log" 2>&1
  rc=$?
  seconds=$((SECONDS - started))
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "timed out after $limit s" >>"$log"
    in_env "$PYTHON" -m ray.scripts.scripts stop --force >>"$log" 2>&1 || true
  fi
  line="$id-$name rc=$rc seconds=$seconds expected=$expected"
  grep -q "^no CUDA: skipped" "$log" && line="$line (no CUDA: skipped)"
  echo "$line" | tee -a "$OUT/summary.txt"
  tail -n 3 "$log"
done <<<"$STEP_TABLE"

# Ray's error logs of every session this run started (non-empty ones, the last 200 kB of each)
find /tmp/ray -maxdepth 1 -name 'session_2*' -newer "$WORK/started" 2>/dev/null | while read -r dir; do
  session=$(basename "$dir")
  find "$dir/logs" -maxdepth 1 -name '*.err' -size +0 2>/dev/null | while read -r err; do
    mkdir -p "$OUT/ray-logs/$session"
    tail -c 200000 "$err" >"$OUT/ray-logs/$session/$(basename "$err")"
  done
done
echo "summary: $OUT/summary.txt"

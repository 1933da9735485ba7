#!/usr/bin/env bash
# GPU check for crpbot: run from the repo root on a CUDA machine, no install needed.
#
#   bash scripts/gpu_check.sh            # logs to ./gpu_check_logs, or to $OUT when set
#
# Needs python3 with torch (CUDA), numpy, pandas, pyarrow, pyyaml, safetensors, pytest and
# pytest-timeout. Ray and Optuna are optional: without Ray the Ray Train test skips. Steps:
#   1. environment: python, torch, CUDA, GPU
#   2. imports: the training path imports no Ray at module import time
#   3. tests: pytest -m gpu tests/test_gpu.py (bf16 vs fp32, loop on the device, Ray Train --gpu)
#   4. benchmark: training samples/s of the default model (BiLSTM 3x128, lookback 60, 39
#      features) on the bundled BTC sample, batch 32 and 512, fp32 vs bf16 autocast, against a
#      CPU baseline measured in the same process; then fit() end to end.
# Takes about 2 minutes on an H100. Exit status: the number of failed steps.

set -uo pipefail

LOG_DIR="${OUT:-$PWD/gpu_check_logs}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_check.log"
: >"$LOG"
# the checkout's code first; the tests' Ray with every CPU (packed trials are not held to 2 at once)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
export CRPBOT_TEST_RAY_CPUS=${CRPBOT_TEST_RAY_CPUS:-$(nproc)}
failed=0

step() {
  local name="$1"
  shift
  echo "=== $name" | tee -a "$LOG"
  local started=$SECONDS
  if "$@" 2>&1 | tee -a "$LOG"; then
    echo "=== $name: OK in $((SECONDS - started)) s" | tee -a "$LOG"
  else
    echo "=== $name: FAILED in $((SECONDS - started)) s" | tee -a "$LOG"
    failed=$((failed + 1))
  fi
  echo | tee -a "$LOG"
}

environment() {
  python3 - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
assert torch.cuda.is_available(), "torch sees no CUDA device"
props = torch.cuda.get_device_properties(0)
print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
      f"bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF
  local status=$?
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader || true
  return $status
}

imports_without_ray() {
  python3 - <<'EOF'
import sys
import crpbot.config, crpbot.data.bars, crpbot.data.dataset, crpbot.data.features, crpbot.model.network  # noqa: F401
import crpbot.model.fit, crpbot.data.windows, crpbot.model.trainer, crpbot.registry.artifact  # noqa: F401
loaded = sorted(name for name in ("ray", "optuna", "boto3") if name in sys.modules)
print("imported at module import time:", loaded or "none of ray/optuna/boto3")
assert "ray" not in loaded, "a training-path module imports ray at import time"
EOF
}

gpu_tests() {
  python3 -m pytest -m gpu tests/test_gpu.py -q -rs -p no:cacheprovider --timeout=240 \
    --junitxml="$LOG_DIR/gpu_tests.xml"
}

benchmark() {
  LOG_DIR="$LOG_DIR" python3 - <<'EOF'
"""Samples/s of one optimiser step of the default model, the way training.fit takes it."""
import json, os, time
import numpy as np
import torch
from torch import nn
from crpbot.config import TrainConfig
from crpbot.data.dataset import load_prepared
from crpbot.model.network import build_model
from crpbot.model.fit import fit
from crpbot.data.windows import gather_windows

config = TrainConfig()  # the recipe: BiLSTM 3x128, head 64, lookback 60
data = load_prepared("BTC", None, config)
train_ends = np.asarray(data.window_ends("train", config.lookback), dtype=np.int64)
print(f"data: {data.features.shape[0]:,} rows x {data.features.shape[1]} features, "
      f"{len(train_ends):,} train windows")


def steps_per_second(device: str, batch: int, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    features = torch.from_numpy(data.features).to(device)
    labels = torch.from_numpy(np.nan_to_num(data.labels)).to(device)
    ends = torch.from_numpy(train_ends).to(device)
    model = build_model(config, features.shape[1]).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    criterion = nn.BCEWithLogitsLoss()
    generator = torch.Generator(device=device).manual_seed(0)

    def one_step() -> None:
        batch_ends = ends[torch.randint(len(ends), (batch,), device=device, generator=generator)]
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(gather_windows(features, batch_ends, config.lookback))
        loss = criterion(logits.float(), labels[batch_ends])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

    for _ in range(max(1, steps // 10)):  # warm-up: cuDNN plans, allocator
        one_step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


torch.backends.cudnn.benchmark = True
results = []
for device, precision, batch, steps in [
    ("cpu", "fp32", 32, 10), ("cpu", "fp32", 512, 3),
    ("cuda", "fp32", 32, 300), ("cuda", "bf16", 32, 300),
    ("cuda", "fp32", 512, 200), ("cuda", "bf16", 512, 200),
]:
    rate = steps_per_second(device, batch, precision == "bf16", steps)
    results.append({"device": device, "precision": precision, "batch": batch,
                    "ms_per_step": 1000 / rate, "samples_per_second": rate * batch})

cpu = {r["batch"]: r["samples_per_second"] for r in results if r["device"] == "cpu"}
print(f"\ncpu threads: {torch.get_num_threads()}; 'fp32' on CUDA uses PyTorch's defaults (cuDNN may use TF32)")
print(f"{'device':6} {'precision':9} {'batch':>5} {'ms/step':>8} {'samples/s':>10} {'x cpu':>7}")
for r in results:
    r["speedup_vs_cpu"] = r["samples_per_second"] / cpu[r["batch"]]
    print(f"{r['device']:6} {r['precision']:9} {r['batch']:>5} {r['ms_per_step']:>8.2f} "
          f"{r['samples_per_second']:>10,.0f} {r['speedup_vs_cpu']:>7.1f}")

# End to end through the real loop (bf16 autocast on CUDA, whole train split, validation each
# epoch); epoch 2 excludes cuDNN's first-epoch planning.
print("\nfit() on cuda, 2 epochs over all train windows (epoch 2 reported):")
for batch in (32, 512):
    history = fit(config.replace(batch_size=batch, max_epochs=2, patience=5), data, device="cuda",
                  log=lambda _: None).history
    last = history[-1]
    results.append({"device": "cuda", "precision": "bf16", "batch": batch, "path": "fit",
                    "epoch_seconds": last["epoch_seconds"], "samples_per_second": last["samples_per_second"],
                    "val_acc": last["val_acc"]})
    print(f"  batch {batch:>3}: {last['samples_per_second']:>10,.0f} samples/s "
          f"({last['epoch_seconds']:.1f} s/epoch incl. validation), val acc {last['val_acc']:.3f}")
print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")

with open(os.path.join(os.environ["LOG_DIR"], "gpu_bench.json"), "w") as out:
    json.dump({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "results": results}, out, indent=1)
EOF
}

step "1/4 environment" environment
step "2/4 imports without ray" imports_without_ray
step "3/4 gpu tests" gpu_tests
step "4/4 benchmark" benchmark
echo "gpu_check: $failed step(s) failed; logs in $LOG_DIR" | tee -a "$LOG"
exit "$failed"

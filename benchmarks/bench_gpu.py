"""Does the GPU pay? The recipe network on one CUDA device, from the raw kernels to the full budget.

Usage: python benchmarks/bench_gpu.py [--input FILE] [--full-input ../shared/data/ohlcv/BTC-USD_1m.parquet]
                                      [--parts a b c d e f] [--out RESULTS_DIR]

Without a CUDA device it prints one line saying so and exits 0 (nothing is measured). Starts Ray
for (c), (d) and (f): run it under the shared lock on a shared host. Parts:
  (a) the limit: the recipe network (BiLSTM 3 x 128, head 64, 60 x 39 windows) forward + backward
      alone -- torch.nn.LSTM/cuDNN, no crpbot code -- at batch 32, 512, 4096;
  (b) ``fit``'s training samples/s at the same batches, as a share of (a) (goal >= 85%);
  (c) Ray Train with 1 GPU worker vs plain ``fit`` (goal: overhead <= 5%);
  (d) packing: K = 1, 2, 4, 8 concurrent search trials on one GPU (``gpus_per_trial = 1/K``,
      batch 32): aggregate samples/s (goal >= 4x a single trial at K = 8);
  (e) CUDA graphs via ``torch.compile(mode="reduce-overhead")`` for the batch-32 step: speed-up and
      loss agreement with eager over the same steps from the same weights;
  (f) the full BTC data under Ray on one GPU: seconds per epoch of the recipe, and the projected
      wall time of ``--budget full`` for 3 coins on 1, 4 and 8 GPUs.
Every rate is the median of timed repeats after warm-up, on CUDA events; ratios are against a
baseline measured in the same process. Results print as Markdown tables (and JSON with --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
BATCHES = (32, 512, 4096)
FEATURES, LOOKBACK = 39, 60


class RawRecipe(nn.Module):
    """The recipe's shape with torch modules only: what cuDNN can do without any crpbot code."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, 128, num_layers=3, dropout=0.35, bidirectional=True, batch_first=True)
        self.head = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Dropout(0.35), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1]).squeeze(-1)


def cuda_rate(step, batch: int, warmup: int = 10, repeats: int = 5, steps: int = 30) -> float:
    """Samples/s of ``step()`` (one batch each) on CUDA events: median of ``repeats`` timings."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    rates = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        torch.cuda.synchronize()
        rates.append(steps * batch / (start.elapsed_time(end) / 1000))
    return statistics.median(rates)


def raw_step(batch: int, bf16: bool):
    torch.manual_seed(0)
    model = RawRecipe().cuda().train()
    x = torch.randn(batch, LOOKBACK, FEATURES, device="cuda")
    y = (torch.rand(batch, device="cuda") > 0.5).float()
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss_fn(logits.float(), y).backward()

    return step


def part_a(bf16: bool) -> dict[int, float]:
    rates = {b: cuda_rate(raw_step(b, bf16), b) for b in BATCHES}
    print("\n(a) forward + backward alone (torch.nn.LSTM, cuDNN, no crpbot code)")
    print("| batch | samples/s |\n|---:|---:|")
    for b, r in rates.items():
        print(f"| {b} | {r:,.0f} |")
    return rates


def recipe(batch: int, **changes):
    from crpbot.config import CONFIG_DIR, load_config

    config = load_config(CONFIG_DIR / "default.yaml")
    return config.replace(batch_size=batch, **changes)


def fit_rate(config, data) -> float:
    from crpbot.model.fit import fit

    return fit(config, data, device="cuda", log=lambda _: None).history[-1]["samples_per_second"]


def part_b(raw: dict[int, float], input_path: str | None) -> dict[int, float]:
    from crpbot.data.dataset import load_prepared

    rates = {}
    print("\n(b) fit's training samples/s (epoch 2 of 2) as a share of (a); goal >= 85%")
    print("| batch | fit samples/s | share of (a) |\n|---:|---:|---:|")
    for b in BATCHES:
        config = recipe(b, max_epochs=2, patience=2, max_train_windows=max(20 * b, 16384))
        data = load_prepared("BTC", input_path, config)
        rates[b] = fit_rate(config, data)
        print(f"| {b} | {rates[b]:,.0f} | {rates[b] / raw[b]:.0%} |")
    return rates


def part_c(input_path: str | None, scratch: Path) -> dict[str, float]:
    from crpbot.data.dataset import load_prepared
    from crpbot.model.trainer import train
    from crpbot.registry.artifact import read_artifact_json

    print("\n(c) Ray Train, 1 GPU worker, vs plain fit (epoch 2 of 2); goal: overhead <= 5%")
    print("| batch | fit samples/s | Ray Train samples/s | Ray / fit |\n|---:|---:|---:|---:|")
    out = {}
    for b in (32, 512):
        config = recipe(b, max_epochs=2, patience=2, max_train_windows=max(20 * b, 16384))
        plain = fit_rate(config, load_prepared("BTC", input_path, config))
        artifact = train(
            config,
            "BTC",
            input_path=input_path,
            use_gpu=True,
            out_dir=scratch / f"c{b}",
            storage_path=scratch / "runs",
            run_name=f"bench-gpu-c{b}",
            progress=False,
        )
        ray_rate = read_artifact_json(artifact, "history.json")[-1]["samples_per_second"]
        out[str(b)] = ray_rate / plain
        print(f"| {b} | {plain:,.0f} | {ray_rate:,.0f} | {ray_rate / plain:.3f} |")
    return out


def part_d(input_path: str | None, scratch: Path) -> dict[int, float]:
    """K trials of the product's search at once on one GPU, each 1/K of it."""
    import yaml

    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    print("\n(d) K concurrent search trials on one GPU (gpus_per_trial = 1/K, batch 32); goal >= 4x at K = 8")
    print(
        "| K | per-trial samples/s (median) | aggregate samples/s | x single trial |\n|---:|---:|---:|---:|"
    )
    windows, epochs, aggregate = 16384, 2, {}
    for k in (1, 2, 4, 8):
        path = scratch / f"space-{k}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "base": str(REPO / "tune_configs" / "default.yaml"),
                    "overrides": {"batch_size": 32, "max_train_windows": windows, "patience": epochs},
                    "seed": 0,
                    "budget": {
                        "num_samples": k,
                        "max_epochs": epochs,
                        "grace_period": epochs,
                        "reduction_factor": 2,
                        "max_concurrent": k,
                        "gpus_per_trial": 1 / k,
                    },
                    "space": {"lr": {"loguniform": [5e-4, 2e-3]}},
                }
            )
        )
        result = run_search(
            load_search_space(path),
            "BTC",
            input_path=input_path,
            storage=scratch / "runs",
            name=f"pack-{k}",
            use_gpu=True,
            output_dir=scratch / f"pack-{k}",
            progress=False,
            log=lambda _: None,
        )
        per_trial = [epochs * windows / s for s in result.table["train_seconds"]]
        aggregate[k] = sum(per_trial)  # the trials ran at the same time: their rates add
        print(
            f"| {k} | {statistics.median(per_trial):,.0f} | {aggregate[k]:,.0f} "
            f"| {aggregate[k] / aggregate[1]:.2f} |"
        )
    return aggregate


def part_e() -> dict[str, float]:
    """Eager vs torch.compile(mode="reduce-overhead") (CUDA graphs) for the batch-32 training step."""
    batch, steps = 32, 50

    def make(compiled: bool):
        torch.manual_seed(0)
        model = RawRecipe().cuda().train()
        model.rnn.dropout = 0.0  # the same losses step for step need no random masks
        model.head[2].p = 0.0
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=compiled)
        x = torch.randn(batch, LOOKBACK, FEATURES, device="cuda")
        y = (torch.rand(batch, device="cuda") > 0.5).float()

        def train_step() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return torch.compile(train_step, mode="reduce-overhead") if compiled else train_step

    eager, graphed = make(False), make(True)
    eager_losses = torch.stack([eager() for _ in range(steps)])
    graphed_losses = torch.stack([graphed().clone() for _ in range(steps)])
    eager_rate = cuda_rate(make(False), batch)
    graphed_rate = cuda_rate(make(True), batch, warmup=20)
    gap = float((eager_losses - graphed_losses).abs().max())
    print(
        "\n(e) batch-32 step: eager vs torch.compile(mode='reduce-overhead'); adopt if >= 1.3x, same losses"
    )
    print(f"| eager samples/s | compiled samples/s | speed-up | max loss gap over {steps} steps |")
    print(
        f"|---:|---:|---:|---:|\n| {eager_rate:,.0f} | {graphed_rate:,.0f} "
        f"| {graphed_rate / eager_rate:.2f}x | {gap:.2e} |"
    )
    return {"speedup": graphed_rate / eager_rate, "max_loss_gap": gap}


def part_f(full_input: str, scratch: Path) -> dict:
    """Seconds per recipe epoch on the full BTC data under Ray, and the full budget projected from it."""
    from crpbot.model.trainer import train
    from crpbot.registry.artifact import read_artifact_json
    from crpbot.search.space import load_search_space

    config = recipe(32, max_epochs=2, patience=2)
    artifact = train(
        config,
        "BTC",
        input_path=full_input,
        use_gpu=True,
        out_dir=scratch / "f",
        storage_path=scratch / "runs",
        run_name="bench-gpu-f",
        progress=False,
    )
    history = read_artifact_json(artifact, "history.json")
    epoch = history[-1]["epoch_seconds"]
    space = load_search_space(REPO / "tune_configs" / "fallback_search.yaml").budget
    trial_epochs = asha_trial_epochs(
        space.num_samples, space.grace_period, space.reduction_factor, space.max_epochs
    )
    recipe_epochs, seeds, packing = 50, 5, 4  # worst case: no early stop; 4 trials per GPU at (d)'s rate
    gpu_seconds = 3 * (recipe_epochs * epoch + trial_epochs * epoch / packing + seeds * recipe_epochs * epoch)
    print(
        f"\n(f) full BTC data, recipe (batch 32), 1 GPU under Ray: {epoch:.1f} s per epoch "
        f"({history[-1]['samples_per_second']:,.0f} samples/s)"
    )
    print(
        f"--budget full, 3 coins, worst case ({recipe_epochs} recipe epochs, "
        f"{trial_epochs} ASHA trial-epochs, "
        f"{seeds} seeds, {packing} trials per GPU): {gpu_seconds / 3600:.1f} GPU-hours"
    )
    print("| GPUs | projected wall time |\n|---:|---:|")
    for gpus in (1, 4, 8):
        print(f"| {gpus} | {gpu_seconds / gpus / 60:.0f} min |")
    return {"epoch_seconds": epoch, "gpu_hours": gpu_seconds / 3600}


def asha_trial_epochs(trials: int, grace: int, factor: int, max_epochs: int) -> int:
    """Epochs ASHA spends at most: every trial to the first rung, 1/factor of them to the next, ..."""
    total, survivors, done, rung = 0, trials, 0, grace
    while survivors >= 1 and done < max_epochs:
        rung = min(rung, max_epochs)
        total += survivors * (rung - done)
        survivors, done, rung = survivors // factor, rung, rung * factor
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="bars for (b)-(d) (default: the bundled BTC sample)")
    parser.add_argument("--full-input", help="the full BTC bars for (f)")
    parser.add_argument("--parts", nargs="+", default=list("abcdef"), choices=list("abcdef"))
    parser.add_argument("--out", type=Path, help="also write results.json here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py: skipped: no CUDA device (torch sees none); nothing was measured")
        return
    print(
        f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}"
    )
    torch.backends.cudnn.benchmark = True
    results: dict = {"device": torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        scratch = Path(tmp)
        if {"a", "b"} & set(args.parts):
            results["a"] = raw = part_a(bf16=recipe(32).bf16)
            if "b" in args.parts:
                results["b"] = part_b(raw, args.input)
        if "e" in args.parts:
            results["e"] = part_e()
        if {"c", "d", "f"} & set(args.parts):
            from crpbot.ray_runtime import init_ray

            init_ray(None)
            if "c" in args.parts:
                results["c"] = part_c(args.input, scratch)
            if "d" in args.parts:
                results["d"] = part_d(args.input, scratch)
            if "f" in args.parts:
                if args.full_input is None:
                    print("\n(f) skipped: give --full-input (the full BTC bars)", file=sys.stderr)
                else:
                    results["f"] = part_f(args.full_input, scratch)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\ndone in {time.process_time():.0f} s of CPU time")


if __name__ == "__main__":
    main()

"""Does the GPU pay? The recipe network on one CUDA device, from the raw kernels to both GPU budgets.

Usage: python benchmarks/bench_gpu.py [--input FILE] [--full-input ../shared/data/ohlcv/BTC-USD_1m.parquet]
                                      [--parts a b c d f e] [--out RESULTS_DIR]

Without a CUDA device it prints one line saying so and exits 0 (nothing is measured). Starts Ray
for (c) and (d), sized to this machine's CPUs: run it under the shared lock on a shared host.
Each part runs under its own ``try``: a failure is recorded with its reason and the next part
runs; with ``--out`` the JSON is rewritten as each part finishes, so a run cut off by a timeout
keeps every finished number, and parts run by separate calls with one ``--out`` add up in one
JSON (``scripts/gpu_run.sh`` runs them as separate steps; (f) reads (d)'s packing there). Parts:
  (a) the limit: the recipe network (BiLSTM 3 x 128, head 64, 60 x 39 windows) forward + backward
      + Adam step alone -- torch.nn.LSTM/cuDNN, no crpbot code -- at batch 32, 512, 1024;
  (b) ``fit``'s training samples/s at the same batches on ``--input`` (``--full-input`` when
      given: enough windows for 100 steps at batch 1024), epoch 2 of 2, as a share of (a);
  (c) Ray Train with 1 GPU worker vs plain ``fit`` at batch 32 and 512 (goal: overhead <= 5%);
  (d) packing: K = 1, 2, 4, 8 trials of the ``gpu`` budget (tune_configs/gpu.yaml: batch 512; and
      the space's batches 256 and 1024 at K = 4) as Ray tasks holding 1/K of the GPU each, warmed
      up, then started at one instant: training windows of all K divided by the wall time from
      that instant to the last one's end (validation inside it);
  (f) the full BTC data: seconds per epoch of the configs each budget trains (``--budget full``:
      the recipe at batch 32 and search trials at batch 64; ``--budget gpu``: batch 512), measured
      with ``fit`` on a capped number of windows and scaled to the full train split, and both
      budgets' worst-case wall time for 3 coins projected on 1, 4 and 8 GPUs;
  (e) CUDA graphs, captured by hand (``torch.cuda.CUDAGraph``: forward + backward + Adam with
      ``capturable=True``) for the batch-32 step vs eager, with the losses of both over the same
      steps from the same weights. Not ``torch.compile(mode="reduce-overhead")``: Dynamo refuses
      ``nn.LSTM`` (``allow_rnn=False``) and would leave the forward eager, measuring nothing.
Rates are medians of timed repeats after warm-up, on CUDA events; ratios are against a baseline
measured in the same process. Results print as Markdown tables (and JSON with --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
BATCHES = (32, 512, 1024)
FEATURES, LOOKBACK = 39, 60
COINS = 3  # the pipeline's default coins, for (f)'s projection


class RawRecipe(nn.Module):
    """The recipe's shape with torch modules only: what cuDNN can do without any crpbot code."""

    def __init__(self, dropout: float = 0.35) -> None:
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, 128, num_layers=3, dropout=dropout, bidirectional=True, batch_first=True)
        self.head = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1]).squeeze(-1)


def cuda_rate(
    step: Callable[[], Any], batch: int, warmup: int = 10, repeats: int = 5, steps: int = 30
) -> float:
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


def raw_step(batch: int, bf16: bool) -> Callable[[], None]:
    """One optimiser step of the raw recipe, as ``fit`` takes it (autocast, clipping, Adam)."""
    torch.manual_seed(0)
    model = RawRecipe().cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, LOOKBACK, FEATURES, device="cuda")
    y = (torch.rand(batch, device="cuda") > 0.5).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        nn.functional.binary_cross_entropy_with_logits(logits.float(), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def recipe(name: str = "default.yaml", **changes):
    from crpbot.config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / name).replace(**changes)


def part_a() -> dict[str, float]:
    bf16 = recipe().bf16
    rates = {str(b): cuda_rate(raw_step(b, bf16), b) for b in BATCHES}
    print(f"\n(a) forward + backward + Adam alone (torch.nn.LSTM, cuDNN, no crpbot code; bf16 {bf16})")
    print("| batch | samples/s |\n|---:|---:|")
    for b, r in rates.items():
        print(f"| {b} | {r:,.0f} |")
    return rates


def part_b(raw: dict[str, float] | None, input_path: str | None) -> dict[str, dict]:
    from crpbot.data.dataset import load_prepared
    from crpbot.model.fit import fit

    out = {}
    print("\n(b) fit's training samples/s (epoch 2 of 2) as a share of (a); goal >= 85%")
    print("| batch | steps/epoch | fit samples/s | share of (a) |\n|---:|---:|---:|---:|")
    for b in BATCHES:
        config = recipe(batch_size=b, max_epochs=2, patience=2, max_train_windows=100 * b)
        data = load_prepared("BTC", input_path, config)
        windows = min(100 * b, len(data.window_ends("train", config.lookback)))
        rate = fit(config, data, device="cuda", log=lambda _: None).history[-1]["samples_per_second"]
        share = rate / raw[str(b)] if raw else None
        out[str(b)] = {"samples_per_second": rate, "steps_per_epoch": -(-windows // b), "share_of_a": share}
        print(f"| {b} | {-(-windows // b)} | {rate:,.0f} | {'n/a' if share is None else f'{share:.0%}'} |")
    return out


def part_c(input_path: str | None, scratch: Path) -> dict[str, float]:
    from crpbot.data.dataset import load_prepared
    from crpbot.model.fit import fit
    from crpbot.model.trainer import train
    from crpbot.registry.artifact import read_artifact_json

    print("\n(c) Ray Train, 1 GPU worker, vs plain fit (epoch 2 of 2); goal: overhead <= 5%")
    print("| batch | fit samples/s | Ray Train samples/s | Ray / fit |\n|---:|---:|---:|---:|")
    out = {}
    for b in (32, 512):
        config = recipe(batch_size=b, max_epochs=2, patience=2, max_train_windows=max(20 * b, 16384))
        data = load_prepared("BTC", input_path, config)
        plain = fit(config, data, device="cuda", log=lambda _: None).history[-1]["samples_per_second"]
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


class Barrier:
    """K packed trials wait here after their warm-up, so that their timed training starts together."""

    def __init__(self, parties: int) -> None:
        import asyncio

        self.parties, self.arrived, self.all_in = parties, 0, asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived == self.parties:
            self.all_in.set()
        await self.all_in.wait()


def _packed_trial(config_dict: dict, data: Any, barrier: Any) -> dict[str, float]:
    """One packed trial as a Ray task: warm up (cuDNN plans, allocator), wait for the others, train;
    the wall-clock span of the timed training and the training windows it went through."""
    import ray

    from crpbot.config import TrainConfig
    from crpbot.model.fit import fit

    config = TrainConfig.from_dict(config_dict)
    warmup = config.replace(max_epochs=1, max_train_windows=8 * config.batch_size)
    fit(warmup, data, device="cuda", log=lambda _: None)
    torch.cuda.synchronize()
    ray.get(barrier.wait.remote())
    started = time.time()
    history = fit(config, data, device="cuda", log=lambda _: None).history
    torch.cuda.synchronize()
    windows = min(config.max_train_windows or 10**12, len(data.window_ends("train", config.lookback)))
    return {"started": started, "ended": time.time(), "windows": windows * len(history)}


def part_d(input_path: str | None) -> dict[str, dict]:
    """K trials of the gpu budget at once on one GPU, each 1/K of it: windows of all / wall time."""
    import ray

    from crpbot.data.dataset import load_prepared

    print(
        "\n(d) K packed trials of the gpu budget on one GPU (1/K each), started together: "
        "training windows of all K / wall time (validation inside)"
    )
    print("| batch | K | windows/s of all K | x K = 1 | spread of the starts (s) |")
    print("|---:|---:|---:|---:|---:|")
    runs = [(512, k) for k in (1, 2, 4, 8)] + [(256, 1), (256, 4), (1024, 1), (1024, 4)]
    out: dict[str, dict] = {}
    data_ref = ray.put(load_prepared("BTC", input_path, recipe("gpu.yaml")))  # the batch changes no data
    barrier_actor = ray.remote(num_cpus=0)(Barrier)
    for batch, k in runs:
        config = recipe("gpu.yaml", batch_size=batch, max_epochs=2, patience=2, max_train_windows=None)
        task = ray.remote(num_gpus=1 / k, num_cpus=1)(_packed_trial)
        barrier = barrier_actor.remote(k)
        spans = ray.get([task.remote(config.to_dict(), data_ref, barrier) for _ in range(k)])
        wall = max(s["ended"] for s in spans) - min(s["started"] for s in spans)
        rate = sum(s["windows"] for s in spans) / wall
        spread = max(s["started"] for s in spans) - min(s["started"] for s in spans)
        single = out.get(f"{batch}x1", {}).get("windows_per_second", rate)
        out[f"{batch}x{k}"] = {
            "windows_per_second": rate,
            "speedup_vs_1": rate / single,
            "start_spread_s": spread,
        }
        print(f"| {batch} | {k} | {rate:,.0f} | {rate / single:.2f} | {spread:.2f} |")
    return out


def epoch_cost(config, data) -> dict[str, float]:
    """Seconds of one epoch of ``config`` over all of ``data``'s train windows, from epoch 2 of a
    run capped at ``config.max_train_windows``: training scales with the windows, validation not."""
    from crpbot.model.fit import fit

    last = fit(config.replace(max_epochs=2, patience=2), data, device="cuda", log=lambda _: None).history[-1]
    capped = min(config.max_train_windows, len(data.window_ends("train", config.lookback)))
    validation = max(0.0, last["epoch_seconds"] - capped / last["samples_per_second"])
    full = len(data.window_ends("train", config.lookback))
    return {
        "samples_per_second": last["samples_per_second"],
        "validation_seconds": validation,
        "train_windows": full,
        "epoch_seconds": full / last["samples_per_second"] + validation,
    }


def part_f(full_input: str, packing: dict[str, dict] | None) -> dict:
    """Both budgets' worst case on the full BTC data, from the per-epoch costs of their own configs."""
    from crpbot.data.dataset import load_prepared
    from crpbot.pipeline.chain import BUDGETS
    from crpbot.search.space import load_search_space

    configs = {  # the budgets' configs share one data recipe: one preparation of the file
        "full recipe": recipe("default.yaml", max_train_windows=200 * 32),
        "full trial": recipe("default.yaml", batch_size=64, max_train_windows=200 * 64),
        "gpu recipe": recipe("gpu.yaml", max_train_windows=200 * 512),
    }
    data = load_prepared("BTC", full_input, configs["full recipe"])
    costs = {label: epoch_cost(config, data) for label, config in configs.items()}
    print("\n(f) full BTC data, 1 GPU, plain fit (epoch 2; training scaled to the full train split)")
    print("| config | batch | samples/s | s per full epoch |\n|---|---:|---:|---:|")
    for label, cost in costs.items():
        batch = configs[label].batch_size
        print(f"| {label} | {batch} | {cost['samples_per_second']:,.0f} | {cost['epoch_seconds']:.1f} |")

    def speedup(share: float) -> float:
        """How much faster 1/share packed runs go than one alone: (d)'s measure at batch 512."""
        key = f"512x{round(1 / share)}"
        return packing[key]["speedup_vs_1"] if packing and key in packing else 1.0

    out: dict[str, Any] = {"epoch_costs": costs, "projections": {}}
    for budget, recipe_cost, trial_cost in (
        ("full", "full recipe", "full trial"),
        ("gpu", "gpu recipe", "gpu recipe"),
    ):
        plan = BUDGETS[budget]
        space = load_search_space(REPO / "tune_configs" / plan.search_space).budget
        epochs = recipe(plan.train_config).max_epochs  # worst case: early stopping never fires
        trial_epochs = asha_trial_epochs(
            space.num_samples, space.grace_period, space.reduction_factor, space.max_epochs
        )
        trial_share = space.gpus_per_trial or 1.0
        recipe_epoch, trial_epoch = costs[recipe_cost]["epoch_seconds"], costs[trial_cost]["epoch_seconds"]
        # K runs packed on one GPU go through K runs' epochs at (d)'s speed-up over one run alone
        gpu_seconds = COINS * (
            epochs * recipe_epoch
            + trial_epochs * trial_epoch / speedup(trial_share)
            + plan.seeds * epochs * recipe_epoch / speedup(plan.gpu_share)
        )
        # one coin's steps run one after another: the recipe, the longest trial, one member
        critical = 2 * epochs * recipe_epoch + space.max_epochs * trial_epoch
        out["projections"][budget] = {
            "gpu_hours": gpu_seconds / 3600,
            "critical_path_minutes": critical / 60,
            "recipe_epochs": epochs,
            "asha_trial_epochs": trial_epochs,
            "trials_per_gpu": round(1 / trial_share),
            "seeds": plan.seeds,
            "members_per_gpu": round(1 / plan.gpu_share),
            "packing_speedups": {"trials": speedup(trial_share), "members": speedup(plan.gpu_share)},
            "wall_minutes": {g: max(gpu_seconds / g, critical) / 60 for g in (1, 4, 8)},
        }
        print(
            f"\n--budget {budget}, {COINS} coins, worst case: {epochs} recipe epochs, {trial_epochs} ASHA "
            f"trial-epochs at {round(1 / trial_share)} per GPU (x{speedup(trial_share):.2f} from (d)), "
            f"{plan.seeds} seeds x {epochs} epochs at {round(1 / plan.gpu_share)} per GPU: "
            f"{gpu_seconds / 3600:.1f} GPU-hours"
        )
        print("| GPUs | projected wall time (GPU-seconds / GPUs; at least one coin's steps in a row) |")
        print("|---:|---:|")
        for gpus, minutes in out["projections"][budget]["wall_minutes"].items():
            print(f"| {gpus} | {minutes:.0f} min |")
    return out


def part_e() -> dict[str, float]:
    """Eager vs a hand-captured CUDA graph of the whole batch-32 step (forward, backward, Adam)."""
    batch, steps, warmup = 32, 50, 3
    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, LOOKBACK, FEATURES, device="cuda", generator=generator)
    y = (torch.rand(batch, device="cuda", generator=generator) > 0.5).float()

    def model_and_optimizer(capturable: bool):
        torch.manual_seed(0)
        model = RawRecipe(dropout=0.0).cuda().train()  # the same losses step for step need no masks
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable)

    def eager_step(model, optimizer) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return step

    def graphed_step() -> Callable[[], torch.Tensor]:
        model, optimizer = model_and_optimizer(capturable=True)
        step = eager_step(model, optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as CUDA graphs require
            for _ in range(warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # the gradients live in the graph's memory pool
        with torch.cuda.graph(graph):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            optimizer.step()

        def replay() -> torch.Tensor:
            graph.replay()
            return loss.detach().clone()

        return replay

    eager = eager_step(*model_and_optimizer(capturable=False))
    for _ in range(warmup):  # the graphed run took these steps before its capture
        eager()
    eager_losses = torch.stack([eager() for _ in range(steps)])
    graphed = graphed_step()
    graphed_losses = torch.stack([graphed() for _ in range(steps)])
    gap = float((eager_losses - graphed_losses).abs().max())
    eager_rate = cuda_rate(eager_step(*model_and_optimizer(capturable=False)), batch)
    graphed_rate = cuda_rate(graphed_step(), batch)
    print("\n(e) batch-32 step: eager vs a hand-captured CUDA graph; adopt if >= 1.3x with the same losses")
    print(f"| eager samples/s | graphed samples/s | speed-up | max loss gap over {steps} steps |")
    print(
        f"|---:|---:|---:|---:|\n| {eager_rate:,.0f} | {graphed_rate:,.0f} "
        f"| {graphed_rate / eager_rate:.2f}x | {gap:.2e} |"
    )
    return {
        "eager": eager_rate,
        "graphed": graphed_rate,
        "speedup": graphed_rate / eager_rate,
        "max_loss_gap": gap,
    }


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
    parser.add_argument("--full-input", help="the full BTC bars for (f), and (b) when given")
    parser.add_argument("--parts", nargs="+", default=list("abcdfe"), choices=list("abcdef"))
    parser.add_argument(
        "--out", type=Path, help="write bench_gpu.json here after each part (adding to one found there)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py: skipped: no CUDA device (torch sees none); nothing was measured")
        return
    import crpbot

    device = torch.cuda.get_device_name(0)
    print(
        f"{device}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, {os.cpu_count()} CPUs; "
        f"crpbot from {Path(crpbot.__file__).parent}"
    )
    torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {"device": device, "crpbot": str(Path(crpbot.__file__).parent)}
    earlier = args.out / "bench_gpu.json" if args.out else None
    if earlier is not None and earlier.is_file():  # parts run by an earlier call (f reads d's packing)
        results = {**json.loads(earlier.read_text()), **results}

    def measured(part: str) -> Any:
        """A finished part's numbers, or None when it did not run or failed."""
        found = results.get(part)
        return None if not isinstance(found, dict) or "error" in found else found

    def run(part: str, measure: Callable[[], Any]) -> None:
        """One part under its own try; the JSON rewritten as soon as it ends, failed or not."""
        started = time.perf_counter()
        try:
            results[part] = measure()
        except Exception as exc:  # noqa: BLE001 - a failed part is a finding; the others still run
            traceback.print_exc()
            first_line = (str(exc).strip().splitlines() or [""])[0]
            results[part] = {"error": f"{type(exc).__name__}: {first_line}"}
            print(f"({part}) FAILED: {results[part]['error']}", file=sys.stderr)
        results.setdefault("seconds", {})[part] = time.perf_counter() - started
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench_gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    parts = {
        "a": part_a,
        "b": lambda: part_b(measured("a"), args.full_input or args.input),
        "c": lambda: part_c(args.input, scratch),
        "d": lambda: part_d(args.input),
        "f": lambda: part_f(args.full_input, measured("d")),
        "e": part_e,
    }
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        scratch = Path(tmp)
        if {"c", "d"} & set(args.parts):
            from crpbot.ray_runtime import init_ray

            init_ray(None, num_cpus=os.cpu_count())
        for part in args.parts:
            if part == "f" and args.full_input is None:
                print("\n(f) skipped: give --full-input (the full BTC bars)", file=sys.stderr)
            else:
                run(part, parts[part])
    print(f"\ndone in {sum(results.get('seconds', {}).values()):.0f} s")


if __name__ == "__main__":
    main()

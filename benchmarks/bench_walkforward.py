"""Walk-forward on Ray: folds in parallel vs the same folds one after another, and the data-preparation share.

Usage: flock /tmp/crpbot-ray.lock .venv/bin/python benchmarks/bench_walkforward.py \\
           [--input /work/shared/data/ohlcv/BTC-USD_1m.parquet] [--folds 12] [--train-days 90] \\
           [--val-days 14] [--test-days 14] [--cpus 2] [--config smoke.yaml] [--out DIR]

Both runs call ``run_walkforward`` with the smoke config (or ``--config``: a file, or a name in
tune_configs/, e.g. gbdt.yaml for the GBDT family's folds) on the same folds and a local Ray of
``--cpus`` CPUs: once with every fold in flight (the default), once with ``max_parallel=1``. Each
fold times its own steps; "prepare" is ``prepare_for_config`` on the fold's split times, the
fold's only preparation (its evaluation is handed the prepared data). Goals (issue 12): speed-up
>= 1.8x on 2 CPUs, preparation <= 10% of a fold's time. Before either run, one worker per CPU
and the driver import what a first run would (``warmup.py``), so neither run pays a start-up.
Before and after, ``--cpus`` busy processes are timed against one: on a shared host that says
how many cores the runs could get.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_BTC = Path("/work/shared/data/ohlcv/BTC-USD_1m.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=FULL_BTC)
    parser.add_argument("--folds", type=int, default=12)
    parser.add_argument("--train-days", type=float, default=90.0)
    parser.add_argument("--val-days", type=float, default=14.0)
    parser.add_argument("--test-days", type=float, default=14.0)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--config", default="smoke.yaml", help="training config (default smoke.yaml)")
    parser.add_argument("--out", type=Path, help="where the two runs are written (default: a temp dir)")
    args = parser.parse_args()

    from warmup import free_cores, warm_driver, warm_workers

    from crpbot.config import CONFIG_DIR, load_config
    from crpbot.data.folds import FoldSpec
    from crpbot.experiments.walkforward import run_walkforward
    from crpbot.ray_runtime import init_ray

    config = load_config(args.config if Path(args.config).is_file() else CONFIG_DIR / args.config)
    spec = FoldSpec(
        train_days=args.train_days,
        val_days=args.val_days,
        test_days=args.test_days,
        folds=args.folds,
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-walkforward-"))
    print(
        f"host {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()}; Ray with {args.cpus} CPUs; "
        f"config {args.config} (model {config.model})"
    )

    print(f"host check before: {free_cores(args.cpus)}")
    init_ray(None, num_cpus=args.cpus)
    warm_workers(args.cpus)
    warm_driver()
    runs = {}
    for name, max_parallel in (("parallel", None), ("sequential", 1)):
        started = time.perf_counter()
        result = run_walkforward(
            config,
            "BTC",
            spec,
            input_path=args.input,
            out_dir=out / name,
            max_parallel=max_parallel,
            log=lambda _: None,
        )
        runs[name] = (time.perf_counter() - started, result.folds)
        print(f"{name}: {len(result.folds)} folds in {runs[name][0]:.1f} s")

    parallel, sequential = runs["parallel"][0], runs["sequential"][0]
    busy = runs["parallel"][1]["seconds_total"].sum()
    print(
        f"parallel run: {busy:.1f} fold-seconds in {parallel:.1f} s wall = {busy / parallel:.2f} folds in "
        f"flight on average; a fold took {busy / runs['sequential'][1]['seconds_total'].sum():.2f}x its "
        "sequential time (>1: the folds competed for CPU)"
    )
    folds = runs["sequential"][1]  # per-fold times without a neighbour on the other core
    total = folds["seconds_total"].sum()
    prepare = folds["seconds_prepare"].sum()
    print(f"speed-up of parallel folds on {args.cpus} CPUs: {sequential / parallel:.2f}x (goal >= 1.8x)")
    print(
        "per fold (sequential run, median s): "
        + ", ".join(
            f"{step} {folds[f'seconds_{step}'].median():.2f}"
            for step in ("prepare", "train", "save", "evaluate")
        )
        + f", total {folds['seconds_total'].median():.2f}"
    )
    print(f"data preparation share of fold time: {prepare / total:.1%} (goal <= 10%)")
    print(f"host check after: {free_cores(args.cpus)}")
    print(f"load after: {os.getloadavg()}; outputs in {out}")


if __name__ == "__main__":
    main()

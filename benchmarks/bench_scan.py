"""Cost of ``crpbot scan``: its pool of fold tasks (cells × folds) in flight together vs one at a time.

Runs the smoke grid (tune_configs/scan_smoke.yaml, 4 gbdt cells) on one coin of the bundled sample
twice through ``run_scan``: once with every fold task in flight (as many as the cluster runs), once
with ``max_parallel=1``, each in a fresh output directory, the same Ray instance warmed up first.
Prints the wall time of each pool, the speed-up, cells per hour and the per-fold cost that the
projection in benchmarks/RESULTS.md ("Scan cost") starts from. Needs the host-wide Ray lock:

    flock /tmp/crpbot-ray.lock .venv/bin/python benchmarks/bench_scan.py [--coin BTC] [--out DIR]
        [--grid FILE] [--input-dir DIR] [--folds N]

``--input-dir ../shared/data/ohlcv --grid G --folds 1`` measures the pool on the full data, where a
fold task lasts seconds rather than the sample's one.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coin", default="BTC")
    parser.add_argument("--grid", type=Path, default=REPO / "tune_configs" / "scan_smoke.yaml")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-scan-")))
    parser.add_argument("--input-dir", type=Path, help="bars directory (default: the bundled sample)")
    parser.add_argument("--folds", type=int, help="keep the last N folds (default: the budget's)")
    args = parser.parse_args()

    from warmup import free_cores, warm_driver, warm_workers

    from crpbot.experiments.scan import run_scan
    from crpbot.experiments.scan_grid import load_scan_grid
    from crpbot.ray_runtime import init_ray

    print(f"host check before: {free_cores(2)}", flush=True)
    init_ray(None)
    warm_workers(2)  # both workers started, with the fold's imports, before the timed runs
    warm_driver()
    grid = load_scan_grid(args.grid)
    runs = {}
    for name, max_parallel in (("parallel", None), ("one at a time", 1)):
        out = args.out / name.replace(" ", "-")
        shutil.rmtree(out, ignore_errors=True)
        result = run_scan(
            grid,
            [args.coin],
            input_dir=args.input_dir,
            folds=args.folds,
            out_dir=out,
            ledger=args.out / "ledger.jsonl",
            max_parallel=max_parallel,
            log=lambda _: None,
        )
        runs[name] = result.scan
        print(
            f"{name}: {result.scan['fold_tasks_run']} fold tasks, pool {result.scan['seconds_cells']:.1f} s, "
            f"scan {result.scan['seconds']:.1f} s, summed fold time {result.scan['fold_seconds']:.1f} s",
            flush=True,
        )
    parallel, serial = runs["parallel"], runs["one at a time"]
    cells = len(parallel["grid"]["cells"])
    tasks = parallel["fold_tasks_run"]
    print(f"speed-up of the pool: {serial['seconds_cells'] / parallel['seconds_cells']:.2f}x")
    print(f"cells per hour (pool, parallel): {cells / parallel['seconds_cells'] * 3600:.0f}")
    print(
        f"mean fold task: {serial['fold_seconds'] / tasks:.2f} s alone, "
        f"{parallel['fold_seconds'] / tasks:.2f} s in parallel"
    )
    print(f"host check after: {free_cores(2)}")


if __name__ == "__main__":
    main()

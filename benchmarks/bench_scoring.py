"""Scoring windows/s: a chain's old one-thread path against a claimed scoring task, same process.

Usage: .venv/bin/python benchmarks/bench_scoring.py [--input data/sample/BTC-USD_1m.parquet]
                                                    [--members 1] [--repeats 3]

The recipe network (tune_configs/default.yaml: BiLSTM 3 x 128, lookback 60) scores the validation
and test windows of the bundled BTC sample. "old": in this process on one torch thread, what a
pipeline's chain task (``num_cpus=0``, so ``OMP_NUM_THREADS=1``) did before it claimed resources
to score. "claimed": through ``crpbot.model.scoring`` in a Ray task claiming every CPU of this
machine (what one coin's chain claims), the transfer of the rows and the task's start included;
and a claim of one GPU when torch sees one. Untrained weights: a forward pass costs the same.
The ratio is against "old", measured in the same process. Starts Ray: run it under the lock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from crpbot.config import CONFIG_DIR, load_config
from crpbot.data.dataset import load_prepared
from crpbot.model.network import build_model
from crpbot.model.predictor import Predictor
from crpbot.model.scoring import ScoringClaim, scoring_claim
from crpbot.ray_runtime import init_ray


def windows_per_second(score, n_windows: int, repeats: int) -> tuple[float, np.ndarray]:
    """Median windows/s of ``score()`` over ``repeats`` timings after one warm-up, and its output."""
    probs = score()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        score()
        times.append(time.perf_counter() - started)
    return n_windows / statistics.median(times), probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="bars to score (default: the bundled BTC sample)")
    parser.add_argument("--members", type=int, default=1, help="models scored together (an ensemble)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = load_config(CONFIG_DIR / "default.yaml")
    data = load_prepared("BTC", args.input, config)
    ends = np.concatenate([data.window_ends(split, config.lookback) for split in ("val", "test")])
    torch.manual_seed(0)
    models = [build_model(config, data.features.shape[1]).eval() for _ in range(args.members)]
    predictor = Predictor(
        models, logit_offsets=[0.0] * len(models), config_json={"train_config": config.to_dict()}, scaler={}
    )
    cpus = os.cpu_count() or 1
    init_ray(None, num_cpus=cpus)
    print(
        f"{len(ends):,} val+test windows of {data.features.shape[1]} features, {len(models)} member(s) "
        f"of the recipe; {cpus} CPU(s), torch {torch.__version__}"
    )

    torch.set_num_threads(1)
    old, reference = windows_per_second(
        lambda: predictor.raw_proba_at(data.features, ends, device="cpu"), len(ends), args.repeats
    )
    rows = [("old: chain task, 1 thread, batch 2048", old)]
    claims = [ScoringClaim(cpus=cpus)]
    if torch.cuda.is_available():
        claims.append(ScoringClaim(cpus=1, gpus=1.0))
    for claim in claims:
        with scoring_claim(claim):
            rate, probs = windows_per_second(
                lambda: predictor.raw_proba_at(data.features, ends), len(ends), args.repeats
            )
        np.testing.assert_allclose(probs, reference, rtol=1e-4, atol=1e-5)  # the same predictions
        where = f"GPU share {claim.gpus:g}, batch 8192" if claim.gpus else f"{claim.cpus} threads, batch 2048"
        rows.append((f"claimed: Ray task, {where}", rate))
    print("| path | windows/s | x old |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / old:.2f} |")


if __name__ == "__main__":
    main()

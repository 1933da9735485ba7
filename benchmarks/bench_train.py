"""Training throughput of the default model: plain PyTorch loop vs Ray Train with 1 and 2 workers.

Usage: flock /tmp/crpbot-ray.lock .venv/bin/python benchmarks/bench_train.py \\
           [--samples 4096] [--batches 32 512]

For each batch size it measures, in one process on the bundled BTC sample:
  (a) a plain single-process loop (same model, loss, optimizer, clipping, one CPU thread),
      and the share of its step time spent preparing inputs (window gather + label lookup);
      measured before and after the Ray runs, because the shared host's load drifts;
  (fit) ``training.fit`` in this process, no Ray: separates the loop's cost from Ray's;
  (b) Ray Train, 1 worker, and (c) Ray Train, 2 workers (DDP, B/2 each), running ``training.fit``.
Every ``fit`` number is the second epoch's training throughput (the first one warms up).
Targets: Ray Train overhead <= 10% against (a); input preparation <= 5% of step time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from crpbot.config import load_config
from crpbot.data.bars import default_input
from crpbot.data.dataset import load_prepared
from crpbot.data.windows import gather_windows
from crpbot.model.fit import epoch_shard, fit
from crpbot.model.network import build_model, param_count
from crpbot.model.trainer import train
from crpbot.ray_runtime import init_ray

REPO = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 5


def plain_loop(config, data, steps: int) -> tuple[float, float]:
    """Samples/s of a bare PyTorch loop, and the fraction of step time spent preparing inputs."""
    torch.set_num_threads(1)  # what one Ray Train worker gets on one CPU
    torch.manual_seed(config.seed)
    features, labels = torch.from_numpy(data.features), torch.from_numpy(data.labels)
    ends = torch.from_numpy(epoch_shard(data.window_ends("train", config.lookback), config, 1, 0, 1))
    model = build_model(config, features.shape[1]).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.0))
    prepare_seconds = step_seconds = 0.0
    for step in range(WARMUP_STEPS + steps):
        started = time.perf_counter()
        batch = ends[(step * config.batch_size) % len(ends) :][: config.batch_size]
        windows, target = gather_windows(features, batch, config.lookback), labels[batch]
        prepared = time.perf_counter()
        loss = criterion(model(windows), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if step >= WARMUP_STEPS:
            prepare_seconds += prepared - started
            step_seconds += time.perf_counter() - started
    return steps * config.batch_size / step_seconds, prepare_seconds / step_seconds


def in_process_fit(config, data) -> float:
    """Second-epoch training samples/s of ``training.fit`` without Ray (one thread)."""
    torch.set_num_threads(1)
    return fit(config, data, log=lambda _: None).history[-1]["samples_per_second"]


def ray_train(config, workers: int, scratch: Path) -> float:
    """Second-epoch training samples/s of ``crpbot.model.trainer.train`` with ``workers`` DDP workers."""
    name = f"bench-b{config.batch_size}-w{workers}"
    artifact = train(
        config,
        "BTC",
        num_workers=workers,
        out_dir=scratch / name,
        storage_path=scratch / "runs",
        run_name=name,
        max_failures=0,
    )
    history = json.loads((artifact / "history.json").read_text())
    return history[-1]["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="training windows per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 512])
    args = parser.parse_args()

    recipe = load_config(REPO / "tune_configs" / "default.yaml")
    data = load_prepared("BTC", default_input("BTC"), recipe)
    print(
        f"default model: {param_count(build_model(recipe, data.features.shape[1])):,} parameters, "
        f"input {recipe.lookback}x{data.features.shape[1]}, torch {torch.__version__}, CPU"
    )
    init_ray(None, num_cpus=2)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for batch in args.batches:
            # Both workers together draw the same windows per epoch as one worker does.
            config = recipe.replace(
                batch_size=batch, max_epochs=2, patience=50, max_train_windows=args.samples
            )
            steps = max(1, args.samples // batch)
            before, prepare_share = plain_loop(config, data, steps)
            direct = in_process_fit(config, data)
            one = ray_train(config, 1, Path(scratch))
            two = ray_train(config.replace(batch_size=max(1, batch // 2)), 2, Path(scratch))
            after, _ = plain_loop(config, data, steps)
            rows.append((batch, before, after, prepare_share, direct, one, two))
    print(
        "\n| batch | (a) plain loop samples/s, before / after | input prep share | (fit) no Ray | "
        "(b) Ray Train 1 worker | (b)/(a) | (c) Ray Train 2 workers | (c)/(a) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch, before, after, prepare_share, direct, one, two in rows:
        plain = (before + after) / 2
        print(
            f"| {batch} | {before:,.0f} / {after:,.0f} | {prepare_share:.1%} | {direct:,.0f} | {one:,.0f} | "
            f"{one / plain:.2f} | {two:,.0f} | {two / plain:.2f} |"
        )


if __name__ == "__main__":
    main()

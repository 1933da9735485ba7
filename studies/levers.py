"""Issue 14's levers side by side on the same walk-forward test rows: context, global, GBDT, reversal.

Usage: flock /tmp/crpbot-ray.lock nice .venv/bin/python studies/levers.py \\
           --edge-runs DIR --global-run DIR [--coins ETH SOL BTC] [--data-dir DIR] [--out DIR]

Reads finished walk-forwards and adds what they lack, on the same folds:

- ``--edge-runs``: ``btc_context.py``'s output (``<COIN>/per-coin`` and
  ``<COIN>/per-coin_BTCcontext``, ``run_walkforward`` runs); their config and fold spec are reused;
- ``--global-run``: ``global_model.py``'s output (a global model of BTC, ETH and SOL);
- trained here (no Ray): a global model of ETH and SOL with BTC's context, and the same global
  model without it (the control: it differs from the first only by the context columns);
- fitted here, per fold, with ``crpbot.evaluation.baselines`` on that fold's prepared data (the
  same rows and split times as the models'): the GBDT on the coin's own features, the GBDT with
  BTC's 39 features beside them, and the 15-minute reversal rule, each as a contender of its own.

Per coin and contender: pooled test accuracy with its CI (``metrics.mean_interval``), the edge over each
fold's best baseline chosen on that fold's validation split (the per-coin evaluation's
``baseline_up``, no context: one yardstick for every contender) with its paired CI, and the
paired difference to the per-coin model on the same rows; then each lever alone (the same
contender with and without it, :data:`LEVERS`) as a paired difference. Nothing is chosen on
test. Global runs already in ``--out`` are reused (not retrained).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"
# (with, without): pairs that differ by one lever, compared on the same rows
LEVERS = (
    ("per-coin + BTC context", "per-coin"),
    ("global (ETH, SOL) + BTC context", "global (ETH, SOL)"),
    ("GBDT + BTC context", "GBDT"),
    ("global (ETH, SOL)", "per-coin"),
    ("global (BTC, ETH, SOL)", "global (ETH, SOL)"),
)


def pooled_predictions(run_dir: Path) -> pd.DataFrame:
    folds = pd.read_csv(run_dir / "folds.csv")
    frames = [
        pd.read_parquet(run_dir / "folds" / str(fold) / "evaluation" / "predictions.parquet")
        for fold in folds.loc[folds["status"] == "ok", "fold"]
    ]
    pooled = pd.concat(frames, ignore_index=True)
    return pooled.set_index(pd.DatetimeIndex(pooled["timestamp"]).as_unit("ns"))


def baseline_contenders(coin: str, config, spec, data_dir: Path, with_context: bool) -> pd.DataFrame:
    """Per test row of every fold: the GBDT's and the reversal rule's direction (and the GBDT with
    BTC's context), fitted on that fold's train split (GBDT early-stopped on its val split)."""
    from crpbot.data.bars import load_bars
    from crpbot.data.cross_asset import ContextSpec, load_context
    from crpbot.data.dataset import prepare_for_config, usable_timestamps
    from crpbot.data.folds import plan_folds
    from crpbot.evaluation.baselines import baseline_predictions, fit_baselines

    path = data_dir / f"{coin}-USD_1m.parquet"
    bars = load_bars(path)
    bars.coin = f"{coin}-USD"
    context = load_context(coin, ContextSpec.from_names(["BTC"]), path) if with_context else None
    folds = plan_folds(usable_timestamps(bars), spec, lookback=config.lookback, horizon=config.horizon)
    frames = []
    for fold in folds:
        columns = {}
        for name, ctx in (("GBDT", None), ("GBDT + BTC context", context)):
            if name != "GBDT" and ctx is None:
                continue
            data = prepare_for_config(bars, config, split_times=fold.split_times, context=ctx)
            rows = data.window_ends("test", config.lookback)
            predicted = baseline_predictions(fit_baselines(data, config.lookback), data, rows)
            stamps = pd.DatetimeIndex(pd.to_datetime(data.timestamps[rows], utc=True)).as_unit("ns")
            columns[name] = pd.Series(predicted["gbdt"], index=stamps)
            if name == "GBDT":
                columns["reversal rule"] = pd.Series(predicted["reversal"], index=stamps)
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge-runs", type=Path, required=True, help="btc_context.py's output directory")
    parser.add_argument("--global-run", type=Path, required=True, help="global_model.py's output directory")
    parser.add_argument("--coins", nargs="+", default=["ETH", "SOL", "BTC"])
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / f"study-levers-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    args = parser.parse_args()

    import torch

    from crpbot.config import TrainConfig, config_keys
    from crpbot.data.folds import FoldSpec
    from crpbot.evaluation.metrics import mean_ci, paired_interval, predicted_up
    from crpbot.experiments.walkforward_global import run_global_walkforward

    torch.set_num_threads(1)
    plan = json.loads((args.edge_runs / "ETH" / "per-coin" / "plan.json").read_text())
    known = {key: value for key, value in plan["train_config"].items() if key in config_keys()}
    config = TrainConfig.from_dict(known)
    spec = FoldSpec(**plan["spec"])
    horizon = config.horizon
    print(
        f"machine: {platform.node()}, {platform.processor() or platform.machine()}; model: {config.cell} "
        f"hidden {config.hidden_size} x{config.num_layers}, lookback {config.lookback}, {config.max_epochs} "
        f"epochs of {config.max_train_windows} windows; {spec.folds} {spec.window} folds of "
        f"{spec.train_days:g}/{spec.val_days:g}/{spec.test_days:g} days; data {args.data_dir}",
        flush=True,
    )

    model_runs: dict[str, dict[str, Path]] = {}
    for coin in args.coins:
        runs = {
            "per-coin": args.edge_runs / coin / "per-coin",
            "per-coin + BTC context": args.edge_runs / coin / "per-coin_BTCcontext",
            "global (BTC, ETH, SOL)": args.global_run / f"{coin}-USD",
        }
        model_runs[coin] = {name: run for name, run in runs.items() if (run / "folds.csv").is_file()}
    pair = [coin for coin in ("ETH", "SOL") if coin in args.coins]
    for name, context in (("global (ETH, SOL)", []), ("global (ETH, SOL) + BTC context", ["BTC"])):
        out_dir = args.out / name.replace(" ", "").replace(",", "-").replace("+", "_")
        if not all((out_dir / f"{coin}-USD" / "summary.json").is_file() for coin in pair):  # else reuse
            started = time.perf_counter()
            run_global_walkforward(
                config.replace(coins=pair, context_coins=context),
                spec,
                out_dir=out_dir,
                data_dir=args.data_dir,
                log=lambda _: None,
            )
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        for coin in pair:
            model_runs[coin][name] = out_dir / f"{coin}-USD"

    print(
        "| coin | contender | n | pooled accuracy [95% CI] | edge over best baseline [95% CI] "
        "| minus per-coin model [95% CI] |"
    )
    print("|---|---|---:|---|---|---|")
    for coin in args.coins:
        started = time.perf_counter()
        pooled = {name: pooled_predictions(run) for name, run in model_runs[coin].items()}
        reference = next(iter(pooled.values()))  # per-coin run's (or the global's) labels and baseline_up
        table = pd.DataFrame({"label": reference["label"], "baseline_up": reference["baseline_up"]})
        for name, frame in pooled.items():
            table[name] = pd.Series(predicted_up(frame["prob_up"].to_numpy()), index=frame.index)
        rules = baseline_contenders(coin, config, spec, args.data_dir, with_context=coin != "BTC")
        table = table.join(rules, how="inner").dropna()
        truth = table["label"].to_numpy() == 1
        base_right = (table["baseline_up"].to_numpy().astype(bool) == truth).astype(np.float64)
        names = [name for name in table.columns if name not in ("label", "baseline_up")]
        right = {name: (table[name].to_numpy().astype(bool) == truth).astype(np.float64) for name in names}
        for name in names:
            low, high = mean_ci(right[name], horizon=horizon)
            paired = paired_interval(right[name], base_right, horizon=horizon)
            versus = "—"
            if "per-coin" in right and name != "per-coin":
                minus = paired_interval(right[name], right["per-coin"], horizon=horizon)
                diff = right[name].mean() - right["per-coin"].mean()
                versus = f"{diff:+.4f} [{minus.low:+.4f}, {minus.high:+.4f}]"
            edge = right[name].mean() - base_right.mean()
            print(
                f"| {coin} | {name} | {len(truth):,} | {right[name].mean():.4f} [{low:.4f}, {high:.4f}] "
                f"| {edge:+.4f} [{paired.low:+.4f}, {paired.high:+.4f}] | {versus} |",
                flush=True,
            )
        for with_btc, without in LEVERS:  # each lever alone: the same contender with and without it
            if with_btc in right and without in right:
                lever = paired_interval(right[with_btc], right[without], horizon=horizon)
                diff = right[with_btc].mean() - right[without].mean()
                print(
                    f"{coin}: {with_btc} minus {without}: {diff:+.4f} [{lever.low:+.4f}, {lever.high:+.4f}]"
                )
        print(f"({coin}: baselines fitted and scored in {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

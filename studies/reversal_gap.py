"""Why does the per-coin recurrent model trail the 15-minute reversal rule? One change at a time.

Usage: flock /tmp/crpbot-ray.lock nice .venv/bin/python studies/reversal_gap.py \\
           [--coins ETH] [--variants baseline longer skip hidden64 lr1e-3] \\
           [--input-dir /work/shared/data/ohlcv] [--folds 4] [--max-parallel 2] [--seed 0] [--out DIR]

Every variant is ``run_walkforward`` on the same folds as btc_context.py (4 rolling folds of
train/val/test 30/7/7 days, planned on the coin's own rows, so every variant has the same cut
times and the same test rows) and changes ONE thing of btc_context.py's per-coin setting
(tune_configs/smoke.yaml, 5 epochs of 8,192 training windows, patience 5):

- ``baseline``: that setting unchanged;
- ``longer``: every training window of the fold each epoch (max_train_windows null, ~43k windows
  in 30 days, about 5x the baseline's epoch) and up to 10 epochs, early stopping on val with
  patience 3 (the checkpoint kept is the best val loss, as in every variant);
- ``skip``: ``skip_last_bar: true`` (the last bar's features handed to the head);
- ``hidden64``: hidden size 64 instead of 16 (head 16 unchanged);
- ``lr1e-3``: learning rate 1e-3 instead of 3e-3 (the default config's rate).

Per variant: the pooled test accuracy with its CI (the walk-forward summary's),
the edge over the 15-minute reversal rule on the same rows with a paired CI (the
rule's per-row predictions from ``reversal_predictions`` on each fold's prepared data), how often
the model calls the same direction as the rule and calls up, and per fold the best epoch (on val
loss) of the epochs run, from the fold artifact's history.json, and the paired difference to
the baseline variant on the same rows. A rerun with the same ``--out`` reuses finished folds
(``run_walkforward`` resumes) and only recomputes the table. Nothing is chosen on test: every
variant is reported. ``--rule-only`` prints, per fold, the reversal rule's accuracy and the up
rate of the labels on each split (no training): whether the rule held in the data each fold's
model was trained and stopped on.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

VARIANTS = {
    "baseline": {},
    "longer": {"max_train_windows": None, "max_epochs": 10, "patience": 3},
    "skip": {"skip_last_bar": True},
    "hidden64": {"hidden_size": 64},
    "lr1e-3": {"lr": 1e-3},
}


def reversal_rule(coin: str, path: Path, config, spec) -> pd.Series:
    """Per test row of every fold: True where the 15-minute reversal rule calls up."""
    from crpbot.data.bars import load_bars, normalize_coin
    from crpbot.data.dataset import prepare_for_config, usable_timestamps
    from crpbot.data.folds import plan_folds
    from crpbot.evaluation.baselines import reversal_predictions

    bars = load_bars(path)
    bars.coin = normalize_coin(coin)
    parts = []
    for fold in plan_folds(usable_timestamps(bars), spec, lookback=config.lookback, horizon=config.horizon):
        data = prepare_for_config(bars, config, split_times=fold.split_times)
        rows = data.window_ends("test", config.lookback)
        stamps = pd.DatetimeIndex(pd.to_datetime(data.timestamps[rows], utc=True)).as_unit("ns")
        parts.append(pd.Series(reversal_predictions(data, rows), index=stamps))
    return pd.concat(parts)


def rule_by_split(coin: str, path: Path, config, spec) -> None:
    """Per fold: the reversal rule's accuracy and the up rate of the labels on train, val and test.

    A model can only learn the rule from a fold's train split, and is stopped on its val split;
    where the rule is a coin flip there, the recurrent model has nothing of it to learn.
    """
    from crpbot.data.bars import load_bars, normalize_coin
    from crpbot.data.dataset import prepare_for_config, usable_timestamps
    from crpbot.data.folds import plan_folds
    from crpbot.evaluation.baselines import reversal_predictions

    bars = load_bars(path)
    bars.coin = normalize_coin(coin)
    print("coin  fold  reversal acc train / val / test   up rate train / val / test")
    for fold in plan_folds(usable_timestamps(bars), spec, lookback=config.lookback, horizon=config.horizon):
        data = prepare_for_config(bars, config, split_times=fold.split_times)
        accs, ups = [], []
        for split in ("train", "val", "test"):
            rows = data.window_ends(split, config.lookback)
            up = data.labels[rows] == 1
            accs.append(f"{np.mean(reversal_predictions(data, rows) == up):.4f}")
            ups.append(f"{np.mean(up):.3f}")
        print(f"{coin:<5} {fold.index:<5} {' / '.join(accs)}       {' / '.join(ups)}", flush=True)


def pooled_predictions(run_dir: Path, folds: pd.DataFrame) -> pd.DataFrame:
    frames = [
        pd.read_parquet(run_dir / "folds" / str(fold) / "evaluation" / "predictions.parquet")
        for fold in folds.loc[folds["status"] == "ok", "fold"]
    ]
    pooled = pd.concat(frames, ignore_index=True)
    return pooled.set_index(pd.DatetimeIndex(pooled["timestamp"]).as_unit("ns"))


def epochs_run(run_dir: Path, folds: pd.DataFrame) -> list[str]:
    """Per fold "best/run" epochs, from the fold's history.json (best = lowest val loss kept)."""
    out = []
    for fold, best in zip(folds["fold"], folds["best_epoch"], strict=True):
        history = json.loads((run_dir / "folds" / str(fold) / "model" / "history.json").read_text())
        out.append(f"{int(best)}/{len(history)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", nargs="+", default=["ETH"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--input-dir", type=Path, default=Path("/work/shared/data/ohlcv"))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the training seed of every variant")
    parser.add_argument("--out", type=Path, help="where the runs are written (default: a temp dir)")
    parser.add_argument(
        "--rule-only", action="store_true", help="only the reversal rule per fold and split (no training)"
    )
    args = parser.parse_args()

    from crpbot.config import CONFIG_DIR, load_config
    from crpbot.data.folds import FoldSpec
    from crpbot.evaluation.metrics import edge_over_baseline, paired_interval, predicted_up
    from crpbot.experiments.walkforward import run_walkforward

    base = load_config(CONFIG_DIR / "smoke.yaml").replace(
        max_epochs=5, patience=5, max_train_windows=8192, seed=args.seed
    )
    spec = FoldSpec(train_days=30, val_days=7, test_days=7, folds=args.folds)
    if args.rule_only:
        for coin in args.coins:
            rule_by_split(coin, args.input_dir / f"{coin}-USD_1m.parquet", base, spec)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-gap-"))
    print(
        f"machine: {platform.node()}, {platform.processor() or platform.machine()}; baseline: smoke.yaml "
        f"(1-layer BiLSTM, hidden 16, lookback {base.lookback}, lr {base.lr:g}, seed {base.seed}), "
        f"5 epochs of 8192 windows, patience 5; {args.folds} rolling folds of 30/7/7 days, "
        f"{args.max_parallel} at a time; data {args.input_dir}; out {out}",
        flush=True,
    )
    print(
        "coin  variant    n        accuracy [95% CI]          edge vs reversal [95% CI]    "
        "agree  up    best/run epochs per fold   seconds minus baseline [95% CI]"
    )
    for coin in args.coins:
        path = args.input_dir / f"{coin}-USD_1m.parquet"
        reversal, baseline_right = None, None
        for name in args.variants:
            config = base.replace(**VARIANTS[name])
            started = time.perf_counter()
            run_dir = out / coin / name
            result = run_walkforward(
                config,
                coin,
                spec,
                input_path=path,
                out_dir=run_dir,
                max_parallel=args.max_parallel,
                log=lambda _: None,
            )
            seconds = time.perf_counter() - started
            if reversal is None:  # the same rows for every variant: built once per coin
                reversal = reversal_rule(coin, path, config, spec)
            pooled = pooled_predictions(run_dir, result.folds)
            if not pooled.index.isin(reversal.index).all():
                raise SystemExit(f"{coin} {name}: test rows differ from the reversal rule's rows")
            rule_up = reversal.loc[pooled.index].to_numpy()
            labels, probs = pooled["label"].to_numpy(), pooled["prob_up"].to_numpy()
            edge = edge_over_baseline(labels, probs, rule_up, horizon=config.horizon)
            model_up = predicted_up(probs)
            right = pd.Series((model_up == (labels == 1)).astype(np.float64), index=pooled.index)
            if name == "baseline":
                baseline_right = right
            versus = "—"
            if name != "baseline" and baseline_right is not None:
                both = right.index.intersection(baseline_right.index)
                a, b = right.loc[both].to_numpy(), baseline_right.loc[both].to_numpy()
                paired = paired_interval(a, b, horizon=config.horizon)
                versus = f"{a.mean() - b.mean():+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]"
            acc = result.summary["pooled"]
            print(
                f"{coin:<5} {name:<10} {acc['n']:<8,} {acc['accuracy']:.4f} "
                f"[{acc['accuracy_ci'][0]:.4f}, {acc['accuracy_ci'][1]:.4f}]   "
                f"{edge['edge']:+.4f} [{edge['ci_low']:+.4f}, {edge['ci_high']:+.4f}]   "
                f"{np.mean(model_up == rule_up):.3f}  {np.mean(model_up):.3f} "
                f"{' '.join(epochs_run(run_dir, result.folds)):<26} {seconds:<7.0f} {versus}",
                flush=True,
            )
        rule_right = reversal.loc[pooled.index].to_numpy() == (pooled["label"].to_numpy() == 1)
        print(f"{coin:<5} reversal   {len(pooled):<8,} {rule_right.mean():.4f}", flush=True)


if __name__ == "__main__":
    main()

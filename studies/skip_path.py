"""Does the skip path (``skip_last_bar``) close the gap to the one-line rules? A small measurement.

Usage: nice .venv/bin/python studies/skip_path.py [--coins BTC ETH SOL] [--seeds 0 1]
           [--epochs 5] [--windows 8192] [--input-dir DIR]

For each coin and seed it trains the same small model (tune_configs/smoke.yaml, with the given
epochs and training windows per epoch) twice, without and with the skip path, on the same
splits, and scores both once on the test split with ``evaluate_model`` (accuracy with its HAC
t-interval, and the baselines: reversal, momentum, logistic regression fitted on train).
Nothing is chosen on test: both variants are reported. In-process ``fit`` (no Ray): the loop
Ray Train and Tune run. Default data: the bundled samples (about 30k rows per coin).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from crpbot.config import load_config
from crpbot.data.bars import default_input
from crpbot.data.dataset import load_prepared
from crpbot.evaluation.evaluate import evaluate_model
from crpbot.model.fit import fit
from crpbot.model.inference import save_model_artifact

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--coins", nargs="+", default=["BTC", "ETH", "SOL"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--windows", type=int, default=8192, help="training windows per epoch")
    parser.add_argument(
        "--input-dir", type=Path, help="<COIN>-USD_1m.parquet files (default: bundled samples)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_config(REPO / "tune_configs" / "smoke.yaml").replace(
        max_epochs=args.epochs, patience=args.epochs, max_train_windows=args.windows
    )
    print(
        f"model: smoke.yaml (1-layer BiLSTM, hidden 16, lookback {base.lookback}), {args.epochs} epochs "
        f"of {args.windows} windows, seeds {args.seeds}; one CPU thread"
    )
    print("coin  skip  seed  val_acc  test_acc [95% CI]        reversal  momentum  logistic  seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for coin in args.coins:
            path = (
                args.input_dir / f"{coin}-USD_1m.parquet"
                if args.input_dir is not None
                else default_input(coin)
            )
            for seed in args.seeds:
                for skip in (False, True):
                    config = base.replace(seed=seed, skip_last_bar=skip)
                    started = time.perf_counter()
                    data = load_prepared(coin, path, config)
                    result = fit(config, data, log=lambda _: None)
                    artifact = save_model_artifact(
                        Path(tmp) / f"{coin}-{seed}-{skip}",
                        model_state=result.best_state,
                        config=config,
                        data=data,
                        history=result.history,
                        best_epoch=result.best_epoch,
                        input_path=path,
                    )
                    metrics = evaluate_model(
                        artifact, out_dir=Path(tmp) / f"eval-{coin}-{seed}-{skip}", log=lambda _: None
                    ).metrics
                    low, high = metrics["accuracy_ci"]
                    base_acc = metrics["baselines"]
                    val_acc = result.history[result.best_epoch - 1]["val_acc"]
                    print(
                        f"{coin:<5} {'yes' if skip else 'no':<5} {seed:<5} {val_acc:.4f}   "
                        f"{metrics['accuracy']:.4f} [{low:.4f}, {high:.4f}]  "
                        f"{base_acc['reversal']:.4f}    {base_acc['momentum']:.4f}    "
                        f"{base_acc['logistic']:.4f}    {time.perf_counter() - started:.0f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()

"""Walk-forward outputs: a fold's row of folds.csv, and the numbers pooled over every fold.

Apart from :mod:`crpbot.experiments.walkforward` (which trains and scores the folds on Ray) so that
the per-coin and the global walk-forward summarise their folds the same way. Pooled numbers
concatenate the folds' test predictions: the test periods tile the evaluated span, so each row
counts once; the pooled net return per trade concatenates the folds' trades (one position at a
time within a fold, and the folds' test periods do not overlap, so no two trades overlap).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.data.folds import DAY_BARS
from crpbot.evaluation.backtest import TRADES_FILE, Costs, net_return_per_trade
from crpbot.evaluation.gate import GateThresholds
from crpbot.evaluation.report import net_return_text


def fold_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The folds.csv columns of one evaluation's metrics.json."""
    baselines = metrics["baselines"]
    best, best_accuracy, chosen_on = _best_baseline(metrics)
    edge = metrics.get("edge_over_best_baseline") or {}
    backtest = metrics["backtest"]
    net = metrics["net_return_per_trade"]  # None, like the backtest, for a target with no direction
    ci = (net["ci"] if net is not None else None) or [None, None]
    return {
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "accuracy_ci_low": metrics["accuracy_ci"][0],
        "accuracy_ci_high": metrics["accuracy_ci"][1],
        "ece": metrics["ece"],
        "ece_equal_mass": metrics.get("ece_equal_mass"),
        "auc": metrics["auc"],
        **{f"baseline_{name}": value for name, value in baselines.items()},
        "best_baseline": best,
        "best_baseline_chosen_on": chosen_on,
        "best_baseline_accuracy": best_accuracy,
        "edge": edge.get("edge"),
        "edge_ci_low": edge.get("ci_low"),
        "edge_ci_high": edge.get("ci_high"),
        # a target that is not directional has no backtest (crpbot.evaluation.report.NO_BACKTEST)
        "trades": backtest["trades"] if backtest is not None else None,
        "net_pnl": backtest["total_pnl"] if backtest is not None else None,
        "net_per_trade": net["mean"] if net is not None else None,
        "net_per_trade_ci_low": ci[0],
        "net_per_trade_ci_high": ci[1],
        "gate_passed": bool(metrics["gate"]["passed"]),
        "gate_passed_recipe": bool(metrics["gate"]["recipe_reading"]["passed"]),
        "gate_reasons": "; ".join(metrics["gate"].get("reasons") or []),
    }


def _best_baseline(metrics: dict[str, Any]) -> tuple[str | None, float | None, str]:
    """The best baseline as evaluation chose it on validation; else the strongest on test, said so."""
    baselines = {name: value for name, value in metrics["baselines"].items() if value is not None}
    edge = metrics.get("edge_over_best_baseline")
    if edge and edge.get("baseline") in baselines:
        return edge["baseline"], baselines[edge["baseline"]], "val"
    if not baselines:
        return None, None, "none"
    name = max(baselines, key=lambda key: baselines[key])
    return name, baselines[name], "test (hindsight: for reference only)"


def folds_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per fold, in fold order; failed folds keep their periods and their error."""
    return pd.DataFrame(records).sort_values("fold").reset_index(drop=True)


def summarize(
    plan: dict[str, Any],
    records: list[dict[str, Any]],
    out_dir: Path,
    horizon: int,
    thresholds: GateThresholds,
    costs: Costs,
) -> dict[str, Any]:
    """Pooled accuracy and edge over every finished fold's test rows, and the net return per trade
    over every finished fold's trades, each with its ``metrics.mean_interval`` CI."""
    from crpbot.evaluation.metrics import mean_interval, predicted_up

    def share(passed: int) -> float | None:
        return passed / len(ok) if ok else None

    ok = [r for r in records if r["status"] == "ok"]
    passing = sum(bool(r["gate_passed"]) for r in ok)
    passing_recipe = sum(bool(r["gate_passed_recipe"]) for r in ok)
    summary: dict[str, Any] = {
        "coin": plan["coin"],
        "input_path": plan["input_path"],
        "window": plan["spec"]["window"],
        "days": {key: plan["spec"][f"{key}_days"] for key in ("train", "val", "test")},
        "day_definition": f"{DAY_BARS} one-minute bars of data present (gaps are skipped, not counted)",
        "train_config": plan["train_config"],
        "folds_planned": len(records),
        "folds_finished": len(ok),
        "folds_failed": [{"fold": r["fold"], "error": r["error"]} for r in records if r["status"] != "ok"],
        "gate": {
            "min_accuracy": thresholds.min_accuracy,
            "max_calibration_error": thresholds.max_calibration_error,
            "reading": thresholds.reading,
            "net_pnl": thresholds.net_pnl,
            "folds_passing": passing,
            "share_passing": share(passing),
            "recipe_reading": {
                "reading": thresholds.recipe().reading,
                "folds_passing": passing_recipe,
                "share_passing": share(passing_recipe),
            },
        },
        "backtest": (
            {
                **asdict(costs),
                "trades": sum(int(r["trades"]) for r in ok),
                "net_pnl": float(sum(r["net_pnl"] for r in ok)),
            }
            if all(pd.notna(r["trades"]) for r in ok)
            else None
        ),
    }
    if not ok:
        summary["pooled"] = None
        return summary
    frames = [
        pd.read_parquet(out_dir / "folds" / str(r["fold"]) / "evaluation" / "predictions.parquet") for r in ok
    ]
    pooled = pd.concat(frames, ignore_index=True)
    labels = pooled["label"].to_numpy()
    correct = (predicted_up(pooled["prob_up"].to_numpy()) == (labels == 1)).astype(np.float64)
    interval = mean_interval(correct, horizon=horizon)
    summary["pooled"] = {
        "n": len(correct),
        "test_period": [ok[0]["test_start"], ok[-1]["test_end"]],
        "accuracy": float(correct.mean()),
        "accuracy_ci": [interval.low, interval.high],
        "accuracy_ci_method": f"over the pooled test rows: {interval.method}",
    }
    summary["pooled_edge"] = _pooled_edge(pooled, horizon)
    summary["pooled_net_return_per_trade"] = (
        _pooled_net_return(out_dir, ok) if summary["backtest"] is not None else None
    )
    return summary


def _pooled_net_return(out_dir: Path, ok: list[dict[str, Any]]) -> dict[str, Any]:
    """The net return per trade over every finished fold's trades (their trades.parquet), with its CI."""
    paths = [out_dir / "folds" / str(r["fold"]) / "evaluation" / TRADES_FILE for r in ok]
    missing = [str(r["fold"]) for r, path in zip(ok, paths, strict=True) if not path.is_file()]
    if missing:
        note = f"no {TRADES_FILE} in fold(s) {', '.join(missing)}"
        return {"mean": None, "ci": None, "trades": None, "note": note}
    pnl = np.concatenate([pd.read_parquet(path)["net_return"].to_numpy(dtype=np.float64) for path in paths])
    return {**net_return_per_trade(pnl), "pooled_over": "every finished fold's trades"}


def _pooled_edge(pooled: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """Model accuracy minus each fold's val-chosen best baseline's, on the same rows, with a paired CI."""
    from crpbot.evaluation.metrics import edge_over_baseline

    if "baseline_up" not in pooled.columns:  # an evaluation without a validation split to choose on
        return {
            "edge": None,
            "note": "the folds' predictions have no validation-chosen baseline (baseline_up)",
        }
    edge = edge_over_baseline(
        pooled["label"].to_numpy(),
        pooled["prob_up"].to_numpy(),
        pooled["baseline_up"].to_numpy(),
        horizon=horizon,
    )
    return {"baseline": "each fold's best baseline, chosen on that fold's validation split", **edge}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    pooled, gate = summary["pooled"], summary["gate"]
    lines = [f"{summary['folds_finished']} of {summary['folds_planned']} folds finished"]
    lines += [f"fold {f['fold']} failed: {f['error']}" for f in summary["folds_failed"]]
    if pooled is not None:
        low, high = pooled["accuracy_ci"]
        lines.append(
            f"Pooled test accuracy {pooled['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}, n={pooled['n']:,})"
        )
        edge = summary["pooled_edge"]
        if edge["edge"] is not None:
            lines.append(
                f"Pooled edge over the best baseline {edge['edge']:+.4f} "
                f"(95% CI {edge['ci_low']:+.4f} to {edge['ci_high']:+.4f})"
            )
        recipe = gate["recipe_reading"]
        lines.append(
            f"Gate ({gate['reading']}) passed in {gate['folds_passing']} of {summary['folds_finished']} "
            f"folds; the recipe's reading ({recipe['reading']}) in {recipe['folds_passing']}"
        )
        if summary["backtest"] is not None:
            lines.append(
                f"Backtest over all folds: {summary['backtest']['trades']:,} trades, "
                f"net PnL {summary['backtest']['net_pnl']:+.4f}, "
                f"net return per trade {net_return_text(summary['pooled_net_return_per_trade'])}"
            )
    return lines

"""The walk-forward's report.md and walkforward.png, built from folds.csv's table and summary.json only.

Kept apart from the runner so the numbers on the page are the numbers in the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.evaluation.report import NO_BACKTEST, net_return_text

TABLE_COLUMNS = {
    "fold": "fold",
    "test_start": "test from",
    "test_end": "test to",
    "n": "n",
    "accuracy": "accuracy",
    "accuracy_ci": "95% CI",
    "ece": "ECE",
    "auc": "AUC",
    "best_baseline": "best baseline",
    "best_baseline_accuracy": "its accuracy",
    "edge": "edge",
    "trades": "trades",
    "net_pnl": "net PnL",
    "gate": "gate",
    "gate_recipe": "recipe's gate",
}


def markdown_table(table: pd.DataFrame) -> str:
    """The per-fold table as Markdown (also printed in docs/walkforward-and-scan.md)."""
    lines = [
        "| " + " | ".join(TABLE_COLUMNS.values()) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    for row in table.to_dict("records"):
        if row["status"] != "ok":
            cells = [str(row["fold"]), row["test_start"], row["test_end"], f"failed: {row['error']}"]
            cells += [""] * (len(TABLE_COLUMNS) - len(cells))
        else:
            cells = [
                str(row["fold"]),
                row["test_start"],
                row["test_end"],
                f"{int(row['n']):,}",
                f"{row['accuracy']:.4f}",
                f"{row['accuracy_ci_low']:.4f}-{row['accuracy_ci_high']:.4f}",
                f"{row['ece']:.4f}",
                _num(row["auc"]),
                str(row["best_baseline"]),
                _num(row["best_baseline_accuracy"]),
                _num(row.get("edge"), "+.4f"),
                f"{int(row['trades']):,}" if pd.notna(row["trades"]) else "n/a",
                _num(row["net_pnl"], "+.4f"),
                "PASS" if row["gate_passed"] else "FAIL",
                "PASS" if row["gate_passed_recipe"] else "FAIL",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(table: pd.DataFrame, summary: dict[str, Any]) -> str:
    days = summary["days"]
    gate, backtest, pooled = summary["gate"], summary["backtest"], summary["pooled"]
    lines = [
        f"# Walk-forward: {summary['coin']}",
        "",
        f"- input: `{summary['input_path']}`",
        f"- folds: {summary['folds_planned']} ({summary['window']} window; train {days['train']:g}, "
        f"val {days['val']:g}, test {days['test']:g} days; a day is {summary['day_definition']}); "
        f"{summary['folds_finished']} finished",
        f"- each fold: {fold_procedure(summary)}",
        (
            f"- backtest: fee {backtest['fee_bps']:g} bps + slippage {backtest['slippage_bps']:g} bps "
            f"per side, entry {backtest['entry_delay_bars']} bar(s) after the signal"
            if backtest is not None
            else f"- backtest: {NO_BACKTEST}"
        ),
        f"- gate per fold: accuracy >= {gate['min_accuracy']}, ECE <= {gate['max_calibration_error']}, read "
        f"as {gate['reading']}; the recipe's reading ({gate['recipe_reading']['reading']}) beside it",
        "",
    ]
    if pooled is not None:
        low, high = pooled["accuracy_ci"]
        lines += [
            "## Pooled over all folds' test periods",
            "",
            f"- accuracy {pooled['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}, n={pooled['n']:,}; "
            f"{pooled['accuracy_ci_method']})",
        ]
        edge = summary["pooled_edge"]
        if edge["edge"] is not None:
            lines.append(
                f"- edge over the best baseline {edge['edge']:+.4f} "
                f"(95% paired CI {edge['ci_low']:+.4f} to {edge['ci_high']:+.4f}; {edge['baseline']})"
            )
        else:
            lines.append(f"- edge over the best baseline: n/a ({edge['note']})")
        lines += [
            f"- gate passed in {gate['folds_passing']} of {summary['folds_finished']} folds "
            f"(the recipe's reading: {gate['recipe_reading']['folds_passing']})",
            *(
                [
                    f"- backtest: {backtest['trades']:,} trades, net PnL {backtest['net_pnl']:+.4f}; "
                    "net return per trade over every fold's trades "
                    f"{net_return_text(summary.get('pooled_net_return_per_trade'))}"
                ]
                if backtest
                else []
            ),
            "",
        ]
    for failed in summary["folds_failed"]:
        lines.append(f"- fold {failed['fold']} FAILED: {failed['error']}")
    chosen = set(table.get("best_baseline_chosen_on", pd.Series(dtype=object)).dropna())
    lines += [
        "",
        "## Folds",
        "",
        markdown_table(table),
        "",
        f"Best baseline chosen on: {', '.join(sorted(chosen)) or 'n/a'}.",
        "",
        "![walk-forward](walkforward.png)",
        "",
    ]
    return "\n".join(lines)


def fold_procedure(summary: dict[str, Any]) -> str:
    """What each fold did, true to the kind of run: a global model's folds fit no temperature."""
    coins = summary.get("global_model_of")
    if coins:
        return (
            f"one network for {', '.join(coins)} with each coin's own train-only scaler, early stopping on "
            "the fold's val (every coin's), no temperature (scored at temperature 1: accuracy and the "
            "edge do not depend on it, calibration does), scored once per coin on its own test period; "
            "test periods tile the evaluated span"
        )
    return (
        "its own train-only scaler, early stopping and temperature on its own val, "
        "scored once on its own test period; test periods tile the evaluated span"
    )


def plot_walkforward(table: pd.DataFrame, path: str | Path) -> None:
    """Per-fold accuracy with CI bars, the best baseline, the 0.5 line; cumulative net PnL across folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    folds = ok["fold"].to_numpy()
    accuracy = ok["accuracy"].to_numpy(dtype=float)
    errors = np.vstack(
        [
            accuracy - ok["accuracy_ci_low"].to_numpy(dtype=float),
            ok["accuracy_ci_high"].to_numpy(dtype=float) - accuracy,
        ]
    )
    top.errorbar(folds, accuracy, yerr=errors, fmt="o", capsize=3, label="model (95% CI)")
    chosen = ", ".join(sorted(set(ok["best_baseline_chosen_on"].dropna()))) or "n/a"
    baseline = ok["best_baseline_accuracy"].to_numpy(dtype=float)
    top.plot(folds, baseline, "s", mfc="none", label=f"best baseline (chosen on {chosen})")
    top.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="0.5")
    top.set_ylabel("test accuracy")
    top.legend(loc="best", fontsize=8)
    top.set_title("Walk-forward: each fold trained on its own past, scored on its own test period")
    if ok["net_pnl"].notna().all():
        bottom.plot(folds, np.cumsum(ok["net_pnl"].to_numpy(dtype=float)), "o-")
    else:  # a target that is not directional
        bottom.text(0.5, 0.5, NO_BACKTEST, ha="center", va="center", transform=bottom.transAxes, fontsize=8)
    bottom.axhline(0.0, color="grey", linewidth=1)
    bottom.set_ylabel("cumulative net PnL")
    bottom.set_xlabel("fold")
    bottom.set_xticks(table["fold"].to_numpy())
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _num(value: Any, fmt: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return format(value, fmt)

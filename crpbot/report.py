"""The evaluation report: the recipe's summary lines, report.md and four PNG plots.

Numbers come from metrics.json only, so the printed summary, the Markdown and the JSON
can never disagree. Plots use matplotlib's Agg backend: no display needed on a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crpbot.metrics import reliability_bins

PLOTS = {
    "reliability": "reliability.png",
    "equity": "equity_curve.png",
    "coverage": "accuracy_vs_coverage.png",
    "training": "training_curves.png",
}


def _num(value: Any, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The recipe's summary: accuracy, calibration error, trading numbers, PASS/FAIL with reasons."""
    low, high = metrics["accuracy_ci"]
    baselines = metrics["baselines"]
    best_name = max((k for k, v in baselines.items() if v is not None), key=lambda k: baselines[k])
    bt = metrics["backtest"]
    gate = metrics["gate"]
    lines = [
        f"Test Accuracy: {metrics['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}, n={metrics['n']:,}; "
        f"best baseline {best_name} {baselines[best_name]:.4f})",
        f"Calibration Error: {metrics['ece']:.4f}",
        f"Win Rate: {_num(bt['win_rate'])} ({bt['trades']} trades at tau {bt['threshold']:.2f}, "
        f"{bt['cost_bps_per_side']:g} bps per side)",
        f"Total PnL: {bt['total_pnl']:.4f}",
        f"Sharpe: {_num(bt['sharpe'], '.2f')}",
        f"Max Drawdown: {bt['max_drawdown']:.4f}",
        "Status: PASS" if gate["passed"] else f"Status: FAIL ({'; '.join(gate['reasons'])})",
    ]
    selective = gate.get("selective") or {}
    if selective.get("threshold") is not None:
        lines.append(f"Selective reading (information only): at confidence >= {selective['threshold']:.2f} "
                     f"(chosen on val) test coverage {selective['test_coverage']:.1%}, "
                     f"accuracy {_num(selective['test_accuracy'])}")
    else:
        lines.append(f"Selective reading (information only): {selective.get('note', 'no threshold')}")
    return lines


def write_report(directory: Path, metrics: dict[str, Any], test: Any, trades: Any,
                 history: list[dict[str, Any]]) -> list[Path]:
    """Write report.md and the PNG plots into ``directory``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    directory = Path(directory)
    written = [
        _plot_reliability(directory / PLOTS["reliability"], test),
        _plot_equity(directory / PLOTS["equity"], trades),
        _plot_coverage(directory / PLOTS["coverage"], metrics),
        _plot_training(directory / PLOTS["training"], history),
    ]
    report = directory / "report.md"
    report.write_text(_markdown(metrics))
    return [report, *written]


def _markdown(metrics: dict[str, Any]) -> str:
    low, high = metrics["accuracy_ci"]
    bt = metrics["backtest"]
    gate = metrics["gate"]
    out = [
        f"# Evaluation of {metrics['coin']} ({metrics['kind']}, {metrics['members']} member(s))",
        "",
        f"- model: `{metrics['model']}`; temperature {metrics['temperature']:.3f}",
        f"- scored: {metrics['test_source']}, {metrics['test_period'][0]} .. {metrics['test_period'][1]}, "
        f"{metrics['n']:,} windows (up rate {metrics['up_rate']:.3f})",
        "",
        "## Summary",
        "",
        *[f"    {line}" for line in summary_lines(metrics)],
        "",
        "## Classification (test split)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {metrics['accuracy']:.4f} (95% CI {low:.4f} – {high:.4f}) |",
        f"| ECE | {metrics['ece']:.4f} |",
        f"| Brier | {metrics['brier']:.4f} |",
        f"| log loss | {metrics['log_loss']:.4f} |",
        f"| AUC | {_num(metrics['auc'])} |",
        "",
        f"CI: {metrics['accuracy_ci_method']}. ECE: {metrics['ece_definition']}.",
        "",
        "## Baselines (same rows)",
        "",
        "| rule | accuracy |",
        "|---|---|",
        *[f"| {name} | {_num(value)} |" for name, value in metrics["baselines"].items()],
        "",
        "## Backtest",
        "",
        f"Long when P(up) >= {bt['threshold']:.2f}, short when P(up) <= {1 - bt['threshold']:.2f} "
        f"({bt['threshold_source']}); hold {metrics.get('horizon_minutes', 'h')} bars, no overlap, "
        f"{bt['cost_bps_per_side']:g} bps per side.",
        "",
        "| trades | longs | shorts | win rate | total PnL | avg PnL | Sharpe | max drawdown | exposure |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {bt['trades']} | {bt['longs']} | {bt['shorts']} | {_num(bt['win_rate'])} | {bt['total_pnl']:.4f} "
        f"| {_num(bt['avg_pnl'], '.5f')} | {_num(bt['sharpe'], '.2f')} | {bt['max_drawdown']:.4f} "
        f"| {bt['exposure']:.3f} |",
        "",
        "## Gate",
        "",
        f"accuracy >= {gate['min_accuracy']}, ECE <= {gate['max_calibration_error']}: "
        + ("**PASS**" if gate["passed"] else "**FAIL** — " + "; ".join(gate["reasons"])),
        "",
        "Selective reading (information only, never the decision): "
        + _selective_text(gate.get("selective") or {}),
        "",
        "## Plots",
        "",
        *[f"![{name}]({file})" for name, file in PLOTS.items()],
        "",
    ]
    return "\n".join(out)


def _selective_text(selective: dict[str, Any]) -> str:
    if selective.get("threshold") is None:
        return selective.get("note", "no threshold found")
    return (f"confidence >= {selective['threshold']:.2f} chosen on validation (val coverage "
            f"{selective['val_coverage']:.1%}, accuracy {_num(selective['val_accuracy'])}); on test: "
            f"coverage {selective['test_coverage']:.1%}, accuracy {_num(selective['test_accuracy'])}.")


def _plot_reliability(path: Path, test: Any) -> Path:
    import matplotlib.pyplot as plt

    counts, mean_conf, bin_accuracy = reliability_bins(test.labels, test.probs)
    filled = counts > 0
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
    ax.plot(mean_conf[filled], bin_accuracy[filled], "o-", label="model")
    for x, y, n in zip(mean_conf[filled], bin_accuracy[filled], counts[filled], strict=True):
        ax.annotate(str(int(n)), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set(xlabel="confidence of predicted class", ylabel="accuracy", title="Reliability (test)",
           xlim=(0.5, 1), ylim=(0, 1))
    ax.legend()
    return _save(fig, path)


def _plot_equity(path: Path, trades: Any) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    if len(trades.pnl):
        times = trades.entry_times.astype("datetime64[ns]")
        ax.step(times, trades.equity, where="post")
    else:
        ax.text(0.5, 0.5, "no trades", ha="center", transform=ax.transAxes)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(ylabel="cumulative net return", title="Backtest equity (test, after costs)")
    fig.autofmt_xdate()
    return _save(fig, path)


def _plot_coverage(path: Path, metrics: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    curve = [row for row in metrics["coverage_curve"] if row["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([row["coverage"] for row in curve], [row["accuracy"] for row in curve], "o-", ms=3)
    ax.axhline(metrics["gate"]["min_accuracy"], color="red", ls="--", label="min_accuracy")
    ax.set(xlabel="coverage (share of test windows kept)", ylabel="accuracy", xlim=(0, 1),
           title="Accuracy vs coverage (test)")
    ax.legend()
    return _save(fig, path)


def _plot_training(path: Path, history: list[dict[str, Any]]) -> Path:
    """Train and val loss per epoch; one line pair per member for an ensemble."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    members = sorted({row.get("member", 0) for row in history})
    for member in members:
        rows = [row for row in history if row.get("member", 0) == member]
        epochs = np.array([row["epoch"] for row in rows])
        suffix = f" (member {member})" if len(members) > 1 else ""
        ax.plot(epochs, [row["train_loss"] for row in rows], "-", label=f"train{suffix}")
        ax.plot(epochs, [row["val_loss"] for row in rows], "--", label=f"val{suffix}")
    ax.set(xlabel="epoch", ylabel="loss", title="Training curves")
    if history:
        ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""The evaluation report: the recipe's summary lines, report.md and four PNG plots.

Numbers come from metrics.json only, so the printed summary, the Markdown and the JSON
can never disagree. Plots use matplotlib's Agg backend: no display needed on a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crpbot.evaluation.metrics import reliability_bins

# metrics["backtest"] of a target that predicts no direction (``crpbot.data.targets``)
NO_BACKTEST = "not applicable: the target is not directional, so no prediction is a trade"
NO_FIGURES = "Not drawn here (a walk-forward fold): `crpbot evaluate --model <this fold's model>` draws them."
PLOTS = {
    "reliability": "reliability.png",
    "equity": "equity_curve.png",
    "coverage": "accuracy_vs_coverage.png",
    "training": "training_curves.png",
}


def _num(value: Any, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def best_baseline(metrics: dict[str, Any]) -> tuple[str, float | None]:
    """The baseline the model is compared with: the one chosen on validation; in metrics written
    before that choice existed, the highest on the scored rows."""
    baselines = metrics["baselines"]
    chosen = (metrics.get("edge_over_best_baseline") or {}).get("baseline")
    if chosen is None:
        chosen = max((k for k, v in baselines.items() if v is not None), key=lambda k: baselines[k])
    return chosen, baselines.get(chosen)


def edge_text(metrics: dict[str, Any]) -> str:
    """ "+0.0123 [-0.0050, +0.0290] over gbdt", or why there is no edge."""
    edge = metrics.get("edge_over_best_baseline")
    if not edge:
        return "n/a (not measured)"
    if edge.get("edge") is None:
        return f"n/a ({edge.get('note', 'no baseline chosen')})"
    return f"{edge['edge']:+.4f} [{edge['ci_low']:+.4f}, {edge['ci_high']:+.4f}] over {edge['baseline']}"


def net_return_text(net: dict[str, Any] | None) -> str:
    """ "-8.12 bps [95% CI -9.40, -6.85], 1,234 trades", or why there is no interval."""
    if not net:
        return "n/a (not measured)"
    if net.get("mean") is None:
        return f"n/a ({net.get('note', 'not measured')})"
    text = f"{net['mean'] * 1e4:+.2f} bps"
    if net.get("ci") is None:
        return f"{text} (no CI: {net.get('note', 'not measured')}), {net['trades']:,} trades"
    low, high = net["ci"]
    return f"{text} [95% CI {low * 1e4:+.2f}, {high * 1e4:+.2f}], {net['trades']:,} trades"


def net_return_cell(net: dict[str, Any] | None) -> str:
    """The same in a table cell: "-8.1 [-9.4, -6.9]" (bps), or "n/a"."""
    if not net or net.get("mean") is None:
        return "n/a"
    if net.get("ci") is None:
        return f"{net['mean'] * 1e4:+.1f} [no CI]"
    low, high = net["ci"]
    return f"{net['mean'] * 1e4:+.1f} [{low * 1e4:+.1f}, {high * 1e4:+.1f}]"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The recipe's summary: accuracy, calibration error, trading numbers, PASS/FAIL with reasons."""
    low, high = metrics["accuracy_ci"]
    best_name, best_value = best_baseline(metrics)
    bt = metrics["backtest"]
    gate = metrics["gate"]
    trading = (
        [
            f"Win Rate: {_num(bt['win_rate'])} after costs ({_num(bt.get('gross_win_rate'))} before costs; "
            f"round trip {_num(bt.get('breakeven_move_bps'), 'g')} bps; {bt['trades']} trades at tau "
            f"{bt['threshold']:.2f}, {bt['cost_bps_per_side']:g} bps per side)",
            f"Net Return per Trade: {net_return_text(metrics.get('net_return_per_trade'))} "
            f"(after costs, at tau {bt['threshold']:.2f})",
            f"Total PnL: {bt['total_pnl']:.4f}",
            f"Sharpe: {_num(bt['sharpe'], '.2f')}",
            f"Max Drawdown: {bt['max_drawdown']:.4f}",
        ]
        if bt is not None
        else [f"Backtest: {NO_BACKTEST}"]
    )
    lines = [
        *_target_line(metrics),
        f"Test Accuracy: {metrics['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}, n={metrics['n']:,}; "
        f"best baseline {best_name} {_num(best_value)})",
        f"Edge over best baseline (chosen on val; 95% paired CI): {edge_text(metrics)}",
        f"Calibration Error: {metrics['ece']:.4f} (equal-mass bins {_num(metrics.get('ece_equal_mass'))}; "
        f"mean P(up) - up rate {_num(metrics.get('calibration_in_the_large'), '+.4f')})",
        *trading,
        "Status: PASS" if gate["passed"] else f"Status: FAIL ({'; '.join(gate['reasons'])})",
        *_recipe_line(gate),
        f"Familiarity: {familiarity_text(metrics.get('familiarity'))}",
    ]
    selective = gate.get("selective") or {}
    if selective.get("threshold") is not None:
        lines.append(
            f"Selective reading (information only): at confidence >= {selective['threshold']:.2f} "
            f"(chosen on val) test coverage {selective['test_coverage']:.1%}, "
            f"accuracy {_num(selective['test_accuracy'])}"
        )
    else:
        lines.append(f"Selective reading (information only): {selective.get('note', 'no threshold')}")
    return lines


def _target_line(metrics: dict[str, Any]) -> list[str]:
    """The target, when it is not the default direction (whose metrics, old ones included, need none)."""
    target = metrics.get("target") or {"name": "direction"}
    if target["name"] == "direction":
        return []
    params = ", ".join(f"{key} {value:g}" for key, value in target.items() if key not in ("name", "horizon"))
    return [
        f"Target: {target['name']} ({params}), {target['horizon']} minutes; label 1 = {metrics['question']}"
    ]


def fills_text(bt: dict[str, Any]) -> str:
    """How the backtest filled: entry delay and costs per side (older metrics: entry at close[t])."""
    delay = bt.get("entry_delay_bars", 0)
    entry = (
        "at close[t], the signal's bar"
        if delay == 0
        else f"at close[t+{delay}], {delay} bar(s) after the signal's"
    )
    fee, slippage = bt.get("fee_bps"), bt.get("slippage_bps")
    costs = (
        f"fee {fee:g} + slippage {slippage:g} bps per side"
        if fee is not None and slippage is not None
        else f"{bt['cost_bps_per_side']:g} bps per side"
    )
    return f"entry {entry}; {costs}"


def _recipe_line(gate: dict[str, Any]) -> list[str]:
    """The recipe's reading (point accuracy, equal-width ECE) of the same limits, when the gate was
    read another way; empty for metrics written before the strict gate existed."""
    recipe = gate.get("recipe_reading")
    if recipe is None or (gate.get("gate_on"), gate.get("ece_kind")) == ("point", "equal-width"):
        return []
    verdict = "PASS" if recipe["passed"] else f"FAIL ({'; '.join(recipe['reasons'])})"
    line = f"Recipe's gate (point accuracy, equal-width ECE; information only): {verdict}"
    if recipe["passed"] and not gate["passed"]:
        line += " -- the recipe's gate would have passed; the configured strict gate did not"
    return [line]


def _gate_section(gate: dict[str, Any]) -> list[str]:
    """The configured decision and the recipe's reading of the same limits, side by side, then the
    net-return check as configured (gating or reported)."""
    limits = f"accuracy >= {gate['min_accuracy']}, ECE <= {gate['max_calibration_error']}"
    readings = [
        ("configured (the decision)", gate.get("gate_on", "point"), gate.get("ece_kind", "equal-width"), gate)
    ]
    if gate.get("recipe_reading") is not None:
        recipe = gate["recipe_reading"]
        readings.append(("the recipe's (information only)", "point", "equal-width", recipe))
    rows = [
        f"| {name} | {gate_on} | {ece} | "
        + ("**PASS**" if verdict["passed"] else "**FAIL** — " + "; ".join(verdict["reasons"]))
        + " |"
        for name, gate_on, ece, verdict in readings
    ]
    out = [
        f"Limits: {limits}. `--gate-on ci-lower` compares the lower bound of the accuracy's 95% CI "
        "with min_accuracy (`point`: the point estimate, as the recipe); `--ece max` compares the "
        "larger of the equal-width and equal-mass ECE (`equal-width`: the recipe's).",
        "",
        "| reading | accuracy read as | ECE read as | verdict |",
        "|---|---|---|---|",
        *rows,
    ]
    if len(readings) == 2 and readings[1][3]["passed"] and not gate["passed"]:
        out += ["", "**The recipe's gate would have passed; the configured strict gate did not.**"]
    net = gate.get("net_pnl")
    if net is not None and net["mode"] == "not applicable":
        out += ["", f"Net return per trade: {net['reason']}"]
    elif net is not None:
        role = "gates the decision" if net["mode"] == "require" else "reported only, not gated"
        verdict = "**PASS**" if net["passed"] else f"**FAIL** — {net['reason']}"
        out += [
            "",
            f"Net return per trade (`--net-pnl {net['mode']}`: {role}): the 95% CI lower bound of the "
            f"backtest's net return per trade must be above 0, and no trades fail it: {verdict}",
        ]
    return out


def write_report(
    directory: Path,
    metrics: dict[str, Any],
    test: Any,
    trades: Any,
    history: list[dict[str, Any]],
    *,
    figures: bool = True,
) -> list[Path]:
    """Write report.md and (with ``figures``) the PNG plots into ``directory``; returns the files written.

    Drawing is most of a short evaluation's time: a walk-forward's folds (hundreds in a scan) skip it.
    """
    directory = Path(directory)
    report = directory / "report.md"
    report.write_text(_markdown(metrics, figures))
    if not figures:
        return [report]
    import matplotlib

    matplotlib.use("Agg")
    written = [
        _plot_reliability(directory / PLOTS["reliability"], test),
        *([_plot_equity(directory / PLOTS["equity"], trades)] if trades is not None else []),
        _plot_coverage(directory / PLOTS["coverage"], metrics),
        _plot_training(directory / PLOTS["training"], history),
    ]
    return [report, *written]


def _markdown(metrics: dict[str, Any], figures: bool = True) -> str:
    low, high = metrics["accuracy_ci"]
    bt = metrics["backtest"]
    gate = metrics["gate"]
    out = [
        f"# Evaluation of {metrics['coin']} ({metrics['kind']}, {metrics['members']} member(s))",
        "",
        f"- model: `{metrics['model']}`; temperature {metrics['temperature']:.3f}",
        f"- scored: {metrics['test_source']}, {metrics['test_period'][0]} .. {metrics['test_period'][1]}, "
        f"{metrics['n']:,} windows (up rate {metrics['up_rate']:.3f})",
        f"- backtest fills: {fills_text(bt) if bt is not None else NO_BACKTEST}",
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
        f"| edge over the best baseline (chosen on validation; 95% paired CI) | {edge_text(metrics)} |",
        f"| ECE (15 equal-width bins; the recipe's) | {metrics['ece']:.4f} |",
        f"| ECE, 15 equal-mass bins | {_num(metrics.get('ece_equal_mass'))} |",
        f"| calibration in the large (mean P(up) − up rate) "
        f"| {_num(metrics.get('calibration_in_the_large'), '+.4f')} |",
        f"| Brier | {metrics['brier']:.4f} |",
        f"| log loss | {metrics['log_loss']:.4f} |",
        f"| AUC | {_num(metrics['auc'])} |",
        "",
        f"CI: {metrics['accuracy_ci_method']}. Calibration: {metrics['ece_definition']}.",
        "",
        *_familiarity_section(metrics.get("familiarity")),
        *_validation_section(metrics.get("validation")),
        "## Baselines (same rows)",
        "",
        *_baselines_table(metrics),
        "",
        *_backtest_section(metrics),
        "## Gate",
        "",
        *_gate_section(gate),
        "",
        "Selective reading (information only, never the decision): "
        + _selective_text(gate.get("selective") or {}),
        "",
        "## Plots",
        "",
        *(
            [f"![{name}]({file})" for name, file in PLOTS.items() if name != "equity" or bt is not None]
            if figures
            else [NO_FIGURES]
        ),
        "",
    ]
    return "\n".join(out)


def _backtest_section(metrics: dict[str, Any]) -> list[str]:
    bt = metrics["backtest"]
    if bt is None:
        return ["## Backtest", "", NO_BACKTEST, ""]
    h = metrics.get("horizon_minutes", "h")
    return [
        "## Backtest",
        "",
        f"Long when P(up) >= {bt['threshold']:.2f}, short when P(up) <= {1 - bt['threshold']:.2f} "
        f"({bt['threshold_source']}); {fills_text(bt)}; hold {h} bars, "
        "no overlap.",
        "",
        "| trades | longs | shorts | win rate (after costs) | win rate (before costs) | round trip (bps) "
        "| total PnL | avg PnL | Sharpe | max drawdown | exposure |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {bt['trades']} | {bt['longs']} | {bt['shorts']} | {_num(bt['win_rate'])} "
        f"| {_num(bt.get('gross_win_rate'))} | {_num(bt.get('breakeven_move_bps'), 'g')} "
        f"| {bt['total_pnl']:.4f} "
        f"| {_num(bt['avg_pnl'], '.5f')} | {_num(bt['sharpe'], '.2f')} | {bt['max_drawdown']:.4f} "
        f"| {bt['exposure']:.3f} |",
        "",
        "How to read it:",
        "",
        "- `--entry-delay-bars 1` (the default) enters at close[t+1], the first price an order can get "
        "once bar t has closed and the model has run; `0` enters at close[t], the last bar the model saw, "
        "with no latency, and credits the model with moves no order could catch. A signal without an "
        "entry bar in the scored rows (the split's last bars, a gap) is not traded. `--slippage-bps` adds "
        "an allowance for the fill price per side (included in the bps per side above).",
        "- The win rate after costs counts trades whose net PnL is > 0; a move must exceed the round trip "
        f"to win, and most {h}-minute moves are smaller, so it sits far below the directional accuracy. "
        "The win rate before costs is the share of trades whose direction was right "
        "(side × forward return > 0; a flat move is not a win).",
        "- Max drawdown is measured on the closed-trade equity curve (cumulative net PnL after each "
        "trade), not on prices marked inside a trade, so intra-trade dips are not in it.",
        "",
    ]


def _baselines_table(metrics: dict[str, Any]) -> list[str]:
    """Each baseline on the test rows beside its validation accuracy (where the best was chosen)."""
    edge = metrics.get("edge_over_best_baseline") or {}
    on_val = edge.get("validation_accuracies") or {}
    chosen = edge.get("baseline")
    rows = [
        f"| {name}{' (best on validation)' if name == chosen else ''} | {_num(value)} "
        f"| {_num(on_val.get(name))} |"
        for name, value in metrics["baselines"].items()
    ]
    return [
        "| rule | accuracy (test) | accuracy (validation) |",
        "|---|---|---|",
        *rows,
        "",
        "majority is the best constant on the rows it is scored on (on test: a bar no constant fixed "
        "in advance can beat). The best baseline is chosen on validation. gbdt: gradient boosting on "
        "the last bar's features and lagged returns, fitted on train and early-stopped on the latest 15% "
        "of train (validation stays out of sample for it, so choosing the best baseline there is fair).",
    ]


def familiarity_text(familiarity: dict[str, Any] | None) -> str:
    """One line: the share of test windows flagged unfamiliar (outside training's features)."""
    if not familiarity or not familiarity.get("available"):
        return (familiarity or {}).get("note", "not measured")
    return (
        f"{familiarity['test_share_unfamiliar']:.2%} of test windows unfamiliar "
        f"({familiarity['test_unfamiliar']:,} of {familiarity['test_windows']:,}; threshold chosen on val "
        f"to keep {familiarity['quantile']:.0%} of its windows)"
    )


def _familiarity_section(familiarity: dict[str, Any] | None) -> list[str]:
    """Where serving abstains: the share of test windows flagged, and accuracy on either side."""
    out = ["## Familiarity (test split; serving and the strategy abstain on unfamiliar windows)", ""]
    out += [familiarity_text(familiarity) + ".", ""]
    if not familiarity or not familiarity.get("available"):
        return out
    out += ["| windows | n | accuracy (95% CI) |", "|---|---|---|"]
    for side in ("familiar", "unfamiliar"):
        reading = familiarity[f"accuracy_{side}"]
        value = (
            f"{reading['accuracy']:.4f} ({reading['ci'][0]:.4f} – {reading['ci'][1]:.4f})"
            if reading["accuracy"] is not None
            else f"— ({reading.get('note', 'too few rows')})"
        )
        out.append(f"| {side} | {reading['n']:,} | {value} |")
    return [*out, "", f"Distance: {familiarity['method']}.", ""]


def _validation_section(validation: dict[str, Any] | None) -> list[str]:
    """Validation numbers, labelled in-sample: they were used to fit and choose things."""
    if not validation:
        return []
    return [
        "## Validation (in-sample: used for early stopping, model selection, temperature and τ)",
        "",
        f"{validation.get('note', '')}",
        "",
        "| metric (validation, in-sample) | value |",
        "|---|---|",
        f"| windows | {validation['n']:,} |",
        f"| accuracy | {_num(validation.get('accuracy'))} |",
        f"| ECE (15 equal-width bins) | {_num(validation.get('ece'))} |",
        f"| ECE, 15 equal-mass bins | {_num(validation.get('ece_equal_mass'))} |",
        f"| calibration in the large (mean P(up) − up rate) "
        f"| {_num(validation.get('calibration_in_the_large'), '+.4f')} |",
        "",
    ]


def _selective_text(selective: dict[str, Any]) -> str:
    if selective.get("threshold") is None:
        return selective.get("note", "no threshold found")
    return (
        f"confidence >= {selective['threshold']:.2f} chosen on validation (val coverage "
        f"{selective['val_coverage']:.1%}, accuracy {_num(selective['val_accuracy'])}); on test: "
        f"coverage {selective['test_coverage']:.1%}, accuracy {_num(selective['test_accuracy'])}."
    )


def _plot_reliability(path: Path, test: Any) -> Path:
    """Reliability curve above a histogram of the rows per bin (counts as bars, not overlapping labels)."""
    import matplotlib.pyplot as plt

    counts, mean_conf, bin_accuracy = reliability_bins(test.labels, test.probs)
    filled = counts > 0
    edges = np.linspace(0.0, 1.0, len(counts) + 1)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
    ax.plot(mean_conf[filled], bin_accuracy[filled], "o-", label="model")
    ax.set(ylabel="accuracy", title="Reliability (test)", xlim=(0.5, 1), ylim=(0, 1))
    ax.legend()
    # the bin holding 0.5 spans [0.467, 0.533): draw only its part inside the plotted range
    left = np.maximum(edges[:-1], 0.5)
    right = edges[1:]
    shown = filled & (right > 0.5)
    hist.bar(
        left[shown],
        counts[shown],
        width=(right - left)[shown],
        align="edge",
        color="tab:blue",
        alpha=0.6,
        edgecolor="white",
    )
    for x0, x1, n in zip(left[shown], right[shown], counts[shown], strict=True):
        hist.text((x0 + x1) / 2, n, _compact(int(n)), ha="center", va="bottom", fontsize=7)
    hist.set_yscale("log")
    hist.set_ylim(0.8, max(int(counts.max()), 1) * 4)
    hist.set(xlabel="confidence of predicted class", ylabel="rows (log)")
    return _save(fig, path)


def _compact(n: int) -> str:
    """A count in at most ~5 characters: 391148 -> 391k, 1234567 -> 1.2M."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


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
    ax.set(
        xlabel="coverage (share of test windows kept)",
        ylabel="accuracy",
        xlim=(0, 1),
        title="Accuracy vs coverage (test)",
    )
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

"""What a pipeline run produced, per coin and for the batch, and how it is reported.

The records (:class:`CoinOutcome`, :class:`PipelineResult`) are plain dataclasses written to
``summary.json``; ``pipeline.json`` is the run's timeline (each coin's status, start and end);
:func:`summary_table` is the table the CLI prints and ``report.md`` embeds.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crpbot.evaluation.gate import GateThresholds
from crpbot.evaluation.report import best_baseline, fills_text, net_return_cell, net_return_text


def utc_now() -> str:
    """Now as an ISO 8601 UTC timestamp with milliseconds: how run records mark time."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def one_line(exc: BaseException) -> str:
    """An error as one line: the original error when the message ends in a traceback (Ray's
    errors carry the worker's), else the first line; the type when the message is empty."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if len(lines) > 1 and _RAISED.match(lines[-1]) else lines[0]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the worker names in its messages
_RAISED = re.compile(r"^[\w.]+(Error|Exception|Interrupt)\b.*:")  # a traceback's last line


@dataclass
class CoinOutcome:
    """What happened to one coin, in the order it happened."""

    coin: str
    recipe_model: str = ""
    recipe_validation: dict[str, Any] = field(default_factory=dict)
    stage: str = "recipe"  # "recipe" or "ensemble": the model that was scored on test
    search_best_yaml: str | None = None
    final_model: str = ""
    final_validation: dict[str, Any] = field(default_factory=dict)
    evaluation_dir: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    promoted_version: str | None = None
    error: str | None = None  # why the chain failed; None when it ran to the end
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def timed(self, started_at: str, finished_at: str) -> CoinOutcome:
        """Record when the chain ran (ISO UTC timestamps) and how long it took."""
        self.started_at, self.finished_at = started_at, finished_at
        elapsed = datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)
        self.seconds = elapsed.total_seconds()
        return self

    @classmethod
    def failure(cls, coin: str, error: str, *, started_at: str, finished_at: str) -> CoinOutcome:
        return cls(coin=coin, stage="failed", error=error).timed(started_at, finished_at)


@dataclass
class PipelineResult:
    run_dir: Path
    outcomes: list[CoinOutcome]
    batch: dict[str, Any]
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def promoted(self) -> bool:
        return bool(self.batch["promoted"])


def summary_table(result: PipelineResult) -> list[str]:
    """One line per coin: what was scored, its test numbers beside the best baseline, the verdict.

    "best baseline": the baseline chosen on validation, its test accuracy; "edge [95% CI]": the
    model's accuracy minus that baseline's on the same test rows, with the paired CI.
    "net bps/trade [95% CI]": the backtest's mean net return per trade after costs, in bps, at the
    threshold chosen on validation, with its CI (what the gate's net-PnL check reads); "win
    net/gross": share of backtest trades that made money after costs / that had the right
    direction before costs.
    """
    header = (
        f"{'coin':<8} {'model':<9} {'test acc [95% CI]':<24} {'best baseline':<20} "
        f"{'edge [95% CI]':<26} {'ECE':>6} "
        f"{'AUC':>6} {'trades':>6} {'net bps/trade [95% CI]':<22} {'win net/gross':>13} {'Sharpe':>7}  gate"
    )
    lines = [header, "-" * len(header)]
    for o in result.outcomes:
        if o.failed:
            lines.append(f"{o.coin:<8} {'failed':<9} {o.error}  FAIL")
            continue
        m = o.metrics
        lo, hi = m["accuracy_ci"]
        name, value = best_baseline(m)
        edge = m.get("edge_over_best_baseline") or {}
        edge_cell = (
            f"{edge['edge']:+.4f} [{edge['ci_low']:+.3f}, {edge['ci_high']:+.3f}]"
            if edge.get("edge") is not None
            else "n/a"
        )
        bt = m["backtest"]
        wins = f"{_fmt(bt.get('win_rate'), '.3f')}/{_fmt(bt.get('gross_win_rate'), '.3f')}"
        verdict = "PASS" if m["gate"]["passed"] else "FAIL"
        recipe = m["gate"].get("recipe_reading")
        if recipe is not None and recipe["passed"] != m["gate"]["passed"]:
            verdict += f" (recipe's gate: {'PASS' if recipe['passed'] else 'FAIL'})"
        if o.promoted_version:
            verdict += f" (promoted {o.promoted_version})"
        lines.append(
            f"{o.coin:<8} {o.stage:<9} {m['accuracy']:.4f} [{lo:.3f}, {hi:.3f}]{'':<4} "
            f"{name + ' ' + _fmt(value):<20} {edge_cell:<26} {m['ece']:>6.4f} {_fmt(m.get('auc')):>6} "
            f"{bt['trades']:>6} {net_return_cell(m.get('net_return_per_trade')):<22} {wins:>13} "
            f"{_fmt(bt.get('sharpe'), '.2f'):>7}  {verdict}"
        )
    batch = result.batch
    passing, total = len(batch["passed_coins"]), len(result.outcomes)
    lines.append(
        f"Batch: {passing}/{total} coins pass (quorum {batch['quorum']}) -> "
        f"{'PROMOTED' if batch['promoted'] else 'NOT PROMOTED'}"
    )
    return lines


def _net_pnl_sentence(thresholds: GateThresholds) -> str:
    if thresholds.net_pnl == "require":
        return (
            "the 95% CI lower bound of the net return per trade (after costs) must be above 0, "
            "no trades failing it"
        )
    return "the net return per trade is reported, not gated (--net-pnl report)"


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def timeline(result: PipelineResult, budget: str) -> dict[str, Any]:
    """``pipeline.json``: when the run and each coin's chain started and ended, and how each ended."""
    return {
        "budget": budget,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "promoted": result.promoted,
        "coins": [
            {
                "coin": o.coin,
                "status": "failed" if o.failed else "ok",
                "error": o.error,
                "stage": o.stage,
                "started_at": o.started_at,
                "finished_at": o.finished_at,
                "seconds": o.seconds,
                "gate_passed": o.coin in result.batch["passed_coins"],
            }
            for o in result.outcomes
        ],
    }


def _write_json(path: Path, value: Any) -> None:
    """Temp file, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_run_report(result: PipelineResult, budget: str, thresholds: GateThresholds) -> None:
    summary = {
        "budget": budget,
        "thresholds": asdict(thresholds),
        "batch": result.batch,
        "coins": [asdict(o) for o in result.outcomes],
    }
    _write_json(result.run_dir / "summary.json", summary)
    _write_json(result.run_dir / "pipeline.json", timeline(result, budget))
    lines = [
        f"# crpbot pipeline run ({budget} budget)",
        "",
        f"Gate: accuracy >= {thresholds.min_accuracy}, ECE <= {thresholds.max_calibration_error} per coin, "
        f"read as {thresholds.reading} (the recipe's reading, point accuracy and equal-width ECE, is in each "
        f"coin's evaluation report); {_net_pnl_sentence(thresholds)}; at least {thresholds.quorum} coins "
        "must pass. The fallback "
        "(search + seed ensemble) is triggered on the validation split; each coin's test split is "
        "scored once, at the end.",
        "",
        "```",
        *summary_table(result),
        "```",
        "",
    ]
    for o in result.outcomes:
        lines += [f"## {o.coin}", f"- ran {o.started_at} -> {o.finished_at} ({o.seconds:.0f} s)"]
        if o.failed:
            lines += [f"- FAILED: {o.error}", "- gate: FAIL (counted as failing)", "- promoted: no", ""]
            continue
        lines += [
            f"- recipe model: `{o.recipe_model}`; validation accuracy {o.recipe_validation['accuracy']:.4f}, "
            f"ECE {o.recipe_validation['ece']:.4f} ({'meets' if o.recipe_validation['passed'] else 'misses'} "
            "the thresholds)",
        ]
        if o.stage == "ensemble":
            lines += [
                f"- fallback search best config: `{o.search_best_yaml}`",
                f"- seed ensemble: `{o.final_model}`; "
                f"validation accuracy {o.final_validation['accuracy']:.4f}, "
                f"ECE {o.final_validation['ece']:.4f}",
            ]
        gate = o.metrics["gate"]
        reasons = "; ".join(gate["reasons"]) or "all checks passed"
        lines += [
            f"- test evaluation: `{o.evaluation_dir}` (report.md, metrics.json, plots)",
            f"- backtest fills: {fills_text(o.metrics['backtest'])}",
            f"- net return per trade (after costs): {net_return_text(o.metrics.get('net_return_per_trade'))}",
            f"- gate: {'PASS' if gate['passed'] else 'FAIL'} ({reasons})",
            f"- promoted: {o.promoted_version or 'no'}",
            "",
        ]
    (result.run_dir / "report.md").write_text("\n".join(lines))

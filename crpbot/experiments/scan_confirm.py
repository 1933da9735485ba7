"""A scan's confirmation: the best StepM survivor of a coin, trained once and scored once on its final period.

The survivor is trained on the bars before the final period (train and validation periods of
the budget's lengths, purged; the temperature and the trading threshold chosen on validation)
and scored on the final period by the same fold task as every walk-forward fold, so its
evaluation -- and the gate's decision, net-PnL criterion included -- is the one ``crpbot
evaluate`` prints. Its model (``<out>/confirm/<COIN>/folds/0/model``) is a normal artifact, made
from the coin's whole file, that ``crpbot promote`` accepts. The use is written to the ledger
(:mod:`crpbot.experiments.scan_final`) before the model reads the final period.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from crpbot.data.folds import FoldSpec
from crpbot.evaluation.backtest import Costs
from crpbot.evaluation.gate import GateThresholds
from crpbot.ray_runtime import ClusterSettings


def confirm(
    data: list[Any],
    statistics: dict[str, dict[str, Any]],
    cells: dict[str, Any],
    spec: FoldSpec,
    *,
    out_dir: Path,
    cluster: ClusterSettings,
    thresholds: GateThresholds,
    costs: Costs,
    ledger: Path,
    reuse_final: bool,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any] | None]:
    """Per coin: None when no cell survives, a refusal when its final period was used before (and
    ``reuse_final`` is off), else the confirmation's record (its folds run together on Ray)."""
    from crpbot.data.cross_asset import ContextSpec, load_context
    from crpbot.experiments.scan_final import earlier_uses, final_fold, is_recorded, record_use
    from crpbot.experiments.walkforward import plan_walkforward, run_fold_tasks, shared_timestamps

    records: dict[str, dict[str, Any] | None] = {}
    plans = {}
    for entry in data:
        survivors = statistics[entry.coin]["stepm_survivors"]
        if not survivors:
            records[entry.coin] = None
            continue
        cell = survivors[0]
        config = cells[cell]
        earlier = earlier_uses(ledger, entry.final, out_dir, cell)
        if earlier and not reuse_final:
            first = earlier[0]
            reason = (
                f"the final period {first['start']} .. {first['end']} of {entry.coin} was already used by "
                f"the confirmation of {first['cell']} in {first['scan']} ({first['recorded_at']}); a second "
                "look would choose on it. Pass --reuse-final to confirm anyway (the report will say so), "
                "or wait for newer data"
            )
            records[entry.coin] = {"status": "refused", "cell": cell, "reason": reason}
            log(f"{entry.coin}: confirmation of {cell} refused: {reason}")
            continue
        context = load_context(entry.coin, ContextSpec.from_config(config), entry.input_path)
        fold = final_fold(
            shared_timestamps([entry.bars], context),
            entry.final,
            spec,
            lookback=config.lookback,
            horizon=config.horizon,
        )
        plan = plan_walkforward(
            config,
            entry.coin,
            spec,
            input_path=entry.input_path,
            out_dir=out_dir / "confirm" / entry.coin.split("-")[0],
            thresholds=thresholds,
            costs=costs,
            bars=entry.bars,
            folds=[fold],
        )
        if not is_recorded(ledger, entry.final, out_dir, cell):
            record_use(ledger, entry.final, out_dir, cell, reused=bool(earlier))
        done = "" if plan.todo else " (finished before: read back, not scored again)"
        log(f"{entry.coin}: confirming {cell} once on its final period{done}")
        plans[entry.coin] = (plan, cell, earlier)
    run_fold_tasks([plan for plan, _, _ in plans.values()], cluster, log=log)
    for coin, (plan, cell, earlier) in plans.items():
        records[coin] = _record(plan, cell, earlier)
        log(_line(coin, records[coin]))
    return records


def _record(plan: Any, cell: str, earlier: list[dict[str, Any]]) -> dict[str, Any]:
    from crpbot.experiments.walkforward import finish_walkforward

    result = finish_walkforward(plan)
    row = result.folds.iloc[0].to_dict()
    base = {
        "cell": cell,
        "reused_final": bool(earlier),
        "earlier_uses": earlier,
        "out_dir": str(plan.out_dir),
    }
    if row["status"] != "ok":
        return {**base, "status": "error", "reason": row["error"]}
    keys = (
        "n",
        "accuracy",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "ece",
        "ece_equal_mass",
        "best_baseline",
        "edge",
        "edge_ci_low",
        "edge_ci_high",
        "trades",
        "net_per_trade",
        "net_per_trade_ci_low",
        "net_per_trade_ci_high",
        "gate_reasons",
    )
    return {
        **base,
        "status": "passed" if row["gate_passed"] else "failed the gate",
        "gate_passed": bool(row["gate_passed"]),
        "test_period": [row["test_start"], row["test_end"]],
        **{key: _plain(row.get(key)) for key in keys},
        "artifact": str(plan.out_dir / "folds" / "0" / "model"),
        "evaluation": str(plan.out_dir / "folds" / "0" / "evaluation"),
    }


def _plain(value: Any) -> Any:
    """A folds.csv cell as JSON: NaN -> None, numpy scalars -> Python."""
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def figures(record: dict[str, Any]) -> str:
    """A confirmation's accuracy, edge and net return per trade, each with its CI, in one phrase."""
    text = (
        f"accuracy {record['accuracy']:.4f} ({record['accuracy_ci_low']:.4f}-"
        f"{record['accuracy_ci_high']:.4f}, n={record['n']:,})"
    )
    if record.get("edge") is not None:
        text += (
            f", edge {record['edge']:+.4f} ({record['edge_ci_low']:+.4f} to {record['edge_ci_high']:+.4f})"
        )
    if record.get("net_per_trade") is not None:
        text += f", net return per trade {record['net_per_trade'] * 1e4:+.1f} bps"
        if record.get("net_per_trade_ci_low") is not None:
            low, high = record["net_per_trade_ci_low"] * 1e4, record["net_per_trade_ci_high"] * 1e4
            text += f" ({low:+.1f} to {high:+.1f})"
    return text


def _line(coin: str, record: dict[str, Any]) -> str:
    if record["status"] == "error":
        return f"{coin}: confirmation of {record['cell']} failed to run: {record['reason']}"
    return (
        f"{coin}: confirmation of {record['cell']} on the final period: {record['status']}; {figures(record)}"
    )

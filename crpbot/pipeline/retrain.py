"""Retraining on fresh bars: a challenger per coin, judged against the coin's current champion.

Per coin, in parallel (the pipeline's own chains, :func:`crpbot.pipeline.chain.run_coin_chain`):
the challenger is trained on the new data by the pipeline's path (recipe -> validation check ->
search -> seed ensemble) and scored once on its test split, the newest part of the data, which
it neither trained nor validated on. Then :func:`judge_challenger` decides:

1. the challenger must pass the gate, as in the pipeline;
2. with a champion, both are scored on the same rows of the challenger's test period that the
   champion has not trained or validated on either (:mod:`crpbot.evaluation.compare`), and the
   challenger replaces it unless it is worse beyond noise: the 95% paired CI (HAC t-interval) of
   the log-loss difference (challenger - champion) lies entirely above 0;
3. without a champion, or when no such rows exist, the gate alone decides.

Log loss, not accuracy: both models sit near 50% accuracy, where a better-calibrated P(up) is
what a bot trades on, and log loss sees every row's probability, not just its side of 0.5.
"Not worse beyond noise" rather than "better": new data favour the newer model, and a
challenger that is as good keeps the live model trained on the most recent bars. Every decision
(promoted or not) is appended to the coin's registry history (:mod:`crpbot.registry.history`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import DEFAULT_ENTRY_DELAY_BARS
from crpbot.evaluation.compare import CI_LEVEL, Comparison, compare_on_shared_period
from crpbot.evaluation.gate import GateDecision, GateThresholds
from crpbot.pipeline.chain import PipelineBudget, check_workers_and_costs, resolve_budget
from crpbot.pipeline.run import (
    checked_coins,
    checked_inputs,
    launch_chains,
    new_run_dir,
    outcome_gate,
    removed_if_empty,
)
from crpbot.pipeline.run_report import CoinOutcome, utc_now
from crpbot.registry.storage import validate_storage

# test metrics of a challenger kept in its history record (the rest is in the run's evaluation)
_RECORDED_METRICS = ("n", "test_period", "accuracy", "accuracy_ci", "ece", "log_loss", "brier")


@dataclass(frozen=True)
class RetrainDecision:
    """One coin's outcome: whether the challenger replaced the champion, and why."""

    coin: str
    champion: str | None
    challenger: str | None
    promoted: bool
    decision: str  # "promoted", "kept champion" or "not promoted" (no champion to keep)
    reason: str
    challenger_version: str | None = None
    comparison: dict[str, Any] | None = None


def decide(gate: GateDecision, comparison: Comparison | None) -> tuple[bool, str]:
    """Promote when the gate passes and the challenger is not worse than the champion beyond noise."""
    if not gate.passed:
        return False, "the challenger fails the gate: " + "; ".join(gate.reasons)
    if comparison is None:
        return True, "no champion: the gate alone decides, and the challenger passes it"
    if not comparison.fair:
        return True, f"{comparison.note}; the gate alone decides, and the challenger passes it"
    difference, (low, high) = comparison.log_loss_difference, comparison.ci
    measured = (
        f"log loss {comparison.challenger['log_loss']:.4f} vs {comparison.champion['log_loss']:.4f}, "
        f"difference {difference:+.4f}, {CI_LEVEL:.0%} CI [{low:+.4f}, {high:+.4f}], "
        f"{comparison.n:,} shared rows"
    )
    if comparison.challenger_worse_beyond_noise:
        return False, f"the challenger is worse than the champion beyond noise ({measured}: CI above 0)"
    return (
        True,
        f"the challenger passes the gate and is not worse than the champion beyond noise ({measured})",
    )


def judge_challenger(
    coin: str,
    challenger_dir: str | Path | None,
    gate: GateDecision,
    *,
    registry_root: str | Path = "models",
    test_metrics: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> RetrainDecision:
    """Compare with the coin's current champion, decide, promote if so, and record the decision.

    ``challenger_dir`` None: the challenger's chain failed (``gate`` says why); recorded all the same.
    """
    from crpbot.data.bars import normalize_coin
    from crpbot.registry.history import record_event
    from crpbot.registry.local import coin_dir, current_version, promote

    coin = normalize_coin(coin)
    champion = current_version(coin, root=registry_root)
    comparison = None
    failure = None
    if champion is not None and challenger_dir is not None:
        try:
            comparison = compare_on_shared_period(coin_dir(registry_root, coin) / champion, challenger_dir)
            log(f"{coin}: challenger vs champion {champion}: {comparison.note}")
        except CrpbotError as exc:  # the champion stays; the other coins' decisions go on
            failure = f"the champion/challenger comparison failed: {exc}"
    promoted, reason = (False, failure) if failure else decide(gate, comparison)
    version = promote(challenger_dir, coin, root=registry_root).version if promoted else None
    decision = "promoted" if promoted else "kept champion" if champion else "not promoted"
    record_event(
        registry_root,
        coin,
        "retrain",
        decision=decision,
        reason=reason,
        champion=champion,
        challenger=None if challenger_dir is None else str(challenger_dir),
        challenger_version=version,
        gate=gate.to_dict(),
        challenger_test={key: test_metrics.get(key) for key in _RECORDED_METRICS} if test_metrics else None,
        comparison=None if comparison is None else comparison.to_dict(),
    )
    log(f"{coin}: {decision}{f' {version}' if version else ''}: {reason}")
    return RetrainDecision(
        coin=coin,
        champion=champion,
        challenger=None if challenger_dir is None else str(challenger_dir),
        promoted=promoted,
        decision=decision,
        reason=reason,
        challenger_version=version,
        comparison=None if comparison is None else comparison.to_dict(),
    )


def run_retrain(
    coins: list[str],
    *,
    input_dir: str | Path,
    budget: str | PipelineBudget = "smoke",
    address: str | None = None,
    run_dir: str | Path | None = None,
    registry_root: str | Path = "models",
    storage: str | Path | None = None,
    bucket: str | None = None,
    prefix: str = "crpbot",
    endpoint_url: str | None = None,
    use_gpu: bool = False,
    workers: int = 1,
    thresholds: GateThresholds | None = None,
    fee_bps: float = 10.0,
    slippage_bps: float = 0.0,
    entry_delay_bars: int = DEFAULT_ENTRY_DELAY_BARS,
    log: Callable[[str], None] = print,
) -> list[RetrainDecision]:
    """Train every coin's challenger in parallel, then judge each against its champion and record it.

    Every check that can fail (coins, inputs, budget, the champions' integrity) runs before the
    run directory exists and Ray starts. With ``bucket``, each coin's registry (versions, pointer,
    history) is pushed after its decision.
    """
    from crpbot.registry.artifact import verify_artifact
    from crpbot.registry.local import current_path, current_version

    plan = resolve_budget(budget)
    thresholds = thresholds if thresholds is not None else GateThresholds()
    coins = checked_coins(coins)
    check_workers_and_costs(workers, fee_bps, slippage_bps, entry_delay_bars)
    validate_storage(storage)
    inputs = checked_inputs(coins, input_dir, plan)
    for coin in coins:
        if current_version(coin, root=registry_root) is not None:
            verify_artifact(current_path(coin, root=registry_root))  # a damaged champion fails now
    run_dir = new_run_dir(run_dir, "retrain")
    storage = storage if storage is not None else run_dir.resolve()
    with removed_if_empty(run_dir):
        started_at = utc_now()
        log(f"Retrain budget={budget} coins={','.join(coins)} run_dir={run_dir} (challengers in parallel)")
        outcomes = launch_chains(
            coins,
            inputs,
            run_dir,
            plan,
            storage=storage,
            address=address,
            use_gpu=use_gpu,
            workers=workers,
            thresholds=thresholds,
            fee_bps=fee_bps,
            slippage_bps=slippage_bps,
            entry_delay_bars=entry_delay_bars,
            log=log,
        )
        decisions = [
            _judge_outcome(outcome, thresholds, registry_root, bucket, prefix, endpoint_url, log)
            for outcome in outcomes
        ]
        summary = {
            "budget": budget if isinstance(budget, str) else asdict(plan),
            "started_at": started_at,
            "finished_at": utc_now(),
            "registry": str(registry_root),
            "decisions": [asdict(decision) for decision in decisions],
            "outcomes": [asdict(outcome) for outcome in outcomes],
        }
        (run_dir / "retrain.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        for line in decision_table(decisions):
            log(line)
        log(f"Decisions: {run_dir / 'retrain.json'}; history: crpbot registry history COIN")
        return decisions


def _judge_outcome(
    outcome: CoinOutcome,
    thresholds: GateThresholds,
    registry_root: str | Path,
    bucket: str | None,
    prefix: str,
    endpoint_url: str | None,
    log: Callable[[str], None],
) -> RetrainDecision:
    from crpbot.registry.local import coin_dir, version_names
    from crpbot.registry.transfer import push

    decision = judge_challenger(
        outcome.coin,
        None if outcome.failed else outcome.final_model,
        outcome_gate(outcome, thresholds),
        registry_root=registry_root,
        test_metrics=outcome.metrics or None,
        log=log,
    )
    if bucket and version_names(coin_dir(registry_root, outcome.coin)):
        for pushed in push(
            registry_root, bucket, coin=outcome.coin, prefix=prefix, endpoint_url=endpoint_url
        ):
            if pushed.uploaded:
                log(f"Pushed {pushed.coin} {pushed.version} -> {pushed.url}")
    return decision


def decision_table(decisions: list[RetrainDecision]) -> list[str]:
    """One line per coin: decision, champion, challenger log loss vs champion's on the shared rows."""
    lines = [f"{'coin':8} {'decision':14} {'champion':32} {'log loss chall/champ [95% CI of diff]':40}"]
    for d in decisions:
        comparison = d.comparison or {}
        if comparison.get("fair"):
            low, high = comparison["ci"]
            scores = (
                f"{comparison['challenger']['log_loss']:.4f}/{comparison['champion']['log_loss']:.4f} "
                f"[{low:+.4f}, {high:+.4f}]"
            )
        else:
            scores = "no shared rows" if comparison else "-"
        lines.append(f"{d.coin:8} {d.decision:14} {d.champion or '-':32} {scores}")
    return lines

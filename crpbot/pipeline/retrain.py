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
3. without a champion, the gate alone decides. A challenger that cannot be judged against the
   champion (no shared unseen rows, another target, horizon or features, a retrain input older than the
   champion's data, or a comparison that fails) keeps the champion, unless the user passed
   ``promote_unjudged`` (``--promote-unjudged``): then the gate alone decides, and the record
   says the challenger was promoted unjudged, by that flag.

Each model is scored on its own inputs (its scaler, its context coins' bars), so a context
champion is compared like any other. An error while judging one coin (anything raised) is that
coin's recorded outcome, the champion kept; the other coins go on. ``retrain.json`` is rewritten
atomically after every coin's decision, and once more when the run ends or is interrupted.

Log loss, not accuracy: both models sit near 50% accuracy, where a better-calibrated P(up) is
what a bot trades on, and log loss sees every row's probability, not just its side of 0.5.
"Not worse beyond noise" rather than "better": new data favour the newer model, and a
challenger that is as good keeps the live model trained on the most recent bars. Every decision
(promoted or not) is appended to the coin's registry history (:mod:`crpbot.registry.history`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import Costs
from crpbot.evaluation.compare import CI_LEVEL, Comparison, compare_on_shared_period
from crpbot.evaluation.gate import GateDecision, GateThresholds
from crpbot.pipeline.chain import PipelineBudget, resolve_budget
from crpbot.pipeline.run import (
    checked_coins,
    checked_inputs,
    launch_chains,
    new_run_dir,
    outcome_gate,
    removed_if_empty,
)
from crpbot.pipeline.run_report import CoinOutcome, one_line, utc_now
from crpbot.ray_runtime import ClusterSettings
from crpbot.registry.artifact import write_json_atomic
from crpbot.registry.storage import validate_storage

PROMOTE_UNJUDGED_FLAG = "--promote-unjudged"
RETRAIN_FILE = "retrain.json"
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
    unjudged: bool = False  # there was a champion, but no fair comparison with it
    error: str | None = None  # what failed while judging (champion kept) or pushing this coin


def decide(
    gate: GateDecision, comparison: Comparison | None, *, promote_unjudged: bool = False
) -> tuple[bool, str]:
    """Promote when the gate passes and the challenger is not worse than the champion beyond noise.

    ``comparison`` None: no champion. An unfair one (the challenger cannot be judged against the
    champion) keeps the champion unless ``promote_unjudged``.
    """
    if not gate.passed:
        return False, "the challenger fails the gate: " + "; ".join(gate.reasons)
    if comparison is None:
        return True, "no champion: the gate alone decides, and the challenger passes it"
    if not comparison.fair:
        if promote_unjudged:
            return True, (
                f"{comparison.note}; promoted unjudged, by the user's {PROMOTE_UNJUDGED_FLAG}: "
                "the gate alone decided, and the challenger passes it"
            )
        return False, (
            f"{comparison.note}; unjudged, so the champion stays ({PROMOTE_UNJUDGED_FLAG} lets the gate "
            "alone decide)"
        )
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
    promote_unjudged: bool = False,
    log: Callable[[str], None] = print,
) -> RetrainDecision:
    """Compare with the coin's current champion, decide, promote if so, and record the decision.

    ``challenger_dir`` None: the challenger's chain failed (``gate`` says why); recorded all the same.
    Anything raised while judging is the decision (champion kept, the error as its reason), never
    an exception: one coin's failure must not stop the others' decisions.
    """
    from crpbot.data.bars import normalize_coin
    from crpbot.registry.local import current_version

    coin = normalize_coin(coin)
    champion = None
    try:
        champion = current_version(coin, root=registry_root)
        return _judge(
            coin, champion, challenger_dir, gate, registry_root, test_metrics, promote_unjudged, log
        )
    except Exception as exc:  # any failure is this coin's outcome; the run goes on
        return _failed_judgement(coin, champion, challenger_dir, gate, registry_root, exc, log)


def _judge(
    coin: str,
    champion: str | None,
    challenger_dir: str | Path | None,
    gate: GateDecision,
    registry_root: str | Path,
    test_metrics: dict[str, Any] | None,
    promote_unjudged: bool,
    log: Callable[[str], None],
) -> RetrainDecision:
    from crpbot.registry.local import coin_dir, promote

    comparison = None
    if champion is not None and challenger_dir is not None:
        try:
            comparison = compare_on_shared_period(coin_dir(registry_root, coin) / champion, challenger_dir)
        except CrpbotError as exc:  # no judgement possible: unjudged, like a comparison without rows
            comparison = Comparison(
                fair=False,
                note=f"the champion/challenger comparison failed: {exc}",
                challenger_test_rows=0,
            )
        log(f"{coin}: challenger vs champion {champion}: {comparison.note}")
    promoted, reason = decide(gate, comparison, promote_unjudged=promote_unjudged)
    version = promote(challenger_dir, coin, root=registry_root).version if promoted else None
    decision = RetrainDecision(
        coin=coin,
        champion=champion,
        challenger=None if challenger_dir is None else str(challenger_dir),
        promoted=promoted,
        decision=_decision_word(promoted, champion),
        reason=reason,
        challenger_version=version,
        comparison=None if comparison is None else comparison.to_dict(),
        unjudged=comparison is not None and not comparison.fair,
    )
    _record(
        registry_root,
        decision,
        gate,
        unjudged=decision.unjudged,
        promote_unjudged=promote_unjudged,
        challenger_test={key: test_metrics.get(key) for key in _RECORDED_METRICS} if test_metrics else None,
        comparison=decision.comparison,
    )
    log(f"{coin}: {decision.decision}{f' {version}' if version else ''}: {reason}")
    return decision


def _failed_judgement(
    coin: str,
    champion: str | None,
    challenger_dir: str | Path | None,
    gate: GateDecision,
    registry_root: str | Path,
    exc: Exception,
    log: Callable[[str], None],
) -> RetrainDecision:
    """The outcome of a coin whose judging raised: what ``current`` names now, and the error, in
    the history when it can still be written (a damaged history cannot) and in retrain.json."""
    from crpbot.registry.local import current_version

    error = one_line(exc) if isinstance(exc, CrpbotError) else f"{type(exc).__name__}: {one_line(exc)}"
    try:
        now = current_version(coin, root=registry_root)
    except Exception:  # an unreadable pointer: nothing was promoted by this run
        now = champion
    promoted = now != champion  # the error came after the promotion (its record, say)
    decision = RetrainDecision(
        coin=coin,
        champion=champion,
        challenger=None if challenger_dir is None else str(challenger_dir),
        promoted=promoted,
        decision=_decision_word(promoted, champion),
        reason=f"judging failed: {error}" + ("" if promoted else "; the champion stays"),
        challenger_version=now if promoted else None,
        error=error,
    )
    try:
        _record(registry_root, decision, gate, error=error)
    except Exception as record_exc:
        log(f"{coin}: the failure could not be recorded in the history: {one_line(record_exc)}")
    log(f"{coin}: {decision.decision}: {decision.reason}")
    return decision


def _decision_word(promoted: bool, champion: str | None) -> str:
    return "promoted" if promoted else "kept champion" if champion else "not promoted"


def _record(registry_root: str | Path, decision: RetrainDecision, gate: GateDecision, **facts: Any) -> None:
    """Append the decision to the coin's history, with the gate's verdict and ``facts``."""
    from crpbot.registry.history import record_event

    record_event(
        registry_root,
        decision.coin,
        "retrain",
        decision=decision.decision,
        reason=decision.reason,
        champion=decision.champion,
        challenger=decision.challenger,
        challenger_version=decision.challenger_version,
        gate=gate.to_dict(),
        **facts,
    )


def run_retrain(
    coins: list[str],
    *,
    input_dir: str | Path,
    budget: str | PipelineBudget = "smoke",
    cluster: ClusterSettings | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
    run_dir: str | Path | None = None,
    registry_root: str | Path = "models",
    storage: str | Path | None = None,
    bucket: str | None = None,
    prefix: str = "crpbot",
    endpoint_url: str | None = None,
    promote_unjudged: bool = False,
    log: Callable[[str], None] = print,
) -> list[RetrainDecision]:
    """Train every coin's challenger in parallel, then judge each against its champion and record it.

    Every check that can fail (coins, inputs, budget, the champions' integrity) runs before the
    run directory exists and Ray starts. With ``bucket``, each coin's registry (versions, pointer,
    history) is pushed after its decision. ``promote_unjudged``: a challenger that cannot be
    compared with its champion is promoted when it passes the gate (default: the champion stays).
    """
    from crpbot.registry.artifact import verify_artifact
    from crpbot.registry.local import current_path, current_version

    plan = resolve_budget(budget)
    cluster = cluster if cluster is not None else ClusterSettings()
    thresholds = thresholds if thresholds is not None else GateThresholds()
    costs = costs if costs is not None else Costs()
    coins = checked_coins(coins)
    validate_storage(storage)
    inputs = checked_inputs(coins, input_dir, plan, cluster.gpu)
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
            cluster=cluster,
            thresholds=thresholds,
            costs=costs,
            log=log,
        )
        summary = {
            "budget": budget if isinstance(budget, str) else asdict(plan),
            "started_at": started_at,
            "registry": str(registry_root),
            "promote_unjudged": promote_unjudged,
            "outcomes": [asdict(outcome) for outcome in outcomes],
        }
        decisions = judge_outcomes(
            outcomes,
            functools.partial(outcome_gate, thresholds=thresholds),
            run_dir / RETRAIN_FILE,
            summary,
            registry_root=registry_root,
            promote_unjudged=promote_unjudged,
            bucket=bucket,
            prefix=prefix,
            endpoint_url=endpoint_url,
            log=log,
        )
        for line in decision_table(decisions):
            log(line)
        log(f"Decisions: {run_dir / RETRAIN_FILE}; history: crpbot registry history COIN")
        return decisions


def judge_outcomes(
    outcomes: Sequence[CoinOutcome],
    gate_of: Callable[[CoinOutcome], GateDecision],
    path: Path,
    summary: dict[str, Any],
    *,
    registry_root: str | Path,
    promote_unjudged: bool = False,
    bucket: str | None = None,
    prefix: str = "crpbot",
    endpoint_url: str | None = None,
    log: Callable[[str], None] = print,
) -> list[RetrainDecision]:
    """Judge each coin's challenger (``gate_of``: the gate's verdict on it), push its registry with
    ``bucket``, and rewrite ``path`` (retrain.json: ``summary`` plus the decisions so far) atomically
    after each coin and once more at the end, so an interrupted run still leaves every decision
    it took, and ``finished_at``/``interrupted`` say whether it ended."""
    decisions: list[RetrainDecision] = []

    def write(**end: Any) -> None:
        write_json_atomic(path, {**summary, **end, "decisions": [asdict(d) for d in decisions]})

    try:
        write(finished_at=None, interrupted=None)
        for outcome in outcomes:
            decision = judge_challenger(
                outcome.coin,
                None if outcome.failed else outcome.final_model,
                _gate(gate_of, outcome),
                registry_root=registry_root,
                test_metrics=outcome.metrics or None,
                promote_unjudged=promote_unjudged,
                log=log,
            )
            if bucket:
                decision = _pushed(decision, registry_root, bucket, prefix, endpoint_url, log)
            decisions.append(decision)
            write(finished_at=None, interrupted=None)
    except BaseException as exc:
        write(finished_at=None, interrupted=one_line(exc))
        raise
    write(finished_at=utc_now(), interrupted=None)
    return decisions


def _gate(gate_of: Callable[[CoinOutcome], GateDecision], outcome: CoinOutcome) -> GateDecision:
    """The gate's verdict; metrics it cannot read fail it (with the error), like a failed chain."""
    try:
        return gate_of(outcome)
    except Exception as exc:
        return GateDecision(passed=False, reasons=[f"the gate could not read the metrics: {one_line(exc)}"])


def _pushed(
    decision: RetrainDecision,
    registry_root: str | Path,
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    log: Callable[[str], None],
) -> RetrainDecision:
    """Push the coin's registry after its decision; a failed push is recorded, the decision stands."""
    from crpbot.registry.local import coin_dir, version_names
    from crpbot.registry.transfer import push

    try:
        if not version_names(coin_dir(registry_root, decision.coin)):
            return decision
        for pushed in push(
            registry_root, bucket, coin=decision.coin, prefix=prefix, endpoint_url=endpoint_url
        ):
            if pushed.uploaded:
                log(f"Pushed {pushed.coin} {pushed.version} -> {pushed.url}")
    except Exception as exc:
        error = f"push to s3://{bucket} failed: {one_line(exc)}"
        log(f"{decision.coin}: {error}")
        return dataclasses.replace(decision, error=error)
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
            scores = (
                "unjudged (no fair comparison)" if d.unjudged else f"error: {d.error}" if d.error else "-"
            )
        lines.append(f"{d.coin:8} {d.decision:14} {d.champion or '-':32} {scores}")
    return lines

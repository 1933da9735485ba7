"""The end-to-end recipe for several coins: every coin's chain in parallel, the gate, promotion.

Per coin, :func:`crpbot.pipeline.chain.run_coin_chain` (recipe -> validation check -> search ->
ensemble -> one test evaluation). The batch is promoted when at least ``quorum`` coins pass;
only passing coins are promoted.

Coins run in parallel (:func:`run_pipeline`): each coin's chain is one Ray task that claims
no CPU or GPU itself and is pinned to the driver's node (it reads the inputs and writes the
run directory there). The training run, search trials and ensemble members it launches claim
the real CPUs and GPUs, so three coins on a cluster with three free slots run at once, and on
fewer they queue for them. No process holds a CPU or GPU while it waits for another one, so
coins cannot deadlock on each other's reservations. Holding nothing, a chain runs on one thread:
its predictions (validation checks, temperature fit, test evaluation) run in Ray tasks claiming
an equal part of a node's CPUs, or a GPU share with ``--gpu`` (``crpbot.model.scoring``). A
process per coin rather than a driver thread: Tune keeps process-wide state (verbosity,
Optuna's logger), and a coin whose process dies (out of memory, say) is reported as failed
while the others finish.

What the run prints (:mod:`crpbot.pipeline.console`): one progress row per coin while the chains
run, one line as each ends (its error when it failed), then the table, last. Every line the
workers print goes to ``<run_dir>/pipeline.log``; ``verbose`` streams them as well.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import Costs
from crpbot.evaluation.gate import GateDecision, GateThresholds, batch_decision, metrics_decision
from crpbot.pipeline.chain import PipelineBudget, checked_budget, resolve_budget, run_coin_chain
from crpbot.pipeline.console import CHAIN_END, FAILED, LOG_NAME, RunConsole
from crpbot.pipeline.run_report import (
    CoinOutcome,
    PipelineResult,
    one_line,
    summary_table,
    utc_now,
    write_run_report,
)
from crpbot.ray_runtime import CHAIN_ENV, ClusterSettings, init_ray, quiet_worker_logs, require_gpus
from crpbot.registry.storage import join, validate_storage

if TYPE_CHECKING:
    from crpbot.model.scoring import ScoringClaim

# Environment variables a coin's chain needs from the driver: S3 (endpoint, region, credentials
# when not from an instance profile) and crpbot's own settings.
FORWARDED_ENV = ("AWS_", "CRPBOT_")


def run_pipeline(
    coins: list[str],
    *,
    budget: str = "smoke",
    cluster: ClusterSettings | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
    input_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    registry_root: str | Path = "models",
    storage: str | Path | None = None,
    bucket: str | None = None,
    prefix: str = "crpbot",
    endpoint_url: str | None = None,
    verbose: bool = False,
    log: Callable[[str], None] = print,
) -> PipelineResult:
    """Run every coin's chain in parallel, gate the batch, promote it if enough coins pass.

    ``storage`` holds Ray Train checkpoints and Tune experiment state (a path or
    ``s3://bucket/prefix``; default: inside ``run_dir``). On a multi-node cluster it must be
    shared storage, since workers write checkpoints that the driver reads. A coin whose chain
    fails is reported with its reason and counts as failing the gate; the others' results stand.
    ``cluster``: where and on what the chains run; ``costs``: the test backtest's fills; each
    defaults when None (a local Ray, the strict gate, 10 bps per side). ``verbose``: stream every
    worker's output as it comes instead of the progress rows (it goes to ``pipeline.log`` either way).
    """

    # Every check that can fail runs before the run directory exists and Ray starts: a mistake
    # costs seconds, not a trained BTC model, and leaves nothing behind that blocks the rerun.
    plan = resolve_budget(budget)
    cluster = cluster if cluster is not None else ClusterSettings()
    thresholds = thresholds if thresholds is not None else GateThresholds()
    costs = costs if costs is not None else Costs()
    coins = checked_coins(coins)
    validate_storage(storage)
    inputs = checked_inputs(coins, input_dir, plan, cluster.gpu)
    run_dir = new_run_dir(run_dir, "pipeline")
    storage = storage if storage is not None else run_dir.resolve()
    with removed_if_empty(run_dir):
        started_at = utc_now()
        log(f"Pipeline budget={budget} coins={','.join(coins)} run_dir={run_dir} (coins in parallel)")
        with RunConsole(run_dir / LOG_NAME, coins, verbose=verbose) as console:
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
                console=console,
            )
        decisions = {o.coin: outcome_gate(o, thresholds) for o in outcomes}
        batch = batch_decision(decisions, thresholds).to_dict()
        if batch["promoted"]:
            _promote(outcomes, decisions, registry_root, bucket, prefix, endpoint_url, log)
        result = PipelineResult(
            run_dir=run_dir, outcomes=outcomes, batch=batch, started_at=started_at, finished_at=utc_now()
        )
        write_run_report(result, budget, thresholds)
        log(f"Run report: {run_dir / 'report.md'}; every worker's output: {run_dir / LOG_NAME}")
        for line in summary_table(result):
            log(line)
        return result


def checked_coins(coins: list[str]) -> list[str]:
    """The coins normalised (BTC -> BTC-USD); none, or one listed twice, is a one-line error."""
    from crpbot.data.bars import normalize_coin

    if not coins:
        raise CrpbotError("no coins given: expected e.g. BTC,ETH,SOL")
    coins = [normalize_coin(coin) for coin in coins]
    if len(set(coins)) != len(coins):
        raise CrpbotError(f"a coin is listed twice: {', '.join(coins)}")
    return coins


def checked_inputs(
    coins: list[str], input_dir: str | Path | None, plan: PipelineBudget, use_gpu: bool = False
) -> dict[str, Path]:
    """The budget (:func:`checked_budget`) and each coin's bars, read and prepared once now (~0.1 s
    each), so a corrupt SOL file fails before BTC trains (pipeline and retrain)."""
    from crpbot.data.bars import default_input
    from crpbot.data.dataset import load_prepared

    config = checked_budget(plan, use_gpu)
    inputs = {coin: _input_for(coin, input_dir, default_input) for coin in coins}
    for coin, path in inputs.items():
        load_prepared(coin, path, config)
    return inputs


def new_run_dir(run_dir: str | Path | None, kind: str) -> Path:
    """Create the run directory (default ``runs/<kind>-<time>``); an existing one is refused, never reused."""
    run_dir = (
        Path(run_dir) if run_dir is not None else Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if run_dir.exists():
        raise CrpbotError(f"run directory already exists: {run_dir}")
    run_dir.mkdir(parents=True)
    return run_dir


def launch_chains(
    coins: list[str],
    inputs: dict[str, Path],
    run_dir: Path,
    plan: PipelineBudget,
    *,
    storage: str | Path,
    cluster: ClusterSettings,
    thresholds: GateThresholds,
    costs: Costs,
    log: Callable[[str], None],
    console: RunConsole | None = None,
) -> list[CoinOutcome]:
    """Start Ray and run every coin's chain in parallel under ``run_dir/<coin>`` (pipeline and retrain).

    Each chain's end is a line through ``log``, or the ``console``'s when there is one."""
    from crpbot.model.scoring import chain_claim

    init_ray(cluster.address)
    if cluster.gpu:
        require_gpus(cluster.workers)  # one line now, not a failure per coin (or a wait) later
    kwargs = {
        coin: {
            "input_path": inputs[coin].resolve(),
            "coin_dir": (run_dir / coin).resolve(),
            "budget": plan,
            "storage": join(storage, coin),
            "cluster": cluster,
            "thresholds": thresholds,
            "costs": costs,
            "progress": sys.stdout.isatty(),  # the chains write to a log; this may be a terminal
        }
        for coin in coins
    }
    # the chains claim nothing themselves: their validation checks, temperature fits and test
    # evaluations claim this each (crpbot.model.scoring)
    claim = chain_claim(len(coins), plan.gpu_share if cluster.gpu else None)
    return _run_chains_in_parallel(coins, kwargs, claim, log, console)


def _run_chains_in_parallel(
    coins: list[str],
    chain_kwargs: dict[str, dict[str, Any]],
    claim: ScoringClaim,
    log: Callable[[str], None],
    console: RunConsole | None,
) -> list[CoinOutcome]:
    """Submit every coin's chain at once; collect each as it finishes, failures included."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    # Workers were started with Ray's environment, not this process's: the settings a chain reads
    # (an S3 endpoint, the GPU wait) travel with it, and on to the tasks and actors it launches,
    # with the settings that keep Ray's harmless warnings out of its output.
    forwarded = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}
    forwarded |= {key: os.environ.get(key, value) for key, value in CHAIN_ENV.items()}
    task = ray.remote(num_cpus=0, max_retries=0, runtime_env={"env_vars": forwarded})(_chain_task)
    submitted_at = utc_now()
    pending = {
        task.options(name=f"chain-{coin}", scheduling_strategy=here).remote(
            coin, chain_kwargs[coin], claim
        ): coin
        for coin in coins
    }
    finished: dict[str, CoinOutcome] = {}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        coin = pending.pop(ref)
        died = False
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the chain's process died: OOM kill, lost node
            outcome = CoinOutcome.failure(coin, one_line(exc), started_at=submitted_at, finished_at=utc_now())
            died = True
        finished[coin] = outcome
        ending = f"failed: {outcome.error}" if outcome.failed else f"{outcome.stage} scored on test"
        line = f"== {coin}: {ending} ({outcome.seconds:.0f} s)"
        if console is not None:
            console.finished(coin, line, process_died=died)
        else:
            log(line)
    return [finished[coin] for coin in coins]


def _chain_task(coin: str, kwargs: dict[str, Any], claim: ScoringClaim) -> CoinOutcome:
    """One coin's chain in its own Ray worker; a failure becomes a reported outcome, not an exception."""
    from crpbot.model.scoring import scoring_claim

    started_at = utc_now()

    def say(message: str) -> None:
        for line in str(message).splitlines():
            print(f"[{coin}] {line}", flush=True)

    quiet_worker_logs()  # Tune's INFO lines in this process (the search's driver)
    try:
        with scoring_claim(claim):
            outcome = run_coin_chain(coin, log=say, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of this coin is reported, the others go on
        say(f"{FAILED}{one_line(exc)}")
        return CoinOutcome.failure(coin, one_line(exc), started_at=started_at, finished_at=utc_now())
    say(CHAIN_END)  # the console waits for this line before the table is printed
    return outcome.timed(started_at, utc_now())


def outcome_gate(outcome: CoinOutcome, thresholds: GateThresholds) -> GateDecision:
    """The coin's gate decision; a coin whose chain failed fails the gate, with the reason."""
    if outcome.failed:
        return GateDecision(passed=False, reasons=[f"chain failed: {outcome.error}"])
    return metrics_decision(outcome.metrics, thresholds)


@contextmanager
def removed_if_empty(run_dir: Path) -> Iterator[None]:
    """Remove ``run_dir`` if the run fails before writing to it (Ray failed to start, say), so the
    same command can be rerun instead of finding "run directory already exists"."""
    try:
        yield
    except BaseException:
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def _input_for(coin: str, input_dir: str | Path | None, default_input: Callable[[str], Path]) -> Path:
    """The coin's bars: the bundled sample, or its file in ``input_dir`` (freqtrade names too)."""
    if input_dir is None:
        return default_input(coin)
    from crpbot.data.bars import find_input

    return find_input(input_dir, coin)


def _promote(
    outcomes: list[CoinOutcome],
    decisions: dict,
    registry_root: str | Path,
    bucket: str | None,
    prefix: str,
    endpoint_url: str | None,
    log: Callable[[str], None],
) -> None:
    from crpbot.registry.local import promote
    from crpbot.registry.transfer import push

    for outcome in outcomes:
        if not decisions[outcome.coin].passed:
            continue
        promoted = promote(outcome.final_model, outcome.coin, root=registry_root)
        outcome.promoted_version = promoted.version
        log(f"Promoted {outcome.coin} {promoted.version} -> {promoted.path}")
        if bucket:
            for pushed in push(
                registry_root, bucket, coin=outcome.coin, prefix=prefix, endpoint_url=endpoint_url
            ):
                log(f"Pushed {pushed.coin} {pushed.version} -> {pushed.url}")

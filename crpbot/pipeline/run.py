"""The end-to-end recipe: train, check, search, ensemble, evaluate once, gate, promote.

Per coin (:func:`run_coin_chain`):
1. train the recipe config with Ray Train;
2. check it against the gate's thresholds on the **validation** split;
3. if it falls short, run the fallback search (Ray Tune + Optuna) and train a seed
   ensemble of the best config, temperature-calibrated on validation;
4. score the chosen model **once** on the test split and apply the gate.
The batch is promoted when at least ``quorum`` coins pass; only passing coins are promoted.

Why validation decides step 3: the recipe's "retrain when the model fails the gate" would read
the test split twice and keep the retry that looked better there, a selection on test. Here
the test split is read once per coin, after every choice has been made.

Coins run in parallel (:func:`run_pipeline`): each coin's chain is one Ray task that claims
no CPU or GPU itself and is pinned to the driver's node (it reads the inputs and writes the
run directory there). The training run, search trials and ensemble members it launches claim
the real CPUs and GPUs, so three coins on a cluster with three free slots run at once, and on
fewer they queue for them. No process holds a CPU or GPU while it waits for another one, so
coins cannot deadlock on each other's reservations. A process per coin rather than a driver
thread: Tune keeps process-wide state (verbosity, Optuna's logger), and a coin whose process
dies (out of memory, say) is reported as failed while the others finish.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crpbot.config import CONFIG_DIR, load_config
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import DEFAULT_ENTRY_DELAY_BARS
from crpbot.evaluation.gate import GateDecision, GateThresholds, batch_decision, metrics_decision
from crpbot.pipeline.run_report import (
    CoinOutcome,
    PipelineResult,
    one_line,
    summary_table,
    utc_now,
    write_run_report,
)
from crpbot.ray_runtime import init_ray, require_gpus
from crpbot.registry.storage import join, validate_storage

# Environment variables a coin's chain needs from the driver: S3 (endpoint, region, credentials
# when not from an instance profile) and crpbot's own settings.
FORWARDED_ENV = ("AWS_", "CRPBOT_")


@dataclass(frozen=True)
class PipelineBudget:
    """How much compute one pipeline run may spend per coin."""

    train_config: str
    search_space: str
    seeds: int
    # with --gpu: the share of a GPU each ensemble member claims (search trials: the space's
    # budget.gpus_per_trial)
    gpu_share: float = 1.0


BUDGETS: dict[str, PipelineBudget] = {
    # seconds per coin on 2 CPUs: for `make demo` and the tests, not for trading
    "smoke": PipelineBudget(train_config="smoke.yaml", search_space="smoke_search.yaml", seeds=2),
    # the recipe: 3-layer BiLSTM, full fallback space, 5 seeds (GPU cluster)
    "full": PipelineBudget(train_config="default.yaml", search_space="fallback_search.yaml", seeds=5),
    # the recipe at batch 512 (lr x4), the fallback space at batches 256-1024 with 4 trials per GPU,
    # 5 seeds at 4 per GPU: what makes a GPU pay (benchmarks/RESULTS.md)
    "gpu": PipelineBudget(train_config="gpu.yaml", search_space="gpu_search.yaml", seeds=5, gpu_share=0.25),
}


def run_pipeline(
    coins: list[str],
    *,
    budget: str = "smoke",
    address: str | None = None,
    input_dir: str | Path | None = None,
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
) -> PipelineResult:
    """Run every coin's chain in parallel, gate the batch, promote it if enough coins pass.

    ``storage`` holds Ray Train checkpoints and Tune experiment state (a path or
    ``s3://bucket/prefix``; default: inside ``run_dir``). On a multi-node cluster it must be
    shared storage, since workers write checkpoints that the driver reads. A coin whose chain
    fails is reported with its reason and counts as failing the gate; the others' results stand.
    ``fee_bps``, ``slippage_bps`` and ``entry_delay_bars`` are the test backtest's fills.
    """
    from crpbot.data.bars import default_input, normalize_coin
    from crpbot.data.dataset import load_prepared

    # Every check that can fail runs before the run directory exists and Ray starts: a mistake
    # costs seconds, not a trained BTC model, and leaves nothing behind that blocks the rerun.
    plan = resolve_budget(budget)
    thresholds = thresholds if thresholds is not None else GateThresholds()
    if not coins:
        raise CrpbotError("no coins given: expected e.g. BTC,ETH,SOL")
    coins = [normalize_coin(coin) for coin in coins]
    if len(set(coins)) != len(coins):
        raise CrpbotError(f"a coin is listed twice: {', '.join(coins)}")
    check_workers_and_costs(workers, fee_bps, slippage_bps, entry_delay_bars)
    validate_storage(storage)
    inputs = {coin: input_for(coin, input_dir, default_input) for coin in coins}
    config = load_config(CONFIG_DIR / plan.train_config)
    for coin, path in inputs.items():
        load_prepared(coin, path, config)  # ~0.1 s each: a corrupt SOL file fails before BTC trains
    run_dir = (
        Path(run_dir) if run_dir is not None else Path("runs") / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if run_dir.exists():
        raise CrpbotError(f"run directory already exists: {run_dir}")
    run_dir.mkdir(parents=True)
    storage = storage if storage is not None else run_dir.resolve()
    with removed_if_empty(run_dir):
        init_ray(address)
        if use_gpu:
            require_gpus(workers)  # one line now, not a failure per coin (or a wait) later
        started_at = utc_now()
        log(f"Pipeline budget={budget} coins={','.join(coins)} run_dir={run_dir} (coins in parallel)")
        outcomes = run_chains_in_parallel(
            coins,
            {
                coin: {
                    "input_path": inputs[coin].resolve(),
                    "coin_dir": (run_dir / coin).resolve(),
                    "budget": plan,
                    "storage": join(storage, coin),
                    "address": address,
                    "use_gpu": use_gpu,
                    "workers": workers,
                    "thresholds": thresholds,
                    "fee_bps": fee_bps,
                    "slippage_bps": slippage_bps,
                    "entry_delay_bars": entry_delay_bars,
                    "progress": sys.stdout.isatty(),  # the chains write to a log; this may be a terminal
                }
                for coin in coins
            },
            log,
        )

        decisions = {o.coin: outcome_gate(o, thresholds) for o in outcomes}
        batch = batch_decision(decisions, thresholds).to_dict()
        if batch["promoted"]:
            _promote(outcomes, decisions, registry_root, bucket, prefix, endpoint_url, log)
        result = PipelineResult(
            run_dir=run_dir, outcomes=outcomes, batch=batch, started_at=started_at, finished_at=utc_now()
        )
        write_run_report(result, budget, thresholds)
        for line in summary_table(result):
            log(line)
        log(f"Run report: {run_dir / 'report.md'}")
        return result


def run_coin_chain(
    coin: str,
    input_path: str | Path,
    coin_dir: str | Path,
    *,
    budget: str | PipelineBudget = "smoke",
    storage: str | Path | None = None,
    address: str | None = None,
    use_gpu: bool = False,
    workers: int = 1,
    thresholds: GateThresholds | None = None,
    fee_bps: float = 10.0,
    slippage_bps: float = 0.0,
    entry_delay_bars: int = DEFAULT_ENTRY_DELAY_BARS,
    score_on_test: bool = True,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> CoinOutcome:
    """One coin's chain: recipe -> validation check -> (search -> seed ensemble) -> one test evaluation.

    Writes under ``coin_dir`` (``recipe_model/``, ``search_results/``, ``ensemble/``,
    ``evaluation/``); Ray run state goes to ``storage`` (default ``coin_dir/ray``). Raises
    :class:`CrpbotError` (or Ray's error) when a step fails: the caller decides whether that stops
    anything else. ``score_on_test=False`` stops after the validation check of the chosen model and
    leaves the test split unread, for a caller that scores it elsewhere (a challenger).
    ``progress``: the recipe's training shows samples/s and an ETA within long epochs.
    """
    from crpbot.data.bars import normalize_coin
    from crpbot.evaluation.evaluate import evaluate_model
    from crpbot.model.ensemble import train_ensemble
    from crpbot.model.trainer import train
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    plan = resolve_budget(budget)
    thresholds = thresholds if thresholds is not None else GateThresholds()
    check_workers_and_costs(workers, fee_bps, slippage_bps, entry_delay_bars)
    coin, coin_dir = normalize_coin(coin), Path(coin_dir)
    storage = storage if storage is not None else (coin_dir / "ray").resolve()
    validate_storage(storage)
    config = load_config(CONFIG_DIR / plan.train_config)

    log(f"training the recipe ({plan.train_config})")
    recipe_dir = train(
        config,
        coin,
        input_path=input_path,
        num_workers=workers,
        use_gpu=use_gpu,
        address=address,
        out_dir=coin_dir / "recipe_model",
        storage_path=join(storage, "train"),
        run_name=f"{coin}-recipe",
        progress=progress,
    )
    recipe_val = validation_check(recipe_dir, thresholds)
    outcome = CoinOutcome(
        coin=coin,
        recipe_model=str(recipe_dir),
        recipe_validation=recipe_val,
        final_model=str(recipe_dir),
        final_validation=recipe_val,
    )
    log(
        f"recipe on validation: accuracy {recipe_val['accuracy']:.4f}, "
        f"ECE {recipe_val['ece']:.4f} -> {'meets' if recipe_val['passed'] else 'misses'} "
        "the gate's thresholds"
    )

    if not recipe_val["passed"]:
        log(f"fallback search ({plan.search_space})")
        space = load_search_space(CONFIG_DIR / plan.search_space)
        search = run_search(
            space,
            coin,
            input_path=input_path,
            storage=join(storage, "search"),
            name=f"{coin}-search",
            address=address,
            use_gpu=use_gpu,
            output_dir=coin_dir / "search_results",
            progress=False,
            log=log,
        )
        # The search's epoch budget is for ranking configs; the ensemble members train as long as
        # the recipe allows (early stopping on validation decides).
        best = search.best_config.replace(
            max_epochs=config.max_epochs, patience=config.patience, max_train_windows=config.max_train_windows
        )
        log(f"seed ensemble of the best config ({plan.seeds} seeds)")
        ensemble_dir = train_ensemble(
            best,
            coin,
            seeds=plan.seeds,
            input_path=input_path,
            out_dir=coin_dir / "ensemble",
            address=address,
            use_gpu=use_gpu,
            gpu_share=plan.gpu_share,
            log=log,
        )
        outcome.stage = "ensemble"
        outcome.search_best_yaml = str(search.best_yaml)
        outcome.final_model = str(ensemble_dir)
        outcome.final_validation = validation_check(ensemble_dir, thresholds)

    if score_on_test:
        log(f"scoring the {outcome.stage} model once on the test split")
        evaluation = evaluate_model(
            outcome.final_model,
            out_dir=coin_dir / "evaluation",
            thresholds=thresholds,
            fee_bps=fee_bps,
            slippage_bps=slippage_bps,
            entry_delay_bars=entry_delay_bars,
            log=log,
        )
        outcome.evaluation_dir = str(evaluation.out_dir)
        outcome.metrics = evaluation.metrics
    return outcome


def resolve_budget(budget: str | PipelineBudget) -> PipelineBudget:
    """A budget by its name in :data:`BUDGETS`, or as given; shared with ``crpbot retrain``."""
    if isinstance(budget, PipelineBudget):
        return budget
    if budget not in BUDGETS:
        raise CrpbotError(f"unknown budget {budget!r}: expected one of {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def check_workers_and_costs(workers: int, fee_bps: float, slippage_bps: float, entry_delay_bars: int) -> None:
    """Refuse bad worker counts and backtest costs before Ray starts (pipeline and retrain)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CrpbotError(f"invalid number of workers {workers!r}: must be >= 1")
    for name, bps in (("fee", fee_bps), ("slippage", slippage_bps)):
        if not (math.isfinite(bps) and bps >= 0):
            raise CrpbotError(f"invalid {name} {bps} bps: must be a finite number >= 0")
    if isinstance(entry_delay_bars, bool) or not isinstance(entry_delay_bars, int) or entry_delay_bars < 0:
        raise CrpbotError(f"invalid entry delay {entry_delay_bars!r} bars: must be an integer >= 0")


def run_chains_in_parallel(
    coins: list[str], chain_kwargs: dict[str, dict[str, Any]], log: Callable[[str], None]
) -> list[CoinOutcome]:
    """Submit every coin's chain at once; collect each as it finishes, failures included."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    # Workers were started with Ray's environment, not this process's: the settings a chain reads
    # (an S3 endpoint, the GPU wait) travel with it, and on to the tasks and actors it launches.
    forwarded = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}
    task = ray.remote(num_cpus=0, max_retries=0, runtime_env={"env_vars": forwarded})(_chain_task)
    submitted_at = utc_now()
    pending = {
        task.options(name=f"chain-{coin}", scheduling_strategy=here).remote(coin, chain_kwargs[coin]): coin
        for coin in coins
    }
    finished: dict[str, CoinOutcome] = {}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        coin = pending.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the chain's process died: OOM kill, lost node
            outcome = CoinOutcome.failure(coin, one_line(exc), started_at=submitted_at, finished_at=utc_now())
        finished[coin] = outcome
        ending = f"failed: {outcome.error}" if outcome.failed else f"{outcome.stage} scored on test"
        log(f"== {coin}: {ending} ({outcome.seconds:.0f} s)")
    return [finished[coin] for coin in coins]


def _chain_task(coin: str, kwargs: dict[str, Any]) -> CoinOutcome:
    """One coin's chain in its own Ray worker; a failure becomes a reported outcome, not an exception."""
    started_at = utc_now()

    def say(message: str) -> None:
        for line in str(message).splitlines():
            print(f"[{coin}] {line}", flush=True)

    try:
        outcome = run_coin_chain(coin, log=say, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of this coin is reported, the others go on
        say(f"failed: {one_line(exc)}")
        return CoinOutcome.failure(coin, one_line(exc), started_at=started_at, finished_at=utc_now())
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


def input_for(coin: str, input_dir: str | Path | None, default_input: Callable[[str], Path]) -> Path:
    """The coin's bars: the bundled sample, or its file in ``input_dir`` (freqtrade names too)."""
    if input_dir is None:
        return default_input(coin)
    from crpbot.data.bars import find_input

    return find_input(input_dir, coin)


def validation_check(model_dir: str | Path, thresholds: GateThresholds) -> dict[str, Any]:
    """The gate, read as configured, applied to the validation split (the only split a decision may read)."""
    from crpbot.evaluation.evaluate import stored_split_data
    from crpbot.evaluation.metrics import classification_metrics
    from crpbot.model.predictor import load_predictor

    predictor = load_predictor(model_dir)
    data = stored_split_data(predictor)
    validation = predictor.predictions(data, "val")
    scores = classification_metrics(validation.labels, validation.probs, horizon=data.horizon)
    decision = metrics_decision(scores, thresholds)
    return {
        "n": len(validation),
        "accuracy": scores["accuracy"],
        "accuracy_ci": scores["accuracy_ci"],
        "ece": scores["ece"],
        "ece_equal_mass": scores["ece_equal_mass"],
        "passed": decision.passed,
        "reasons": decision.reasons,
    }


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

"""The end-to-end recipe: train, check, search, ensemble, evaluate once, gate, promote.

Per coin:
1. train the recipe config with Ray Train;
2. check it against the gate's thresholds on the **validation** split;
3. if it falls short, run the fallback search (Ray Tune + Optuna) and train a seed
   ensemble of the best config, temperature-calibrated on validation;
4. score the chosen model **once** on the test split and apply the gate.
The batch is promoted when at least ``quorum`` coins pass; only passing coins are promoted.

Why validation decides step 3: the recipe's "retrain when the model fails the gate" would read
the test split twice and keep the retry that looked better there, a selection on test. Here
the test split is read once per coin, after every choice has been made.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crpbot.config import CONFIG_DIR, TrainConfig, load_config
from crpbot.errors import CrpbotError
from crpbot.evaluation.gate import GateThresholds, batch_decision, coin_decision
from crpbot.pipeline.run_report import CoinOutcome, PipelineResult, summary_table, write_run_report
from crpbot.ray_runtime import init_ray
from crpbot.registry.storage import join, validate_storage


@dataclass(frozen=True)
class PipelineBudget:
    """How much compute one pipeline run may spend per coin."""

    train_config: str
    search_space: str
    seeds: int


BUDGETS: dict[str, PipelineBudget] = {
    # seconds per coin on 2 CPUs: for `make demo` and the tests, not for trading
    "smoke": PipelineBudget(train_config="smoke.yaml", search_space="smoke_search.yaml", seeds=2),
    # the recipe: 3-layer BiLSTM, full fallback space, 5 seeds (GPU cluster)
    "full": PipelineBudget(train_config="default.yaml", search_space="fallback_search.yaml", seeds=5),
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
    log: Callable[[str], None] = print,
) -> PipelineResult:
    """Run the recipe for ``coins`` and promote the batch if enough coins pass the gate.

    ``storage`` holds Ray Train checkpoints and Tune experiment state (a path or
    ``s3://bucket/prefix``; default: inside ``run_dir``). On a multi-node cluster it must be
    shared storage, since workers write checkpoints that the driver reads.
    """
    from crpbot.data.bars import default_input, normalize_coin
    from crpbot.data.dataset import load_prepared

    # Every check that can fail runs before the run directory exists and Ray starts: a mistake
    # costs seconds, not a trained BTC model, and leaves nothing behind that blocks the rerun.
    if budget not in BUDGETS:
        raise CrpbotError(f"unknown budget {budget!r}: expected one of {', '.join(BUDGETS)}")
    plan = BUDGETS[budget]
    thresholds = thresholds if thresholds is not None else GateThresholds()
    if not coins:
        raise CrpbotError("no coins given: expected e.g. BTC,ETH,SOL")
    coins = [normalize_coin(coin) for coin in coins]
    if len(set(coins)) != len(coins):
        raise CrpbotError(f"a coin is listed twice: {', '.join(coins)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CrpbotError(f"invalid number of workers {workers!r}: must be >= 1")
    if not (math.isfinite(fee_bps) and fee_bps >= 0):
        raise CrpbotError(f"invalid fee {fee_bps} bps: must be a finite number >= 0")
    validate_storage(storage)
    inputs = {coin: _input_for(coin, input_dir, default_input) for coin in coins}
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
    with _removed_if_empty(run_dir):
        init_ray(address)
        log(f"Pipeline budget={budget} coins={','.join(coins)} run_dir={run_dir}")
        outcomes = [
            _run_coin(
                coin,
                inputs[coin],
                config,
                plan,
                run_dir / coin,
                storage=join(storage, coin),
                address=address,
                use_gpu=use_gpu,
                workers=workers,
                thresholds=thresholds,
                fee_bps=fee_bps,
                log=log,
            )
            for coin in coins
        ]

        decisions = {
            o.coin: coin_decision(o.metrics["accuracy"], o.metrics["ece"], thresholds) for o in outcomes
        }
        batch = batch_decision(decisions, thresholds).to_dict()
        if batch["promoted"]:
            _promote(outcomes, decisions, registry_root, bucket, prefix, endpoint_url, log)
        result = PipelineResult(run_dir=run_dir, outcomes=outcomes, batch=batch)
        write_run_report(result, budget, thresholds)
        for line in summary_table(result):
            log(line)
        log(f"Run report: {run_dir / 'report.md'}")
        return result


@contextmanager
def _removed_if_empty(run_dir: Path) -> Iterator[None]:
    """Remove ``run_dir`` if the run fails before writing to it (Ray failed to start, say), so the
    same command can be rerun instead of finding "run directory already exists"."""
    try:
        yield
    except BaseException:
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def _input_for(coin: str, input_dir: str | Path | None, default_input: Callable[[str], Path]) -> Path:
    if input_dir is None:
        return default_input(coin)
    path = Path(input_dir) / f"{coin}_1m.parquet"
    if not path.is_file():
        raise CrpbotError(f"no input for {coin}: expected {path}")
    return path


def _run_coin(
    coin: str,
    input_path: Path,
    config: TrainConfig,
    plan: PipelineBudget,
    coin_dir: Path,
    *,
    storage: str | Path,
    address: str | None,
    use_gpu: bool,
    workers: int,
    thresholds: GateThresholds,
    fee_bps: float,
    log: Callable[[str], None],
) -> CoinOutcome:
    from crpbot.evaluation.evaluate import evaluate_model
    from crpbot.model.ensemble import train_ensemble
    from crpbot.model.trainer import train
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    log(f"== {coin}: training the recipe ({plan.train_config})")
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
        f"== {coin}: recipe on validation: accuracy {recipe_val['accuracy']:.4f}, "
        f"ECE {recipe_val['ece']:.4f} -> {'meets' if recipe_val['passed'] else 'misses'} "
        "the gate's thresholds"
    )

    if not recipe_val["passed"]:
        log(f"== {coin}: fallback search ({plan.search_space})")
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
        log(f"== {coin}: seed ensemble of the best config ({plan.seeds} seeds)")
        ensemble_dir = train_ensemble(
            best,
            coin,
            seeds=plan.seeds,
            input_path=input_path,
            out_dir=coin_dir / "ensemble",
            address=address,
            use_gpu=use_gpu,
            log=log,
        )
        outcome.stage = "ensemble"
        outcome.search_best_yaml = str(search.best_yaml)
        outcome.final_model = str(ensemble_dir)
        outcome.final_validation = validation_check(ensemble_dir, thresholds)

    log(f"== {coin}: scoring the {outcome.stage} model once on the test split")
    evaluation = evaluate_model(
        outcome.final_model, out_dir=coin_dir / "evaluation", thresholds=thresholds, fee_bps=fee_bps, log=log
    )
    outcome.evaluation_dir = str(evaluation.out_dir)
    outcome.metrics = evaluation.metrics
    return outcome


def validation_check(model_dir: str | Path, thresholds: GateThresholds) -> dict[str, Any]:
    """The gate's thresholds applied to the validation split (the only split a decision may read)."""
    from crpbot.evaluation.evaluate import stored_split_data
    from crpbot.evaluation.metrics import accuracy, expected_calibration_error
    from crpbot.model.predictor import load_predictor

    predictor = load_predictor(model_dir)
    data = stored_split_data(predictor)
    validation = predictor.predictions(data, "val")
    acc = accuracy(validation.labels, validation.probs)
    ece = expected_calibration_error(validation.labels, validation.probs)
    decision = coin_decision(acc, ece, thresholds)
    return {
        "n": len(validation),
        "accuracy": acc,
        "ece": ece,
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

"""One coin's chain: recipe -> validation check -> (search -> seed ensemble) -> one test evaluation.

1. train the recipe config with Ray Train;
2. check it against the gate's thresholds on the **validation** split;
3. if it falls short, run the fallback search (Ray Tune + Optuna) and train a seed
   ensemble of the best config, temperature-calibrated on validation;
4. score the chosen model **once** on the test split.

Why validation decides step 3: the recipe's "retrain when the model fails the gate" would read
the test split twice and keep the retry that looked better there, a selection on test. Here
the test split is read once per coin, after every choice has been made. The budgets name how
much compute a chain may spend. :mod:`crpbot.pipeline.run` runs the chains of every coin in
parallel and gates the batch; :mod:`crpbot.pipeline.retrain` runs them as challengers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from crpbot.config import CONFIG_DIR, TrainConfig, load_config
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import Costs
from crpbot.evaluation.gate import GateThresholds, metrics_decision
from crpbot.pipeline.run_report import CoinOutcome
from crpbot.ray_runtime import ClusterSettings
from crpbot.registry.storage import join, validate_storage


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
    # gradient-boosted trees (LightGBM, model: gbdt) on CPUs: the GBDT recipe, a 4-trial search of
    # its parameters and 2 seeds, seconds per coin (tests, a first look)
    "gbdt-smoke": PipelineBudget(train_config="gbdt.yaml", search_space="gbdt_smoke_search.yaml", seeds=2),
    # the GBDT recipe, the 20-trial search of tune_configs/gbdt_search.yaml, 5 seeds
    "gbdt": PipelineBudget(train_config="gbdt.yaml", search_space="gbdt_search.yaml", seeds=5),
}


def run_coin_chain(
    coin: str,
    input_path: str | Path,
    coin_dir: str | Path,
    *,
    budget: str | PipelineBudget = "smoke",
    storage: str | Path | None = None,
    cluster: ClusterSettings | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
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
    ``cluster``, ``thresholds``, ``costs``: defaults when None (a local Ray, the strict gate, 10 bps).
    """
    from crpbot.data.bars import normalize_coin
    from crpbot.evaluation.evaluate import evaluate_model
    from crpbot.model.ensemble import train_ensemble
    from crpbot.model.trainer import train
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    plan = resolve_budget(budget)
    cluster = cluster if cluster is not None else ClusterSettings()
    thresholds = thresholds if thresholds is not None else GateThresholds()
    costs = costs if costs is not None else Costs()
    coin, coin_dir = normalize_coin(coin), Path(coin_dir)
    storage = storage if storage is not None else (coin_dir / "ray").resolve()
    validate_storage(storage)
    config = load_config(CONFIG_DIR / plan.train_config)

    log(f"training the recipe ({plan.train_config})")
    recipe_dir = train(
        config,
        coin,
        input_path=input_path,
        num_workers=cluster.workers,
        use_gpu=cluster.gpu,
        address=cluster.address,
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
            address=cluster.address,
            use_gpu=cluster.gpu,
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
            address=cluster.address,
            use_gpu=cluster.gpu,
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
            costs=costs,
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


def checked_budget(plan: PipelineBudget, use_gpu: bool = False) -> TrainConfig:
    """The budget's recipe config, once its fallback search is known to answer the same question
    with the same family; checked before Ray starts (pipeline and retrain).

    The fallback replaces the recipe by the search's best config: a search of the other family
    (a GBDT recipe, an RNN space) or of another target or horizon would swap the model for one
    the recipe never asked for, silently. A GBDT budget with ``--gpu`` is refused like ``crpbot train``'s.
    """
    from crpbot.model.family import check_device
    from crpbot.search.space import load_search_space

    config = load_config(CONFIG_DIR / plan.train_config)
    base = load_search_space(CONFIG_DIR / plan.search_space).base
    for key in ("model", "target", "horizon"):
        if getattr(base, key) != getattr(config, key):
            raise CrpbotError(
                f"budget: the recipe {plan.train_config} has {key} {getattr(config, key)!r} but the "
                f"search {plan.search_space} searches {key} {getattr(base, key)!r}; the fallback must "
                "answer the recipe's question with its family"
            )
    check_device(config, use_gpu)
    return config


def validation_check(model_dir: str | Path, thresholds: GateThresholds) -> dict[str, Any]:
    """The gate, read as configured, applied to the validation split (the only split a decision may read).

    Accuracy and calibration only: the net return per trade is measured at a threshold chosen on
    validation itself, so on validation it is in-sample; the test evaluation applies that check.
    """
    from crpbot.evaluation.evaluate import stored_split_data
    from crpbot.evaluation.metrics import classification_metrics
    from crpbot.model.predictor import load_predictor

    predictor = load_predictor(model_dir)
    data = stored_split_data(predictor)
    validation = predictor.predictions(data, "val")
    scores = classification_metrics(validation.labels, validation.probs, horizon=data.horizon)
    decision = metrics_decision(scores, replace(thresholds, net_pnl="report"))
    return {
        "n": len(validation),
        "accuracy": scores["accuracy"],
        "accuracy_ci": scores["accuracy_ci"],
        "ece": scores["ece"],
        "ece_equal_mass": scores["ece_equal_mass"],
        "passed": decision.passed,
        "reasons": decision.reasons,
    }

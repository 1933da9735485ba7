"""The fallback hyperparameter search: Ray Tune trials, Optuna's TPE, ASHA early stopping.

Each trial runs :func:`crpbot.model.fit.fit` directly inside a Tune function trial on one CPU
(or one GPU): a Ray Train worker group per trial costs ~20 s of start-up and, with two
concurrent trials on two CPUs, deadlocked (field notes). Searches parallelise across trials,
as many at once as the cluster has CPUs (GPUs). A GBDT trial (``model: gbdt``) is one LightGBM
fit on one CPU that reports once.

The prepared data is built once, with the largest lookback of the space so every trial's
windows respect the purge between splits (and every context coin the space names), and put
into the object store once; a trial with another lookback only asks it for other window ends,
one with fewer context coins takes a copy of its columns.

Optuna and ASHA both see ``best_val_loss`` (the lowest val loss so far, not the last one): ASHA
compares trials on the same curve the search ranks them by, and the value Optuna records for
a trial is the one its ``best.yaml`` row shows.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from crpbot.config import TrainConfig
from crpbot.data.bars import normalize_coin
from crpbot.doctor import missing_packages
from crpbot.errors import CrpbotError
from crpbot.model.trainer import STATE_FILE
from crpbot.ray_runtime import init_ray, quiet_worker_logs, require_gpus
from crpbot.search.results import (
    METRIC,
    format_table,
    load_study,
    results_table,
    write_outputs,
    write_plots,
)
from crpbot.search.space import SearchSpace


@dataclass(frozen=True)
class SearchResult:
    """A finished search: one row per trial, the winner's config, where both were written."""

    table: pd.DataFrame
    best_config: TrainConfig
    results_csv: Path
    best_yaml: Path
    experiment_path: str
    study: Any  # optuna.Study holding every completed trial's value (None for an exhaustive grid)


def run_search(
    space: SearchSpace,
    coin: str,
    *,
    input_path: str | Path | None = None,
    data_dir: str | Path | None = None,
    num_samples: int | None = None,
    max_epochs: int | None = None,
    storage: str | Path | None = None,
    name: str | None = None,
    resume: bool = False,
    address: str | None = None,
    use_gpu: bool = False,
    output_dir: str | Path | None = None,
    exhaustive: bool = False,
    progress: bool = True,
    callbacks: list | None = None,
    log=print,
) -> SearchResult:
    """Search ``space`` for ``coin``; write ``results.csv`` and ``best.yaml`` and return them.

    ``storage`` holds the experiment state (default ``runs/``; ``s3://bucket/prefix`` uses the
    standard AWS environment variables, ``AWS_ENDPOINT_URL`` included). ``resume`` continues the
    experiment ``name`` without re-running finished trials (with the same space file and no
    budget overrides: the experiment keeps its own budget). Results go to ``output_dir``, by
    default the experiment directory when storage is local, else ``runs/<name>``. ``exhaustive`` trains every
    combination of the space's choices to the full budget (no Optuna, no ASHA): the baseline
    the search is measured against. ``progress`` shows Tune's live trial table; without it, one
    line through ``log`` as each trial ends ("trial 3/8 done": a pipeline's progress row reads
    it). ``callbacks``: Tune callbacks of a new search, e.g. run tracking (a resumed search keeps
    its first ones).

    A space that can train a global model (``coins``) prepares all its coins once (from
    ``data_dir``, at shared cut times); its one-coin trials train on the searched coin's part
    and every trial is ranked on the searched coin's validation windows.
    """
    from ray import tune

    from crpbot.data.dataset import load_label_variants, load_prepared
    from crpbot.data.multicoin import coin_inputs, prepare_coins
    from crpbot.model.family import check_device
    from crpbot.registry.storage import is_remote, ray_storage, validate_storage

    coin = normalize_coin(coin)
    validate_storage(storage)
    missing = missing_packages(["matplotlib"])  # the plots are drawn at the end, after every trial
    if missing:
        raise CrpbotError(f"the search cannot draw its plots: {', '.join(missing)} is not installed")
    check_device(space.base, use_gpu)
    if resume and (num_samples is not None or max_epochs is not None):
        raise CrpbotError("a resumed search keeps its budget: drop --num-samples and --epochs with --resume")
    space = space.with_budget(num_samples=num_samples, max_epochs=max_epochs)
    if exhaustive:
        space = space.with_budget(num_samples=math.prod(len(dim.grid_values()) for dim in space.dimensions))
    name = name or f"tune-{coin.split('-')[0]}-{Path(space.source).stem}"
    storage_path, filesystem = ray_storage(storage, default="runs")
    local_experiment = None if is_remote(storage) else Path(storage_path) / name
    experiment_path = f"{storage_path.rstrip('/')}/{name}"
    exists = tune.Tuner.can_restore(experiment_path, storage_filesystem=filesystem)
    if resume and not exists:
        raise CrpbotError(f"no search named {name!r} to resume under {storage_path}")
    if not resume and exists:
        raise CrpbotError(
            f"search {name!r} already exists under {storage_path}: "
            "pass --resume to continue it or --name for a new one"
        )

    # Validate the input before starting Ray: a bad file fails in a second, not after a cluster start.
    global_coins = space.global_coins()
    if global_coins:
        inputs = coin_inputs(global_coins, data_dir)
        if input_path is not None or coin not in inputs:
            raise CrpbotError(
                f"{space.source}: its global model covers {', '.join(inputs)}: search one of them, "
                "with --data-dir for their bars (not --input)"
            )
        data = prepare_coins(space.data_config(), inputs)
    elif space.label_variants():  # e.g. a horizon search: one set of labels per choice
        data = load_label_variants(coin, input_path, space.data_config(), space.label_variants())
    else:
        data = load_prepared(coin, input_path, space.data_config())
    init_ray(address)
    if use_gpu:
        require_gpus(1)
    trial = tune.with_parameters(_trial, data=data, space=space, use_gpu=use_gpu, coin=coin)
    # Tune registers a trainable under its name for the whole Ray job, last writer wins: two
    # searches running at once (the pipeline's coins) must not share one, or trials of one coin
    # could start with the other coin's data.
    trial.__name__ = _trainable_name(name, experiment_path, filesystem) if resume else f"crpbot_trial_{name}"
    trainable = tune.with_resources(
        trial, {"cpu": 1, "gpu": space.budget.gpus_per_trial} if use_gpu else {"cpu": 1}
    )
    started = time.perf_counter()
    if resume:
        log(f"Resuming search {name} from {experiment_path}")
        tuner = tune.Tuner.restore(
            experiment_path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    else:
        tuner = _new_tuner(
            space,
            trainable,
            name,
            storage_path,
            filesystem,
            use_gpu=use_gpu,
            exhaustive=exhaustive,
            progress=progress,
            callbacks=callbacks,
            log=log,
        )
    grid = tuner.fit()
    wall = time.perf_counter() - started

    table = results_table(grid, space)
    finished = grid.num_terminated + grid.num_errors
    expected = len(grid) if resume else max(len(grid), space.budget.num_samples)
    if finished < expected:
        raise CrpbotError(
            f"search {name} interrupted after {finished} of {expected} trials; "
            f"continue it with --resume --name {name}"
        )
    completed = table[table["status"] != "error"].dropna(subset=["best_val_loss"])
    if completed.empty:
        raise CrpbotError(f"search {name}: every trial failed; see the trial logs under {experiment_path}")
    best_row = completed.iloc[0]  # the table is sorted by best val loss
    best_params = next(
        result.config for result in grid if (result.metrics or {}).get("trial_id") == best_row["trial_id"]
    )
    best_config = space.trial_config({key: best_params[key] for key in space.keys()}).replace(
        notes={
            "search": name,
            "trial_id": str(best_row["trial_id"]),
            "coin": coin,
            "best_val_loss": float(best_row["best_val_loss"]),
            "space": str(Path(space.source).resolve()),
        }
    )

    out = Path(output_dir) if output_dir is not None else (local_experiment or Path("runs").resolve() / name)
    results_csv, best_yaml = write_outputs(out, table, best_config, experiment_path, filesystem)
    study = None if exhaustive else load_study(experiment_path, filesystem)
    if study is not None:
        for note in write_plots(study, out):
            log(note)
    log(format_table(table))
    log(
        f"{len(table)} trials in {wall:.1f} s; median overhead beyond training "
        f"{table['overhead_seconds'].median():.2f} s per trial"
    )
    log(
        f"Best trial {best_row['trial_id']}: val loss {best_row['best_val_loss']:.4f}, "
        f"val acc {best_row['val_acc']:.4f} -> {best_yaml}"
    )
    return SearchResult(
        table=table,
        best_config=best_config,
        results_csv=results_csv,
        best_yaml=best_yaml,
        experiment_path=experiment_path,
        study=study,
    )


def _new_tuner(
    space: SearchSpace,
    trainable,
    name: str,
    storage_path: str,
    filesystem,
    *,
    use_gpu: bool,
    exhaustive: bool,
    progress: bool,
    callbacks: list | None,
    log,
):
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    counter = [] if progress else [_trial_counter(space.budget.num_samples, log)]

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Tune's table already shows every trial
    per_trial, share = ("GPU", space.budget.gpus_per_trial) if use_gpu else ("CPU", 1.0)
    concurrency = space.budget.max_concurrent or max(
        1, int(ray.cluster_resources().get(per_trial, 1) / share + 1e-9)
    )
    log(
        f"Search {name}: {space.budget.num_samples} trials of up to {space.budget.max_epochs} epochs, "
        f"{concurrency} at a time ({share:g} {per_trial} each), storage {storage_path}"
    )
    if exhaustive:
        tune_config = tune.TuneConfig(
            metric=METRIC, mode="min", max_concurrent_trials=concurrency, reuse_actors=True
        )
        param_space = _grid_domains(space)
    else:
        searcher = ConcurrencyLimiter(OptunaSearch(seed=space.seed), max_concurrent=concurrency)
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=space.budget.max_epochs,
            grace_period=space.budget.grace_period,
            reduction_factor=space.budget.reduction_factor,
        )
        tune_config = tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=space.budget.num_samples,
            reuse_actors=True,
        )
        param_space = _tune_domains(space)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            verbose=1 if progress else 0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[*(callbacks or []), *counter],
        ),
    )


def _trial_counter(total: int, log):
    """A Tune callback that logs "trial k/total done" as each trial ends (finished, stopped early
    by ASHA, or failed): a silent search's only progress."""
    from ray import tune

    class TrialCounter(tune.Callback):
        def __init__(self) -> None:
            self.done = 0

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            log(f"trial {self.done}/{total} done")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.on_trial_complete(iteration, trials, trial)

    return TrialCounter()


def _trainable_name(name: str, experiment_path: str, filesystem) -> str:
    """The trainable name a saved experiment was started with: ``Tuner.restore`` requires it
    (experiments saved before searches got their own names used the function's, ``_trial``)."""
    import pickle

    from ray.train._internal.storage import get_fs_and_path

    fs, path = get_fs_and_path(experiment_path, filesystem)
    with fs.open_input_file(f"{path}/tuner.pkl") as stream:
        state = pickle.loads(stream.readall())  # Tune's own file; Tuner.restore unpickles it too
    return state.get("__trainable_name") or f"crpbot_trial_{name}"


def _tune_domains(space: SearchSpace) -> dict[str, Any]:
    """The space as Ray Tune domains (OptunaSearch converts them to Optuna distributions)."""
    from ray import tune

    make = {
        "choice": lambda v: tune.choice(list(v)),
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "int": lambda v: tune.randint(v[0], v[1] + 1),
    }
    return {
        dim.key: make[dim.kind](dim.choices() if dim.kind == "choice" else dim.values)
        for dim in space.dimensions
    }


def _grid_domains(space: SearchSpace) -> dict[str, Any]:
    """Every combination of the space's choices, for an exhaustive baseline."""
    from ray import tune

    return {dim.key: tune.grid_search(list(dim.grid_values())) for dim in space.dimensions}


def _trial(params: dict[str, Any], *, data, space: SearchSpace, use_gpu: bool, coin: str) -> None:
    """One Tune trial: ``fit`` with the sampled config, one report (and checkpoint) per epoch."""
    entered = time.perf_counter()
    import torch
    from ray import tune

    from crpbot.model.fit import fit
    from crpbot.registry.artifact import load_torch_file

    quiet_worker_logs()

    torch.set_num_threads(1)
    config = space.trial_config(params)
    if config.model == "gbdt":
        _gbdt_trial(config, _trial_data(data, config, coin, space), entered)
        return
    checkpoint = tune.get_checkpoint()
    resume_state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = load_torch_file(Path(directory) / STATE_FILE)
    train_seconds = 0.0
    setup_seconds = time.perf_counter() - entered  # imports, data from the object store, checkpoint load

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        nonlocal train_seconds
        train_seconds += metrics["epoch_seconds"]
        best = min(state["history"], key=lambda row: row["val_loss"])
        early = state["early_stopping"]
        summary = {
            **metrics,
            METRIC: best["val_loss"],
            "best_val_acc": best["val_acc"],
            "best_epoch": best["epoch"],
            "patience_stop": early["bad_epochs"] >= config.patience,
            "trial_seconds": time.perf_counter() - entered,
            "train_seconds": train_seconds,
            "setup_seconds": setup_seconds,
        }
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, Path(directory) / STATE_FILE)
            tune.report(summary, checkpoint=tune.Checkpoint.from_directory(directory))

    fit(
        config,
        _trial_data(data, config, coin, space),
        device="cuda" if use_gpu else "cpu",
        reporter=report,
        resume=resume_state,
        log=_quiet,
    )


def _gbdt_trial(config: TrainConfig, data: Any, entered: float) -> None:
    """One GBDT trial: one fit (early-stopped on its train tail), one report of its model's val loss.

    No checkpoint: a trial interrupted mid-fit is simply fitted again on resume.
    """
    from ray import tune

    from crpbot.model.family import fit_model

    setup_seconds = time.perf_counter() - entered
    result = fit_model(config, data, log=_quiet)
    kept = result.history[result.best_epoch - 1]  # the round the model file is cut at
    trial_seconds = time.perf_counter() - entered
    tune.report(
        {
            "epoch": 1,
            "train_loss": kept["train_loss"],
            "val_loss": kept["val_loss"],
            "val_acc": kept["val_acc"],
            METRIC: kept["val_loss"],
            "best_val_acc": kept["val_acc"],
            "best_epoch": result.best_epoch,
            "patience_stop": result.stopped_early,
            "trial_seconds": trial_seconds,
            "train_seconds": trial_seconds - setup_seconds,
            "setup_seconds": setup_seconds,
        }
    )


def _trial_data(data: Any, config: TrainConfig, coin: str, space: SearchSpace) -> Any:
    """What a trial trains on: the search's data, or for a global-vs-per-coin search the global
    data scored on ``coin`` or ``coin``'s part of it (views of the shared arrays, no copy); for a
    search over context coins, the shared rows with this trial's columns; for a search over the
    labels (a horizon search), the labels of this trial's choice."""
    from crpbot.data.cross_asset import ContextSpec, select_context
    from crpbot.data.multicoin import MultiCoinData

    if isinstance(data, dict):
        data = data[tuple(getattr(config, key) for key in space.label_keys())]

    if not isinstance(data, MultiCoinData):
        return select_context(data, ContextSpec.from_config(config))
    return data.scored_on(coin) if config.coins else data.part(coin)


def _quiet(_: str) -> None:
    """Trial log sink: Tune's progress table already shows every epoch."""

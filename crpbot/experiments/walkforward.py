"""Walk-forward evaluation: retrain the recipe fold after fold and score each fold once, on Ray.

Answers "does this recipe hold up when it is retrained period after period?", which one
chronological split cannot. The folds come from :mod:`crpbot.data.folds`; each fold is one Ray
task (1 CPU, or a share of a GPU) that

1. prepares the bars (put once into the object store) with the fold's ``split_times``, so its
   scaler is fitted on its own train rows;
2. trains one model with :func:`crpbot.model.fit.fit` (early stopping on its own val);
3. saves it and fits its temperature on its own val (``build_ensemble`` of one member);
4. scores it with :func:`crpbot.evaluation.evaluate.evaluate_model` on its stored test split
   (handing over the prepared data, which evaluation checks against the artifact), so a fold's
   metrics are the ones ``crpbot evaluate`` would print;
5. writes ``folds/<k>/result.json`` atomically, last: a fold is finished when that file exists.

A rerun with the same ``out_dir`` skips finished folds; a fold that fails is reported in
``folds.csv`` and the summary, and the others' results stand. Pooled numbers concatenate the
folds' test predictions (the test periods tile the evaluated span, so each row counts once).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.config import TrainConfig
from crpbot.data.folds import Fold, FoldSpec
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import Costs
from crpbot.evaluation.gate import GateThresholds
from crpbot.experiments.walkforward_summary import fold_metrics, folds_table, summarize, summary_lines
from crpbot.ray_runtime import ClusterSettings, init_ray, quiet_worker_logs, require_gpus

RESULT_FILE = "result.json"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class WalkForwardResult:
    """A finished (possibly partly failed) walk-forward: one row per fold and the pooled summary."""

    out_dir: Path
    folds: pd.DataFrame
    summary: dict[str, Any]
    trained: list[int]  # folds trained by this call (the others were finished before, or failed)


@dataclass
class WalkForwardPlan:
    """One coin's walk-forward, checked and claimed, before Ray: what :func:`run_fold_tasks` runs.

    ``records`` holds the folds finished before (a rerun) and fills as folds finish; ``todo`` are
    the folds this run trains. Several plans (a scan's cells) run in one pool of Ray tasks.
    """

    config: TrainConfig
    coin: str
    input_path: Path
    out_dir: Path
    bars: Any
    context: Any | None
    folds: list[Fold]
    plan: dict[str, Any]
    thresholds: GateThresholds
    costs: Costs
    todo: list[Fold]
    records: dict[int, dict[str, Any]] = field(default_factory=dict)


def run_walkforward(
    config: TrainConfig,
    coin: str,
    spec: FoldSpec,
    *,
    input_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    cluster: ClusterSettings | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
    max_parallel: int | None = None,
    log: Callable[[str], None] = print,
) -> WalkForwardResult:
    """Train and score every fold of ``spec`` on ``coin`` in parallel on Ray; outputs go to ``out_dir``.

    ``max_parallel`` caps the folds in flight (default: as many as the cluster runs; 1 runs them
    one after another, the benchmark's baseline). Every check that can fail on the inputs runs
    before Ray starts. ``cluster``: each fold claims 1 CPU, or ``gpu_share`` of a GPU with ``gpu``.
    """
    from crpbot.model.family import check_device

    cluster = cluster if cluster is not None else ClusterSettings()
    check_device(config, cluster.gpu)
    if max_parallel is not None and max_parallel < 1:
        raise CrpbotError(f"invalid max_parallel {max_parallel}: must be >= 1")
    plan = plan_walkforward(
        config, coin, spec, input_path=input_path, out_dir=out_dir, thresholds=thresholds, costs=costs
    )
    log(
        f"Walk-forward of {plan.coin}: {len(plan.folds)} folds ({spec.window}, train {spec.train_days:g} / "
        f"val {spec.val_days:g} / test {spec.test_days:g} days of bars), "
        f"{len(plan.folds) - len(plan.todo)} finished before, {len(plan.todo)} to train -> {plan.out_dir}"
    )
    run_fold_tasks([plan], cluster, max_parallel=max_parallel, log=log)
    result = finish_walkforward(plan)
    for line in summary_lines(result.summary):
        log(line)
    log(f"Walk-forward written to {plan.out_dir}")
    return result


def plan_walkforward(
    config: TrainConfig,
    coin: str,
    spec: FoldSpec,
    *,
    input_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
    bars: Any | None = None,
    folds: list[Fold] | None = None,
) -> WalkForwardPlan:
    """Load (or take) the bars, plan (or take) the folds, claim ``out_dir`` and read finished folds.

    ``bars``: rows already loaded from ``input_path`` (a scan passes each coin's bars before its
    final period); ``folds``: folds planned by the caller (a scan gives every cell the same ones,
    so their test rows align). Without them, the file is loaded and the folds of ``spec`` planned.
    """
    from crpbot.data.bars import default_input, load_bars, normalize_coin
    from crpbot.data.cross_asset import ContextSpec, load_context
    from crpbot.data.folds import plan_folds
    from crpbot.registry.artifact import check_output_location

    thresholds = thresholds if thresholds is not None else GateThresholds()
    costs = costs if costs is not None else Costs()
    coin = normalize_coin(coin)
    input_path = Path(input_path if input_path is not None else default_input(coin)).resolve()
    out_dir = (
        Path(out_dir)
        if out_dir is not None
        else Path("runs") / f"walkforward-{coin.split('-')[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    check_output_location(out_dir)
    if bars is None:
        bars = load_bars(input_path)
    bars.coin = coin
    # a context model's context bars (beside the input): checked here, before Ray. The folds are
    # planned on the minutes the target and every context coin share, the rows a fold prepares, so
    # each planned purge is a purge of those rows (where the coins have the same minutes, these
    # are the folds of the target alone, and a contender without context is cut at the same times)
    context = load_context(coin, ContextSpec.from_config(config), input_path)
    if folds is None:
        folds = plan_folds(
            shared_timestamps([bars], context), spec, lookback=config.lookback, horizon=config.horizon
        )
    plan = {
        "coin": coin,
        "input_path": str(input_path),
        "data_fingerprint": bars.fingerprint,
        "train_config": config.to_dict(),
        "spec": dataclasses.asdict(spec),
        # finished folds were scored with these: a rerun with others would mix two evaluations
        "evaluation": {
            "thresholds": dataclasses.asdict(thresholds),
            **dataclasses.asdict(costs),
        },
        "folds": [fold.to_dict() for fold in folds],
    }
    claim_out_dir(out_dir, plan)
    finished = {fold.index: _read_result(out_dir, fold) for fold in folds}
    return WalkForwardPlan(
        config=config,
        coin=coin,
        input_path=input_path,
        out_dir=out_dir,
        bars=bars,
        context=context,
        folds=folds,
        plan=plan,
        thresholds=thresholds,
        costs=costs,
        todo=[fold for fold in folds if finished[fold.index] is None],
        records={index: record for index, record in finished.items() if record is not None},
    )


def run_fold_tasks(
    plans: list[WalkForwardPlan],
    cluster: ClusterSettings,
    *,
    max_parallel: int | None = None,
    log: Callable[[str], None] = print,
    on_fold: Callable[[WalkForwardPlan, Fold, dict[str, Any]], None] | None = None,
) -> None:
    """Train and score the ``todo`` folds of every plan as one pool of Ray tasks (one per fold).

    Each distinct bars object and context goes into the object store once, however many plans
    share it (a scan's cells of one coin). A failed fold becomes a failed record and the rest
    stand. ``on_fold`` hears of each finished fold (default: one log line per fold).
    """
    jobs = [(plan, fold) for plan in plans for fold in plan.todo]
    if not jobs:
        return
    import ray

    init_ray(cluster.address)
    if cluster.gpu:
        require_gpus(1)
    task = (
        ray.remote(num_cpus=1, num_gpus=cluster.gpu_share)(_run_fold)
        if cluster.gpu
        else ray.remote(num_cpus=1)(_run_fold)
    )
    refs: dict[int, Any] = {}

    def put(value: Any) -> Any:
        if id(value) not in refs:
            refs[id(value)] = ray.put(value)
        return refs[id(value)]

    report = on_fold if on_fold is not None else _fold_line(log)
    waiting = []
    for plan, fold in jobs:
        shutil.rmtree(_fold_dir(plan.out_dir, fold), ignore_errors=True)  # a killed run's leftovers
        for bars in (plan.bars, *(plan.context.bars.values() if plan.context is not None else ())):
            bars.features()  # computed once here and shipped with the bars, not once per fold
        shared = {
            "config": plan.config.to_dict(),
            "input_path": str(plan.input_path),
            "thresholds": plan.thresholds,
            "costs": plan.costs,
            "device": "cuda" if cluster.gpu else "cpu",
            "context": put(plan.context) if plan.context is not None else None,
        }
        waiting.append((plan, fold, put(plan.bars), shared))
    running: dict[Any, tuple[WalkForwardPlan, Fold]] = {}
    while waiting or running:
        while waiting and (max_parallel is None or len(running) < max_parallel):
            plan, fold, bars_ref, shared = waiting.pop(0)
            directory = str(_fold_dir(plan.out_dir, fold).resolve())
            running[task.remote(fold.to_dict(), bars_ref, directory, shared)] = (plan, fold)
        (done,), _ = ray.wait(list(running), num_returns=1)
        plan, fold = running.pop(done)
        try:
            record = ray.get(done)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
            record = {**fold_periods(fold), "fold": fold.index, "status": "failed", "error": reason}
        plan.records[fold.index] = record
        report(plan, fold, record)


def _fold_line(log: Callable[[str], None]) -> Callable[[WalkForwardPlan, Fold, dict[str, Any]], None]:
    def line(_plan: WalkForwardPlan, fold: Fold, record: dict[str, Any]) -> None:
        if record["status"] != "ok":
            log(f"fold {fold.index} failed: {record['error']}")
            return
        log(
            f"fold {fold.index}: test {record['test_start']} .. {record['test_end']} accuracy "
            f"{record['accuracy']:.4f} (n={record['n']:,}) in {record['seconds_total']:.1f} s"
        )

    return line


def finish_walkforward(plan: WalkForwardPlan) -> WalkForwardResult:
    """The fold table and pooled summary of a plan whose folds have all run; outputs written."""
    rows = [plan.records[fold.index] for fold in plan.folds]
    table = folds_table(rows)
    summary = summarize(plan.plan, rows, plan.out_dir, plan.config.horizon, plan.thresholds, plan.costs)
    write_outputs(plan.out_dir, table, summary)
    return WalkForwardResult(
        out_dir=plan.out_dir, folds=table, summary=summary, trained=[fold.index for fold in plan.todo]
    )


def shared_timestamps(coins_bars: list[Any], context: Any | None = None) -> np.ndarray:
    """The minutes (int64 ns) every coin of ``coins_bars`` and every context coin has a usable row
    at: what a walk-forward plans its folds on, so a fold's split times map back to the row ranges
    (and purges) planned for each coin it prepares."""
    from crpbot.data.dataset import usable_timestamps

    common = None
    for bars in coins_bars:
        stamps = usable_timestamps(bars, context)
        common = stamps if common is None else np.intersect1d(common, stamps, assume_unique=True)
    return common


def _run_fold(fold_dict: dict, bars: Any, fold_dir: str, shared: dict[str, Any]) -> dict[str, Any]:
    """One fold as a Ray task: prepare, fit, calibrate on val, evaluate on test, write result.json last."""
    import ray
    import torch

    from crpbot.data.dataset import prepare_for_config
    from crpbot.evaluation.evaluate import evaluate_model
    from crpbot.model.ensemble import build_ensemble
    from crpbot.model.family import fit_model
    from crpbot.model.inference import save_model_artifact

    quiet_worker_logs()
    torch.set_num_threads(1)  # one fold per core; more threads only contend
    fold = _fold_from_dict(fold_dict)
    directory = Path(fold_dir)
    config = TrainConfig.from_dict(shared["config"])
    started = time.perf_counter()
    context = ray.get(shared["context"]) if shared.get("context") is not None else None
    data = prepare_for_config(bars, config, split_times=fold.split_times, context=context)
    prepared = time.perf_counter()
    result = fit_model(
        config, data, device=shared["device"], log=lambda line: print(f"[fold {fold.index}] {line}")
    )
    trained = time.perf_counter()
    member = save_model_artifact(
        directory / "member",
        model_state=result.best_state,
        config=config,
        data=data,
        history=result.history,
        best_epoch=result.best_epoch,
        input_path=shared["input_path"],
    )
    model = build_ensemble([member], data, directory / "model")  # the temperature, fitted on val
    shutil.rmtree(member)
    saved = time.perf_counter()
    evaluation = evaluate_model(
        model,
        out_dir=directory / "evaluation",
        thresholds=shared["thresholds"],
        costs=shared["costs"],
        prepared=data,  # the fold's own data: no second load and preparation of the file
        log=lambda _: None,
        figures=False,  # ~1 s of a 6-s GBDT fold; walkforward.png is the walk-forward's figure
    )
    evaluated = time.perf_counter()
    record = {
        **fold_periods(fold),
        "fold": fold.index,
        "status": "ok",
        "error": None,
        "best_epoch": result.best_epoch,
        "seconds_prepare": prepared - started,
        "seconds_train": trained - prepared,
        "seconds_save": saved - trained,
        "seconds_evaluate": evaluated - saved,
        "seconds_total": evaluated - started,
        **fold_metrics(evaluation.metrics),
    }
    write_json(directory / RESULT_FILE, {"split_times": fold_dict["split_times"], "record": record})
    return record


def write_outputs(out_dir: Path, table: pd.DataFrame, summary: dict[str, Any]) -> None:
    """folds.csv, summary.json, walkforward.png and report.md, each written whole then renamed."""
    from crpbot.experiments.walkforward_report import plot_walkforward, report_markdown

    atomic_write(out_dir / "folds.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_json(out_dir / "summary.json", summary)
    atomic_write(out_dir / "walkforward.png", lambda tmp: plot_walkforward(table, tmp))
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(report_markdown(table, summary)))


def claim_out_dir(out_dir: Path, plan: dict[str, Any], kind: str = "walk-forward") -> None:
    """A new ``out_dir`` gets plan.json; an existing one must hold the same plan (then it is resumed)."""
    plan_path = out_dir / PLAN_FILE
    if out_dir.exists():
        if not plan_path.is_file():
            raise CrpbotError(f"output directory already exists and is not a {kind}: {out_dir}")
        saved = json.loads(plan_path.read_text())
        if saved != json.loads(json.dumps(plan)):
            changed = sorted(key for key in plan if saved.get(key) != json.loads(json.dumps(plan[key])))
            raise CrpbotError(
                f"{out_dir} holds a {kind} with other {', '.join(changed)}; "
                "resume it with the same options or choose another --out"
            )
        return
    out_dir.mkdir(parents=True)
    write_json(plan_path, plan)


def _read_result(out_dir: Path, fold: Fold) -> dict[str, Any] | None:
    """A finished fold's record, or None when it has none yet (never run, killed, or failed)."""
    path = _fold_dir(out_dir, fold) / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved["split_times"] != {name: list(times) for name, times in fold.split_times.items()}:
        raise CrpbotError(f"{path} belongs to other fold periods; choose another --out")
    return saved["record"]


def _fold_dir(out_dir: Path, fold: Fold) -> Path:
    return out_dir / "folds" / str(fold.index)


def _fold_from_dict(values: dict) -> Fold:
    return Fold(
        index=int(values["index"]),
        bounds={name: tuple(b) for name, b in values["bounds"].items()},
        split_times={name: tuple(t) for name, t in values["split_times"].items()},
    )


def fold_periods(fold: Fold) -> dict[str, str]:
    return {
        f"{name}_{edge}": _iso(times[i])
        for name, times in fold.split_times.items()
        for i, edge in enumerate(("start", "end"))
    }


def _iso(ns: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="m") + "Z"


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2, allow_nan=False) + "\n"))


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write to a temporary file beside ``path``, then rename: a reader sees the old file or the new one."""
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:12]}{path.suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

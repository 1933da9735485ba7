"""Every crpbot run recorded in MLflow, so searches, walk-forwards and retrains compare in one place.

Embedded by default: a sqlite store at ``runs/mlflow.db`` with its artifacts under
``runs/mlflow-artifacts/`` (``--tracking-uri`` / ``CRPBOT_TRACKING_URI`` for a shared server,
``--no-tracking`` or ``CRPBOT_TRACKING_URI=off`` for none). Runs are recorded from what a command
wrote (an artifact's config and history, ``metrics.json``, ``folds.csv``, ``results.csv``), so
the stages below never import this module; a search's trials are recorded while they run by
Ray Tune's own ``MLflowLoggerCallback``, handed down to :func:`crpbot.search.tune.run_search`.

Tracking never fails or blocks a run: the first error (a server down, slow or answering nonsense,
MLflow missing) prints one line, and every later call is a no-op. HTTP waits are bounded by
MLflow's own ``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (defaults
here: 5 s, no retry; the environment's values win).

The model registry mirror: crpbot's registry stays the source of truth; each promoted version is
registered as ``crpbot-<COIN>`` with crpbot's version name and manifest hash as tags, and the
alias ``champion`` follows crpbot's current pointer (promote, retrain, pipeline, rollback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from crpbot.data.bars import default_input, load_bars, normalize_coin
from crpbot.pipeline.retrain import RETRAIN_FILE
from crpbot.pipeline.run_report import one_line
from crpbot.registry.artifact import content_digest, git_commit, read_manifest
from crpbot.registry.local import current_path, current_version

if TYPE_CHECKING:
    from crpbot.pipeline.retrain import RetrainDecision
    from crpbot.pipeline.run_report import PipelineResult
    from crpbot.search.tune import SearchResult

ENV_URI = "CRPBOT_TRACKING_URI"
OFF = "off"  # CRPBOT_TRACKING_URI=off: --no-tracking for every command (CI, the test suite)
DEFAULT_DIR = Path("runs")
ARTIFACT_DIR = "mlflow-artifacts"
CHAMPION = "champion"
# MLflow's HTTP client retries for minutes by default; a tracker must not hold a run that long
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
# MLflow's limits per value and per batch (mlflow.utils.validation)
_MAX_PARAM, _MAX_TAG, _BATCH = 6000, 8000, 100
_MAX_REASON = 300  # characters of the error said when tracking goes off
_PARENT_TAG = "mlflow.parentRunId"
_COMMIT_TAG = "mlflow.source.git.commit"


def tracking_uri(explicit: str | None, *, disabled: bool = False) -> str | None:
    """The store to record in: ``--tracking-uri``, else ``$CRPBOT_TRACKING_URI``, else the sqlite
    file ``runs/mlflow.db`` under the working directory; None when tracking is off."""
    uri = explicit or os.environ.get(ENV_URI) or ""
    if disabled or uri.strip().lower() == OFF:
        return None
    return uri or f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


class Tracker:
    """One MLflow store and experiment, or nothing: after the first error every call is a no-op.

    Uses ``MlflowClient`` with explicit run ids (no global active run), so a tracker is safe
    beside Ray Tune's callback, which keeps its own.
    """

    def __init__(self, uri: str | None, experiment: str | None, *, say: Callable[[str], None] | None = None):
        self.uri, self.experiment = uri, experiment
        self._say = say or (lambda line: print(line, file=sys.stderr))
        self.client: Any = None
        self.experiment_id: str | None = None
        if uri is not None:
            with self.guard():
                self._connect(uri, experiment)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def off(self, reason: str) -> None:
        """Stop tracking, saying why in one line (only the first time)."""
        if self.uri is not None:
            reason = reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."
            self._say(f"crpbot: tracking off ({self.uri}): {reason}; the run goes on untracked")
        self.client, self.uri = None, None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a tracking call; any error turns tracking off instead of reaching the command."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - whatever the store does, the run goes on
            self.off(one_line(exc))

    def _connect(self, uri: str, experiment: str | None) -> None:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise RuntimeError("mlflow-skinny is not installed") from None
        for name in ("mlflow", "alembic"):  # schema migrations log at INFO on a new store
            logging.getLogger(name).setLevel(logging.WARNING)
        artifacts = None
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            artifacts = (db.parent / ARTIFACT_DIR).resolve().as_uri()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        if experiment is None:  # the registry mirror alone: no runs, no experiment to create
            client.search_registered_models(max_results=1)
            self.client = client
            return
        found = client.get_experiment_by_name(experiment)
        if found is None:
            try:
                self.experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
            except Exception:  # created meanwhile by another crpbot command
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    raise
        if found is not None:
            self.experiment_id = found.experiment_id
        self.client = client

    @contextlib.contextmanager
    def run(
        self, name: str, *, parent: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[str | None]:
        """A run around a command: FINISHED when the block ends, FAILED when it raises (re-raised).

        Yields the run id, or None while tracking is off. Every run carries crpbot's git commit.
        """
        run_id = None
        with self.guard():
            if self.enabled:
                all_tags = {_COMMIT_TAG: git_commit() or "unknown", **(tags or {})}
                if parent:
                    all_tags[_PARENT_TAG] = parent
                tags_text = {k: _text(v, _MAX_TAG) for k, v in all_tags.items()}
                run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags_text).info.run_id
        try:
            yield run_id
        except BaseException:
            self._end(run_id, "FAILED")
            raise
        self._end(run_id, "FINISHED")

    def _end(self, run_id: str | None, status: str) -> None:
        if run_id is not None and self.enabled:
            with self.guard():
                self.client.set_terminated(run_id, status)

    def log(
        self,
        run_id: str | None,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        """Params, numeric metrics (at ``step``) and tags, flattened (``a.b``)."""
        self._send(run_id, params or {}, tags or {}, [(step, metrics or {})])

    def log_history(self, run_id: str | None, rows: list[dict[str, Any]], *, prefix: str = "") -> None:
        """Per-epoch rows (``epoch`` and numbers) as metric histories, one step per epoch."""
        steps = [
            (int(row.get("epoch", index + 1)), {f"{prefix}{k}": v for k, v in row.items() if k != "epoch"})
            for index, row in enumerate(rows)
        ]
        self._send(run_id, {}, {}, steps)

    def _send(
        self,
        run_id: str | None,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        steps: list[tuple[int, Mapping[str, Any]]],
    ) -> None:
        """One ``log_batch`` per 100 params, tags and metrics (MLflow's limit per batch)."""
        if run_id is None or not self.enabled:
            return
        from mlflow.entities import Metric, Param, RunTag

        now = _now_ms()
        entities = [
            *(Param(k, _text(v, _MAX_PARAM)) for k, v in flatten(params).items()),
            *(RunTag(k, _text(v, _MAX_TAG)) for k, v in flatten(tags).items()),
            *(
                Metric(k, float(v), now, step)
                for step, metrics in steps
                for k, v in flatten(metrics).items()
                if _is_number(v)
            ),
        ]
        with self.guard():
            for start in range(0, len(entities), _BATCH):
                batch = entities[start : start + _BATCH]
                self.client.log_batch(
                    run_id,
                    metrics=[e for e in batch if isinstance(e, Metric)],
                    params=[e for e in batch if isinstance(e, Param)],
                    tags=[e for e in batch if isinstance(e, RunTag)],
                )

    def log_files(self, run_id: str | None, paths: list[Path], artifact_path: str | None = None) -> None:
        """Files (those that exist) as run artifacts."""
        if run_id is None or not self.enabled:
            return
        for path in paths:
            if path.is_file():
                with self.guard():
                    self.client.log_artifact(run_id, str(path), artifact_path)


def open_tracker(args: Any, command: str | None) -> Tracker:
    """The tracker of a command's ``--tracking-uri`` / ``--no-tracking`` (see :func:`tracking_uri`);
    its runs go to the experiment ``crpbot-<command>`` (None: the registry mirror only, no runs)."""
    uri = tracking_uri(getattr(args, "tracking_uri", None), disabled=getattr(args, "no_tracking", False))
    return Tracker(uri, None if command is None else f"crpbot-{command}")


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``a.b`` keys; a list of numbers to ``key.0``, ``key.1``; other lists as JSON."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):
            flat.update({f"{name}.{i}": v for i, v in enumerate(value)})
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    """A value MLflow can hold as a metric: a finite real (a bool is 0 or 1)."""
    return isinstance(value, numbers.Real) and math.isfinite(value)


def _text(value: Any, limit: int) -> str:
    return str(value)[:limit]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- what each command recorded --------------------------------------------------------------


def record_model(tracker: Tracker, run_id: str | None, artifact: str | Path) -> None:
    """A trained model or ensemble: its config as params, its per-epoch history as metrics (an
    ensemble's per member: ``member<i>.val_loss``), its path, manifest hash and data fingerprints."""
    if run_id is None:
        return
    artifact = Path(artifact).resolve()
    with tracker.guard():
        manifest = read_manifest(artifact)
        config = _json(artifact / "config.json")
        history = _json(artifact / "history.json") if (artifact / "history.json").is_file() else []
        keys = ("kind", "coin", "input_size", "param_count", "best_epoch")
        summary = {k: config[k] for k in keys if k in config}
        per_coin = config.get("data_fingerprints", {})  # a global model: one per coin
        fingerprints = {f"crpbot.data_fingerprint.{c}": f for c, f in per_coin.items()}
        tracker.log(
            run_id,
            params={**config.get("train_config", {}), **summary, **_listed(config, "seeds")},
            tags={
                "crpbot.artifact": artifact,
                "crpbot.manifest_hash": content_digest(manifest),
                "crpbot.data_fingerprint": manifest["data_fingerprint"],
                **fingerprints,
            },
        )
        for member in sorted({row.get("member") for row in history}, key=lambda m: -1 if m is None else m):
            rows = [
                {k: v for k, v in row.items() if k != "member"}
                for row in history
                if row.get("member") == member
            ]
            tracker.log_history(run_id, rows, prefix="" if member is None else f"member{member}.")
        tracker.log_files(run_id, [artifact / "config.json", artifact / "history.json"], "model")


def _listed(config: Mapping[str, Any], key: str) -> dict[str, str]:
    return {key: ",".join(map(str, config[key]))} if key in config else {}


def record_evaluation(tracker: Tracker, run_id: str | None, out_dir: str | Path) -> None:
    """An evaluation: every number of ``metrics.json`` as a metric, the gate's verdict and reasons
    as tags, ``metrics.json``, ``report.md`` and the plots as artifacts."""
    if run_id is None:
        return
    out_dir = Path(out_dir)
    with tracker.guard():
        metrics = _json(out_dir / "metrics.json")
        gate = metrics.get("gate", {})
        tags = {
            "crpbot.coin": metrics.get("coin"),
            "crpbot.model": metrics.get("model"),
            "crpbot.test_source": metrics.get("test_source"),
            "crpbot.gate.passed": gate.get("passed"),
            "crpbot.gate.reasons": "; ".join(gate.get("reasons", [])) or "-",
            "crpbot.gate.reading": f"{gate.get('gate_on')}, ece {gate.get('ece_kind')}",
        }
        model = Path(str(metrics.get("model", "")))
        if (model / "manifest.json").is_file():
            tags["crpbot.data_fingerprint"] = read_manifest(model)["data_fingerprint"]
        tracker.log(run_id, metrics={k: v for k, v in flatten(metrics).items() if _is_number(v)}, tags=tags)
        tracker.log_files(
            run_id, [out_dir / "metrics.json", out_dir / "report.md", *sorted(out_dir.glob("*.png"))]
        )


def tune_callbacks(tracker: Tracker, parent: str | None) -> list[Any]:
    """Ray Tune's ``MLflowLoggerCallback`` writing one child run per trial under ``parent``, made
    tolerant: an error turns it off (recorded in :attr:`failed`, said once by
    :func:`absorb_callbacks`) instead of failing the search."""
    if parent is None or not tracker.enabled:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TolerantMLflowLogger(MLflowLoggerCallback):
        failed: str | None = None

        def _guarded(self, call: Callable[[], None]) -> None:
            if self.failed is None:
                try:
                    call()
                except Exception as exc:  # noqa: BLE001 - a tracking error must not end the search
                    self.failed = one_line(exc)

        def setup(self, *args, **kwargs) -> None:
            parent = super()
            self._guarded(lambda: parent.setup(*args, **kwargs))

        def log_trial_start(self, trial) -> None:
            parent = super()
            self._guarded(lambda: parent.log_trial_start(trial))

        def log_trial_result(self, iteration, trial, result) -> None:
            parent = super()
            self._guarded(lambda: parent.log_trial_result(iteration, trial, result))

        def log_trial_end(self, trial, failed: bool = False) -> None:
            parent = super()
            self._guarded(lambda: parent.log_trial_end(trial, failed))

    return [
        TolerantMLflowLogger(
            tracking_uri=tracker.uri,
            registry_uri=tracker.uri,
            experiment_name=tracker.experiment,
            tags={_PARENT_TAG: parent, _COMMIT_TAG: git_commit() or "unknown"},
        )
    ]


def absorb_callbacks(tracker: Tracker, callbacks: list[Any]) -> None:
    """Say once that tracking went off if a Tune callback failed during the search."""
    for callback in callbacks:
        if getattr(callback, "failed", None):
            tracker.off(callback.failed)


def record_search(
    tracker: Tracker, run_id: str | None, result: SearchResult, coin: str, input_path: Path | None
) -> None:
    """A search's parent run: the best trial's numbers, ``results.csv``, ``best.yaml`` and plots."""
    if run_id is None:
        return
    out_dir = Path(result.results_csv).parent
    with tracker.guard():
        best = result.table.dropna(subset=["best_val_loss"]).iloc[0]
        tracker.log(
            run_id,
            params={"trials": len(result.table), "experiment_path": result.experiment_path},
            metrics={"best_val_loss": best["best_val_loss"], "best_val_acc": best.get("val_acc")},
            tags={"crpbot.best_trial": best["trial_id"], **data_tags(coin, input_path)},
        )
        tracker.log_files(
            run_id, [Path(result.results_csv), Path(result.best_yaml), *sorted(out_dir.glob("*.png"))]
        )


def data_tags(coin: str, input_path: str | Path | None) -> dict[str, str]:
    """The input file and fingerprint of a command that records neither in its outputs."""
    path = Path(input_path) if input_path is not None else default_input(normalize_coin(coin))
    return {"crpbot.input": str(path), "crpbot.data_fingerprint": load_bars(path).fingerprint}


def record_table(
    tracker: Tracker, parent: str | None, table: pd.DataFrame, name: Callable[[dict[str, Any]], str]
) -> None:
    """One child run per row of a results table: numbers as metrics, the rest as params."""
    if parent is None:
        return
    for row in table.to_dict("records"):
        numbers = {k: v for k, v in row.items() if _is_number(v)}
        others = {k: v for k, v in row.items() if k not in numbers and not pd.isna(v)}
        with tracker.run(name(row), parent=parent) as child:
            tracker.log(child, params=others, metrics=numbers)


def record_walkforward(tracker: Tracker, run_id: str | None, out_dir: str | Path) -> None:
    """A walk-forward's parent run (``summary.json``'s numbers, report and plot) and one child
    run per fold of ``folds.csv``."""
    if run_id is None:
        return
    out_dir = Path(out_dir)
    with tracker.guard():
        summary = _json(out_dir / "summary.json")
        numbers = {k: v for k, v in flatten(summary).items() if _is_number(v)}
        plan = _json(out_dir / "plan.json")
        tracker.log(
            run_id,
            params={**plan["train_config"], **{f"spec.{k}": v for k, v in plan["spec"].items()}},
            metrics=numbers,
            tags={"crpbot.data_fingerprint": plan["data_fingerprint"], "crpbot.input": plan["input_path"]},
        )
        names = ("folds.csv", "summary.json", "plan.json", "report.md", "walkforward.png")
        tracker.log_files(run_id, [out_dir / name for name in names])
        folds = pd.read_csv(out_dir / "folds.csv")
        record_table(tracker, run_id, folds, lambda row: f"fold {row.get('fold', '?')}")


def record_scan(tracker: Tracker, out_dir: str | Path, *, name: str = "scan") -> None:
    """A scan's outputs: a parent run with ``scan.json`` (numbers as metrics, the rest as params)
    and one child run per cell x coin row of ``cells.csv``. Call it after the scan wrote them."""
    out_dir = Path(out_dir)
    with tracker.run(name, tags={"crpbot.out": out_dir.resolve()}) as run_id, tracker.guard():
        if run_id is None:
            return
        scan = _json(out_dir / "scan.json") if (out_dir / "scan.json").is_file() else {}
        flat = flatten(scan)
        tracker.log(
            run_id,
            metrics={k: v for k, v in flat.items() if _is_number(v)},
            params={k: v for k, v in flat.items() if not _is_number(v) and v is not None},
        )
        outputs = [out_dir / "scan.json", out_dir / "cells.csv", *sorted(out_dir.glob("*.png"))]
        tracker.log_files(run_id, outputs)
        cells = pd.read_csv(out_dir / "cells.csv")
        label = [c for c in ("cell", "coin") if c in cells.columns]
        record_table(tracker, run_id, cells, lambda row: " ".join(str(row[c]) for c in label) or "cell")


def record_pipeline(
    tracker: Tracker, run_id: str | None, result: PipelineResult, registry_root: str | Path
) -> None:
    """A pipeline's parent run: each coin's gate decision and reason as tags (``decision.<COIN>``,
    ``reason.<COIN>``), the report as artifact, one child run per coin with its evaluation; the
    promoted coins' champions mirrored."""
    if run_id is None:
        return
    with tracker.guard():
        tags: dict[str, Any] = {"crpbot.promoted": result.batch.get("promoted")}
        for outcome in result.outcomes:
            gate = outcome.metrics.get("gate", {})
            passed = not outcome.failed and bool(gate.get("passed"))
            promoted = f"promoted {outcome.promoted_version}" if outcome.promoted_version else None
            tags[f"decision.{outcome.coin}"] = promoted or ("gate passed" if passed else "gate failed")
            reasons = "; ".join(gate.get("reasons", []))
            tags[f"reason.{outcome.coin}"] = outcome.error or reasons or "every check of the gate passed"
        models = {outcome.coin: outcome.final_model for outcome in result.outcomes}
        tracker.log(run_id, tags={**tags, **_fingerprints(models)})
        tracker.log_files(run_id, [Path(result.run_dir) / "report.md"])
        for outcome in result.outcomes:
            with tracker.run(outcome.coin, parent=run_id, tags={"crpbot.stage": outcome.stage}) as child:
                if outcome.evaluation_dir and (Path(outcome.evaluation_dir) / "metrics.json").is_file():
                    record_evaluation(tracker, child, outcome.evaluation_dir)
            if outcome.promoted_version:
                mirror_champion(tracker, outcome.coin, registry_root)


def record_retrain(
    tracker: Tracker,
    run_id: str | None,
    decisions: list[RetrainDecision],
    run_dir: Path | None,
    registry_root: str | Path,
) -> None:
    """A retrain's run: each coin's decision and reason as tags, ``retrain.json`` as artifact
    (with ``run_dir``); the promoted coins' champions mirrored."""
    if run_id is None:
        return
    tags: dict[str, Any] = {}
    for decision in decisions:
        version = f" {decision.challenger_version}" if decision.challenger_version else ""
        tags[f"decision.{decision.coin}"] = f"{decision.decision}{version}"
        tags[f"reason.{decision.coin}"] = decision.reason
    with tracker.guard():
        tags |= _fingerprints({decision.coin: decision.challenger for decision in decisions})
    tracker.log(run_id, tags=tags)
    if run_dir is not None:
        tracker.log_files(run_id, [Path(run_dir) / RETRAIN_FILE])
    for decision in decisions:
        if decision.promoted:
            mirror_champion(tracker, decision.coin, registry_root)


def _fingerprints(models: Mapping[str, str | None]) -> dict[str, str]:
    """``crpbot.data_fingerprint.<COIN>``: the fingerprint of the bars each coin's model was
    trained on, from its manifest (coins without a model artifact are left out)."""
    return {
        f"crpbot.data_fingerprint.{coin}": read_manifest(model)["data_fingerprint"]
        for coin, model in models.items()
        if model and (Path(model) / "manifest.json").is_file()
    }


# --- the model registry mirror ---------------------------------------------------------------


def registered_name(coin: str) -> str:
    """``crpbot-BTC`` for BTC-USD."""
    return f"crpbot-{normalize_coin(coin).split('-')[0]}"


def mirror_champion(tracker: Tracker, coin: str, registry_root: str | Path) -> None:
    """Point ``crpbot-<COIN>@champion`` at crpbot's current version of ``coin``, registering it
    first when the mirror lacks it (tags ``crpbot.version``, ``crpbot.manifest_hash``; linked to
    the run that trained it when a tracked run recorded the same manifest hash)."""
    if not tracker.enabled:
        return
    with tracker.guard():
        version = current_version(coin, root=registry_root)
        if version is None:
            return
        path = current_path(coin, root=registry_root).resolve()
        digest = content_digest(read_manifest(path))
        name, client = registered_name(coin), tracker.client
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description=f"mirror of crpbot's registry for {coin}")
        mirrored = next(
            (
                mv
                for mv in client.search_model_versions(f"name = '{name}'")
                if mv.tags.get("crpbot.version") == version and mv.tags.get("crpbot.manifest_hash") == digest
            ),
            None,
        )
        if mirrored is None:
            mirrored = client.create_model_version(
                name,
                source=path.as_uri(),
                run_id=_training_run(client, digest),
                tags={"crpbot.version": version, "crpbot.manifest_hash": digest, "crpbot.coin": coin},
                description=f"crpbot registry version {version} (source of truth: {path})",
            )
        client.set_registered_model_alias(name, CHAMPION, mirrored.version)


def _training_run(client: Any, digest: str) -> str | None:
    """The tracked run that recorded an artifact with this manifest hash, if any."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string=f"tags.`crpbot.manifest_hash` = '{digest}'", max_results=1
    )
    return runs[0].info.run_id if runs else None

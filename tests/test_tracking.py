"""MLflow tracking into a temporary sqlite store, read back with ``mlflow.search_runs``: what each
command records, the registry mirror's ``champion`` alias, and a store that is down, slow or
answering nonsense, which must never fail the run."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pandas as pd
import pytest
from tiny import TINY_GRU

from crpbot.cli import main
from crpbot.integrations.tracking import (
    Tracker,
    record_model,
    record_pipeline,
    record_retrain,
    record_scan,
    record_walkforward,
    registered_name,
)
from crpbot.pipeline.retrain import RetrainDecision
from crpbot.pipeline.run_report import CoinOutcome, PipelineResult, utc_now
from crpbot.registry.artifact import content_digest, git_commit, read_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating its schema costs seconds); tests tell their runs
    apart by experiment and run id."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def tiny_pair(train_tiny_artifact) -> tuple[Path, Path, object]:
    """Two tiny BTC models that differ only in the seed, and their prepared data."""
    config = TINY_GRU.replace(max_epochs=2, patience=2)
    first, data = train_tiny_artifact(config, "BTC")
    second, _ = train_tiny_artifact(config.replace(seed=1), "BTC")
    return first, second, data


@pytest.fixture(scope="module")
def tiny_model(tiny_pair) -> Path:
    return tiny_pair[0]


def runs(store: str, experiment: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time ASC"])


def children(frame: pd.DataFrame, parent: str) -> pd.DataFrame:
    return frame[frame["tags.mlflow.parentRunId"] == parent]


def test_a_trained_model_is_recorded_with_config_history_hash_and_commit(store, tiny_model) -> None:
    tracker = Tracker(store, "crpbot-train")
    with tracker.run("train BTC") as run_id:
        record_model(tracker, run_id, tiny_model)

    row = runs(store, "crpbot-train").set_index("run_id").loc[run_id]
    assert row["status"] == "FINISHED"
    assert row["params.hidden_size"] == "8" and row["params.cell"] == "gru"
    manifest = read_manifest(tiny_model)
    assert row["tags.crpbot.manifest_hash"] == content_digest(manifest)
    assert row["tags.crpbot.data_fingerprint"] == manifest["data_fingerprint"]
    assert row["tags.crpbot.artifact"] == str(tiny_model.resolve())
    assert row["tags.mlflow.source.git.commit"] == (git_commit() or "unknown")

    from mlflow import MlflowClient

    history = json.loads((tiny_model / "history.json").read_text())
    client = MlflowClient(store)
    for key in ("train_loss", "val_loss", "val_acc"):  # one step per epoch, the artifact's numbers
        logged = client.get_metric_history(run_id, key)
        assert [(m.step, m.value) for m in logged] == [(r["epoch"], pytest.approx(r[key])) for r in history]


def test_an_ensemble_is_recorded_with_each_members_history(store, tiny_pair, tmp_path) -> None:
    from mlflow import MlflowClient

    from crpbot.model.ensemble import build_ensemble

    first, second, data = tiny_pair
    ensemble = build_ensemble([first, second], data, tmp_path / "ens", calibrate=False)
    tracker = Tracker(store, "crpbot-ensemble")
    with tracker.run("ensemble BTC") as run_id:
        record_model(tracker, run_id, ensemble)

    row = runs(store, "crpbot-ensemble").set_index("run_id").loc[run_id]
    assert row["params.kind"] == "ensemble" and row["params.seeds"] == "0,1"
    client = MlflowClient(store)
    for member, directory in enumerate((first, second)):
        history = json.loads((directory / "history.json").read_text())
        logged = client.get_metric_history(run_id, f"member{member}.val_loss")
        assert [(m.step, m.value) for m in logged] == [
            (r["epoch"], pytest.approx(r["val_loss"])) for r in history
        ]


def test_evaluate_records_every_metric_the_gate_and_its_outputs(store, tiny_model, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(tiny_model), "--out", str(out), "--tracking-uri", store])
    assert code == 0
    assert "tracking off" not in capsys.readouterr().err

    (row,) = runs(store, "crpbot-evaluate").to_dict("records")
    metrics = json.loads((out / "metrics.json").read_text())
    assert row["metrics.accuracy"] == pytest.approx(metrics["accuracy"])
    assert row["metrics.accuracy_ci.0"] == pytest.approx(metrics["accuracy_ci"][0])
    assert row["metrics.backtest.trades"] == metrics["backtest"]["trades"]
    assert row["metrics.baselines.logistic"] == pytest.approx(metrics["baselines"]["logistic"])
    assert row["tags.crpbot.gate.passed"] == str(metrics["gate"]["passed"])
    assert row["tags.crpbot.gate.reasons"] == ("; ".join(metrics["gate"]["reasons"]) or "-")
    assert row["tags.crpbot.data_fingerprint"] == read_manifest(tiny_model)["data_fingerprint"]

    from mlflow import MlflowClient

    logged = {f.path for f in MlflowClient(store).list_artifacts(row["run_id"])}
    assert {"metrics.json", "report.md"} | {p.name for p in out.glob("*.png")} <= logged


@pytest.mark.ray
def test_a_search_is_a_parent_run_with_one_child_per_trial(ray_session, store, tmp_path) -> None:
    code = main(
        [
            "tune",
            "--coin",
            "BTC",
            "--config",
            str(REPO / "tune_configs" / "smoke_search.yaml"),
            "--num-samples",
            "2",
            "--epochs",
            "1",
            "--storage",
            str(tmp_path / "runs"),
            "--name",
            "tracked",
            "--tracking-uri",
            store,
        ]
    )
    assert code == 0
    frame = runs(store, "crpbot-tune")
    parents = frame[frame["tags.mlflow.parentRunId"].isna()]
    (parent,) = parents["run_id"]
    trials = children(frame, parent)
    results = pd.read_csv(tmp_path / "runs" / "tracked" / "results.csv")
    assert len(trials) == 2 and (trials["status"] == "FINISHED").all()
    assert sorted(trials["metrics.val_loss"]) == pytest.approx(sorted(results["best_val_loss"]))
    assert set(trials["params.hidden_size"]) <= {"8", "16"}  # each trial's sampled config
    best = parents.iloc[0]
    assert best["metrics.best_val_loss"] == pytest.approx(results["best_val_loss"].min())
    assert best["tags.crpbot.data_fingerprint"]


def _fold_outputs(directory: Path) -> Path:
    """A finished two-fold walk-forward's outputs, as crpbot.experiments.walkforward writes them."""
    directory.mkdir()
    plan = {"coin": "BTC-USD", "input_path": "BTC.parquet", "data_fingerprint": "f" * 16}
    plan |= {"train_config": TINY_GRU.to_dict(), "spec": {"train_days": 1.0, "window": "rolling"}}
    (directory / "plan.json").write_text(json.dumps(plan))
    summary = {"coin": "BTC-USD", "folds_finished": 2, "pooled": {"n": 900, "accuracy": 0.52}}
    (directory / "summary.json").write_text(json.dumps(summary))
    folds = pd.DataFrame(
        {
            "fold": [0, 1],
            "status": ["ok", "ok"],
            "test_start": ["2023-04-01T00:00Z", "2023-04-02T00:00Z"],
            "n": [450, 450],
            "accuracy": [0.51, 0.53],
            "error": [None, None],
        }
    )
    folds.to_csv(directory / "folds.csv", index=False)
    return directory


def test_a_walkforward_is_a_parent_run_with_one_child_per_fold(store, tmp_path) -> None:
    out = _fold_outputs(tmp_path / "wf")
    tracker = Tracker(store, "crpbot-walkforward")
    with tracker.run("walkforward BTC") as run_id:
        record_walkforward(tracker, run_id, out)

    frame = runs(store, "crpbot-walkforward")
    parent = frame.set_index("run_id").loc[run_id]
    assert parent["metrics.pooled.accuracy"] == pytest.approx(0.52)
    assert parent["tags.crpbot.data_fingerprint"] == "f" * 16
    folds = children(frame, run_id).sort_values("tags.mlflow.runName")
    assert list(folds["tags.mlflow.runName"]) == ["fold 0", "fold 1"]
    assert list(folds["metrics.accuracy"]) == pytest.approx([0.51, 0.53])
    assert list(folds["params.test_start"]) == ["2023-04-01T00:00Z", "2023-04-02T00:00Z"]


def test_a_scan_is_a_parent_run_with_one_child_per_cell_and_coin(store, tmp_path) -> None:
    (tmp_path / "scan.json").write_text(
        json.dumps({"coins": ["BTC", "ETH"], "cells": 2, "wall_seconds": 9.5})
    )
    cells = pd.DataFrame(
        {"cell": ["a", "a", "b", "b"], "coin": ["BTC", "ETH"] * 2, "accuracy": [0.5, 0.6, 0.55, 0.7]}
    )
    cells.to_csv(tmp_path / "cells.csv", index=False)
    record_scan(Tracker(store, "crpbot-scan"), tmp_path)

    frame = runs(store, "crpbot-scan")
    (parent,) = frame[frame["tags.mlflow.parentRunId"].isna()]["run_id"]
    rows = children(frame, parent).set_index("tags.mlflow.runName")
    assert sorted(rows.index) == ["a BTC", "a ETH", "b BTC", "b ETH"]
    assert rows.loc["b ETH", "metrics.accuracy"] == pytest.approx(0.7)
    assert frame.set_index("run_id").loc[parent, "metrics.wall_seconds"] == pytest.approx(9.5)


def test_pipeline_and_retrain_decisions_are_tags(store, tiny_model, tmp_path) -> None:
    tracker = Tracker(store, "crpbot-pipeline")
    passed = {"gate": {"passed": True, "reasons": []}}
    outcomes = [
        CoinOutcome(coin="BTC-USD", final_model=str(tiny_model), metrics=passed, promoted_version="v9"),
        CoinOutcome.failure("ETH-USD", "chain failed: no bars", started_at=utc_now(), finished_at=utc_now()),
    ]
    result = PipelineResult(run_dir=tmp_path, outcomes=outcomes, batch={"promoted": True})
    with tracker.run("pipeline") as run_id:
        record_pipeline(tracker, run_id, result, tmp_path / "models")
    decisions = [
        RetrainDecision(
            "BTC-USD", "v1", str(tiny_model), False, "kept champion", "the challenger is worse beyond noise"
        )
    ]
    with tracker.run("retrain") as retrain_id:
        record_retrain(tracker, retrain_id, decisions, None, tmp_path / "models")

    frame = runs(store, "crpbot-pipeline").set_index("run_id")
    assert frame.loc[run_id, "tags.decision.BTC-USD"] == "promoted v9"
    assert frame.loc[run_id, "tags.decision.ETH-USD"] == "gate failed"
    assert frame.loc[run_id, "tags.reason.ETH-USD"] == "chain failed: no bars"
    assert frame.loc[retrain_id, "tags.decision.BTC-USD"] == "kept champion"
    assert frame.loc[retrain_id, "tags.reason.BTC-USD"] == "the challenger is worse beyond noise"
    fingerprint = read_manifest(tiny_model)["data_fingerprint"]
    for run in (run_id, retrain_id):  # the bars each coin's model was trained on
        assert frame.loc[run, "tags.crpbot.data_fingerprint.BTC-USD"] == fingerprint
    assert len(children(frame.reset_index(), run_id)) == 2  # one child run per coin


def test_promote_and_rollback_move_the_champion_alias(store, tiny_pair, tmp_path) -> None:
    from mlflow import MlflowClient

    tiny_model, second, _ = tiny_pair
    registry = tmp_path / "models"
    common = ["--registry", str(registry), "--tracking-uri", store]
    client = MlflowClient(store)
    name = registered_name("BTC")

    def champion() -> tuple[str, str, str]:
        version = client.get_model_version_by_alias(name, "champion")
        return version.version, version.tags["crpbot.version"], version.tags["crpbot.manifest_hash"]

    assert main(["promote", "--model", str(tiny_model), "--coin", "BTC", "--version", "v1", *common]) == 0
    first = champion()
    assert first[1:] == ("v1", content_digest(read_manifest(tiny_model)))
    assert main(["promote", "--model", str(second), "--coin", "BTC", "--version", "v2", *common]) == 0
    assert champion()[1] == "v2"
    assert main(["registry", "rollback", "BTC", "v1", *common]) == 0
    assert champion() == first  # back to the mirrored version 1, none registered twice
    assert len(client.search_model_versions(f"name = '{name}'")) == 2


def test_an_unreachable_store_is_one_line_and_the_run_succeeds(tiny_model, tmp_path, capsys) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "eval"
    uri = f"http://127.0.0.1:{port}"
    assert main(["evaluate", "--model", str(tiny_model), "--out", str(out), "--tracking-uri", uri]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "tracking" in line]
    assert len(lines) == 1 and lines[0].startswith(f"crpbot: tracking off ({uri}):")
    assert (out / "metrics.json").is_file()


def test_a_malformed_uri_is_one_line_and_promotion_goes_on(tiny_model, tmp_path, capsys) -> None:
    registry = tmp_path / "models"
    argv = ["promote", "--model", str(tiny_model), "--coin", "BTC", "--registry", str(registry)]
    assert main([*argv, "--tracking-uri", "nonsense://store"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("crpbot: tracking off (nonsense://store):")
    assert (registry / "promoted" / "BTC-USD").is_dir()


class _Nonsense(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<html>not MLflow</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_slow_or_nonsense_server_turns_tracking_off_once(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    said: list[str] = []
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        slow = Tracker(f"http://127.0.0.1:{silent.getsockname()[1]}", "x", say=said.append)
        with slow.run("r") as run_id:
            slow.log(run_id, metrics={"a": 1.0})
    server = http.server.HTTPServer(("127.0.0.1", 0), _Nonsense)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        nonsense = Tracker(f"http://127.0.0.1:{server.server_port}", "x", say=said.append)
        with nonsense.run("r") as run_id:
            nonsense.log(run_id, metrics={"a": 1.0})
    finally:
        server.shutdown()
    assert not slow.enabled and not nonsense.enabled and run_id is None
    assert len(said) == 2 and all("tracking off" in line for line in said)

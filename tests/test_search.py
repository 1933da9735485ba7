"""The search on a real local Ray instance, real Optuna and the bundled data: tiny spaces, few epochs."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from search_helpers import best_trial, lowest_val_loss

from crpbot.config import load_config
from crpbot.search.space import load_search_space
from crpbot.search.tune import run_search

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
SMOKE_BASE = str(REPO / "tune_configs" / "smoke.yaml")


def write_space(tmp_path: Path, space: dict, budget: dict, seed: int = 0, **overrides) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": SMOKE_BASE,
                "seed": seed,
                "budget": budget,
                "space": space,
                "overrides": {"max_train_windows": 512, "patience": 5, **overrides},
            }
        )
    )
    return path


def test_four_trial_search_writes_results_study_and_a_trainable_best_yaml(ray_session, tmp_path):
    space = load_search_space(REPO / "tune_configs" / "smoke_search.yaml")
    result = run_search(
        space,
        "BTC",
        num_samples=4,
        max_epochs=2,
        storage=tmp_path / "runs",
        name="four",
        progress=False,
        log=lambda _: None,
    )

    table = result.table
    assert len(table) == 4 and (table["status"] != "error").all()
    params = table[space.keys()].apply(tuple, axis=1)
    assert params.nunique() == 4
    assert result.results_csv.read_text().count("\n") == 5  # header + 4 rows
    for plot in ("optimization_history.png", "param_importances.png"):  # Optuna's, beside results.csv
        assert (result.results_csv.parent / plot).is_file()
    assert ((table["epochs_run"] >= 1) & (table["epochs_run"] <= 2)).all()
    # Optuna's study holds every trial's value: the best val loss the table shows
    values = sorted(t.value for t in result.study.trials if t.state.name == "COMPLETE")
    assert values == pytest.approx(sorted(table["best_val_loss"]))

    # the best trial is the one whose own reported epochs reached the lowest val loss
    best = load_config(result.best_yaml)
    losses = lowest_val_loss(result.experiment_path)
    assert len(losses) == 4 and best.notes["trial_id"] == best_trial(result.experiment_path)
    assert best.notes["best_val_loss"] == pytest.approx(min(losses.values()), rel=1e-12)
    assert best.notes["trial_id"] == table.loc[0, "trial_id"]
    assert best.lr == pytest.approx(table.loc[0, "lr"]) and best.max_epochs == 2

    import torch

    from crpbot.data.dataset import load_prepared
    from crpbot.model.fit import fit

    torch.set_num_threads(1)
    one_epoch = best.replace(max_epochs=1)
    fitted = fit(one_epoch, load_prepared("BTC", None, one_epoch), log=lambda _: None)
    assert math.isfinite(fitted.history[0]["val_loss"])


def test_asha_stops_a_trial_that_trails_after_the_grace_period(ray_session, tmp_path):
    # One trial at a time; seed 2 samples lr 0.003, 0.003, 0.003, then 1.0. At lr 1.0 the val loss
    # after one epoch is ~1.8 against ~0.68, so ASHA (grace 1, halving) must stop that trial at epoch 1.
    path = write_space(
        tmp_path,
        {"lr": {"choice": [0.003, 1.0]}},
        seed=2,
        eta_min=0.0,
        budget={
            "num_samples": 4,
            "max_epochs": 3,
            "grace_period": 1,
            "reduction_factor": 2,
            "max_concurrent": 1,
        },
    )
    result = run_search(
        load_search_space(path),
        "BTC",
        storage=tmp_path / "runs",
        name="asha",
        progress=False,
        log=lambda _: None,
    )
    table = result.table
    bad = table[table["lr"] == 1.0]
    assert len(bad) >= 1
    assert (bad["status"] == "stopped (ASHA)").all() and (bad["epochs_run"] < 3).all()
    assert (table[table["lr"] == 0.003]["epochs_run"] >= 2).any()


def _result_epochs(trial_dir: Path) -> list[int]:
    result_file = trial_dir / "result.json"
    if not result_file.exists():
        return []
    return [json.loads(line)["epoch"] for line in result_file.read_text().splitlines() if line.strip()]


def _trial_dirs(experiment: Path) -> list[Path]:
    """A search's trial directories: its trainable is registered as ``crpbot_trial_<search name>``."""
    return list(experiment.glob(f"crpbot_trial_{experiment.name}_*"))


def test_interrupted_search_resumes_without_repeating_finished_trials(ray_session, tmp_path):
    path = write_space(
        tmp_path,
        {"hidden_size": {"choice": [8, 16]}, "lr": {"loguniform": [1e-3, 1e-2]}},
        budget={"num_samples": 3, "max_epochs": 4, "grace_period": 4, "max_concurrent": 1},
    )
    storage = tmp_path / "runs"
    experiment = storage / "resume"
    address = ray_session.get_runtime_context().gcs_address
    command = [
        str(Path(sys.executable).with_name("crpbot")),
        "tune",
        "--coin",
        "BTC",
        "--config",
        str(path),
        "--storage",
        str(storage),
        "--name",
        "resume",
        "--address",
        address,
    ]
    # A second driver on the session's cluster: a Ctrl-C once the second trial has reported an epoch.
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        trials = sorted(
            _trial_dirs(experiment), key=lambda p: int(re.search(r"_[0-9a-f]{8}_(\d+)_", p.name)[1])
        )
        if (
            len(trials) >= 2
            and (trials[1] / "result.json").exists()
            and (trials[1] / "result.json").stat().st_size > 0
        ):
            break
        time.sleep(0.2)
    assert driver.poll() is None, driver.communicate()[1][-2000:]
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 2 and "--resume" in err, err[-2000:]

    before = {trial_dir: _result_epochs(trial_dir) for trial_dir in _trial_dirs(experiment)}
    finished = [trial_dir for trial_dir, epochs in before.items() if epochs == [1, 2, 3, 4]]
    assert 1 <= len(finished) < 3  # interrupted mid-search, after the first trial finished

    result = run_search(
        load_search_space(path),
        "BTC",
        storage=storage,
        name="resume",
        resume=True,
        progress=False,
        log=lambda _: None,
    )
    assert len(result.table) == 3 and (result.table["status"] == "complete").all()
    for trial_dir in _trial_dirs(experiment):
        epochs, earlier = _result_epochs(trial_dir), before.get(trial_dir, [])
        if trial_dir in finished:
            assert epochs == earlier  # a finished trial did not run again
            continue
        # an unfinished one went on from its last saved checkpoint (epochs reported after that run again)
        assert epochs[: len(earlier)] == earlier
        tail = epochs[len(earlier) :]
        assert tail == list(range(tail[0], 5)) and tail[0] <= len(earlier) + 1
    assert len([t for t in result.study.trials if t.state.name == "COMPLETE"]) == 3
    assert os.path.exists(result.best_yaml)


def test_search_state_and_results_live_in_s3(ray_session, s3_endpoint, tmp_path, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="searches")
    path = write_space(
        tmp_path,
        {"hidden_size": {"choice": [8, 16]}},
        budget={"num_samples": 2, "max_epochs": 1, "grace_period": 1},
    )
    result = run_search(
        load_search_space(path),
        "BTC",
        storage="s3://searches/crpbot",
        name="s3",
        output_dir=tmp_path / "out",
        progress=False,
        log=lambda _: None,
    )

    assert len(result.table) == 2 and result.best_yaml == tmp_path / "out" / "best.yaml"
    keys = {
        obj["Key"]
        for obj in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
            Bucket="searches", Prefix="crpbot/s3/"
        )["Contents"]
    }
    assert {"crpbot/s3/results.csv", "crpbot/s3/best.yaml"} <= keys
    assert any("/checkpoint_" in key for key in keys) and any("experiment_state" in key for key in keys)
    assert len(result.study.trials) == 2

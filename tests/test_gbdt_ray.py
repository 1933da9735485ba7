"""The GBDT family through every Ray path on the bundled data: the shipped config trained and
evaluated from the command line, a seed ensemble, a search and a walk-forward, each fit a Ray task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from crpbot.config import TrainConfig, load_config

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
TINY_GBDT = TrainConfig(
    model="gbdt", lookback=20, horizon=15, num_leaves=7, min_data_in_leaf=100, num_boost_round=40
)


def test_shipped_config_trains_evaluates_and_predicts_from_the_command_line(
    ray_session, tmp_path, sample_path, capsys
):
    from crpbot.cli import main

    model = tmp_path / "model"
    config = str(REPO / "tune_configs" / "gbdt.yaml")
    assert main(["train", "--coin", "BTC", "--config", config, "--out", str(model)]) == 0
    assert (model / "model.txt").is_file() and not (model / "model.safetensors").exists()
    assert main(["evaluate", "--model", str(model), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] > 4000 and 0.4 < metrics["accuracy"] < 0.65
    assert metrics["accuracy_ci"][0] < metrics["accuracy"] < metrics["accuracy_ci"][1]
    capsys.readouterr()
    args = ["predict", "--coin", "BTC", "--input", str(sample_path("BTC")), "--model", str(model)]
    assert main([*args, "--last", "2", "--allow-stale", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    assert len(predictions) == 2 and all(0 < row["prob_up"] < 1 for row in predictions)


def test_two_seed_gbdt_ensemble_averages_different_members(ray_session, tmp_path, sample_path):
    from crpbot.model.ensemble import train_ensemble
    from crpbot.model.predictor import load_predictor

    out = train_ensemble(
        TINY_GBDT, "BTC", seeds=2, input_path=sample_path("BTC"), out_dir=tmp_path / "ens", log=lambda _: None
    )
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "ensemble" and config["members"] == ["members/seed_0", "members/seed_1"]
    texts = [(out / member / "model.txt").read_text() for member in config["members"]]
    assert texts[0] != texts[1], "the seeds draw other bagging and feature fractions"
    assert len(load_predictor(out).models) == 2
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["fitted_on"] == "val" and 0.2 < calibration["temperature"] < 5


def test_two_trial_gbdt_search_writes_a_trainable_best_yaml(ray_session, tmp_path):
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    space_file = tmp_path / "space.yaml"
    raw = yaml.safe_load((REPO / "tune_configs" / "gbdt_search.yaml").read_text())
    raw.update(
        base=str(REPO / "tune_configs" / "gbdt.yaml"), overrides={"lookback": 20, "num_boost_round": 40}
    )
    raw["budget"]["num_samples"] = 2
    space_file.write_text(yaml.safe_dump(raw))
    result = run_search(
        load_search_space(space_file),
        "BTC",
        storage=tmp_path / "runs",
        name="gbdt",
        output_dir=tmp_path / "out",
        progress=False,
        log=lambda _: None,
    )
    table = result.table
    assert len(table) == 2 and list(table["status"]) == ["complete", "complete"]
    assert table["best_val_loss"].between(0.5, 0.9).all()
    best = load_config(result.best_yaml)
    assert best.model == "gbdt" and best.num_leaves == int(table.iloc[0]["num_leaves"])


def test_gbdt_walkforward_runs_two_folds_in_parallel_tasks(ray_session, tmp_path, sample_path):
    from crpbot.data.folds import FoldSpec
    from crpbot.experiments.walkforward import run_walkforward

    spec = FoldSpec(train_days=6, val_days=2, test_days=2, folds=2)
    result = run_walkforward(
        TINY_GBDT,
        "BTC",
        spec,
        input_path=sample_path("BTC"),
        out_dir=tmp_path / "wf",
        log=lambda _: None,
    )
    table = result.folds
    assert result.trained == [0, 1] and list(table["status"]) == ["ok", "ok"]
    assert np.all((table["accuracy"] > 0.4) & (table["accuracy"] < 0.65))
    assert (tmp_path / "wf" / "folds" / "1" / "model" / "members" / "seed_0" / "model.txt").is_file()


def test_global_gbdt_trains_from_the_command_line_as_a_ray_task(ray_session, tmp_path, sample_path):
    from crpbot.cli import main
    from crpbot.config import save_config
    from crpbot.model.predictor import load_predictor

    save_config(TINY_GBDT.replace(coins=["BTC", "ETH"], num_boost_round=20), tmp_path / "global.yaml")
    model = tmp_path / "global"
    args = ["train", "--config", str(tmp_path / "global.yaml"), "--data-dir", str(sample_path("BTC").parent)]
    assert main([*args, "--out", str(model)]) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["coins"] == ["BTC-USD", "ETH-USD"]
    header = (model / "model.txt").read_text().split("\n\n")[0].splitlines()
    assert next(line for line in header if line.startswith("feature_names=")).split()[-1] == "coin"
    assert load_predictor(model, coin="ETH").config_json["train_config"]["model"] == "gbdt"


def test_a_gbdt_budget_searches_and_ensembles_gbdts_in_the_retrain_challenger(ray_session, tmp_path):
    """A GBDT recipe that misses the validation check falls back to a search of the GBDT space
    and a seed ensemble of GBDTs, never the recurrent space (the retrain path runs the pipeline's chain)."""
    from crpbot.config import save_config
    from crpbot.data.bars import default_input
    from crpbot.evaluation.gate import GateThresholds
    from crpbot.pipeline.chain import PipelineBudget
    from crpbot.pipeline.retrain import run_retrain

    save_config(TINY_GBDT, tmp_path / "tiny.yaml")
    raw = yaml.safe_load((REPO / "tune_configs" / "gbdt_smoke_search.yaml").read_text())
    raw.update(base=str(tmp_path / "tiny.yaml"))
    raw["budget"]["num_samples"] = 2
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(raw))
    budget = PipelineBudget(
        train_config=str(tmp_path / "tiny.yaml"), search_space=str(tmp_path / "space.yaml"), seeds=2
    )
    (decision,) = run_retrain(
        ["BTC"],
        input_dir=default_input("BTC").parent,
        budget=budget,
        run_dir=tmp_path / "run",
        registry_root=tmp_path / "models",
        thresholds=GateThresholds(min_accuracy=0.99, net_pnl="report"),  # the recipe misses it
        log=lambda _: None,
    )
    (outcome,) = json.loads((tmp_path / "run" / "retrain.json").read_text())["outcomes"]
    assert outcome["stage"] == "ensemble" and not decision.promoted
    best = load_config(outcome["search_best_yaml"])
    assert best.model == "gbdt" and best.lookback == TINY_GBDT.lookback
    ensemble = Path(outcome["final_model"])
    config = json.loads((ensemble / "config.json").read_text())
    assert config["members"] == ["members/seed_0", "members/seed_1"]
    for member in config["members"]:
        assert (ensemble / member / "model.txt").is_file()

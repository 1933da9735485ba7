"""The GBDT model family without Ray: fit, artifact round trip, determinism, serving parity, a global
model's coin column, promotion and S3, and the bad-input lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_probe import run_commands_in_a_fresh_process

from crpbot.config import TrainConfig, load_config
from crpbot.errors import CrpbotError

REPO = Path(__file__).resolve().parents[1]
TINY_GBDT = TrainConfig(
    model="gbdt", lookback=20, horizon=15, num_leaves=7, min_data_in_leaf=100, num_boost_round=60
)


@pytest.fixture(scope="module")
def trained(train_tiny_artifact):
    """The tiny GBDT's artifact on BTC's sample, and the data it was fitted on."""
    return train_tiny_artifact(TINY_GBDT, "BTC")


@pytest.fixture(scope="module")
def artifact(trained):
    return trained[0]


@pytest.fixture(scope="module")
def btc(trained):
    return trained[1]


@pytest.fixture(scope="module")
def fitted(btc):
    from crpbot.model.family import fit_model

    return fit_model(TINY_GBDT, btc, log=lambda _: None)


def test_fit_is_deterministic_and_a_seed_changes_the_trees(btc, fitted):
    from crpbot.model.family import fit_model

    again = fit_model(TINY_GBDT, btc, log=lambda _: None)
    assert again.best_state == fitted.best_state, "same config and data: the same model file"
    other = fit_model(TINY_GBDT.replace(seed=1), btc, log=lambda _: None)
    assert other.best_state != fitted.best_state, "the seed draws the bagging and feature fractions"
    assert 1 <= fitted.best_epoch <= len(fitted.history) <= TINY_GBDT.num_boost_round
    row = fitted.history[fitted.best_epoch - 1]
    assert {"train_loss", "stop_loss", "val_loss", "val_acc"} <= set(row)


def test_early_stopping_reads_a_purged_tail_of_train_never_validation(btc):
    from crpbot.model.gbdt import NS_PER_MINUTE, stopping_split

    ends = btc.window_ends("train", TINY_GBDT.lookback)
    fit_rows, stop_rows = stopping_split(btc, ends, TINY_GBDT)
    assert len(stop_rows) == pytest.approx(0.15 * len(ends), abs=1)
    gap = btc.timestamps[stop_rows].min() - btc.timestamps[fit_rows].max()
    assert gap >= (TINY_GBDT.lookback + TINY_GBDT.horizon) * NS_PER_MINUTE
    assert set(fit_rows) | set(stop_rows) <= set(ends)  # train windows only


def test_artifact_round_trip_gives_the_boosters_own_probabilities(artifact, btc, fitted):
    import lightgbm as lgb

    from crpbot.data.tabular import lookback_lags, tabular_rows
    from crpbot.model.predictor import load_predictor

    files = sorted(p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file())
    assert files == [
        "config.json",
        "familiarity.json",
        "features.json",
        "history.json",
        "manifest.json",
        "model.txt",
        "scaler.json",
    ]
    # no pickle anywhere: every file is text (JSON or LightGBM's model format)
    for name in files:
        (artifact / name).read_bytes().decode("utf-8")
    assert (artifact / "model.txt").read_text() == fitted.best_state

    predictor = load_predictor(artifact)
    assert predictor.config_json["logit_offset"] == 0.0 and predictor.config_json["param_count"] > 0
    ends, probs = predictor.raw_proba(btc, "test")
    booster = lgb.Booster(model_str=fitted.best_state)
    rows = tabular_rows(btc.features, ends, btc.feature_names, btc.segment_ids, lookback_lags(20))
    expected = 1 / (1 + np.exp(-booster.predict(rows, raw_score=True)))
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    assert 0.4 < np.mean((probs >= 0.5) == (btc.labels[ends] == 1)) < 0.65


def test_rows_built_from_windows_equal_rows_built_from_the_arrays(btc):
    """Serving scores windows, training reads the arrays: both give the same columns."""
    from crpbot.data.tabular import lookback_lags, tabular_rows, window_rows
    from crpbot.data.windows import gather_windows

    ends = btc.window_ends("val", 60)[:500]
    lags = lookback_lags(60)
    assert [lag for _, lag in lags] == [1, 2, 3, 4, 5, 10, 15, 30, 45]
    windows = gather_windows(torch.from_numpy(btc.features), torch.from_numpy(ends), 60).numpy()
    from_windows = window_rows(windows, btc.feature_names, lags)
    from_arrays = tabular_rows(btc.features, ends, btc.feature_names, btc.segment_ids, lags)
    np.testing.assert_array_equal(from_windows, from_arrays)
    assert not np.isnan(from_arrays).any()


def test_global_gbdt_reads_the_coin_as_a_categorical_column(tmp_path, sample_path):
    from crpbot.data.multicoin import coin_inputs, prepare_coins
    from crpbot.model.family import fit_model
    from crpbot.model.inference import save_model_artifact
    from crpbot.model.predictor import load_predictor

    config = TINY_GBDT.replace(coins=["BTC", "ETH"], num_boost_round=20)
    data = prepare_coins(config, coin_inputs(config.coins, sample_path("BTC").parent))
    result = fit_model(config, data, log=lambda _: None)
    header = dict(line.split("=", 1) for line in result.best_state.split("\n\n")[0].splitlines()[1:])
    assert header["feature_names"].split()[-1] == "coin"
    coin_info = header["feature_infos"].split()[-1]  # a numeric column's is a [min:max] range
    assert not coin_info.startswith("[") and {"0", "1"} <= set(coin_info.split(":"))
    path = save_model_artifact(
        tmp_path / "global",
        model_state=result.best_state,
        config=config,
        data=data,
        history=result.history,
        best_epoch=result.best_epoch,
        input_path=None,
    )
    eth = load_predictor(path, coin="ETH")
    ends, probs = eth.raw_proba(data.part("ETH"), "test")
    assert len(ends) > 1000 and np.all((probs > 0) & (probs < 1))
    with pytest.raises(CrpbotError, match="name the coin"):
        load_predictor(path)


def test_promote_push_pull_keeps_a_gbdt_loadable_and_identical(tmp_path, artifact, btc, s3_endpoint):
    import boto3

    from crpbot.model.predictor import load_predictor
    from crpbot.registry.local import current_path, promote
    from crpbot.registry.transfer import pull, push

    bucket = "crpbot-gbdt-test"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    root = tmp_path / "origin"
    promote(artifact, "BTC", root=root, version="v1")
    push(root, bucket, endpoint_url=s3_endpoint)
    clone = tmp_path / "clone"
    pull(clone, bucket, endpoint_url=s3_endpoint)
    pulled = current_path("BTC", root=clone)
    assert (pulled / "model.txt").read_bytes() == (artifact / "model.txt").read_bytes()
    _, expected = load_predictor(artifact).predict_proba(btc, "val")
    _, probs = load_predictor(pulled).predict_proba(btc, "val")
    np.testing.assert_array_equal(probs, expected)


def test_a_changed_model_file_is_refused(tmp_path, artifact):
    import shutil

    from crpbot.model.predictor import load_predictor

    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    (copy / "model.txt").chmod(0o644)
    text = (copy / "model.txt").read_text()
    (copy / "model.txt").write_text(text.replace("num_leaves=", "num_leaves=1", 1))
    with pytest.raises(CrpbotError, match="model.txt"):
        load_predictor(copy)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "xgboost"}, "model='xgboost': expected one of rnn, gbdt"),
        ({"num_leaves": 31}, "config key num_leaves is not a setting of model 'rnn'"),
        ({"model": "gbdt", "hidden_size": 64}, "config key hidden_size is not a setting of model 'gbdt'"),
        ({"model": "gbdt", "cell": "gru"}, "config key cell is not a setting of model 'gbdt'"),
        ({"model": "gbdt", "feature_fraction": 0}, "feature_fraction=0"),
    ],
)
def test_bad_family_keys_are_one_line_errors_naming_the_key(tmp_path, values, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(CrpbotError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_a_saved_gbdt_config_loads_back_unchanged(tmp_path):
    """Saved configs (best.yaml, an artifact's train_config) hold every key at its value: the other
    family's keys at their defaults are not 'set'."""
    from crpbot.config import save_config

    config = load_config(REPO / "tune_configs" / "gbdt.yaml")
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_cli_refuses_bad_gbdt_input_before_ray(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: gbdt\nhidden_size: 64\n")
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "tune_configs" / "gbdt.yaml"),
                "budget": {"num_samples": 2, "max_epochs": 1},
                "space": {"lr": {"loguniform": [1e-3, 1e-2]}},
            }
        )
    )
    gbdt = str(REPO / "tune_configs" / "gbdt.yaml")
    cases = [
        (["train", "--coin", "BTC", "--config", str(bad)], "config key hidden_size is not a setting"),
        (["train", "--coin", "BTC", "--config", gbdt, "--gpu"], "model gbdt trains on CPUs"),
        (["train", "--coin", "BTC", "--config", gbdt, "--workers", "2"], "not 2 workers"),
        (["train", "--coin", "BTC", "--config", gbdt, "--epochs", "3"], "config key max_epochs is not"),
        (["tune", "--coin", "BTC", "--config", str(space)], "space.lr: config key lr is not a setting"),
    ]
    results = run_commands_in_a_fresh_process(
        [[*args, "--out" if args[0] == "train" else "--name", "x"] for args, _ in cases], cwd=tmp_path
    )
    for (args, message), run in zip(cases, results, strict=True):
        assert run.code == 2, run.stderr
        assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
        assert not run.ray_imported, f"ray was imported by {args}"

"""Seed ensembles: identical members equal the member, the temperature is fitted on val only,
and a real 2-seed ensemble trains on the session's Ray instance and evaluates like a model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.model.predictions import TestSplitAccessError

TINY = TrainConfig(
    cell="lstm",
    hidden_size=8,
    num_layers=1,
    bidirectional=True,
    head_hidden=8,
    dropout=0.0,
    lookback=20,
    horizon=15,
    max_train_windows=256,
    batch_size=128,
    max_epochs=1,
    patience=1,
    t0=1,
    seed=3,
)


@pytest.fixture(scope="module")
def member(train_tiny_artifact):
    return train_tiny_artifact(TINY, "SOL")


def test_ensemble_of_identical_members_equals_the_member(member, tmp_path):
    from crpbot.model.ensemble import build_ensemble
    from crpbot.model.predictor import load_predictor

    path, data = member
    single = load_predictor(path)
    assert single.temperature == 1.0  # an uncalibrated single model
    ensemble_dir = build_ensemble([path, path, path], data, tmp_path / "ens", calibrate=False)
    ensemble = load_predictor(ensemble_dir)
    assert len(ensemble.models) == 3
    for split in ("val", "test"):
        ends_single, probs_single = single.predict_proba(data, split)
        ends_ensemble, probs_ensemble = ensemble.predict_proba(data, split)
        np.testing.assert_array_equal(ends_single, ends_ensemble)
        np.testing.assert_allclose(probs_ensemble, probs_single, rtol=1e-6)


def _copy_with_config(path, out, change):
    """A re-sealed copy of a model artifact whose config.json is ``change(config_json)``."""
    from crpbot.registry.artifact import load_weights, read_artifact_json, read_manifest, write_artifact

    json_files = {
        name: read_artifact_json(path, name)
        for name in ("config.json", "scaler.json", "features.json", "history.json")
    }
    json_files["config.json"] = change(dict(json_files["config.json"]))
    return write_artifact(
        out,
        json_files=json_files,
        tensors=load_weights(path),
        data_fingerprint=read_manifest(path)["data_fingerprint"],
    )


def test_each_member_is_prior_corrected_with_its_own_stored_offset(member, tmp_path):
    """P(up) = sigmoid(logit - logit_offset) per member, averaged, and the temperature is fitted on that."""
    from crpbot.model.calibration import TemperatureScaler, logit, sigmoid
    from crpbot.model.ensemble import build_ensemble
    from crpbot.model.fit import positive_weight
    from crpbot.model.inference import predict_proba
    from crpbot.model.predictor import load_predictor

    path, data = member
    offset = json.loads((path / "config.json").read_text())["logit_offset"]
    assert offset == pytest.approx(np.log(positive_weight(data, TINY.lookback))) and abs(offset) > 1e-3
    single = load_predictor(path)
    assert single.logit_offsets == [offset]
    ends, plain = predict_proba(single.models[0], data, "val", TINY.lookback)  # uncorrected
    np.testing.assert_allclose(
        single.predict_proba(data, "val")[1], sigmoid(logit(plain) - offset), rtol=1e-5
    )

    # a second member with the same weights but another offset: each member keeps its own
    shifted = _copy_with_config(path, tmp_path / "shifted", lambda c: {**c, "logit_offset": offset + 1.0})
    ensemble_dir = build_ensemble([path, shifted], data, tmp_path / "ens")
    ensemble = load_predictor(ensemble_dir)
    assert ensemble.logit_offsets == [offset, offset + 1.0]
    expected = (sigmoid(logit(plain) - offset) + sigmoid(logit(plain) - offset - 1.0)) / 2
    raw_ends, raw = ensemble.raw_proba(data, "val")
    np.testing.assert_array_equal(raw_ends, ends)
    np.testing.assert_allclose(raw, expected, rtol=1e-5)
    # the temperature was fitted on the corrected average, not on the shifted sigmoid
    calibration = json.loads((ensemble_dir / "calibration.json").read_text())
    refit = TemperatureScaler().fit(expected, data.labels[ends].astype(np.float64))
    assert calibration["val_nll_before"] == pytest.approx(refit.nll_before_, rel=1e-5)
    assert calibration["temperature"] == pytest.approx(refit.temperature_, rel=1e-3)


def test_a_model_artifact_without_a_logit_offset_is_refused(member, tmp_path):
    from crpbot.model.ensemble import build_ensemble
    from crpbot.model.predictor import load_predictor

    path, data = member
    old = _copy_with_config(
        path, tmp_path / "old", lambda c: {k: v for k, v in c.items() if k != "logit_offset"}
    )
    with pytest.raises(CrpbotError, match=f"{re.escape(str(old))}: config.json needs a finite logit_offset"):
        load_predictor(old)
    with pytest.raises(CrpbotError, match="logit_offset"):
        build_ensemble([path, old], data, tmp_path / "ens")
    assert not (tmp_path / "ens").exists()


def test_temperature_is_fitted_on_val_and_keeps_the_predicted_class(member, tmp_path):
    from crpbot.model.ensemble import build_ensemble
    from crpbot.model.predictor import load_predictor

    path, data = member
    ensemble_dir = build_ensemble([path, path], data, tmp_path / "ens")
    calibration = json.loads((ensemble_dir / "calibration.json").read_text())
    assert calibration["fitted_on"] == "val" and calibration["val_nll_after"] <= calibration["val_nll_before"]
    raw = load_predictor(path).predict_proba(data, "test")[1]
    calibrated = load_predictor(ensemble_dir).predict_proba(data, "test")[1]
    assert load_predictor(ensemble_dir).temperature == pytest.approx(calibration["temperature"])
    np.testing.assert_array_equal(calibrated >= 0.5, raw >= 0.5)


def test_calibration_refuses_the_test_split(member):
    from crpbot.model.calibration import TemperatureScaler
    from crpbot.model.predictor import load_predictor

    path, data = member
    with pytest.raises(TestSplitAccessError):
        TemperatureScaler().fit_predictions(load_predictor(path).predictions(data, "test"))


def test_members_with_other_splits_are_refused(member, tmp_path, sample_path):
    from crpbot.data.dataset import load_prepared
    from crpbot.model.ensemble import build_ensemble
    from crpbot.model.inference import save_model_artifact
    from crpbot.model.predictor import load_predictor

    path, data = member
    other_config = TINY.replace(train_fraction=0.6)
    other_data = load_prepared("SOL", sample_path("SOL"), other_config)
    other = save_model_artifact(
        tmp_path / "other",
        model_state=load_predictor(path).models[0].state_dict(),
        config=other_config,
        data=other_data,
        history=[],
        best_epoch=0,
        input_path=sample_path("SOL"),
    )
    with pytest.raises(CrpbotError, match="differs .* in split_times"):
        build_ensemble([path, other], data, tmp_path / "ens")
    with pytest.raises(CrpbotError, match="not split like its members"):
        build_ensemble([path], other_data, tmp_path / "ens")
    assert not (tmp_path / "ens").exists()


@pytest.mark.ray
def test_two_seed_ensemble_on_ray_then_evaluate(ray_session, tmp_path, sample_path):
    from crpbot.evaluation.evaluate import evaluate_model
    from crpbot.model.ensemble import train_ensemble
    from crpbot.model.predictor import load_predictor

    out = train_ensemble(
        TINY, "SOL", seeds=2, input_path=sample_path("SOL"), out_dir=tmp_path / "ens", log=lambda _: None
    )
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "ensemble" and config["members"] == ["members/seed_3", "members/seed_4"]
    assert config["seeds"] == [3, 4]
    predictor = load_predictor(out)
    weights = [next(iter(m.state_dict().values())) for m in predictor.models]
    assert not np.allclose(weights[0].numpy(), weights[1].numpy())  # different seeds, different members
    result = evaluate_model(out, out_dir=tmp_path / "eval", log=lambda _: None)
    assert result.metrics["kind"] == "ensemble" and result.metrics["members"] == 2
    assert 0.4 < result.metrics["accuracy"] < 0.6
    assert not list(tmp_path.glob(".tmp-*"))  # staging of member artifacts cleaned up

"""Temperature scaling: recovers a known temperature, lowers ECE, keeps accuracy, refuses test."""

from __future__ import annotations

import numpy as np
import pytest

from crpbot.errors import CrpbotError
from crpbot.evaluation.metrics import accuracy, expected_calibration_error
from crpbot.model.calibration import TemperatureScaler, apply_temperature, logit, sigmoid
from crpbot.model.predictions import Predictions, TestSplitAccessError


def overconfident(n: int, seed: int, sharpen: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true logits; the reported logits are ``sharpen`` times too large."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.0, size=n)
    labels = (rng.uniform(size=n) < sigmoid(true_logits)).astype(float)
    return labels, sigmoid(sharpen * true_logits)


def test_recovers_temperature_and_lowers_ece_on_overconfident_scores():
    labels, probs = overconfident(20_000, seed=0)
    scaler = TemperatureScaler().fit(probs, labels)
    assert scaler.temperature_ == pytest.approx(3.0, rel=0.1)
    assert scaler.nll_after_ < scaler.nll_before_
    held_labels, held_probs = overconfident(20_000, seed=1)
    calibrated = scaler.transform(held_probs)
    before = expected_calibration_error(held_labels, held_probs)
    after = expected_calibration_error(held_labels, calibrated)
    assert before > 0.1 and after < 0.02
    assert accuracy(held_labels, calibrated) == accuracy(held_labels, held_probs)


def test_logit_inputs_match_prob_inputs():
    labels, probs = overconfident(2000, seed=2)
    from_probs = TemperatureScaler().fit(probs, labels).temperature_
    from_logits = TemperatureScaler(inputs="logits").fit(logit(probs), labels).temperature_
    assert from_logits == pytest.approx(from_probs, rel=1e-4)


def test_temperature_one_is_identity():
    probs = np.array([0.1, 0.5, 0.93])
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs)
    np.testing.assert_allclose(apply_temperature(probs, 2.0), sigmoid(logit(probs) / 2))


def test_fit_predictions_refuses_test_split():
    labels, probs = overconfident(100, seed=3)
    ts = np.arange(100, dtype=np.int64)
    TemperatureScaler().fit_predictions(Predictions("val", ts, probs, labels, np.zeros(100)))
    with pytest.raises(TestSplitAccessError):
        TemperatureScaler().fit_predictions(Predictions("test", ts, probs, labels, np.zeros(100)))


def test_bad_input_raises():
    with pytest.raises(CrpbotError, match="not fitted"):
        TemperatureScaler().transform(np.array([0.5]))
    with pytest.raises(CrpbotError, match="labels"):
        TemperatureScaler().fit(np.array([0.2, 0.7]), np.array([0.0, 3.0]))
    with pytest.raises(CrpbotError, match="inputs"):
        TemperatureScaler(inputs="odds").fit(np.array([0.2, 0.7]), np.array([0.0, 1.0]))

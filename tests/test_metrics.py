"""Metrics against scikit-learn on random inputs, and the block bootstrap's behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from crpbot import metrics
from crpbot.errors import CrpbotError


@pytest.fixture(params=[0, 1, 2])
def scored(request) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(request.param)
    probs = rng.uniform(0.001, 0.999, size=2000)
    labels = (rng.uniform(size=2000) < probs ** 1.3).astype(np.float64)
    return labels, probs


def test_accuracy_brier_logloss_auc_equal_sklearn(scored):
    labels, probs = scored
    assert metrics.accuracy(labels, probs) == pytest.approx(accuracy_score(labels, probs >= 0.5))
    assert metrics.brier_score(labels, probs) == pytest.approx(brier_score_loss(labels, probs))
    assert metrics.log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs))
    assert metrics.roc_auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs))


def test_auc_with_ties_equals_sklearn():
    rng = np.random.default_rng(5)
    probs = rng.integers(0, 5, size=500) / 4.0
    labels = rng.integers(0, 2, size=500).astype(np.float64)
    assert metrics.roc_auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs))


def test_ece_equals_calibration_curve_binning(scored):
    labels, probs = scored
    conf = np.maximum(probs, 1 - probs)
    correct = ((probs >= 0.5) == (labels == 1)).astype(float)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=15, strategy="uniform")
    edges = np.linspace(0, 1, 16)
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=15)
    counts = counts[counts > 0]
    expected = np.sum(counts / len(conf) * np.abs(prob_true - prob_pred))
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(expected)


def test_ece_is_zero_when_confidence_matches_accuracy():
    # 10 rows at p=0.8 with 8 up: confidence 0.8, accuracy 0.8
    probs = np.full(10, 0.8)
    labels = np.array([1.0] * 8 + [0.0] * 2)
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(0.0)
    # 10 rows at p=0.9 with 5 up: |0.5 - 0.9|
    half_right = np.array([1.0, 0.0] * 5)
    assert metrics.expected_calibration_error(half_right, np.full(10, 0.9)) == pytest.approx(0.4)


def test_coverage_curve_counts_confident_rows():
    probs = np.array([0.5, 0.45, 0.7, 0.2, 0.9])
    labels = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    rows = metrics.coverage_curve(labels, probs, thresholds=(0.5, 0.75, 0.95))
    curve = {row["threshold"]: row for row in rows}
    assert curve[0.5]["n"] == 5 and curve[0.5]["accuracy"] == pytest.approx(2 / 5)
    assert curve[0.75]["n"] == 2 and curve[0.75]["coverage"] == pytest.approx(0.4)
    assert curve[0.75]["accuracy"] == pytest.approx(0.0)
    assert curve[0.95]["n"] == 0 and curve[0.95]["accuracy"] is None


def test_block_bootstrap_ci_covers_mean_and_widens_with_dependence():
    rng = np.random.default_rng(0)
    independent = (rng.uniform(size=3000) < 0.55).astype(float)
    low, high = metrics.block_bootstrap_ci(independent, block_length=1, n_boot=500)
    assert low < independent.mean() < high
    # runs of 30 identical values: an i.i.d. bootstrap would be far too narrow
    runs = np.repeat((rng.uniform(size=100) < 0.55).astype(float), 30)
    narrow = np.diff(metrics.block_bootstrap_ci(runs, block_length=1, n_boot=500))[0]
    wide = np.diff(metrics.block_bootstrap_ci(runs, block_length=60, n_boot=500))[0]
    assert wide > 2 * narrow


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(CrpbotError, match="within"):
        metrics.accuracy(np.array([1.0]), np.array([np.nan]))
    with pytest.raises(CrpbotError, match="labels must be 0 or 1"):
        metrics.brier_score(np.array([2.0]), np.array([0.5]))
    with pytest.raises(CrpbotError, match="no rows"):
        metrics.log_loss(np.array([]), np.array([]))


def test_guard_refuses_test_split():
    metrics.guard_selection("val", "x")
    with pytest.raises(metrics.TestSplitAccessError, match="must not read the test split"):
        metrics.guard_selection("test", "choosing things")


def test_classification_metrics_keys():
    rng = np.random.default_rng(1)
    probs = rng.uniform(size=300)
    labels = rng.integers(0, 2, 300).astype(float)
    out = metrics.classification_metrics(labels, probs, horizon=15, n_boot=200)
    assert set(out) >= {"n", "accuracy", "accuracy_ci", "ece", "brier", "log_loss", "auc"}
    assert out["accuracy_ci"][0] <= out["accuracy"] <= out["accuracy_ci"][1]

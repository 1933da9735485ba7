"""Metrics against scikit-learn on random inputs, and the coverage of the mean's CI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from crpbot.errors import CrpbotError
from crpbot.evaluation import metrics
from crpbot.model import predictions


@pytest.fixture(params=[0, 1, 2])
def scored(request) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(request.param)
    probs = rng.uniform(0.001, 0.999, size=2000)
    labels = (rng.uniform(size=2000) < probs**1.3).astype(np.float64)
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


def test_mean_interval_is_the_textbook_t_interval_for_independent_rows():
    rng = np.random.default_rng(0)
    values = rng.normal(0.3, 2.0, size=500)
    interval = metrics.mean_interval(values, horizon=1)
    scale = values.std(ddof=1) / np.sqrt(len(values))
    assert (interval.low, interval.high) == pytest.approx(
        stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scale)
    )
    assert metrics.mean_ci(values, horizon=1) == (interval.low, interval.high)
    assert interval.method == "95% t-interval, independent rows, 499 df, 500 rows"


def test_mean_interval_widens_with_dependence():
    rng = np.random.default_rng(0)
    runs = np.repeat((rng.uniform(size=100) < 0.55).astype(float), 30)  # runs of 30 equal values
    narrow = np.diff(metrics.mean_ci(runs, horizon=1))[0]
    wide = metrics.mean_interval(runs, horizon=30)
    assert wide.high - wide.low > 4 * narrow
    assert wide.method.startswith("95% t-interval, Hansen-Hodrick HAC variance, lags 0-29")


def _walk_labels(reps: int, n: int, horizon: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``reps`` driftless random walks: right or wrong of "always up" and of the reversal
    rule, on ``horizon``-bar labels that overlap (both have true accuracy 0.5)."""
    rng = np.random.default_rng(seed)
    prices = np.cumsum(rng.standard_normal((reps, n + 2 * horizon)), axis=1)
    rows = np.arange(horizon, horizon + n)
    future = prices[:, rows + horizon] - prices[:, rows]
    past = prices[:, rows] - prices[:, rows - horizon]
    return (future > 0).astype(float), ((past < 0) == (future > 0)).astype(float)


def test_mean_interval_keeps_its_coverage_on_overlapping_labels():
    """600 rows of 60-bar labels (10 independent stretches, the fewest allowed): the interval still
    covers the true 0.5 about 95% of the time (>= 90% over 300 walks: ~4 standard errors of slack),
    where an interval that ignores the overlap covers less than half the time."""
    always_up, reversal = _walk_labels(300, 600, 60, seed=0)
    for right in (always_up, reversal, always_up - reversal):
        truth = 0.0 if right.min() < 0 else 0.5
        covered = [metrics.mean_interval(row, horizon=60) for row in right]
        assert np.mean([c.low <= truth <= c.high for c in covered]) >= 0.90
        naive = [metrics.mean_interval(row, horizon=1) for row in right]
        assert np.mean([c.low <= truth <= c.high for c in naive]) < 0.5


def test_too_few_rows_is_an_error_not_a_degenerate_interval():
    """Ten rows with eight right used to get CI (0.8, 0.8) and pass a strict gate."""
    right = np.r_[np.ones(8), np.zeros(2)]
    with pytest.raises(CrpbotError, match=r"^not enough rows for an honest interval: 10 rows, need >= 150 "):
        metrics.mean_ci(right, horizon=15)
    with pytest.raises(CrpbotError, match=r"40 rows, need >= 150 \(10 × horizon 15\)$"):
        metrics.classification_metrics(np.ones(40), np.full(40, 0.7), horizon=15)
    with pytest.raises(CrpbotError, match="not enough rows"):
        metrics.paired_interval(np.ones(149), np.zeros(149), horizon=15)
    low, high = metrics.mean_ci(np.tile(right, 15), horizon=15)  # 150 rows: enough
    assert low < 0.8 < high
    with pytest.raises(CrpbotError, match="invalid horizon"):
        metrics.mean_ci(right, horizon=0)


def test_a_negative_hansen_hodrick_variance_falls_back_to_newey_west():
    alternating = np.tile([1.0, 0.0], 100)  # lag-1 autocorrelation -1: Hansen-Hodrick gives <= 0
    interval = metrics.mean_interval(alternating, horizon=2)
    assert "Newey-West" in interval.method and interval.low <= 0.5 <= interval.high


def test_paired_interval_resolves_an_edge_the_separate_cis_cannot():
    """Model and baseline share the hard stretches: a 2-point edge is invisible to the two separate
    accuracy CIs (they overlap) but the paired CI of the difference excludes 0."""
    rng = np.random.default_rng(3)
    n = 6000
    baseline = np.repeat((rng.uniform(size=n // 30) < 0.52).astype(float), 30)
    model = baseline.copy()
    flip = rng.choice(np.flatnonzero(baseline == 0), size=n // 50, replace=False)
    model[flip] = 1.0  # right where the baseline was wrong on 2% of rows, otherwise identical
    paired = metrics.paired_interval(model, baseline, horizon=30)
    edge = model.mean() - baseline.mean()
    assert edge == pytest.approx(0.02) and 0 < paired.low < edge < paired.high
    model_ci = metrics.mean_ci(model, horizon=30)
    baseline_ci = metrics.mean_ci(baseline, horizon=30)
    assert model_ci[0] < baseline_ci[1], "the separate CIs overlap"
    assert paired == metrics.mean_interval(model - baseline, horizon=30)  # the CI of the differences
    same = metrics.paired_interval(model, model, horizon=30)
    assert (same.low, same.high) == (0.0, 0.0)
    with pytest.raises(CrpbotError, match="equal 1-d arrays"):
        metrics.paired_interval(model, model[:-1], horizon=30)


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(CrpbotError, match="within"):
        metrics.accuracy(np.array([1.0]), np.array([np.nan]))
    with pytest.raises(CrpbotError, match="labels must be 0 or 1"):
        metrics.brier_score(np.array([2.0]), np.array([0.5]))
    with pytest.raises(CrpbotError, match="no rows"):
        metrics.log_loss(np.array([]), np.array([]))


def test_guard_refuses_test_split():
    predictions.guard_selection("val", "x")
    with pytest.raises(predictions.TestSplitAccessError, match="must not read the test split"):
        predictions.guard_selection("test", "choosing things")


def test_classification_metrics_keys():
    rng = np.random.default_rng(1)
    probs = rng.uniform(size=300)
    labels = rng.integers(0, 2, 300).astype(float)
    out = metrics.classification_metrics(labels, probs, horizon=15)
    assert set(out) >= {"n", "accuracy", "accuracy_ci", "ece", "brier", "log_loss", "auc"}
    assert out["accuracy_ci"][0] <= out["accuracy"] <= out["accuracy_ci"][1]


def _direct_equal_mass_ece(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Equal-count ECE written out row by row: rank by confidence (stable), bin floor(rank * B / n)."""
    conf = [max(p, 1 - p) for p in probs]
    correct = [float((p >= 0.5) == (y == 1)) for p, y in zip(probs, labels, strict=True)]
    order = sorted(range(len(conf)), key=lambda i: conf[i])  # Python's sort is stable
    bins: dict[int, list[int]] = {}
    for rank, row in enumerate(order):
        bins.setdefault(rank * n_bins // len(conf), []).append(row)
    total = 0.0
    for rows in bins.values():
        mean_conf = sum(conf[i] for i in rows) / len(rows)
        mean_correct = sum(correct[i] for i in rows) / len(rows)
        total += len(rows) / len(conf) * abs(mean_correct - mean_conf)
    return total


def _adversarial(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The reviewer's case: P(up) in [0.50, 0.53], 62% right in the lower half, 41% in the upper half."""
    rng = np.random.default_rng(seed)
    probs = np.sort(rng.uniform(0.50, 0.53, size=n))
    labels = np.zeros(n)
    half = n // 2
    # exact shares, shuffled within each half: every prediction is "up", so right == label up
    lower = np.r_[np.ones(round(0.62 * half)), np.zeros(half - round(0.62 * half))]
    upper = np.r_[np.ones(round(0.41 * (n - half))), np.zeros(n - half - round(0.41 * (n - half)))]
    labels[:half] = rng.permutation(lower)
    labels[half:] = rng.permutation(upper)
    order = rng.permutation(n)  # rows in time order need not be sorted by confidence
    return labels[order], probs[order]


def test_equal_mass_ece_sees_what_equal_width_bins_average_away():
    labels, probs = _adversarial()
    ece = metrics.expected_calibration_error(labels, probs)
    equal_mass = metrics.equal_mass_calibration_error(labels, probs)
    assert equal_mass == pytest.approx(_direct_equal_mass_ece(labels, probs))
    # every row sits in the equal-width bin [0.467, 0.533): over- and under-confidence cancel
    assert ece < 0.005
    # |0.62 - ~0.5075| in the lower half and |0.41 - ~0.5225| in the upper half
    assert 0.10 < equal_mass < 0.125
    counts, _, _ = metrics.equal_mass_bins(labels, probs)
    np.testing.assert_array_equal(counts, np.full(15, 200))


@pytest.mark.parametrize("n", [7, 14, 15, 16, 1001])
def test_equal_mass_ece_equals_direct_computation(n):
    rng = np.random.default_rng(n)
    probs = rng.uniform(0.05, 0.95, size=n)
    probs[: n // 3] = 0.6  # ties: they are split across bins in input order
    labels = (rng.uniform(size=n) < 0.5).astype(float)
    assert metrics.equal_mass_calibration_error(labels, probs) == pytest.approx(
        _direct_equal_mass_ece(labels, probs)
    )
    counts, _, _ = metrics.equal_mass_bins(labels, probs)
    assert counts.sum() == n and counts.max() - counts[counts > 0].min() <= 1


def test_equal_mass_ece_by_hand():
    # 30 rows, 2 per bin. Bins of confidences (0.6, 0.6) all right -> |1 - 0.6| = 0.4 for the first
    # 7 bins and (0.9, 0.9) half right -> |0.5 - 0.9| = 0.4 for the other 8: ECE 0.4
    probs = np.r_[np.full(14, 0.6), np.full(16, 0.1)]
    labels = np.r_[np.ones(14), np.tile([1.0, 0.0], 8)]
    assert metrics.equal_mass_calibration_error(labels, probs) == pytest.approx(0.4)


def test_calibration_in_the_large_is_mean_prob_minus_up_rate():
    labels, probs = _adversarial()
    assert metrics.calibration_in_the_large(labels, probs) == pytest.approx(probs.mean() - labels.mean())
    # 0.515 predicted on average, 0.515 observed: calibrated in the large, miscalibrated in detail
    assert abs(metrics.calibration_in_the_large(labels, probs)) < 0.005
    assert metrics.calibration_in_the_large(
        np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.7, 0.7, 0.7, 0.7])
    ) == pytest.approx(0.2)


def test_classification_metrics_reports_both_calibration_views():
    labels, probs = _adversarial()
    out = metrics.classification_metrics(labels, probs, horizon=15)
    assert out["ece"] == pytest.approx(metrics.expected_calibration_error(labels, probs))
    assert out["ece_equal_mass"] == pytest.approx(_direct_equal_mass_ece(labels, probs))
    assert out["calibration_in_the_large"] == pytest.approx(probs.mean() - labels.mean())

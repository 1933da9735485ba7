"""Scores of probabilistic direction forecasts: numpy (and scipy's t quantiles), no Ray, no torch.

``probs`` is always P(up) per row and ``labels`` is 1.0 for up, 0.0 otherwise. The
predicted class is up when ``probs >= 0.5``, everywhere in the project (metrics,
calibration, backtest), so one row never counts as up in one place and down in another.

The rows being scored arrive as ``crpbot.model.predictions.Predictions``, which carries the
split's name so that selection steps can refuse the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crpbot.errors import CrpbotError

ECE_BINS = 15
COVERAGE_THRESHOLDS = tuple(round(0.50 + 0.01 * i, 2) for i in range(0, 50))


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate once so every metric fails with the same clear message."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape or labels.ndim != 1:
        raise CrpbotError(f"labels {labels.shape} and probabilities {probs.shape} must be equal 1-d arrays")
    if len(labels) == 0:
        raise CrpbotError("no rows to score")
    if not np.all(np.isfinite(probs)) or np.any((probs < 0) | (probs > 1)):
        raise CrpbotError("probabilities must be finite and within [0, 1]")
    if not np.all((labels == 0) | (labels == 1)):
        raise CrpbotError("labels must be 0 or 1")
    return labels, probs


def predicted_up(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs) >= 0.5


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    labels, probs = _check(labels, probs)
    return float(np.mean(predicted_up(probs) == (labels == 1)))


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    labels, probs = _check(labels, probs)
    return float(np.mean((probs - labels) ** 2))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood, clipped at float64 eps like scikit-learn."""
    labels, probs = _check(labels, probs)
    eps = np.finfo(np.float64).eps
    probs = np.clip(probs, eps, 1 - eps)
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log1p(-probs)))


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties get average ranks); NaN for one class."""
    labels, probs = _check(labels, probs)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(probs, kind="mergesort")
    sorted_probs = probs[order]
    ranks = np.empty(len(probs), dtype=np.float64)
    # average rank of each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_probs[1:] != sorted_probs[:-1]])
    ends = np.r_[starts[1:], len(probs)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confidence(probs: np.ndarray) -> np.ndarray:
    """Probability of the predicted class: max(p, 1 - p)."""
    probs = np.asarray(probs, dtype=np.float64)
    return np.maximum(probs, 1 - probs)


def reliability_bins(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin over [0, 1] of the confidence: (count, mean confidence, accuracy).

    Binning as in ``sklearn.calibration.calibration_curve(strategy="uniform")``; empty bins
    have count 0 and NaN means.
    """
    labels, probs = _check(labels, probs)
    conf = confidence(probs)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return _bin_stats(labels, probs, conf, np.searchsorted(edges[1:-1], conf), n_bins)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over 15 equal-width confidence bins of (bin share) * |accuracy - mean confidence|.

    Confidence is the probability of the predicted class, max(p, 1 - p) (Guo et al. 2017), so
    only the bins above 0.5 are ever populated.
    """
    counts, mean_conf, bin_accuracy = reliability_bins(labels, probs, n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / counts.sum() * np.abs(bin_accuracy[filled] - mean_conf[filled])))


def equal_mass_bins(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-count bin of the confidence: (count, mean confidence, accuracy).

    Rows are ranked by confidence max(p, 1 - p), ascending (ties keep their input order, so
    the binning is deterministic), and the row of rank r (0-based) of n goes to bin
    floor(r * n_bins / n): every bin holds n // n_bins or n // n_bins + 1 rows. With fewer
    rows than bins some bins are empty (count 0, NaN means).
    """
    labels, probs = _check(labels, probs)
    conf = confidence(probs)
    n = len(conf)
    bin_ids = np.empty(n, dtype=np.int64)
    bin_ids[np.argsort(conf, kind="stable")] = np.arange(n, dtype=np.int64) * n_bins // n
    return _bin_stats(labels, probs, conf, bin_ids, n_bins)


def _bin_stats(
    labels: np.ndarray, probs: np.ndarray, conf: np.ndarray, bin_ids: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean confidence, accuracy) per bin, whatever the binning; empty bins get NaN means."""
    correct = (predicted_up(probs) == (labels == 1)).astype(np.float64)
    counts = np.bincount(bin_ids, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bin_ids, weights=conf, minlength=n_bins) / counts
        bin_accuracy = np.bincount(bin_ids, weights=correct, minlength=n_bins) / counts
    return counts, mean_conf, bin_accuracy


def equal_mass_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE over 15 equal-count bins of the confidence (see :func:`equal_mass_bins`).

    Where the confidences crowd into a narrow range (here mostly 0.50-0.53) the equal-width
    ECE puts nearly every row into one bin and averages over- and under-confidence away;
    equal-count bins still resolve that range.
    """
    counts, mean_conf, bin_accuracy = equal_mass_bins(labels, probs, n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / counts.sum() * np.abs(bin_accuracy[filled] - mean_conf[filled])))


def calibration_in_the_large(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean P(up) minus the observed up rate: > 0 means the model predicts up too often on average."""
    labels, probs = _check(labels, probs)
    return float(probs.mean() - labels.mean())


MIN_BLOCKS = 10


@dataclass(frozen=True)
class MeanInterval:
    """A CI of a mean and the sentence that says how it was computed (metrics.json's ``*_ci_method``)."""

    low: float
    high: float
    method: str


def dependence_length(horizon: int) -> int:
    """Rows over which per-row values of ``horizon``-bar labels depend on each other: the label of
    row t shares bars with rows t+1 .. t+horizon-1 and none after, so lags 0 .. horizon-1."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise CrpbotError(f"invalid horizon {horizon!r}: must be an integer >= 1")
    return int(horizon)


def require_rows(n: int, horizon: int, what: str = "rows") -> None:
    """Refuse fewer than ``MIN_BLOCKS`` dependence lengths of rows in one line (:func:`mean_interval`)."""
    need = MIN_BLOCKS * dependence_length(horizon)
    if n < need:
        raise CrpbotError(
            f"not enough {what} for an honest interval: {n:,} rows, need >= {need:,} "
            f"({MIN_BLOCKS} × horizon {horizon})"
        )


def mean_interval(values: np.ndarray, *, horizon: int, level: float = 0.95) -> MeanInterval:
    """CI of the mean of rows whose dependence reaches ``horizon`` rows (overlapping labels).

    The one method behind every interval the product reports on a mean of per-row values
    (accuracy, differences to a baseline or a champion, net return per trade): a t-interval
    on the Hansen-Hodrick (1980) HAC variance, i.e. uniform weights on the autocovariances at
    lags 0 .. horizon-1. Two h-bar labels k < h rows apart share h - k bars and labels h or more
    apart none, so those weights are unbiased for exactly this overlap, where a block bootstrap
    (weights 1 - k/b) or Newey-West (1 - k/(L+1)) shrinks every lag and is too narrow (a block of
    2h covered as little as 89% for a nominal 95%; benchmarks/RESULTS.md, "CI coverage").

    Small samples: n = 4,000 rows at h = 60 hold only ~67 independent labels, so the variance is
    divided by n - (2h - 1) (demeaning removes about (2h - 1)/n of it) and the critical value is
    Student's t with n/(2h - 1) - 1 degrees of freedom (the estimator's variance is about
    2(2h - 1)/n of its square; the fixed-b reasoning of Kiefer-Vogelsang and Sun 2014). At h = 1
    this is the textbook t-interval. Hansen-Hodrick can be negative when the sample shows
    negative dependence; then Newey-West over the same lags is used and the method says so.

    Fewer than 10 dependence lengths of rows is an error: with so few independent stretches
    no interval is honest (a block bootstrap collapses to the point estimate there).
    """
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    lags = dependence_length(horizon) - 1
    n = len(values)
    if values.ndim != 1:
        raise CrpbotError(f"a CI of a mean needs a 1-d array of per-row values, got shape {values.shape}")
    if not 0 < level < 1:
        raise CrpbotError(f"invalid CI level {level}: must be in (0, 1)")
    require_rows(n, horizon)
    if not np.all(np.isfinite(values)):
        raise CrpbotError("a CI of a mean needs finite values")
    mean = float(values.mean())
    centred = values - mean
    # einsum, not @: BLAS threads make a 1-d dot product ~50x slower on a busy host
    autocov = np.array([np.einsum("i,i->", centred[: n - k], centred[k:]) for k in range(lags + 1)]) / n
    variance = autocov[0] + 2 * autocov[1:].sum()
    kernel = f"Hansen-Hodrick HAC variance, lags 0-{lags}" if lags else "independent rows"
    if variance <= 0:
        bartlett = 1 - np.arange(1, lags + 1) / (lags + 1)
        variance = max(autocov[0] + 2 * (autocov[1:] * bartlett).sum(), 0.0)  # >= 0 but for rounding
        kernel = f"Newey-West HAC variance, lags 0-{lags} (the Hansen-Hodrick one was not positive)"
    effective = 2 * lags + 1
    df = n / effective - 1
    half = float(t.ppf(0.5 + level / 2, df) * np.sqrt(variance / (n - effective)))
    return MeanInterval(
        low=mean - half,
        high=mean + half,
        method=f"{level:.0%} t-interval, {kernel}, {df:,.0f} df, {n:,} rows",
    )


def mean_ci(values: np.ndarray, *, horizon: int, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of :func:`mean_interval`, for callers that report the method elsewhere."""
    interval = mean_interval(values, horizon=horizon, level=level)
    return interval.low, interval.high


def paired_interval(a: np.ndarray, b: np.ndarray, *, horizon: int, level: float = 0.95) -> MeanInterval:
    """CI of mean(a) - mean(b) over the same rows: :func:`mean_interval` of the per-row differences.

    Pairing is what makes a small edge measurable: the model and a baseline (or a challenger
    and its champion) are right and wrong on largely the same hard stretches, so the CI of the
    difference is much narrower than the two means' CIs suggest.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise CrpbotError(f"a paired CI needs two equal 1-d arrays, got {a.shape} and {b.shape}")
    return mean_interval(a - b, horizon=horizon, level=level)


def edge_over_baseline(
    labels: np.ndarray,
    probs: np.ndarray,
    baseline_up: np.ndarray,
    *,
    horizon: int,
) -> dict[str, float | int | str]:
    """The model's accuracy minus a baseline's on the same rows, with the paired CI."""
    labels, probs = _check(labels, probs)
    baseline_up = np.asarray(baseline_up, dtype=bool)
    if baseline_up.shape != labels.shape:
        raise CrpbotError(
            f"baseline predictions {baseline_up.shape} do not match the {labels.shape} scored rows"
        )
    truth = labels == 1
    model_right = (predicted_up(probs) == truth).astype(np.float64)
    baseline_right = (baseline_up == truth).astype(np.float64)
    interval = paired_interval(model_right, baseline_right, horizon=horizon)
    return {
        "edge": float(model_right.mean() - baseline_right.mean()),
        "ci_low": interval.low,
        "ci_high": interval.high,
        "ci_method": interval.method,
        "n": len(labels),
    }


def coverage_curve(
    labels: np.ndarray,
    probs: np.ndarray,
    thresholds: tuple[float, ...] = COVERAGE_THRESHOLDS,
) -> list[dict[str, float | int | None]]:
    """Accuracy on the rows whose confidence is >= each threshold, and the share of rows kept."""
    labels, probs = _check(labels, probs)
    conf = confidence(probs)
    correct = predicted_up(probs) == (labels == 1)
    curve: list[dict[str, float | int | None]] = []
    for threshold in thresholds:
        kept = conf >= threshold
        n_kept = int(kept.sum())
        curve.append(
            {
                "threshold": float(threshold),
                "coverage": n_kept / len(labels),
                "n": n_kept,
                "accuracy": float(correct[kept].mean()) if n_kept else None,
            }
        )
    return curve


def subset_accuracy(
    labels: np.ndarray, probs: np.ndarray, kept: np.ndarray, *, horizon: int
) -> dict[str, Any]:
    """Accuracy on the rows where ``kept`` is true, with :func:`mean_interval`'s CI over those rows in
    time order (rows within ``horizon`` bars are within ``horizon`` places of each other there, so the
    HAC lags still cover every shared label); too few rows for an honest CI give no accuracy and a note."""
    labels, probs = _check(labels, probs)
    kept = np.asarray(kept, dtype=bool)
    correct = (predicted_up(probs) == (labels == 1)).astype(np.float64)[kept]
    record: dict[str, Any] = {"n": len(correct), "accuracy": None, "ci": None}
    try:
        interval = mean_interval(correct, horizon=horizon)
    except CrpbotError as exc:
        return {**record, "note": str(exc)}
    return {
        **record,
        "accuracy": float(correct.mean()),
        "ci": [interval.low, interval.high],
        "ci_method": interval.method,
    }


def classification_metrics(labels: np.ndarray, probs: np.ndarray, *, horizon: int) -> dict[str, object]:
    """The scalar metrics of metrics.json for one set of scored rows."""
    labels, probs = _check(labels, probs)
    correct = (predicted_up(probs) == (labels == 1)).astype(np.float64)
    interval = mean_interval(correct, horizon=horizon)
    return {
        "n": len(labels),
        "accuracy": float(correct.mean()),
        "accuracy_ci": [interval.low, interval.high],
        "accuracy_ci_method": interval.method,
        "ece": expected_calibration_error(labels, probs),
        "ece_equal_mass": equal_mass_calibration_error(labels, probs),
        "calibration_in_the_large": calibration_in_the_large(labels, probs),
        "brier": brier_score(labels, probs),
        "log_loss": log_loss(labels, probs),
        "auc": roc_auc(labels, probs),
        "up_rate": float(labels.mean()),
    }

"""Scores of probabilistic direction forecasts: pure numpy, no Ray, no torch.

``probs`` is always P(up) per row and ``labels`` is 1.0 for up, 0.0 otherwise. The
predicted class is up when ``probs >= 0.5``, everywhere in the project (metrics,
calibration, backtest), so one row never counts as up in one place and down in another.

The rows being scored arrive as ``crpbot.model.predictions.Predictions``, which carries the
split's name so that selection steps can refuse the test split.
"""

from __future__ import annotations

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


def block_bootstrap_ci(
    values: np.ndarray, *, block_length: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean by the circular moving-block bootstrap.

    Consecutive windows share most of their bars and their h-minute labels overlap, so rows
    are not independent; resampling blocks longer than that dependence keeps the interval honest
    where an i.i.d. bootstrap would be too narrow.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        raise CrpbotError("no rows to bootstrap")
    if block_length < 1 or n_boot < 1 or not 0 < level < 1:
        raise CrpbotError(
            f"invalid bootstrap settings: block_length={block_length}, n_boot={n_boot}, level={level}"
        )
    block_length = min(block_length, n)
    n_blocks = -(-n // block_length)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    offsets = np.arange(block_length)
    # resamples in chunks of ~4M indices: a 60k-row test split x 1000 resamples would need 0.5 GB at once
    chunk = max(1, 4_000_000 // (n_blocks * block_length))
    means = np.concatenate(
        [
            values[((part[:, :, None] + offsets) % n).reshape(len(part), -1)[:, :n]].mean(axis=1)
            for part in np.array_split(starts, range(chunk, n_boot, chunk))
        ]
    )
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def mean_ci(
    values: np.ndarray, *, horizon: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """CI of the mean of rows whose dependence reaches ``horizon`` rows (overlapping labels).

    The one entry point for every interval the product reports on a mean of per-row values
    (accuracy, differences to a baseline, losses, net return per trade): the method lives here.
    """
    values = np.asarray(values, dtype=np.float64)
    block = default_block_length(len(values), horizon)
    return block_bootstrap_ci(values, block_length=block, n_boot=n_boot, level=level, seed=seed)


def paired_block_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    *,
    horizon: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of mean(a) - mean(b) over the same rows, both resampled with the same blocks.

    Pairing is what makes a small edge measurable: the model and a baseline are right and wrong
    on largely the same hard stretches, so the CI of the difference is much narrower than the two
    accuracies' CIs suggest. With the same resampled rows for both, mean(a*) - mean(b*) is the mean
    of (a - b)*, so this is :func:`block_bootstrap_ci` of the per-row differences, with the block
    length of :func:`default_block_length`.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise CrpbotError(f"paired bootstrap needs two equal 1-d arrays, got {a.shape} and {b.shape}")
    block = default_block_length(len(a), horizon)
    return block_bootstrap_ci(a - b, block_length=block, n_boot=n_boot, level=level, seed=seed)


def edge_over_baseline(
    labels: np.ndarray,
    probs: np.ndarray,
    baseline_up: np.ndarray,
    *,
    horizon: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float | int]:
    """The model's accuracy minus a baseline's on the same rows, with the paired block-bootstrap CI."""
    labels, probs = _check(labels, probs)
    baseline_up = np.asarray(baseline_up, dtype=bool)
    if baseline_up.shape != labels.shape:
        raise CrpbotError(
            f"baseline predictions {baseline_up.shape} do not match the {labels.shape} scored rows"
        )
    truth = labels == 1
    model_right = (predicted_up(probs) == truth).astype(np.float64)
    baseline_right = (baseline_up == truth).astype(np.float64)
    low, high = paired_block_bootstrap_ci(
        model_right, baseline_right, horizon=horizon, n_boot=n_boot, seed=seed
    )
    return {
        "edge": float(model_right.mean() - baseline_right.mean()),
        "ci_low": low,
        "ci_high": high,
        "n": len(labels),
    }


def default_block_length(n: int, horizon: int) -> int:
    """Twice the label horizon (overlap of labels), or n^(1/3) when that is longer."""
    return max(2 * horizon, round(n ** (1 / 3)), 1)


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


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, *, horizon: int, n_boot: int = 1000, seed: int = 0
) -> dict[str, object]:
    """The scalar metrics of metrics.json for one set of scored rows."""
    labels, probs = _check(labels, probs)
    correct = (predicted_up(probs) == (labels == 1)).astype(np.float64)
    block = default_block_length(len(labels), horizon)
    low, high = block_bootstrap_ci(correct, block_length=block, n_boot=n_boot, seed=seed)
    return {
        "n": len(labels),
        "accuracy": float(correct.mean()),
        "accuracy_ci": [low, high],
        "accuracy_ci_method": f"95% circular block bootstrap, block {block} rows, {n_boot} resamples",
        "ece": expected_calibration_error(labels, probs),
        "ece_equal_mass": equal_mass_calibration_error(labels, probs),
        "calibration_in_the_large": calibration_in_the_large(labels, probs),
        "brier": brier_score(labels, probs),
        "log_loss": log_loss(labels, probs),
        "auc": roc_auc(labels, probs),
        "up_rate": float(labels.mean()),
    }

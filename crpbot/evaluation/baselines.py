"""Simple rules scored on exactly the rows the model is scored on.

An accuracy means little without them: on 15-minute crypto direction the strongest
simple rule here is *reversal* (momentum is below 50%), and a model has to beat it.

- ``majority``: the best constant prediction on the scored rows (a stricter bar than the
  train-split majority, and never flattering to the model);
- ``momentum``: up when the last ``horizon``-minute return is > 0;
- ``reversal``: up when that return is < 0;
- ``logistic``: logistic regression on the last step's (train-scaled) features, fitted on
  train windows only;
- ``gbdt``: scikit-learn's histogram gradient boosting on the last step's features plus a few
  lagged returns (:func:`tabular_features`), fitted on the train windows, early-stopped on the
  train split's own chronological tail (:func:`early_stopping_split`), seeded. It never reads
  validation labels: the best baseline is chosen on validation, and a baseline tuned there
  would be favoured in that choice.

The *best* baseline, the one the model's edge is measured against, is chosen on validation
(:func:`best_on_validation`), never on the rows being scored. ``majority`` is the best constant
on whichever rows it is scored on, on test as on validation: a constant fixed on validation
would flatter the model whenever the up rate flips between the periods, and the edge must not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crpbot.data.tabular import BASELINE_LAGS, tabular_rows
from crpbot.model.predictions import guard_selection

# Enough rows to fit a dozen weights well; more only costs time.
MAX_LOGISTIC_TRAIN_ROWS = 100_000
# Shallow, strongly regularised trees: the signal is a point or two above chance, and early
# stopping on the tail of train stops the boosting long before max_iter.
GBDT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 200,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "scoring": "loss",
    "n_iter_no_change": 20,
}
# The share of the train windows (the latest ones) the GBDT's early stopping scores.
GBDT_STOPPING_FRACTION = 0.15


def past_returns(data: Any, rows: np.ndarray) -> np.ndarray:
    """close[t]/close[t-h] - 1 at each row t (bars <= t only), NaN when t-h lies in another segment.

    It is the forward return stored on row t-h, so no price level is needed.
    """
    rows = np.asarray(rows, dtype=np.int64)
    back = rows - data.horizon
    ok = back >= 0
    ok[ok] = data.segment_ids[back[ok]] == data.segment_ids[rows[ok]]
    out = np.full(len(rows), np.nan)
    out[ok] = data.forward_returns[back[ok]]
    return out


def majority_predictions(labels: np.ndarray) -> np.ndarray:
    """The best constant on these rows: up everywhere when at least half are up, else down."""
    labels = np.asarray(labels, dtype=np.float64)
    return np.full(len(labels), bool(np.mean(labels) >= 0.5))


def momentum_predictions(data: Any, rows: np.ndarray) -> np.ndarray:
    """True (up) when the last horizon's return is positive; an undefined return predicts down."""
    returns = past_returns(data, rows)
    return np.nan_to_num(returns, nan=0.0) > 0


def reversal_predictions(data: Any, rows: np.ndarray) -> np.ndarray:
    returns = past_returns(data, rows)
    return np.nan_to_num(returns, nan=0.0) < 0


def fit_logistic(data: Any, split: str, lookback: int, seed: int = 0) -> Any:
    """Logistic regression on the last step's features of ``split`` windows; refuses test."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    guard_selection(split, "fitting the logistic baseline")
    rows = data.window_ends(split, lookback)
    if len(rows) > MAX_LOGISTIC_TRAIN_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_LOGISTIC_TRAIN_ROWS, replace=False))
    labels = data.labels[rows]
    if len(rows) == 0 or len(np.unique(labels)) < 2:
        return None
    # One BLAS thread: a dozen weights gain nothing from threads, and on a busy 2-core host
    # threaded BLAS made this fit 100x slower (7.5 s vs 0.07 s measured).
    with threadpool_limits(limits=1):
        return LogisticRegression(max_iter=1000).fit(data.features[rows], labels.astype(np.int64))


def tabular_features(data: Any, rows: np.ndarray) -> np.ndarray:
    """Row t's features plus :data:`BASELINE_LAGS` read at t - lag (bars <= t only; NaN across a gap)."""
    return tabular_rows(data.features, rows, data.feature_names, data.segment_ids, BASELINE_LAGS)


def early_stopping_split(rows: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Train window ends cut in time: the fit part, and the last :data:`GBDT_STOPPING_FRACTION` of them.

    The tail starts ``horizon`` rows after the fit part's last window end, so no label of the fit
    part (close[t + horizon] against close[t]) covers a bar of a tail label: the stopping loss
    scores outcomes the trees were not fitted on.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n_tail = int(len(rows) * GBDT_STOPPING_FRACTION)
    if n_tail == 0:
        return rows, rows[:0]
    tail = rows[len(rows) - n_tail :]
    return rows[rows <= tail[0] - horizon], tail


def fit_gbdt(data: Any, lookback: int, seed: int = 0) -> Any:
    """HistGradientBoosting on train windows, early-stopped on train's own tail; None without both parts.

    The tail (:func:`early_stopping_split`) is passed to ``fit`` as ``X_val``/``y_val``
    (scikit-learn >= 1.6), so the stopping scores the latest train rows behind a purge and not a
    random slice of train (which would sit next to, and share labels with, the rows it is fitted
    on). Only the train split is read: validation stays unseen, so choosing the best baseline
    there is fair to the rules that have nothing to tune, and the test split is never read here.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    fit_rows, stop_rows = early_stopping_split(data.window_ends("train", lookback), data.horizon)
    if len(fit_rows) == 0 or len(stop_rows) == 0:
        return None
    fit_labels, stop_labels = data.labels[fit_rows], data.labels[stop_rows]
    if len(np.unique(fit_labels)) < 2 or len(np.unique(stop_labels)) < 2:
        return None
    model = HistGradientBoostingClassifier(**GBDT_PARAMS, random_state=seed)
    # One OpenMP thread: on a busy 2-core host two threads spin-waiting on each other made this fit
    # 30x slower (21.8 s vs 0.7 s measured on the BTC sample); one is also what a Ray task owns.
    with threadpool_limits(limits=1):
        return model.fit(
            tabular_features(data, fit_rows),
            fit_labels.astype(np.int64),
            X_val=tabular_features(data, stop_rows),
            y_val=stop_labels.astype(np.int64),
        )


@dataclass(frozen=True)
class FittedBaselines:
    """Everything the baselines learned, from the train split only."""

    lookback: int
    logistic: Any | None
    gbdt: Any | None


def fit_baselines(train_data: Any | None, lookback: int, seed: int = 0) -> FittedBaselines:
    """Fit the learned baselines on ``train_data``'s train split (GBDT: early stopping on its tail)."""
    if train_data is None:
        return FittedBaselines(lookback, None, None)
    return FittedBaselines(
        lookback=lookback,
        logistic=fit_logistic(train_data, "train", lookback, seed),
        gbdt=fit_gbdt(train_data, lookback, seed),
    )


def baseline_predictions(
    fitted: FittedBaselines, data: Any, rows: np.ndarray
) -> dict[str, np.ndarray | None]:
    """Each baseline's predicted direction (True = up) on ``rows``; None for one that is not fitted.

    ``majority`` predicts the class most frequent on ``rows`` themselves (ties: up).
    """
    from threadpoolctl import threadpool_limits

    rows = np.asarray(rows, dtype=np.int64)
    predicted: dict[str, np.ndarray | None] = {
        "majority": majority_predictions(data.labels[rows]),
        "momentum": momentum_predictions(data, rows),
        "reversal": reversal_predictions(data, rows),
        "logistic": None,
        "gbdt": None,
    }
    with threadpool_limits(limits=1):
        if fitted.logistic is not None:
            predicted["logistic"] = fitted.logistic.predict(data.features[rows]) == 1
        if fitted.gbdt is not None:
            predicted["gbdt"] = fitted.gbdt.predict(tabular_features(data, rows)) == 1
    return predicted


def accuracies(predicted: dict[str, np.ndarray | None], truth: np.ndarray) -> dict[str, float | None]:
    """Share of rows where each baseline's direction equals the truth; None stays None."""
    return {name: (float(np.mean(up == truth)) if up is not None else None) for name, up in predicted.items()}


def best_on_validation(fitted: FittedBaselines, train_data: Any | None) -> tuple[str | None, dict]:
    """The baseline with the highest accuracy on ``train_data``'s validation windows, and all of them.

    A tie goes to the simpler rule (order: majority, momentum, reversal, logistic, gbdt);
    (None, {}) without a validation split.
    """
    if train_data is None:
        return None, {}
    val_rows = train_data.window_ends("val", fitted.lookback)
    if len(val_rows) == 0:
        return None, {}
    scores = accuracies(baseline_predictions(fitted, train_data, val_rows), train_data.labels[val_rows] == 1)
    known = {name: value for name, value in scores.items() if value is not None}
    return max(known, key=known.__getitem__), scores


@dataclass(frozen=True)
class BaselineScores:
    """The baselines on the scored rows, and the best one (chosen on validation) row by row."""

    accuracies: dict[str, float | None]
    best: str | None
    validation_accuracies: dict[str, float | None]
    best_up: np.ndarray | None  # the best baseline's predicted direction per scored row


def score_baselines(
    data: Any, rows: np.ndarray, *, lookback: int, train_data: Any | None, seed: int = 0
) -> BaselineScores:
    """Fit on ``train_data``'s train split, choose the best baseline on its validation split, then
    score every baseline on ``rows`` of ``data``."""
    rows = np.asarray(rows, dtype=np.int64)
    truth = data.labels[rows] == 1
    fitted = fit_baselines(train_data, lookback, seed)
    best, validation = best_on_validation(fitted, train_data)
    predicted = baseline_predictions(fitted, data, rows)
    return BaselineScores(
        accuracies=accuracies(predicted, truth),
        best=best,
        validation_accuracies=validation,
        best_up=predicted[best] if best is not None else None,
    )


def baseline_accuracies(
    data: Any, rows: np.ndarray, *, lookback: int, train_data: Any | None
) -> dict[str, float | None]:
    """Accuracy of each baseline on ``rows`` of ``data`` (the model's scored windows).

    ``train_data`` holds the train split the logistic and GBDT baselines are fitted on (usually
    ``data`` itself); they are None when there is none.
    """
    return score_baselines(data, rows, lookback=lookback, train_data=train_data).accuracies

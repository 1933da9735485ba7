"""Simple rules scored on exactly the rows the model is scored on.

An accuracy means little without them: on 15-minute crypto direction the strongest
simple rule here is *reversal* (momentum is below 50%), and a model has to beat it.

- ``majority``: the best constant prediction on the scored rows (a stricter bar than the
  train-split majority, and never flattering to the model);
- ``momentum``: up when the last ``horizon``-minute return is > 0;
- ``reversal``: up when that return is < 0;
- ``logistic``: logistic regression on the last step's (train-scaled) features, fitted on
  train windows only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crpbot.model.predictions import guard_selection

# Enough rows to fit a dozen weights well; more only costs time.
MAX_LOGISTIC_TRAIN_ROWS = 100_000


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


def majority_accuracy(labels: np.ndarray) -> float:
    up_rate = float(np.mean(labels))
    return max(up_rate, 1.0 - up_rate)


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


def baseline_accuracies(
    data: Any, rows: np.ndarray, *, lookback: int, train_data: Any | None
) -> dict[str, float | None]:
    """Accuracy of each baseline on ``rows`` of ``data`` (the model's scored windows).

    ``train_data`` holds the train split the logistic baseline is fitted on (usually ``data``
    itself); ``logistic`` is None when there is none.
    """
    rows = np.asarray(rows, dtype=np.int64)
    truth = data.labels[rows] == 1
    model = fit_logistic(train_data, "train", lookback) if train_data is not None else None
    logistic = None
    if model is not None:
        logistic = float(np.mean((model.predict(data.features[rows]) == 1) == truth))
    return {
        "majority": majority_accuracy(truth),
        "momentum": float(np.mean(momentum_predictions(data, rows) == truth)),
        "reversal": float(np.mean(reversal_predictions(data, rows) == truth)),
        "logistic": logistic,
    }

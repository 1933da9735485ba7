"""Is a window like the ones the model learned from? A distance to the training rows, and a threshold.

A model answers every window with a probability, also one whose features lie far outside anything
it was fitted on (a flash crash, a delisting, a broken feed that still passes validation); there
its P(up) is an extrapolation nobody measured. :class:`Familiarity` flags such windows so serving
and the freqtrade strategy can abstain: the spirit of FreqAI's dissimilarity index, computed
differently.

What is measured: the window's last row of scaled features (the 1-minute features, and the
higher-timeframe and context columns when the model has them). That row already summarises the
window -- returns and volatilities over 1 to 240 minutes, trend, volume, RSI -- so it is where a
regime the model never saw shows first; the whole window would multiply the dimension by the
lookback for little more. Features are causal (computed from bars up to t), so the flag at bar t
never reads the future.

The distance: Mahalanobis distance to the training rows' mean under a Ledoit-Wolf shrunk covariance
(scikit-learn's ``LedoitWolf``). The features are strongly correlated (returns and volatilities at
neighbouring horizons), so a per-feature z-score misses a row whose features disagree with each
other (a large 1-minute move with a calm 5-minute volatility), which Mahalanobis sees; the shrinkage
keeps the inverse stable when a feature is near-constant in train. FreqAI's DI (mean distance to
every training point) would need the training rows in the artifact and O(train rows) work per
prediction; this needs a mean and a precision matrix (JSON) and one matrix product per batch.

The threshold: the ``QUANTILE`` (99%) quantile of the validation windows' distances, so by
construction 99% of validation windows are familiar; the test split never chooses it. The fit
reads at most ``MAX_FIT_ROWS`` train windows, evenly spaced in time (the covariance of 39 features
is exact enough from 100k rows, and a full-history fit stays a fraction of a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crpbot.errors import CrpbotError

FAMILIARITY_FILE = "familiarity.json"
METHOD = "mahalanobis distance of the window's last scaled feature row, Ledoit-Wolf covariance of train"
QUANTILE = 0.99
MAX_FIT_ROWS = 100_000


@dataclass(frozen=True)
class Familiarity:
    """A fitted distance (train's mean and shrunk precision) and its validation-chosen threshold."""

    location: np.ndarray  # (features,)
    precision: np.ndarray  # (features, features)
    threshold: float
    train_windows: int
    val_windows: int
    quantile: float = QUANTILE

    @classmethod
    def fit(cls, train_rows: np.ndarray, val_rows: np.ndarray, *, quantile: float = QUANTILE) -> Familiarity:
        """Fit on ``train_rows`` (windows' last scaled rows); threshold at ``quantile`` of ``val_rows``."""
        from sklearn.covariance import LedoitWolf

        train_rows = np.asarray(train_rows, dtype=np.float64)
        val_rows = np.asarray(val_rows, dtype=np.float64)
        if train_rows.ndim != 2 or val_rows.ndim != 2 or train_rows.shape[1] != val_rows.shape[1]:
            raise CrpbotError(f"familiarity: train {train_rows.shape} and val {val_rows.shape} rows differ")
        if len(train_rows) < 2 or len(val_rows) < 1:
            raise CrpbotError("familiarity needs at least 2 train windows and 1 validation window")
        if not 0 < quantile < 1:
            raise CrpbotError(f"invalid familiarity quantile {quantile}: must be in (0, 1)")
        fit_rows = train_rows[_evenly_spaced(len(train_rows), MAX_FIT_ROWS)]
        estimator = LedoitWolf(store_precision=True, assume_centered=False).fit(fit_rows)
        fitted = cls(
            location=estimator.location_,
            precision=estimator.precision_,
            threshold=np.inf,
            train_windows=len(train_rows),
            val_windows=len(val_rows),
            quantile=quantile,
        )
        threshold = float(np.quantile(fitted.distance(val_rows), quantile, method="higher"))
        return cls(fitted.location, fitted.precision, threshold, len(train_rows), len(val_rows), quantile)

    def distance(self, rows: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row (last scaled feature rows of windows) to train's mean."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self.location):
            raise CrpbotError(
                f"familiarity expects rows of {len(self.location)} features, got shape {rows.shape}"
            )
        centred = rows - self.location
        squared = np.einsum("ij,ij->i", centred @ self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0))

    def familiar(self, rows: np.ndarray) -> np.ndarray:
        """True where a row lies within the threshold (inside what the model saw in training)."""
        return self.distance(rows) <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "fitted_on": "train",
            "threshold_chosen_on": "val",
            "quantile": self.quantile,
            "threshold": self.threshold,
            "train_windows": self.train_windows,
            "val_windows": self.val_windows,
            "location": self.location.tolist(),
            "precision": self.precision.tolist(),
        }

    @classmethod
    def from_dict(cls, record: Any) -> Familiarity:
        try:
            location = np.asarray(record["location"], dtype=np.float64)
            precision = np.asarray(record["precision"], dtype=np.float64)
            threshold = float(record["threshold"])
            fitted = cls(
                location,
                precision,
                threshold,
                int(record["train_windows"]),
                int(record["val_windows"]),
                float(record["quantile"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CrpbotError(f"invalid familiarity record: {exc}") from exc
        if location.ndim != 1 or precision.shape != (len(location), len(location)):
            raise CrpbotError(
                f"invalid familiarity record: location {location.shape}, precision {precision.shape}"
            )
        if not (np.isfinite(location).all() and np.isfinite(precision).all() and np.isfinite(threshold)):
            raise CrpbotError("invalid familiarity record: non-finite numbers")
        return fitted


def fit_familiarity(data: Any, lookback: int) -> dict[str, Any]:
    """familiarity.json of ``data`` (a ``PreparedData``, or a global model's ``MultiCoinData``: one
    record per coin, as its scalers): fitted on the train windows, thresholded on validation's; the
    test split is never read."""
    coins = getattr(data, "coins", None)
    if coins is not None:
        return {"coins": {coin: fit_familiarity(data.part(coin), lookback) for coin in coins}}
    train = data.window_ends("train", lookback, labelled=False)
    val = data.window_ends("val", lookback, labelled=False)
    return Familiarity.fit(data.features[train], data.features[val]).to_dict()


def _evenly_spaced(n: int, most: int) -> np.ndarray:
    """``min(n, most)`` indices spread evenly over ``range(n)`` (deterministic)."""
    return np.arange(n) if n <= most else np.linspace(0, n - 1, most).round().astype(np.int64)

"""Temperature scaling: one scalar T that divides the logit, fitted by minimising NLL.

One parameter cannot change which side of 0.5 a row falls on, so accuracy is untouched
and only the confidence moves; that is why it is fitted on the validation split and is
safe to apply to test. Shaped like a scikit-learn estimator: ``fit`` returns ``self``,
the fitted value is ``temperature_``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from crpbot.errors import CrpbotError
from crpbot.model.predictions import Predictions, guard_selection

# Temperatures outside this range mean the scores carry no usable signal; clamp, do not explode.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 50.0
_PROB_EPS = 1e-7


def logit(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(np.asarray(probs, dtype=np.float64), _PROB_EPS, 1 - _PROB_EPS)
    return np.log(probs) - np.log1p(-probs)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-z)) for y=1 and log(1 + exp(z)) for y=0, computed stably
    return float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -z, z))))


class TemperatureScaler:
    """Learn T on held-out scores; ``transform`` returns calibrated P(up).

    ``inputs="probs"`` takes probabilities (an ensemble's average), ``inputs="logits"`` raw logits.
    """

    def __init__(self, inputs: str = "probs") -> None:
        self.inputs = inputs

    def _to_logits(self, scores: np.ndarray) -> np.ndarray:
        if self.inputs not in ("probs", "logits"):
            raise CrpbotError(f"TemperatureScaler inputs must be 'probs' or 'logits', got {self.inputs!r}")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1 or not np.all(np.isfinite(scores)):
            raise CrpbotError("temperature scaling needs a finite 1-d array of scores")
        if self.inputs == "probs":
            if np.any((scores < 0) | (scores > 1)):
                raise CrpbotError("temperature scaling: probabilities must lie in [0, 1]")
            return logit(scores)
        return scores

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> TemperatureScaler:
        z = self._to_logits(scores)
        labels = np.asarray(labels, dtype=np.float64)
        if labels.shape != z.shape or not np.all((labels == 0) | (labels == 1)):
            raise CrpbotError("temperature scaling: labels must be a 0/1 array as long as the scores")
        if len(z) < 2:
            raise CrpbotError("temperature scaling needs at least 2 rows")
        # NLL is smooth and unimodal in log T; a bounded 1-d search is exact enough and cannot diverge.
        result = minimize_scalar(
            lambda log_t: _nll(z, labels, float(np.exp(log_t))),
            bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
            method="bounded",
            options={"xatol": 1e-6},
        )
        self.temperature_ = float(np.exp(result.x))
        self.nll_before_ = _nll(z, labels, 1.0)
        self.nll_after_ = _nll(z, labels, self.temperature_)
        return self

    def fit_predictions(self, predictions: Predictions) -> TemperatureScaler:
        """Fit on one split's predictions; refuses the test split."""
        guard_selection(predictions.split, "temperature fitting")
        return self.fit(
            predictions.probs if self.inputs == "probs" else logit(predictions.probs), predictions.labels
        )

    def transform(self, scores: np.ndarray) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise CrpbotError("TemperatureScaler is not fitted")
        return apply_temperature(self._to_logits(scores), self.temperature_, inputs="logits")


def apply_temperature(scores: np.ndarray, temperature: float, *, inputs: str = "probs") -> np.ndarray:
    """P(up) after dividing the logit by ``temperature`` (1.0 returns the input probabilities)."""
    if not (temperature > 0 and np.isfinite(temperature)):
        raise CrpbotError(f"temperature must be a positive number, got {temperature!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if inputs == "probs":
        if temperature == 1.0:
            return scores
        scores = logit(scores)
    return sigmoid(scores / temperature)

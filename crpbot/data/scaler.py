"""The train-only scaler: per-feature standardisation fitted on the train rows alone.

It travels with every artifact (``scaler.json``), so evaluation and prediction reuse the
training statistics instead of refitting on the rows they score -- refitting on val or test
(or scaling already-scaled rows again) is one of the leaks this project exists to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crpbot.errors import CrpbotError


@dataclass
class Scaler:
    """Per-feature standardisation; ``fit`` sees train rows only."""

    mean_: np.ndarray
    scale_: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Scaler:
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        # a constant feature (e.g. a session flag never set in train) is centred, not blown up
        return cls(mean_=mean, scale_=np.where(std > 0, std, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """float32, C-contiguous: the layout windows are served from."""
        if features.ndim != 2 or features.shape[1] != len(self.mean_):
            raise CrpbotError(
                f"scaler expects {len(self.mean_)} features, got array of shape {features.shape}"
            )
        return np.ascontiguousarray((features - self.mean_) / self.scale_, dtype=np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> Scaler:
        try:
            mean = np.asarray(values["mean"], dtype=np.float64)
            scale = np.asarray(values["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CrpbotError(f"invalid scaler record: {exc}") from exc
        if mean.ndim != 1 or mean.shape != scale.shape:
            raise CrpbotError(f"invalid scaler record: mean {mean.shape} and scale {scale.shape} differ")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise CrpbotError("invalid scaler record: non-finite mean or non-positive scale")
        return cls(mean_=mean, scale_=scale)

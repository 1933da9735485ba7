"""Scored rows of one split, and the rule that no selection reads the test split.

:class:`Predictions` carries the split name with the numbers, and
:func:`guard_selection` refuses the test split to every function that chooses
something (a temperature, a threshold, a baseline's weights): the test split is read
once, by the final evaluation, after everything is fixed. They live with the model
because the first selection (an ensemble's temperature) happens here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TestSplitAccessError(AssertionError):
    """A selection step was handed the test split: a bug in the caller, never a user error."""

    __test__ = False  # not a pytest test class despite the name


def guard_selection(split: str, purpose: str) -> None:
    """Raise if ``purpose`` (a fitting/selection step) is about to read the test split."""
    if split == "test":
        raise TestSplitAccessError(f"{purpose} must not read the test split")


@dataclass(frozen=True)
class Predictions:
    """Scored rows of one split: which split, when, P(up), the label and the realised return."""

    split: str
    timestamps: np.ndarray  # int64 ns UTC of the window's last bar
    probs: np.ndarray  # float64 P(up)
    labels: np.ndarray  # float64 in {0, 1}
    forward_returns: np.ndarray  # float64 close[t+h]/close[t] - 1

    def __post_init__(self) -> None:
        n = len(self.probs)
        for name in ("timestamps", "labels", "forward_returns"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Predictions.{name} has {len(getattr(self, name))} rows, probs {n}")

    def __len__(self) -> int:
        return len(self.probs)

    def where(self, mask: np.ndarray) -> Predictions:
        """The rows where ``mask`` is true."""
        return Predictions(
            self.split, self.timestamps[mask], self.probs[mask], self.labels[mask], self.forward_returns[mask]
        )

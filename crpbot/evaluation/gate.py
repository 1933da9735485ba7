"""The promotion gate: per-coin checks, a quorum across coins, and the selective reading.

The configured gate is the decision. The selective reading answers a different question
for the user -- "on how many test windows is the model as accurate as the gate asks, if it
may abstain when unsure?" -- with the abstention threshold chosen on validation; it never
changes the decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from crpbot.errors import CrpbotError
from crpbot.evaluation.metrics import COVERAGE_THRESHOLDS, confidence, predicted_up
from crpbot.model.predictions import Predictions, guard_selection

DEFAULT_MIN_ACCURACY = 0.68
DEFAULT_MAX_CALIBRATION_ERROR = 0.05
DEFAULT_QUORUM = 2
# Fewer validation rows than this above a threshold make its accuracy noise, not evidence.
MIN_SELECTIVE_ROWS = 50


@dataclass(frozen=True)
class GateThresholds:
    """Configured limits; defaults are the recipe's."""

    min_accuracy: float = DEFAULT_MIN_ACCURACY
    max_calibration_error: float = DEFAULT_MAX_CALIBRATION_ERROR
    quorum: int = DEFAULT_QUORUM

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise CrpbotError(f"invalid min_accuracy {self.min_accuracy}: must be in [0, 1]")
        if not 0.0 <= self.max_calibration_error <= 1.0:
            raise CrpbotError(
                f"invalid max_calibration_error {self.max_calibration_error}: must be in [0, 1]"
            )
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) or self.quorum < 1:
            raise CrpbotError(f"invalid quorum {self.quorum!r}: must be an integer >= 1")


@dataclass(frozen=True)
class GateDecision:
    """``reasons`` names every failed check; empty when passed."""

    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def coin_decision(accuracy: float, ece: float, thresholds: GateThresholds) -> GateDecision:
    """One coin passes when accuracy >= min_accuracy and ECE <= max_calibration_error."""
    reasons = []
    if not accuracy >= thresholds.min_accuracy:
        reasons.append(f"accuracy {accuracy:.4f} < min_accuracy {thresholds.min_accuracy:.4f}")
    if not ece <= thresholds.max_calibration_error:
        reasons.append(
            f"calibration error {ece:.4f} > max_calibration_error {thresholds.max_calibration_error:.4f}"
        )
    return GateDecision(passed=not reasons, reasons=reasons)


@dataclass(frozen=True)
class BatchDecision:
    promoted: bool
    quorum: int
    passed_coins: list[str]
    failed_coins: list[str]
    reasons: list[str]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def batch_decision(decisions: dict[str, GateDecision], thresholds: GateThresholds) -> BatchDecision:
    """The batch is promoted when at least ``quorum`` coins pass.

    The quorum is never lowered to the number of coins evaluated: a batch smaller than the
    quorum (e.g. one coin under the default 2) is not promoted, whatever its coins scored,
    and the reasons say how to ask for a smaller quorum explicitly.
    """
    if not decisions:
        raise CrpbotError("gate: no coins to decide on")
    quorum = thresholds.quorum
    passed = sorted(coin for coin, d in decisions.items() if d.passed)
    failed = sorted(coin for coin, d in decisions.items() if not d.passed)
    reasons = [f"{coin}: {reason}" for coin in failed for reason in decisions[coin].reasons]
    promoted = len(passed) >= quorum
    if len(decisions) < quorum:
        reasons.append(
            f"only {len(decisions)} coin(s) evaluated, quorum is {quorum} "
            f"(pass --quorum {len(decisions)} to promote a smaller batch)"
        )
    elif not promoted:
        reasons.append(f"{len(passed)} of {len(decisions)} coin(s) passed, quorum is {quorum}")
    return BatchDecision(
        promoted=promoted, quorum=quorum, passed_coins=passed, failed_coins=failed, reasons=reasons
    )


def choose_selective_threshold(
    validation: Predictions,
    min_accuracy: float,
    thresholds: tuple[float, ...] = COVERAGE_THRESHOLDS,
    min_rows: int = MIN_SELECTIVE_ROWS,
) -> float | None:
    """Smallest confidence threshold whose validation accuracy reaches ``min_accuracy``.

    Smallest, so coverage is as large as possible; ``None`` when no threshold keeps
    ``min_rows`` validation rows at that accuracy. Refuses the test split.
    """
    guard_selection(validation.split, "choosing the selective threshold")
    conf = confidence(validation.probs)
    correct = predicted_up(validation.probs) == (validation.labels == 1)
    for threshold in thresholds:
        kept = conf >= threshold
        if kept.sum() >= min_rows and correct[kept].mean() >= min_accuracy:
            return float(threshold)
    return None


def selective_reading(validation: Predictions, test: Predictions, min_accuracy: float) -> dict[str, object]:
    """τ chosen on validation, then the test coverage and accuracy at that τ (information only)."""
    threshold = choose_selective_threshold(validation, min_accuracy)
    reading: dict[str, object] = {
        "min_accuracy": min_accuracy,
        "threshold": threshold,
        "chosen_on": validation.split,
    }
    if threshold is None:
        reading["note"] = (
            f"no confidence threshold reaches accuracy {min_accuracy:.2f} on "
            f">= {MIN_SELECTIVE_ROWS} validation rows"
        )
        return reading
    for predictions in (validation, test):
        kept = confidence(predictions.probs) >= threshold
        correct = predicted_up(predictions.probs[kept]) == (predictions.labels[kept] == 1)
        reading[f"{predictions.split}_coverage"] = float(kept.mean())
        reading[f"{predictions.split}_n"] = int(kept.sum())
        reading[f"{predictions.split}_accuracy"] = float(np.mean(correct)) if kept.any() else None
    return reading

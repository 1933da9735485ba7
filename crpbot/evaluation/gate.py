"""The promotion gate: per-coin checks, a quorum across coins, and the selective reading.

What the per-coin check compares is configurable, and the defaults are strict:

- ``gate_on="ci-lower"``: the lower bound of the accuracy's 95% CI (``metrics.mean_interval``) must reach
  ``min_accuracy`` (on a 3-day test split the CI is +-3 points wide, so a model whose true
  accuracy is below the bar passes a point-estimate gate by luck about half the time);
  ``"point"`` compares the point estimate, as the recipe does;
- ``ece="max"``: the larger of the equal-width and the equal-mass ECE must stay within
  ``max_calibration_error`` (confidences packed into 0.50-0.53 put nearly every row into one of
  15 equal-width bins, which then averages miscalibration away); ``"equal-width"`` is the
  recipe's, ``"equal-mass"`` the other alone;
- ``net_pnl="require"``: the lower bound of the 95% CI of the net return per trade (after fees and
  slippage on both sides, at the validation-chosen threshold; ``crpbot.evaluation.backtest``) must
  be above 0; no trades, or too few for an interval, fail it. At 1-60 minute horizons the edge of a
  direction model, where there is one, is usually smaller than the round trip, so an accurate model
  can still lose money on every trade. ``"report"`` shows the same check without gating.

``GateThresholds(...).recipe()`` is the same limits read the recipe's way (point, equal-width, no
net-return check), which the reports show beside the configured decision.

The configured gate is the decision. The selective reading answers a different question
for the user -- "on how many test windows is the model as accurate as the gate asks, if it
may abstain when unsure?" -- with the abstention threshold chosen on validation; it never
changes the decision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from crpbot.errors import CrpbotError
from crpbot.evaluation.metrics import COVERAGE_THRESHOLDS, confidence, predicted_up
from crpbot.model.predictions import Predictions, guard_selection

DEFAULT_MIN_ACCURACY = 0.68
DEFAULT_MAX_CALIBRATION_ERROR = 0.05
DEFAULT_QUORUM = 2
GATE_ON = ("point", "ci-lower")
ECE_KINDS = ("equal-width", "equal-mass", "max")
DEFAULT_GATE_ON = "ci-lower"
DEFAULT_ECE = "max"
NET_PNL_MODES = ("require", "report")
DEFAULT_NET_PNL = "require"
# Fewer validation rows than this above a threshold make its accuracy noise, not evidence.
MIN_SELECTIVE_ROWS = 50


@dataclass(frozen=True)
class GateThresholds:
    """Configured limits (defaults: the recipe's) and how they are read (defaults: strictly)."""

    min_accuracy: float = DEFAULT_MIN_ACCURACY
    max_calibration_error: float = DEFAULT_MAX_CALIBRATION_ERROR
    quorum: int = DEFAULT_QUORUM
    gate_on: str = DEFAULT_GATE_ON
    ece: str = DEFAULT_ECE
    net_pnl: str = DEFAULT_NET_PNL

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise CrpbotError(f"invalid min_accuracy {self.min_accuracy}: must be in [0, 1]")
        if not 0.0 <= self.max_calibration_error <= 1.0:
            raise CrpbotError(
                f"invalid max_calibration_error {self.max_calibration_error}: must be in [0, 1]"
            )
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) or self.quorum < 1:
            raise CrpbotError(f"invalid quorum {self.quorum!r}: must be an integer >= 1")
        if self.gate_on not in GATE_ON:
            raise CrpbotError(f"invalid gate_on {self.gate_on!r}: expected one of {', '.join(GATE_ON)}")
        if self.ece not in ECE_KINDS:
            raise CrpbotError(f"invalid ece {self.ece!r}: expected one of {', '.join(ECE_KINDS)}")
        if self.net_pnl not in NET_PNL_MODES:
            raise CrpbotError(f"invalid net_pnl {self.net_pnl!r}: expected one of {', '.join(NET_PNL_MODES)}")

    def recipe(self) -> GateThresholds:
        """The same limits read as the recipe reads them: point accuracy, equal-width ECE, and no
        net-return check (the recipe's gate has none)."""
        return replace(self, gate_on="point", ece="equal-width", net_pnl="report")

    @property
    def reading(self) -> str:
        """E.g. "accuracy CI lower bound, max of equal-width and equal-mass ECE"."""
        accuracy = "point accuracy" if self.gate_on == "point" else "accuracy CI lower bound"
        ece = "max of equal-width and equal-mass ECE" if self.ece == "max" else f"{self.ece} ECE"
        net = ", net return per trade CI lower bound > 0" if self.net_pnl == "require" else ""
        return f"{accuracy}, {ece}{net}"


@dataclass(frozen=True)
class GateDecision:
    """``reasons`` names every failed check; empty when passed."""

    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def coin_decision(
    accuracy: float,
    ece: float,
    thresholds: GateThresholds,
    *,
    accuracy_ci_low: float | None = None,
    ece_equal_mass: float | None = None,
    net_return: dict[str, Any] | None = None,
) -> GateDecision:
    """One coin passes when its accuracy reaches min_accuracy and its ECE stays within
    max_calibration_error, each read as ``thresholds`` says (``ece`` is the equal-width ECE), and,
    with ``net_pnl="require"``, its net return per trade is above 0 beyond noise.

    ``accuracy_ci_low`` is needed for ``gate_on="ci-lower"``, ``ece_equal_mass`` for
    ``ece="equal-mass"`` or ``"max"``, and ``net_return`` (metrics.json's ``net_return_per_trade``)
    for ``net_pnl="require"``.
    """
    reasons = []
    if thresholds.gate_on == "point":
        if not accuracy >= thresholds.min_accuracy:
            reasons.append(f"accuracy {accuracy:.4f} < min_accuracy {thresholds.min_accuracy:.4f}")
    else:
        if accuracy_ci_low is None:
            raise CrpbotError("the gate on the accuracy CI's lower bound needs that bound")
        if not accuracy_ci_low >= thresholds.min_accuracy:
            reasons.append(
                f"accuracy CI lower bound {accuracy_ci_low:.4f} < min_accuracy "
                f"{thresholds.min_accuracy:.4f} (point estimate {accuracy:.4f})"
            )
    if thresholds.ece != "equal-width" and ece_equal_mass is None:
        raise CrpbotError(f"the gate on the {thresholds.ece} ECE needs the equal-mass ECE")
    if thresholds.ece == "equal-width":
        value, label = ece, "equal-width"
    elif thresholds.ece == "equal-mass":
        value, label = ece_equal_mass, "equal-mass"
    else:
        either_nan = math.isnan(ece) or math.isnan(ece_equal_mass)
        value = math.nan if either_nan else max(ece, ece_equal_mass)
        label = f"max of equal-width {ece:.4f} and equal-mass {ece_equal_mass:.4f}"
    if not value <= thresholds.max_calibration_error:
        reasons.append(
            f"calibration error {value:.4f} ({label}) > max_calibration_error "
            f"{thresholds.max_calibration_error:.4f}"
        )
    if thresholds.net_pnl == "require":
        if net_return is None:
            raise CrpbotError("the gate on the net return per trade needs that return and its CI")
        failure = net_return_failure(net_return)
        if failure is not None:
            reasons.append(failure)
    return GateDecision(passed=not reasons, reasons=reasons)


def net_return_failure(net_return: dict[str, Any]) -> str | None:
    """Why the net return per trade fails the criterion (CI lower bound > 0), or None when it passes."""
    trades = net_return["trades"]
    if trades == 0:
        return "net return per trade: no trades (nothing shows the signal pays its costs)"
    if net_return["ci"] is None:
        return f"net return per trade: {net_return.get('note', 'no CI')}"
    low, high = net_return["ci"]
    if low > 0:
        return None
    return (
        f"net return per trade CI lower bound {low * 1e4:+.2f} bps <= 0 "
        f"(mean {net_return['mean'] * 1e4:+.2f} bps, 95% CI [{low * 1e4:+.2f}, {high * 1e4:+.2f}], "
        f"{trades} trades)"
    )


def metrics_decision(metrics: dict[str, Any], thresholds: GateThresholds) -> GateDecision:
    """:func:`coin_decision` on a metrics dict (metrics.json's keys: accuracy, accuracy_ci, ece,
    ece_equal_mass, net_return_per_trade)."""
    ci = metrics.get("accuracy_ci")
    return coin_decision(
        metrics["accuracy"],
        metrics["ece"],
        thresholds,
        accuracy_ci_low=ci[0] if ci else None,
        ece_equal_mass=metrics.get("ece_equal_mass"),
        net_return=metrics.get("net_return_per_trade"),
    )


def gate_record(metrics: dict[str, Any], thresholds: GateThresholds) -> dict[str, Any]:
    """metrics.json's ``gate``: the configured decision, how it read the metrics, and the recipe's
    reading of the same limits beside it (information: it never changes the decision)."""
    decision = metrics_decision(metrics, thresholds)
    recipe = metrics_decision(metrics, thresholds.recipe())
    net_return = metrics.get("net_return_per_trade")
    failure = net_return_failure(net_return) if net_return is not None else "not measured"
    return {
        **decision.to_dict(),
        "min_accuracy": thresholds.min_accuracy,
        "max_calibration_error": thresholds.max_calibration_error,
        "gate_on": thresholds.gate_on,
        "ece_kind": thresholds.ece,
        # the net-return check as read, whether it gates (require) or is shown only (report)
        "net_pnl": {"mode": thresholds.net_pnl, "passed": failure is None, "reason": failure},
        "recipe_reading": {"gate_on": "point", "ece_kind": "equal-width", **recipe.to_dict()},
    }


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

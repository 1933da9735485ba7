"""Gate decision table, the strict reading (CI lower bound, max ECE, net return per trade) beside the
recipe's, quorum, and the selective reading chosen on validation only."""

from __future__ import annotations

import numpy as np
import pytest

from crpbot.errors import CrpbotError
from crpbot.evaluation.gate import (
    GateDecision,
    GateThresholds,
    batch_decision,
    choose_selective_threshold,
    coin_decision,
    gate_record,
    selective_reading,
)
from crpbot.model.predictions import Predictions, TestSplitAccessError

RECIPE = GateThresholds(gate_on="point", ece="equal-width", net_pnl="report")  # the recipe's reading
PAYS = {"mean": 0.001, "ci": [0.0004, 0.0016], "trades": 500}  # a net return per trade above 0


@pytest.mark.parametrize(
    ("accuracy", "ece", "passed", "failing"),
    [
        (0.70, 0.03, True, []),
        (0.68, 0.05, True, []),
        (0.55, 0.03, False, ["accuracy"]),
        (0.70, 0.08, False, ["calibration error"]),
        (0.52, 0.09, False, ["accuracy", "calibration error"]),
        (float("nan"), 0.01, False, ["accuracy"]),
    ],
)
def test_coin_decision_table(accuracy, ece, passed, failing):
    decision = coin_decision(accuracy, ece, RECIPE)
    assert decision.passed is passed
    assert [
        reason.split(" ")[0] if not reason.startswith("calibration") else "calibration error"
        for reason in decision.reasons
    ] == failing


def test_quorum_two_of_three():
    ok, bad = GateDecision(True), GateDecision(False, ["accuracy 0.5 < min_accuracy 0.68"])
    two = batch_decision({"BTC": ok, "ETH": ok, "SOL": bad}, RECIPE)
    assert two.promoted and two.passed_coins == ["BTC", "ETH"] and two.failed_coins == ["SOL"]
    assert two.reasons == ["SOL: accuracy 0.5 < min_accuracy 0.68"]
    one = batch_decision({"BTC": ok, "ETH": bad, "SOL": bad}, RECIPE)
    assert not one.promoted and "1 of 3 coin(s) passed, quorum is 2" in one.reasons
    strict = batch_decision({"BTC": ok, "ETH": ok, "SOL": bad}, GateThresholds(quorum=3))
    assert not strict.promoted


@pytest.mark.parametrize(
    ("coins", "quorum", "promoted"),
    [
        ({"BTC": True}, 2, False),  # one passing coin is not "2 of 3"
        ({"BTC": True, "ETH": True}, 3, False),
        ({"BTC": True}, 1, True),  # an explicit --quorum 1 promotes a single coin
        ({"BTC": False}, 1, False),
        ({"BTC": True, "ETH": True}, 2, True),
        ({"BTC": True, "ETH": False}, 2, False),
    ],
)
def test_decision_table_without_capping_the_quorum(coins, quorum, promoted):
    decisions = {coin: GateDecision(ok, [] if ok else ["x"]) for coin, ok in coins.items()}
    batch = batch_decision(decisions, GateThresholds(quorum=quorum))
    assert batch.promoted is promoted
    assert batch.quorum == quorum
    too_few = [reason for reason in batch.reasons if reason.startswith("only ")]
    if len(coins) < quorum:
        assert too_few == [
            f"only {len(coins)} coin(s) evaluated, quorum is {quorum} "
            f"(pass --quorum {len(coins)} to promote a smaller batch)"
        ]
    else:
        assert too_few == []
    if promoted:
        assert batch.reasons == []


def test_one_passing_coin_is_not_promoted_under_the_default_quorum():
    alone = batch_decision({"BTC": GateDecision(True)}, RECIPE)
    assert not alone.promoted and alone.quorum == 2 and alone.passed_coins == ["BTC"]
    assert alone.reasons == [
        "only 1 coin(s) evaluated, quorum is 2 (pass --quorum 1 to promote a smaller batch)"
    ]
    failing = batch_decision({"BTC": GateDecision(False, ["accuracy 0.5 < min_accuracy 0.68"])}, RECIPE)
    assert not failing.promoted
    assert failing.reasons[0] == "BTC: accuracy 0.5 < min_accuracy 0.68"
    assert failing.reasons[1].startswith("only 1 coin(s) evaluated, quorum is 2")


def test_invalid_thresholds_raise():
    with pytest.raises(CrpbotError, match="min_accuracy"):
        GateThresholds(min_accuracy=1.5)
    with pytest.raises(CrpbotError, match="quorum"):
        GateThresholds(quorum=0)
    with pytest.raises(CrpbotError, match="invalid gate_on 'mean': expected one of point, ci-lower"):
        GateThresholds(gate_on="mean")
    with pytest.raises(CrpbotError, match="invalid ece 'median'"):
        GateThresholds(ece="median")
    with pytest.raises(CrpbotError, match="needs that bound"):
        coin_decision(0.7, 0.01, GateThresholds(), ece_equal_mass=0.01)
    with pytest.raises(CrpbotError, match="invalid net_pnl 'maybe': expected one of require, report"):
        GateThresholds(net_pnl="maybe")
    with pytest.raises(CrpbotError, match="needs that return"):
        coin_decision(0.7, 0.01, GateThresholds(gate_on="point"), ece_equal_mass=0.01)


@pytest.mark.parametrize(
    ("net_return", "passed", "reason"),
    [
        (PAYS, True, None),
        (
            {"mean": 0.0004, "ci": [-0.0001, 0.0009], "trades": 300},
            False,
            "net return per trade CI lower bound -1.00 bps <= 0 (mean +4.00 bps, 95% CI [-1.00, +9.00], "
            "300 trades)",
        ),
        (
            {"mean": None, "ci": None, "trades": 0, "note": "no trades"},
            False,
            "net return per trade: no trades (nothing shows the signal pays its costs)",
        ),
        (
            {"mean": 0.01, "ci": None, "trades": 3, "note": "not enough trades for a CI (3): too few"},
            False,
            "net return per trade: not enough trades for a CI (3): too few",
        ),
    ],
)
def test_the_net_return_criterion_gates_only_when_required(net_return, passed, reason):
    """Accuracy and calibration pass throughout: the net return per trade alone decides under
    ``require``; under ``report`` it is recorded beside a passing decision."""
    metrics = {
        "accuracy": 0.72,
        "accuracy_ci": [0.70, 0.74],
        "ece": 0.01,
        "ece_equal_mass": 0.02,
        "net_return_per_trade": net_return,
    }
    required = gate_record(metrics, GateThresholds())
    assert required["passed"] is passed
    assert required["reasons"] == ([] if passed else [reason])
    assert required["net_pnl"] == {"mode": "require", "passed": passed, "reason": reason}
    reported = gate_record(metrics, GateThresholds(net_pnl="report"))
    assert reported["passed"] is True and reported["reasons"] == []
    assert reported["net_pnl"] == {"mode": "report", "passed": passed, "reason": reason}
    # the recipe's gate has no net-return check
    assert required["recipe_reading"]["passed"] is True


def test_a_point_estimate_that_passes_by_luck_fails_the_strict_gate():
    """0.70 on a short test split with CI [0.66, 0.74]: the recipe's gate passes, the default
    (CI lower bound) does not; with a lower bound of 0.69 both pass."""
    lucky = {"accuracy": 0.70, "accuracy_ci": [0.66, 0.74], "ece": 0.03, "ece_equal_mass": 0.04}
    lucky["net_return_per_trade"] = PAYS
    strict = GateThresholds()
    assert (strict.gate_on, strict.ece) == ("ci-lower", "max")
    assert coin_decision(0.70, 0.03, RECIPE).passed
    decision = coin_decision(0.70, 0.03, strict, accuracy_ci_low=0.66, ece_equal_mass=0.04, net_return=PAYS)
    assert not decision.passed
    assert decision.reasons == [
        "accuracy CI lower bound 0.6600 < min_accuracy 0.6800 (point estimate 0.7000)"
    ]
    record = gate_record(lucky, strict)
    assert record["passed"] is False and (record["gate_on"], record["ece_kind"]) == ("ci-lower", "max")
    assert record["recipe_reading"] == {
        "gate_on": "point",
        "ece_kind": "equal-width",
        "passed": True,
        "reasons": [],
    }
    assert gate_record({**lucky, "accuracy_ci": [0.69, 0.71]}, strict)["passed"] is True
    assert gate_record(lucky, GateThresholds(gate_on="point"))["passed"] is True


@pytest.mark.parametrize(
    ("kind", "passed", "compared"),
    [
        ("equal-width", True, "equal-width"),
        ("equal-mass", False, "0.0800 (equal-mass)"),
        ("max", False, "max of"),
    ],
)
def test_the_gate_reads_the_configured_ece(kind, passed, compared):
    """Confidences crowded into one equal-width bin: 0.02 there, 0.08 over equal-mass bins."""
    thresholds = GateThresholds(gate_on="point", ece=kind)
    decision = coin_decision(0.70, 0.02, thresholds, ece_equal_mass=0.08, net_return=PAYS)
    assert decision.passed is passed
    if not passed:
        (reason,) = decision.reasons
        assert reason.startswith("calibration error 0.0800") and compared in reason
    point = GateThresholds(gate_on="point")
    assert not coin_decision(0.70, 0.08, point, ece_equal_mass=0.02, net_return=PAYS).passed


def _predictions(split: str, seed: int, n: int = 4000) -> Predictions:
    """Confident rows are right 80% of the time, unsure rows are coin flips."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.3, 0.7, size=n)
    confident = np.abs(probs - 0.5) >= 0.15
    right = np.where(confident, rng.uniform(size=n) < 0.8, rng.uniform(size=n) < 0.5)
    labels = np.where(right, probs >= 0.5, probs < 0.5).astype(float)
    return Predictions(split, np.arange(n, dtype=np.int64), probs, labels, np.zeros(n))


def test_selective_threshold_chosen_on_validation_and_read_on_test():
    val, test = _predictions("val", 0), _predictions("test", 1)
    tau = choose_selective_threshold(val, 0.7)
    assert tau is not None and 0.6 <= tau <= 0.66
    reading = selective_reading(val, test, 0.7)
    assert reading["threshold"] == tau and reading["chosen_on"] == "val"
    assert 0.2 < reading["test_coverage"] < 0.4 and reading["test_accuracy"] > 0.7


def test_selective_threshold_refuses_test_and_reports_none():
    with pytest.raises(TestSplitAccessError):
        choose_selective_threshold(_predictions("test", 0), 0.7)
    reading = selective_reading(_predictions("val", 0), _predictions("test", 1), 0.99)
    assert reading["threshold"] is None and "no confidence threshold" in reading["note"]


def test_gate_reading_options_on_evaluate_and_pipeline(capsys):
    from crpbot.cli import build_parser, main
    from crpbot.cli.options import gate_thresholds

    parser = build_parser()
    for command in ("evaluate --model m", "pipeline"):
        defaults = gate_thresholds(parser.parse_args(command.split()))
        assert (defaults.gate_on, defaults.ece) == ("ci-lower", "max")
        recipe = gate_thresholds(
            parser.parse_args([*command.split(), "--gate-on", "point", "--ece", "equal-width"])
        )
        assert recipe == GateThresholds(gate_on="point", ece="equal-width", quorum=recipe.quorum)
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--model", "m", "--gate-on", "mean"])
    assert exited.value.code == 2 and "--gate-on: invalid choice: 'mean'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["evaluate --model m", "pipeline", "retrain --input-dir d", "walkforward --coin BTC"]
)
def test_net_pnl_option_on_every_gating_command(command, capsys):
    from crpbot.cli import build_parser, main
    from crpbot.cli.options import gate_thresholds

    parser = build_parser()
    assert gate_thresholds(parser.parse_args(command.split())).net_pnl == "require"
    assert gate_thresholds(parser.parse_args([*command.split(), "--net-pnl", "report"])).net_pnl == "report"
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), "--net-pnl", "ignore"])
    assert exited.value.code == 2 and "--net-pnl: invalid choice: 'ignore'" in capsys.readouterr().err

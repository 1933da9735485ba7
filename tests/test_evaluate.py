"""End to end on the bundled real data: a tiny model trained with ``training.fit``, then evaluated.

No Ray: the loop is called directly (the Ray path is covered by test_ensemble).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from tiny import TINY_GRU

from crpbot.errors import CrpbotError
from crpbot.evaluation.evaluate import evaluate_model, stored_split_data
from crpbot.evaluation.gate import GateThresholds, gate_record
from crpbot.evaluation.metrics import equal_mass_calibration_error, reliability_bins
from crpbot.evaluation.report import summary_lines
from crpbot.model.predictions import Predictions
from crpbot.model.predictor import load_predictor

TINY = replace(TINY_GRU, max_epochs=2, patience=2)


@pytest.fixture(scope="module")
def tiny_model(train_tiny_artifact):
    return train_tiny_artifact(TINY, "BTC")[0]


def test_evaluate_writes_every_output_and_an_honest_gate(tiny_model, tmp_path):
    lines: list[str] = []
    result = evaluate_model(tiny_model, out_dir=tmp_path / "eval", log=lines.append)
    out = result.out_dir
    for name in (
        "predictions.parquet",
        "metrics.json",
        "report.md",
        "reliability.png",
        "equity_curve.png",
        "accuracy_vs_coverage.png",
        "training_curves.png",
        "trades.parquet",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "n",
        "accuracy",
        "accuracy_ci",
        "ece",
        "brier",
        "log_loss",
        "auc",
        "baselines",
        "coverage_curve",
        "backtest",
        "net_return_per_trade",
        "gate",
    ):
        assert key in metrics, key
    assert set(metrics["baselines"]) == {"majority", "momentum", "reversal", "logistic", "gbdt"}
    # the best baseline is chosen on validation, and the edge is measured on the same test rows
    edge = metrics["edge_over_best_baseline"]
    on_val = edge["validation_accuracies"]
    assert edge["chosen_on"] == "val" and edge["baseline"] == max(on_val, key=on_val.get)
    assert edge["n"] == metrics["n"]
    assert edge["edge"] == pytest.approx(metrics["accuracy"] - metrics["baselines"][edge["baseline"]])
    assert edge["ci_low"] <= edge["edge"] <= edge["ci_high"]
    assert edge["ci_method"].startswith("95% t-interval, Hansen-Hodrick HAC variance, lags 0-")
    assert set(metrics["backtest"]) >= {
        "trades",
        "win_rate",
        "total_pnl",
        "avg_pnl",
        "sharpe",
        "max_drawdown",
        "exposure",
    }
    # a two-epoch GRU on three weeks of 1-minute bars is near a coin flip: anything above 0.6 is a leak
    assert 0.4 < metrics["accuracy"] < 0.6
    # flat outcomes are traded by the backtest but not scored: n + ties = every tradable window
    data = stored_split_data(load_predictor(tiny_model))
    tradable = data.window_ends("test", TINY.lookback, labelled=False)
    assert metrics["test_ties"] > 0
    assert (
        metrics["n"] + metrics["test_ties"]
        == len(tradable)
        == len(data.window_ends("test", TINY.lookback)) + metrics["test_ties"]
    )
    assert metrics["accuracy_ci"][0] <= metrics["accuracy"] <= metrics["accuracy_ci"][1]
    assert metrics["gate"]["passed"] is False and metrics["gate"]["reasons"][0].startswith(
        "accuracy CI lower"
    )
    assert (metrics["gate"]["gate_on"], metrics["gate"]["ece_kind"]) == ("ci-lower", "max")
    # the net return per trade at the validation-chosen tau: the trades' mean, its CI, and the gate's reading
    net, bt = metrics["net_return_per_trade"], metrics["backtest"]
    trades = pd.read_parquet(out / "trades.parquet")
    assert list(trades.columns) == ["entry_time", "side", "net_return"] and len(trades) == bt["trades"]
    assert net["trades"] == bt["trades"] > 0 and net["threshold"] == bt["threshold"]
    assert net["mean"] == pytest.approx(trades["net_return"].mean()) == pytest.approx(bt["avg_pnl"])
    assert net["ci"][0] <= net["mean"] <= net["ci"][1]
    assert net["threshold_source"] == bt["threshold_source"] and net["cost_bps_per_side"] == 10.0
    net_gate = metrics["gate"]["net_pnl"]
    assert net_gate["mode"] == "require" and net_gate["passed"] is (net["ci"][0] > 0)
    assert (net_gate["reason"] in metrics["gate"]["reasons"]) is not net_gate["passed"]
    assert any(line.startswith("Net Return per Trade: ") and " bps [95% CI " in line for line in lines)
    assert metrics["gate"]["recipe_reading"]["passed"] is False
    assert result.passed is False

    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == ["timestamp", "prob_up", "label", "baseline_up", "familiar"]
    assert len(predictions) == metrics["n"] and predictions["baseline_up"].dtype == np.int8
    # the file alone reproduces the edge: model right minus baseline right, row by row
    model_right = (predictions.prob_up >= 0.5) == (predictions.label == 1)
    baseline_right = predictions.baseline_up == predictions.label
    assert edge["edge"] == pytest.approx(model_right.mean() - baseline_right.mean())
    # the scored rows are the stored test split: after the validation period, never inside it
    config = json.loads((tiny_model / "config.json").read_text())
    first_test_ns = predictions["timestamp"].iloc[0].value
    assert first_test_ns >= config["split_times"]["test"][0] > config["split_times"]["val"][1]
    assert np.isclose(metrics["accuracy"], ((predictions.prob_up >= 0.5) == (predictions.label == 1)).mean())
    # the share of test windows outside what the model saw in training (threshold chosen on val)
    familiarity = metrics["familiarity"]
    assert familiarity["available"] and familiarity["threshold_chosen_on"] == "val"
    assert familiarity["test_windows"] == metrics["n"] + metrics["test_ties"]
    share = familiarity["test_unfamiliar"] / familiarity["test_windows"]
    assert familiarity["test_share_unfamiliar"] == share < 0.2
    assert familiarity["accuracy_familiar"]["n"] == predictions["familiar"].sum()
    assert familiarity["accuracy_unfamiliar"]["n"] == (~predictions["familiar"]).sum()
    assert "## Familiarity" in (out / "report.md").read_text()
    assert any(line.startswith("Familiarity: ") and "unfamiliar" in line for line in lines)
    assert any(
        line.startswith("Test Accuracy:") and f"best baseline {edge['baseline']}" in line for line in lines
    )
    edge_line = next(line for line in lines if line.startswith("Edge over best baseline"))
    assert edge_line.startswith(
        f"Edge over best baseline (chosen on val; 95% paired CI): {edge['edge']:+.4f} ["
    )
    assert any(line.startswith("Status: FAIL (accuracy") for line in lines)

    # both calibration views beside the gate's ECE, computed on the scored rows
    probs, labels = predictions.prob_up.to_numpy(), predictions.label.to_numpy().astype(float)
    assert metrics["calibration_in_the_large"] == pytest.approx(probs.mean() - labels.mean())
    assert metrics["ece_equal_mass"] == pytest.approx(equal_mass_calibration_error(labels, probs))
    definition = metrics["ece_definition"]
    assert "equal-count" in definition and "mean P(up) - observed up rate" in definition
    calibration = next(line for line in lines if line.startswith("Calibration Error:"))
    assert f"equal-mass bins {metrics['ece_equal_mass']:.4f}" in calibration
    assert f"mean P(up) - up rate {metrics['calibration_in_the_large']:+.4f}" in calibration
    # win rate before and after costs, and the round trip that separates them
    bt = metrics["backtest"]
    assert bt["breakeven_move_bps"] == 20.0 and bt["gross_win_rate"] is not None
    assert (bt["entry_delay_bars"], bt["fee_bps"], bt["slippage_bps"]) == (1, 10.0, 0.0)
    win = next(line for line in lines if line.startswith("Win Rate:"))
    assert "after costs" in win and f"{bt['gross_win_rate']:.4f} before costs; round trip 20 bps" in win
    # validation numbers are labelled in-sample
    assert metrics["validation"]["in_sample"] is True and "early stopping" in metrics["validation"]["note"]
    report = (out / "report.md").read_text()
    assert "## Validation (in-sample: used for early stopping, model selection, temperature and τ)" in report
    assert "ECE, 15 equal-mass bins" in report and "calibration in the large" in report
    assert "win rate (before costs)" in report and "close[t]" in report and "--slippage-bps" in report
    assert "closed-trade equity curve" in report
    assert (
        "- backtest fills: entry at close[t+1], 1 bar(s) after the signal's; fee 10 + slippage 0 bps"
        in report
    )
    assert "| configured (the decision) | ci-lower | max | **FAIL**" in report
    assert "| the recipe's (information only) | point | equal-width | **FAIL**" in report
    assert f"| {edge['baseline']} (best on validation) |" in report and "| gbdt |" in report.replace(
        "gbdt (best on validation)", "gbdt"
    )


def test_lenient_gate_passes_and_existing_output_is_kept(tiny_model, tmp_path):
    result = evaluate_model(
        tiny_model,
        out_dir=tmp_path / "eval",
        log=lambda _: None,
        thresholds=GateThresholds(min_accuracy=0.0, max_calibration_error=1.0, net_pnl="report"),
    )
    assert result.passed and result.metrics["gate"]["reasons"] == []
    before = (result.out_dir / "metrics.json").read_text()
    with pytest.raises(CrpbotError, match="already exists"):
        evaluate_model(tiny_model, out_dir=tmp_path / "eval", log=lambda _: None)
    assert (result.out_dir / "metrics.json").read_text() == before


def test_input_overlapping_training_period_is_refused(tiny_model, tmp_path, sample_path):
    with pytest.raises(CrpbotError, match="overlap the model's train/validation period"):
        evaluate_model(tiny_model, input_path=sample_path("BTC"), out_dir=tmp_path / "e", log=lambda _: None)
    assert not (tmp_path / "e").exists()


def test_input_after_training_period_is_scored_whole(tiny_model, tmp_path, sample_path):
    frame = pd.read_parquet(sample_path("BTC"))
    later = frame.iloc[-3000:]
    path = tmp_path / "BTC-USD_later.parquet"
    later.to_parquet(path)
    # the last 3000 bars lie in the stored test split; only the windows after val count
    result = evaluate_model(tiny_model, input_path=path, out_dir=tmp_path / "e", log=lambda _: None)
    assert result.metrics["test_source"].startswith("all of")
    assert result.metrics["baselines"]["logistic"] is not None  # fitted on the stored train split


def test_bad_model_dir_is_a_user_error(tmp_path):
    with pytest.raises(CrpbotError, match="not found"):
        evaluate_model(tmp_path / "missing", out_dir=tmp_path / "e", log=lambda _: None)


def test_cli_exits_zero_on_a_failed_gate_and_two_on_errors(tiny_model, tmp_path, capsys):
    from crpbot.cli import main

    assert main(["evaluate", "--model", str(tiny_model), "--out", str(tmp_path / "e")]) == 0
    assert "Status: FAIL (accuracy" in capsys.readouterr().out
    bad_fee = ["--fee-bps", "-5", "--out", str(tmp_path / "f")]
    assert main(["evaluate", "--model", str(tiny_model), *bad_fee]) == 2
    assert "invalid fee -5.0 bps: must be a finite number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_recipe_script_checks_symbol_and_model_type(tiny_model, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script_path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_model.py"
    spec = importlib.util.spec_from_file_location("evaluate_model", script_path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    recipe = ["--model", str(tiny_model), "--min-accuracy", "0.68", "--max-calibration-error", "0.05"]
    assert script.main([*recipe, "--symbol", "BTC-USD", "--model-type", "lstm"]) == 2
    assert "does not match the model's cell gru" in capsys.readouterr().err
    assert script.main([*recipe, "--symbol", "ETH-USD", "--model-type", "gru"]) == 2
    out = ["--out", str(tmp_path / "s")]
    assert script.main([*recipe, "--symbol", "BTC-USD", "--model-type", "gru", *out]) == 0
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["gate"]["min_accuracy"] == 0.68


def _metrics_for_summary(**backtest) -> dict:
    return {
        "accuracy": 0.52,
        "accuracy_ci": [0.51, 0.53],
        "n": 1000,
        "ece": 0.0131,
        "ece_equal_mass": 0.045,
        "calibration_in_the_large": 0.012,
        "baselines": {"majority": 0.51},
        "backtest": {
            "win_rate": 0.1365,
            "gross_win_rate": 0.52,
            "breakeven_move_bps": 20.0,
            "trades": 400,
            "threshold": 0.5,
            "cost_bps_per_side": 10.0,
            "total_pnl": -0.5,
            "sharpe": -3.0,
            "max_drawdown": 0.6,
            **backtest,
        },
        "net_return_per_trade": {"mean": 0.0012, "ci": [0.0002, 0.0021], "trades": 400},
        "gate": {"passed": False, "reasons": ["accuracy 0.5200 < min_accuracy 0.6800"], "selective": {}},
    }


def test_summary_lines_show_both_calibration_views_and_both_win_rates():
    lines = summary_lines(_metrics_for_summary())
    assert "Calibration Error: 0.0131 (equal-mass bins 0.0450; mean P(up) - up rate +0.0120)" in lines
    assert any(
        line.startswith(
            "Win Rate: 0.1365 after costs (0.5200 before costs; round trip 20 bps; "
            "400 trades at tau 0.50, 10 bps per side)"
        )
        for line in lines
    )
    no_trades = summary_lines(_metrics_for_summary(win_rate=None, gross_win_rate=None, trades=0))
    assert any(line.startswith("Win Rate: n/a after costs (n/a before costs") for line in no_trades)


def test_report_shows_the_recipe_gate_passing_beside_the_strict_one_failing():
    from crpbot.evaluation.report import _gate_section

    metrics = {**_metrics_for_summary(), "accuracy": 0.70, "accuracy_ci": [0.66, 0.74], "ece": 0.03}
    metrics["ece_equal_mass"] = 0.04
    metrics["gate"] = {**gate_record(metrics, GateThresholds()), "selective": {}}
    lines = summary_lines(metrics)
    assert (
        "Status: FAIL (accuracy CI lower bound 0.6600 < min_accuracy 0.6800 (point estimate 0.7000))" in lines
    )
    assert (
        "Recipe's gate (point accuracy, equal-width ECE; information only): PASS -- the recipe's gate "
        "would have passed; the configured strict gate did not"
    ) in lines
    section = "\n".join(_gate_section(metrics["gate"]))
    assert (
        "| configured (the decision) | ci-lower | max | **FAIL** — accuracy CI lower bound 0.6600" in section
    )
    assert "| the recipe's (information only) | point | equal-width | **PASS** |" in section
    assert "**The recipe's gate would have passed; the configured strict gate did not.**" in section
    # read the recipe's way, there is one reading and no second line
    metrics["gate"] = {**gate_record(metrics, GateThresholds().recipe()), "selective": {}}
    assert "Status: PASS" in summary_lines(metrics)
    assert not any(line.startswith("Recipe's gate") for line in summary_lines(metrics))


def test_reliability_plot_draws_counts_as_a_histogram_not_overlapping_labels(tmp_path, monkeypatch):
    """Two adjacent crowded bins once printed as "3911481"; their counts are now bars on their own axis."""
    from crpbot.evaluation import report

    rng = np.random.default_rng(0)
    probs = np.r_[rng.uniform(0.50, 0.53, 3911), rng.uniform(0.54, 0.59, 481), [0.95]]
    labels = (rng.uniform(size=len(probs)) < 0.5).astype(float)
    n = len(probs)
    test = Predictions("test", np.arange(n, dtype=np.int64), probs, labels, np.zeros(n))
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig) or path)
    report._plot_reliability(tmp_path / "r.png", test)
    (fig,) = figures
    curve, histogram = fig.axes
    assert len(curve.texts) == 0  # no count labels on the reliability curve
    counts, _, _ = reliability_bins(labels, probs)
    heights = [patch.get_height() for patch in histogram.patches]
    assert heights == [int(c) for c in counts if c > 0]
    assert [text.get_text() for text in histogram.texts] == ["3911", "481", "1"]
    # each label is centred over its own bar, so adjacent bins never share a spot
    for text, patch in zip(histogram.texts, histogram.patches, strict=True):
        assert text.get_position()[0] == pytest.approx(patch.get_x() + patch.get_width() / 2)
        assert text.get_position()[1] == patch.get_height()


@pytest.mark.parametrize("cost", ["--fee-bps", "--slippage-bps"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_costs_are_refused_before_anything_is_loaded(tmp_path, capsys, cost, value):
    from crpbot.cli import main

    # the model does not even exist: the costs are checked first
    assert (
        main(["evaluate", "--model", str(tmp_path / "none"), cost, value, "--out", str(tmp_path / "e")]) == 2
    )
    assert "bps: must be a finite number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_output_under_a_file_is_refused_before_scoring(tiny_model, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    lines: list[str] = []
    with pytest.raises(CrpbotError, match=f"cannot write {afile}/ev: {afile} is not a directory"):
        evaluate_model(tiny_model, out_dir=afile / "ev", log=lines.append)
    assert lines == [], "refused before any data was loaded or scored"


def test_baselines_are_fitted_before_the_model_predicts_test(tiny_model, tmp_path, monkeypatch):
    """The module's promise: every train/val fit (logistic, GBDT, the best baseline's choice) before
    test is predicted."""
    from crpbot.evaluation import evaluate
    from crpbot.model.predictor import Predictor

    calls: list[str] = []
    predictions, baselines = Predictor.predictions_at, evaluate.score_baselines

    def record_predictions(self, data, split, *args, **kwargs):  # every model prediction of a split
        calls.append(f"predict {split}")
        return predictions(self, data, split, *args, **kwargs)

    def record_baselines(*args, **kwargs):
        calls.append("baselines")
        return baselines(*args, **kwargs)

    monkeypatch.setattr(Predictor, "predictions_at", record_predictions)
    monkeypatch.setattr(evaluate, "score_baselines", record_baselines)
    evaluate_model(tiny_model, out_dir=tmp_path / "e", log=lambda _: None)
    assert calls == ["predict val", "baselines", "predict test"]


def test_moved_input_names_the_missing_file_and_the_differing_fallback(tiny_model, tmp_path):
    from crpbot.registry.artifact import (
        WEIGHTS_FILE,
        load_weights,
        read_artifact_json,
        read_manifest,
        write_artifact,
    )

    names = [name for name in read_manifest(tiny_model)["files"] if name != WEIGHTS_FILE]
    json_files = {name: read_artifact_json(tiny_model, name) for name in names}
    moved = tmp_path / "moved" / "BTC-USD_1m.parquet"
    json_files["config.json"]["input_path"] = str(moved)
    copy = write_artifact(
        tmp_path / "model",
        json_files=json_files,
        tensors=load_weights(tiny_model),
        data_fingerprint="0" * 64,
    )
    with pytest.raises(CrpbotError) as caught:
        evaluate_model(copy, out_dir=tmp_path / "e", log=lambda _: None)
    message = str(caught.value)
    assert f"the model's input {moved} is missing here" in message
    assert "bundled fallback" in message and "fingerprint differs" in message


def test_too_few_test_rows_for_an_interval_is_one_line_and_no_output(
    tiny_model, tmp_path, sample_path, capsys
):
    from crpbot.cli import main

    path = tmp_path / "BTC-USD_last.parquet"
    pd.read_parquet(sample_path("BTC")).iloc[-250:].to_parquet(path)  # 120 warm-up bars, ~100 windows
    out = tmp_path / "e"
    assert main(["evaluate", "--model", str(tiny_model), "--input", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "not enough rows for an honest interval" in error and "need >= 150 (10 × horizon 15)" in error
    assert len(error.splitlines()) == 1 and not out.exists()

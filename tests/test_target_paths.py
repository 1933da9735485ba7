"""Targets and horizons through the commands, on the bundled real sample: ``crpbot train`` +
``evaluate`` for ``volatility`` with higher-timeframe features (no backtest, its own baselines,
the net-return criterion not applicable), ``triple_barrier`` at a 60-minute horizon trained,
evaluated, served and refused as a retrain comparison against a 15-minute direction model, and the
bad-input errors before Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_probe import run_commands_in_a_fresh_process
from tiny import TINY_GRU

from crpbot.cli import main
from crpbot.config import save_config
from crpbot.data.dataset import load_prepared
from crpbot.data.timeframes import TIMEFRAME_FEATURES
from crpbot.errors import CrpbotError
from crpbot.evaluation.compare import compare_on_shared_period
from crpbot.evaluation.evaluate import evaluate_model
from crpbot.model.serving import LiveModel

REPO = Path(__file__).resolve().parents[1]


def test_volatility_with_timeframes_trains_and_evaluates_through_the_commands(ray_session, tmp_path, capsys):
    """One ``crpbot train`` + ``evaluate`` pair for two options at once (each pair is a Ray Train run):
    a volatility target, and higher-timeframe features (tests/test_timeframes.py checks those alone)."""
    config = tmp_path / "volatility.yaml"
    save_config(TINY_GRU.replace(target="volatility", vol_window=240, timeframes=[5, 15]), config)
    model, out = tmp_path / "model", tmp_path / "eval"
    assert main(["train", "--coin", "BTC", "--config", str(config), "--out", str(model)]) == 0
    recorded = json.loads((model / "config.json").read_text())
    assert recorded["target"] == {"name": "volatility", "horizon": 15, "vol_window": 240}
    assert recorded["input_size"] == 39 + 2 * len(TIMEFRAME_FEATURES)

    assert main(["evaluate", "--model", str(model), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Target: volatility (vol_window 240), 15 minutes" in printed and "Test Accuracy" in printed
    assert "Backtest: not applicable" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] > 0 and metrics["backtest"] is None and metrics["target"] == recorded["target"]
    assert set(metrics["baselines"]) == {"majority", "persistence"}
    assert metrics["gate"]["not_applicable"] == {
        "net_pnl": "not applicable: the target is not directional, so nothing is traded"
    }
    assert not (out / "equity_curve.png").exists() and "not directional" in (out / "report.md").read_text()
    # the positive control's rule: volatility clusters, so the last move's size calls the next
    # one's (on this test split 0.541 against majority's 0.528: rules on fixed data, deterministic)
    assert metrics["baselines"]["persistence"] > metrics["baselines"]["majority"]


def test_triple_barrier_at_60_minutes_trains_evaluates_serves_and_is_not_compared_with_direction(
    train_tiny_artifact, tmp_path, sample_path
):
    config = TINY_GRU.replace(target="triple_barrier", horizon=60, barrier_k=1.5)
    model, data = train_tiny_artifact(config, "BTC")
    assert data.purge == config.lookback + 60
    assert json.loads((model / "config.json").read_text())["target"] == {
        "name": "triple_barrier",
        "horizon": 60,
        "barrier_k": 1.5,
        "sigma_window": 60,
    }
    result = evaluate_model(model, out_dir=tmp_path / "eval", log=lambda _: None)
    metrics = result.metrics
    assert metrics["horizon_minutes"] == 60 and metrics["target"]["name"] == "triple_barrier"
    assert metrics["backtest"]["trades"] > 0 and metrics["gate"]["not_applicable"] == {}
    assert "reversal" in metrics["baselines"]
    # undefined labels (neither barrier, or both in one bar) are not scored, but are traded
    scored = pd.read_parquet(result.out_dir / "predictions.parquet")
    assert len(scored) == metrics["n"] and metrics["test_ties"] > 0
    assert "60-minute moves are smaller" in (result.out_dir / "report.md").read_text()

    # served on the latest bars: the probability evaluation saw, and says what it is of
    live = LiveModel.load(model)
    assert live.target.question() == "P(upper barrier first in 60 min)"
    bars = pd.read_parquet(sample_path("BTC"))
    last_scored = scored["timestamp"].iloc[-1]
    served = live.predict(bars[bars["timestamp"] <= last_scored], last=1, max_staleness=None)
    assert served[0].horizon_minutes == 60
    assert served[0].prob_up == pytest.approx(float(scored["prob_up"].iloc[-1]), abs=1e-5)

    # a 15-minute direction champion and this challenger answer different questions
    champion, _ = train_tiny_artifact(TINY_GRU, "BTC")
    refused = compare_on_shared_period(champion, model)
    assert not refused.fair and refused.note == (
        "no fair comparison: the champion predicts direction, 15 minutes, the challenger "
        "triple_barrier (barrier_k 1.5, sigma_window 60), 60 minutes"
    )


def test_net_direction_trains_only_on_moves_beyond_the_round_trip(sample_path):
    data = load_prepared("BTC", sample_path("BTC"), TINY_GRU.replace(target="net_direction"))
    rows = data.window_ends("train", TINY_GRU.lookback)
    assert np.abs(data.forward_returns[rows]).min() > 20e-4  # the default: 2 x 10 bps fee
    traded = data.window_ends("train", TINY_GRU.lookback, labelled=False)
    assert len(traded) > len(rows)  # the small moves stay in the backtest's rows


def test_bad_target_and_horizon_are_one_line_errors_before_ray(tmp_path):
    cases = [
        ({"target": "returns"}, "invalid config value target='returns': expected one of direction, "),
        ({"horizon": 0}, "invalid config value horizon=0: must be >= 1"),
        ({"target": "triple_barrier", "barrier_k": 0}, "invalid config value barrier_k=0.0: must be > 0"),
        ({"vol_window": 100}, "invalid config value vol_window=100: only the volatility target uses it"),
        ({"horizon": 40_000}, "invalid config value horizon=40000: lookback 20 + horizon 40000 bars exceed"),
    ]
    commands = []
    for i, (changes, _) in enumerate(cases):
        config = tmp_path / f"bad{i}.yaml"
        config.write_text(yaml.safe_dump({**TINY_GRU.to_dict(), **changes}))
        commands.append(["train", "--coin", "BTC", "--config", str(config), "--out", str(tmp_path / "m")])
    results = run_commands_in_a_fresh_process(commands, cwd=tmp_path, watched=[tmp_path / "m"])
    for (changes, message), run in zip(cases, results, strict=True):
        assert run.code == 2, run.stderr
        assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
        assert not run.ray_started and run.existing == [], changes


def test_a_horizon_longer_than_any_gap_free_run_is_named(sample_path):
    with pytest.raises(CrpbotError, match="invalid config value horizon=30000: .* longest gap-free run"):
        load_prepared("BTC", sample_path("BTC"), TINY_GRU.replace(horizon=30_000))


def test_horizon_search_space_prepares_each_horizons_labels_on_shared_rows(sample_path):
    from crpbot.data.dataset import load_label_variants
    from crpbot.search.space import load_search_space

    space = load_search_space(REPO / "tune_configs" / "horizon_search.yaml")
    assert space.label_keys() == ["horizon"] and space.data_config().horizon == 240
    assert space.label_variants() == [{"horizon": h} for h in (5, 15, 30, 60, 240)]
    config = TINY_GRU.replace(horizon=60)
    variants = load_label_variants("BTC", sample_path("BTC"), config, [{"horizon": 5}, {"horizon": 60}])
    short, long = variants[(5,)], variants[(60,)]
    assert short.features is long.features and short.split_bounds == long.split_bounds
    assert (short.horizon, short.purge, long.purge) == (5, TINY_GRU.lookback + 5, TINY_GRU.lookback + 60)
    own = load_prepared("BTC", sample_path("BTC"), TINY_GRU.replace(horizon=5))
    np.testing.assert_array_equal(short.labels, own.labels)  # labels do not depend on the splits


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"horizon": {"int": [5, 60]}}, "space.horizon: changes the labels, so it must be a choice"),
        ({"target": {"choice": ["direction", "volatility"]}}, "space.target: cannot be searched"),
        ({"barrier_k": {"choice": [1.0, 2.0]}}, "only the triple_barrier target uses it"),
    ],
)
def test_bad_label_dimensions_are_refused_when_the_space_loads(tmp_path, space, message):
    from crpbot.search.space import load_search_space

    path = tmp_path / "space.yaml"
    budget = {"num_samples": 2, "max_epochs": 1}
    path.write_text(
        yaml.safe_dump({"base": str(REPO / "tune_configs" / "smoke.yaml"), "budget": budget, "space": space})
    )
    with pytest.raises(CrpbotError, match=message):
        load_search_space(path)


def test_a_search_over_horizons_trains_each_trial_on_its_own_labels(ray_session, tmp_path):
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "tune_configs" / "smoke.yaml"),
                "overrides": {"max_train_windows": 256, "hidden_size": 8},
                "budget": {"num_samples": 2, "max_epochs": 1},
                "space": {"horizon": {"choice": [5, 60]}},
            }
        )
    )
    result = run_search(
        load_search_space(path),
        "BTC",
        storage=tmp_path / "runs",
        name="horizons",
        exhaustive=True,
        progress=False,
        log=lambda _: None,
    )
    table = result.table
    assert sorted(table["horizon"]) == [5, 60] and (table["status"] != "error").all()
    assert result.best_config.horizon in (5, 60)


def test_volatility_walkforward_scores_folds_without_a_backtest(ray_session, tmp_path, sample_path):
    from crpbot.data.folds import FoldSpec
    from crpbot.experiments.walkforward import run_walkforward

    config = TINY_GRU.replace(target="volatility", vol_window=120, max_train_windows=256)
    spec = FoldSpec(train_days=4, val_days=1, test_days=1, folds=2)
    result = run_walkforward(
        config,
        "BTC",
        spec,
        input_path=sample_path("BTC"),
        out_dir=tmp_path / "wf",
        log=lambda _: None,
    )
    table = result.folds
    assert list(table["status"]) == ["ok", "ok"] and table["trades"].isna().all()
    assert {"baseline_majority", "baseline_persistence"} <= set(table.columns)
    assert "baseline_reversal" not in table.columns
    summary = result.summary
    assert summary["backtest"] is None and summary["pooled_net_return_per_trade"] is None
    assert summary["pooled"]["n"] == table["n"].sum()
    assert "not directional" in (tmp_path / "wf" / "report.md").read_text()

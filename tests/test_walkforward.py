"""Walk-forward: fold periods (purged, chronological, tiling, own scaler), an edge planted late
shows only in late folds, finished folds survive a rerun and a failed fold, bad input fails early."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import Costs

LOOKBACK, HORIZON = 20, 5
PURGE = LOOKBACK + HORIZON
TINY = TrainConfig(
    cell="lstm",
    hidden_size=16,
    num_layers=1,
    dropout=0.0,
    head_hidden=16,
    lookback=LOOKBACK,
    horizon=HORIZON,
    batch_size=64,
    lr=0.01,
    max_epochs=3,
    patience=2,
)


def _bars_frame(n: int, *, seed: int = 0, edge_from: int | None = None, spike_at: int | None = None):
    """A random walk; from row ``edge_from`` on, volume is 4x whenever the close rises over the
    next HORIZON bars (a causal feature that predicts the label); a volume spike at ``spike_at``."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    up = np.r_[close[HORIZON:] > close[:-HORIZON], np.zeros(HORIZON, bool)]
    volume = rng.lognormal(0, 0.3, n)
    if edge_from is not None:
        volume[(np.arange(n) >= edge_from) & up] *= 4.0
    if spike_at is not None:
        volume[spike_at : spike_at + 30] *= 1e4
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0005,
            "low": np.minimum(open_, close) * 0.9995,
            "close": close,
            "volume": volume,
        }
    )


def _bars(tmp_path, frame, name="BTC-USD_1m.parquet"):
    from crpbot.data.bars import load_bars

    path = tmp_path / name
    frame.to_parquet(path)
    bars = load_bars(path)
    bars.coin = "BTC-USD"
    return path, bars


def test_fold_periods_are_purged_tiling_and_each_scaler_sees_only_its_train_rows(tmp_path) -> None:
    from crpbot.data.dataset import prepare_for_config, usable_timestamps
    from crpbot.data.features import compute_features
    from crpbot.data.folds import DAY_BARS, FoldSpec, plan_folds

    # a huge volume spike in the middle: it must reach a fold's scaler only through its train rows
    _, bars = _bars(tmp_path, _bars_frame(6000, spike_at=3000))
    timestamps = usable_timestamps(bars)
    n = len(timestamps)
    spec = dict(train_days=1.0, val_days=0.25, test_days=0.25)
    rolling = plan_folds(timestamps, FoldSpec(**spec), lookback=LOOKBACK, horizon=HORIZON)
    expanding = plan_folds(
        timestamps, FoldSpec(**spec, window="expanding"), lookback=LOOKBACK, horizon=HORIZON
    )
    assert len(rolling) == len(expanding) == (n - (DAY_BARS * 3 // 2 + 2 * PURGE)) // (DAY_BARS // 4) + 1
    for folds in (rolling, expanding):
        for fold in folds:
            (a, b), (c, d), (e, f) = (fold.bounds[s] for s in ("train", "val", "test"))
            assert (
                a < b
                and c - b == PURGE
                and d - c == DAY_BARS // 4
                and e - d == PURGE
                and f - e == DAY_BARS // 4
            )
        tests = [fold.bounds["test"] for fold in folds]
        assert tests[-1][1] == n  # the evaluated span ends at the last row ...
        assert all(
            prev[1] == nxt[0] for prev, nxt in zip(tests, tests[1:], strict=False)
        )  # ... tiled, no overlap, no gap
    assert {f.bounds["train"][1] - f.bounds["train"][0] for f in rolling} == {DAY_BARS}
    assert [f.bounds["train"][0] for f in expanding] == [0] * len(expanding)
    assert [f.bounds["train"][1] for f in expanding] == [f.bounds["train"][1] for f in rolling]
    last_two = plan_folds(timestamps, FoldSpec(**spec, folds=2), lookback=LOOKBACK, horizon=HORIZON)
    assert [f.bounds for f in last_two] == [f.bounds for f in rolling[-2:]]

    raw = compute_features(bars).to_numpy()
    raw = raw[np.isfinite(raw).all(axis=1)]
    spike = int(np.searchsorted(timestamps, bars.frame["timestamp"].iloc[3000].value))
    spiky = int(np.argmax(np.abs(raw[spike] - raw.mean(axis=0)) / raw.std(axis=0)))  # the spike's feature
    spike_outside_train = 0
    for fold in rolling:
        data = prepare_for_config(bars, TINY, split_times=fold.split_times)
        assert data.split_bounds == fold.bounds  # the split times map back to exactly these rows
        a, b = fold.bounds["train"]
        np.testing.assert_allclose(data.scaler.mean_, raw[a:b].mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(data.scaler.scale_, raw[a:b].std(axis=0), rtol=1e-9, atol=1e-12)
        if (
            b <= spike < fold.bounds["test"][1]
        ):  # the spike in this fold's val or test: its scaler never saw it
            spike_outside_train += 1
            assert data.scaler.scale_[spiky] < 0.9 * raw[a : fold.bounds["test"][1], spiky].std()
    assert spike_outside_train


def test_bad_walkforward_input_is_one_line_before_ray(tmp_path) -> None:
    from crpbot.data.dataset import usable_timestamps
    from crpbot.data.folds import FoldSpec, plan_folds

    with pytest.raises(CrpbotError, match="unknown window kind 'sliding'"):
        FoldSpec(window="sliding")
    with pytest.raises(CrpbotError, match="would overlap"):
        FoldSpec(test_days=14, step_days=7)
    with pytest.raises(CrpbotError, match="untested gaps"):
        FoldSpec(test_days=14, step_days=21)
    with pytest.raises(CrpbotError, match="--folds 0"):
        FoldSpec(folds=0)
    _, bars = _bars(tmp_path, _bars_frame(3000))
    timestamps = usable_timestamps(bars)
    with pytest.raises(CrpbotError, match="periods longer than the data"):
        plan_folds(timestamps, FoldSpec(train_days=180), lookback=LOOKBACK, horizon=HORIZON)
    with pytest.raises(CrpbotError, match="leaves no test window"):
        plan_folds(timestamps, FoldSpec(train_days=1, val_days=0.2, test_days=0.01), lookback=60, horizon=15)
    with pytest.raises(CrpbotError, match="--folds 9 is more than fit: 3 fold"):
        spec = FoldSpec(train_days=1, val_days=0.2, test_days=0.2, folds=9)
        plan_folds(timestamps, spec, lookback=LOOKBACK, horizon=HORIZON)
    # through the command: exit 2, one line, no output directory, Ray never imported
    out = tmp_path / "wf"
    probe = (
        "import sys; from crpbot.cli import main; code = main(sys.argv[1:]); "
        "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(code)"
    )
    for extra, message in (
        (["--folds", "5"], "--folds 5 is more than fit"),
        (["--window", "sliding"], "unknown window kind"),
    ):
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                probe,
                "walkforward",
                "--coin",
                "BTC",
                "--train-days",
                "15",
                "--val-days",
                "2",
            ]
            + ["--test-days", "2", "--out", str(out), *extra],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and message in run.stderr
        assert not out.exists()


def test_planted_late_edge_shows_in_late_folds_and_reruns_train_only_missing_folds(
    ray_session, tmp_path
) -> None:
    from crpbot.data.folds import FoldSpec
    from crpbot.experiments.walkforward import run_walkforward

    # rows after warm-up ~ 6800; folds 0-1 train before the edge starts, folds 3-4 mostly after it
    path, bars = _bars(tmp_path, _bars_frame(6920, edge_from=3460))
    spec = FoldSpec(train_days=1.5, val_days=0.5, test_days=0.5, folds=5)
    out = tmp_path / "wf"

    def run():
        return run_walkforward(TINY, "BTC", spec, input_path=path, out_dir=out, log=lambda _: None)

    first = run()
    table = first.folds
    assert first.trained == [0, 1, 2, 3, 4] and list(table["status"]) == ["ok"] * 5
    accuracy = table["accuracy"].to_numpy()
    assert accuracy[:2].max() < 0.6 and table["accuracy_ci_low"][:2].min() < 0.5  # no edge learnt yet
    assert accuracy[3:].min() > 0.75  # trained on the edge: it shows
    summary = json.loads((out / "summary.json").read_text())
    pooled = summary["pooled"]
    assert (
        pooled["n"] == table["n"].sum()
        and pooled["accuracy_ci"][0] < pooled["accuracy"] < pooled["accuracy_ci"][1]
    )
    edge = summary["pooled_edge"]  # against each fold's baseline chosen on its own validation split
    assert edge["n"] == pooled["n"] and edge["ci_low"] <= edge["edge"] <= edge["ci_high"]
    net = summary["pooled_net_return_per_trade"]  # every fold's trades, pooled
    assert net["trades"] == table["trades"].sum() == summary["backtest"]["trades"]
    assert net["mean"] == pytest.approx(summary["backtest"]["net_pnl"] / net["trades"])
    assert net["ci"][0] <= net["mean"] <= net["ci"][1]
    assert set(table["best_baseline_chosen_on"]) == {"val"} and table["gate_passed_recipe"].notna().all()
    report = (out / "report.md").read_text()
    assert (out / "walkforward.png").stat().st_size > 0 and "| fold |" in report
    assert pd.read_csv(out / "folds.csv")["fold"].tolist() == [0, 1, 2, 3, 4]
    # what the report says each fold did is what it did: a temperature fitted on its own val
    assert "- each fold: its own train-only scaler, early stopping and temperature on its own val" in report
    for fold in range(5):
        evaluation = out / "folds" / str(fold) / "evaluation"
        metrics = json.loads((evaluation / "metrics.json").read_text())
        assert metrics["temperature"] != 1.0
        # a fold's evaluation draws no figures (walkforward.png is the walk-forward's) and says so
        assert not list(evaluation.glob("*.png"))
        assert "Not drawn here" in (evaluation / "report.md").read_text()

    # fold 1 killed half-way (no result.json) and now failing: reported, the others untouched
    finished = {k: (out / "folds" / str(k) / "result.json").stat().st_mtime_ns for k in (0, 2, 3, 4)}
    fold_1 = out / "folds" / "1"
    import shutil

    shutil.rmtree(fold_1)
    fold_1.write_text("not a directory: this fold cannot write its model")
    second = run()
    assert second.trained == [1]
    assert second.folds.set_index("fold")["status"].to_dict() == {
        0: "ok",
        1: "failed",
        2: "ok",
        3: "ok",
        4: "ok",
    }
    assert [f["fold"] for f in second.summary["folds_failed"]] == [1]
    assert second.summary["pooled"]["n"] == table["n"].sum() - table["n"][1]
    fold_1.unlink()
    from crpbot.data.dataset import prepare_for_config
    from crpbot.evaluation.evaluate import evaluate_model

    other = prepare_for_config(
        bars, TINY, split_times=json.loads((out / "plan.json").read_text())["folds"][2]["split_times"]
    )
    with pytest.raises(CrpbotError, match="not the model's own data"):  # fold 0's model, fold 2's data
        evaluate_model(
            out / "folds" / "0" / "model", out_dir=tmp_path / "e", prepared=other, log=lambda _: None
        )
    third = run()
    assert third.trained == [1] and list(third.folds["status"]) == ["ok"] * 5
    assert {k: (out / "folds" / str(k) / "result.json").stat().st_mtime_ns for k in finished} == finished
    with pytest.raises(CrpbotError, match="holds a walk-forward with other folds, spec"):
        run_walkforward(
            TINY,
            "BTC",
            FoldSpec(train_days=1.5, val_days=0.5, test_days=0.5, folds=4),
            input_path=path,
            out_dir=out,
        )
    with pytest.raises(CrpbotError, match="holds a walk-forward with other evaluation"):
        run_walkforward(TINY, "BTC", spec, input_path=path, out_dir=out, costs=Costs(fee_bps=5.0))


def test_a_context_walk_forward_plans_on_the_minutes_every_coin_has(ray_session, tmp_path) -> None:
    """BTC (the context) misses three minutes that ETH (the target) has, right where a fold planned
    on ETH's minutes alone starts its val/test purge: BTC's gap and warm-up then eat that purge and
    the fold cannot be prepared. Planned on the minutes both coins have, every fold runs."""
    from crpbot.data.cross_asset import ContextSpec, load_context
    from crpbot.data.dataset import prepare_for_config, usable_timestamps
    from crpbot.data.folds import FoldSpec, plan_folds
    from crpbot.experiments.walkforward import run_walkforward

    config = TINY.replace(max_epochs=1, context_coins=["BTC"], context_features=["log_ret_1"])
    spec = FoldSpec(train_days=1.0, val_days=0.25, test_days=0.25, folds=2)
    eth_path, eth = _bars(tmp_path, _bars_frame(4000, seed=0), name="ETH-USD_1m.parquet")
    eth.coin = "ETH-USD"
    target_only = plan_folds(usable_timestamps(eth), spec, lookback=LOOKBACK, horizon=HORIZON)
    purge_start = usable_timestamps(eth)[target_only[0].bounds["val"][1]]
    btc = _bars_frame(4000, seed=1)
    gap = pd.Timestamp(purge_start, tz="UTC")
    btc = btc[~btc["timestamp"].between(gap, gap + pd.Timedelta(minutes=2))]
    btc.reset_index(drop=True).to_parquet(tmp_path / "BTC-USD_1m.parquet")
    context = load_context("ETH", ContextSpec.from_config(config), eth_path)
    with pytest.raises(CrpbotError, match="closer than the purge"):
        prepare_for_config(eth, config, split_times=target_only[0].split_times, context=context)

    result = run_walkforward(
        config, "ETH", spec, input_path=eth_path, out_dir=tmp_path / "wf", log=lambda _: None
    )
    assert list(result.folds["status"]) == ["ok", "ok"], result.folds["error"].tolist()
    planned = json.loads((tmp_path / "wf" / "plan.json").read_text())["folds"]
    shared = usable_timestamps(eth, context)
    for fold in planned:  # every split boundary is a minute both coins have
        for first, last in fold["split_times"].values():
            assert np.isin([first, last], shared).all()

"""``crpbot scan`` on tiny synthetic bars: a planted signal is found, survives SPA/StepM and is
confirmed; a random walk confirms nothing; the final period is read by the confirmation only,
once, unless the user says otherwise; bad grids and inputs fail in one line before Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scan_helpers import synthetic_returns, write_bars

from crpbot.data.folds import FoldSpec
from crpbot.errors import CrpbotError
from crpbot.evaluation.gate import GateThresholds
from crpbot.experiments.scan_grid import ScanBudget, load_scan_grid

# 2 folds of 4/1/1 days before a 1.5-day final period: 10 days of bars suffice
TINY = ScanBudget("tiny", FoldSpec(train_days=4, val_days=1, test_days=1, folds=2), holdout_days=1.5, rnn={})
# the final period of a tiny set holds ~70 independent 15-minute labels: a 15-bin ECE is noise at
# that size, so the test's gate reads calibration loosely; the net-PnL criterion stays required
GATE = GateThresholds(min_accuracy=0.55, max_calibration_error=0.15, net_pnl="require")
PLANTED = "gbdt_direction_h15"


def grid_file(tmp_path: Path, grid: dict, name: str = "grid", **top) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"grid": grid, **top}))
    return path


def small_grid(tmp_path: Path, horizons: tuple[int, ...] = (15, 60)) -> Path:
    """Direction cells with a lookback of 120 (the planted column is 60-75 minutes back)."""
    overrides = {"gbdt": {"lookback": 120, "num_boost_round": 120, "min_data_in_leaf": 100}}
    grid = {"model": ["gbdt"], "target": ["direction"], "horizon": list(horizons)}
    return grid_file(tmp_path, grid, "grid-" + "-".join(map(str, horizons)), overrides=overrides)


# --- the grid and bad input: one-line errors, before Ray -------------------------------------


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({}, "grid must be a non-empty mapping"),
        ({"model": ["gbdt"], "colour": ["red"]}, "grid.colour: not a training config key"),
        ({"model": ["gbdt"], "target": ["direction", "sideways"]}, "target"),
        ({"model": ["gbdt"], "target": []}, "grid.target: expected a non-empty list"),
        ({"model": ["gbdt"], "context_coins": [["BTC"]]}, "grid.context_coins: cannot be scanned"),
        ({"model": ["rnn"], "num_leaves": [7]}, "num_leaves is not a setting of model 'rnn'"),
        ({"target": ["direction"]}, "grid.model is required"),
        ({"model": ["gbdt"], "horizon": [15, 15]}, "values must be distinct"),
    ],
)
def test_bad_grids_are_one_line_errors(tmp_path, grid, message):
    with pytest.raises(CrpbotError, match=message) as raised:
        load_scan_grid(grid_file(tmp_path, grid))
    assert "\n" not in str(raised.value)


def test_the_shipped_grids_load(tmp_path):
    repo = Path(__file__).resolve().parents[1] / "tune_configs"
    full = load_scan_grid(repo / "scan.yaml")
    assert len(full.cells) == 32 and full.max_horizon() == 240 and full.budget == "cpu"
    smoke = load_scan_grid(repo / "scan_smoke.yaml")
    assert smoke.budget == "smoke" and {c.config.model for c in smoke.cells} == {"gbdt"}


def bad_input(tmp_path: Path, **options) -> str:
    from crpbot.cli import main

    args = ["scan", "--grid", str(small_grid(tmp_path)), "--out", str(tmp_path / "out")]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return main(args)


def test_bad_inputs_fail_before_ray_in_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    write_bars(data, "BTC", days=10, strength=0.0, seed=0)
    assert bad_input(tmp_path, coins="BTC", input_dir=data, holdout_days=11) == 2
    assert "final period of 11 days (15,840 bars) is longer than BTC-USD's data" in capsys.readouterr().err
    assert bad_input(tmp_path, coins="BTC", input_dir=data, budget="smoke", holdout_days=3) == 2
    assert "leaves less than one fold before it" in capsys.readouterr().err
    late = pd.read_parquet(data / "BTC-USD_1m.parquet")
    late["timestamp"] += pd.Timedelta(days=30)
    late.to_parquet(data / "ETH-USD_1m.parquet", index=False)
    assert bad_input(tmp_path, coins="BTC,ETH", input_dir=data) == 2
    err = capsys.readouterr().err
    assert "the coins have no overlapping data" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists(), "nothing is written before the inputs are checked"


# --- the statistics, without Ray --------------------------------------------------------------


def null_differentials(seed: int, rows: int = 3000) -> np.ndarray:
    """Three cells of overlapping 15-minute labels on a random walk, each predicted by a rule with
    no skill (the sign of another walk's past move) against momentum: SPA's null holds."""
    rng = np.random.default_rng(seed)
    price = np.cumsum(rng.normal(size=rows + 120))
    columns = []
    for horizon in (5, 15, 60):
        label = price[120 + horizon :] > price[120 : len(price) - horizon]
        momentum = price[120 : len(price) - horizon] > price[120 - horizon : len(price) - 2 * horizon]
        other = np.cumsum(rng.normal(size=len(label) + horizon))
        guess = other[horizon:] > other[:-horizon]
        column = np.zeros(rows)
        column[: len(label)] = (guess == label).astype(float) - (momentum == label).astype(float)
        columns.append(column)
    return np.column_stack(columns)


def test_spa_rejects_rarely_on_noise_and_surely_on_a_planted_edge():
    from crpbot.evaluation.multiple_testing import block_length, spa_test, stepm_survivors

    block = block_length(60, 3000)
    pvalues = [spa_test(null_differentials(s), block=block, reps=100, seed=s)["consistent"] for s in range(8)]
    # the rate over 200 seeds is measured in studies/scan_null.py; here a loose bound on 8 of them
    assert sum(p < 0.05 for p in pvalues) <= 2 and np.mean(pvalues) > 0.25
    planted = null_differentials(99)
    planted[:, 1] += np.where(np.random.default_rng(5).random(3000) < 0.15, 1.0, 0.0)
    assert spa_test(planted, block=block, reps=200, seed=0)["consistent"] < 0.05
    assert stepm_survivors(planted, block=block, reps=200, seed=0) == [1]


def test_deflated_sharpe_ratio_deflates_for_the_cells_tried():
    from crpbot.evaluation.multiple_testing import deflated_sharpe_ratio, expected_max_sharpe

    returns = np.random.default_rng(0).normal(0.002, 0.01, 400)  # Sharpe per trade ~0.2
    one = deflated_sharpe_ratio(returns, trial_sharpes=[0.2], trials=1)
    many = deflated_sharpe_ratio(returns, trial_sharpes=[0.2, -0.1, 0.05, 0.15, -0.2], trials=32)
    assert one["expected_max_sharpe"] == 0.0 and many["expected_max_sharpe"] > 0.2
    assert many["dsr"] < one["dsr"] and 0.95 < one["dsr"] <= 1.0
    assert expected_max_sharpe(0.01, 100) > expected_max_sharpe(0.01, 10) > 0


def test_final_period_split_and_ledger(tmp_path):
    from crpbot.data.bars import load_bars
    from crpbot.experiments.scan_final import earlier_uses, record_use, split_final

    bars = load_bars(write_bars(tmp_path, "BTC", days=3, strength=0.0, seed=0))
    development, final = split_final(bars, 1, "BTC-USD")
    assert len(development) == 2 * 1440 and final.rows == 1440
    assert final.start_ns > development.frame["timestamp"].iloc[-1].value
    ledger = tmp_path / "ledger.jsonl"
    record_use(ledger, final, tmp_path / "scan-a", "cell", reused=False)
    assert earlier_uses(ledger, final, tmp_path / "scan-a", "cell") == [], "its own confirmation resumes"
    assert len(earlier_uses(ledger, final, tmp_path / "scan-b", "cell")) == 1
    _, shorter = split_final(bars, 0.5, "BTC-USD")  # another fingerprint, overlapping minutes
    assert shorter.fingerprint != final.fingerprint and earlier_uses(ledger, shorter, tmp_path / "b", "c")


# --- scans on Ray --------------------------------------------------------------------------------


def scan(tmp_path: Path, data: Path, out: str, ledger: Path, horizons=(15, 60), **options):
    """A scan of the small grid; one cell (``horizons=(15,)``) where the test needs no ranking."""
    from crpbot.experiments.scan import run_scan

    return run_scan(
        load_scan_grid(small_grid(tmp_path, horizons)),
        ["BTC"],
        input_dir=data,
        budget=TINY,
        out_dir=tmp_path / out,
        thresholds=GATE,
        ledger=ledger,
        reps=300,
        log=lambda _: None,
        **options,
    )


@pytest.fixture(scope="module")
def planted(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    data = root / "data"
    write_bars(data, "BTC", days=10, strength=0.4, seed=3)
    return root, data, scan(root, data, "scan", root / "ledger.jsonl")


@pytest.mark.ray
def test_a_planted_signal_is_ranked_first_survives_and_is_confirmed(planted, tmp_path):
    from crpbot.registry.local import promote

    _, _, result = planted
    scan_json = result.scan
    assert scan_json["ranking"]["BTC-USD"][0]["cell"] == PLANTED
    assert scan_json["spa_p_value"]["BTC-USD"] < 0.05
    assert PLANTED in scan_json["stepm_survivors"]["BTC-USD"]
    confirmation = scan_json["confirmation"]["BTC-USD"]
    assert confirmation["cell"] == PLANTED and confirmation["status"] == "passed", confirmation
    assert confirmation["net_per_trade_ci_low"] > 0
    row = result.cells.set_index("cell").loc[PLANTED]
    assert row["rank"] == 1 and row["stepm_survivor"] and row["edge_ci_low"] > 0
    assert set(result.cells["cell"]) == {PLANTED, "gbdt_direction_h60"}
    saved = json.loads((result.out_dir / "scan.json").read_text())
    assert saved["final_period"]["BTC-USD"]["rows"] == int(1.5 * 1440)
    assert (result.out_dir / "scan.png").stat().st_size > 0
    assert len(pd.read_parquet(result.out_dir / "differentials" / "BTC.parquet")) == 2 * 1440
    promoted = promote(confirmation["artifact"], "BTC", root=tmp_path / "registry")
    assert promoted.new


@pytest.mark.ray
def test_the_final_period_is_read_by_the_confirmation_only_and_only_once(planted):
    root, data, clean = planted
    poisoned = root / "poisoned"
    frame = pd.read_parquet(data / "BTC-USD_1m.parquet")
    final = int(1.5 * 1440)
    noise = synthetic_returns(final, strength=0.0, seed=77)
    tail = frame.index >= len(frame) - final  # only the final period's bars change
    close = frame["close"].iloc[-final - 1] * np.exp(np.cumsum(noise))
    frame.loc[tail, "close"] = close
    frame.loc[tail, "open"] = np.r_[frame["close"].iloc[-final - 1], close[:-1]]
    frame.loc[tail, "high"] = frame.loc[tail, ["open", "close"]].max(axis=1) * 1.0002
    frame.loc[tail, "low"] = frame.loc[tail, ["open", "close"]].min(axis=1) * 0.9998
    poisoned.mkdir()
    frame.to_parquet(poisoned / "BTC-USD_1m.parquet", index=False)

    again = scan(root, poisoned, "scan-poisoned", root / "ledger.jsonl")
    stable = [c for c in clean.cells.columns if c not in ("out_dir", "seconds_folds")]
    pd.testing.assert_frame_equal(clean.cells[stable], again.cells[stable])
    for key in ("spa", "stepm_survivors", "ranking", "folds"):
        assert again.scan[key] == clean.scan[key]
    differentials = [pd.read_parquet(r.out_dir / "differentials" / "BTC.parquet") for r in (clean, again)]
    pd.testing.assert_frame_equal(*differentials)
    before, after = clean.scan["final_period"]["BTC-USD"], again.scan["final_period"]["BTC-USD"]
    assert before["development_fingerprint"] == after["development_fingerprint"]
    assert before["fingerprint"] != after["fingerprint"]
    # the same minutes were scored by the first scan's confirmation: refused, exit status 1
    assert again.scan["confirmation"]["BTC-USD"]["status"] == "refused" and again.failed
    reused = scan(root, poisoned, "scan-poisoned", root / "ledger.jsonl", reuse_final=True)
    confirmation = reused.scan["confirmation"]["BTC-USD"]
    assert confirmation["reused_final"] and confirmation["status"] == "failed the gate"
    assert (reused.out_dir / "report.md").read_text().startswith("**WARNING: the final period was reused")


@pytest.mark.ray
def test_a_random_walk_confirms_nothing(ray_session, tmp_path):
    data = tmp_path / "data"
    write_bars(data, "BTC", days=10, strength=0.0, seed=11)
    result = scan(tmp_path, data, "scan", tmp_path / "ledger.jsonl", horizons=(15,))
    assert result.scan["stepm_survivors"]["BTC-USD"] == []
    assert result.scan["confirmation"]["BTC-USD"] is None and not (tmp_path / "ledger.jsonl").exists()
    assert result.scan["spa_p_value"]["BTC-USD"] > 0.05

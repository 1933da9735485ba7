"""Cross-asset context: strict timestamp alignment, recorded context, checked inputs, a learned lead-lag.

Synthetic bars written as real Parquet files; the model is the real network trained by ``fit``
(no Ray needed: the loop is the one Ray Train and Tune run), and evaluation is the real one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from search_helpers import best_trial, last_state, lowest_val_loss, trial_dirs

from crpbot.cli import main
from crpbot.config import TrainConfig, load_config, save_config
from crpbot.data.bars import load_bars
from crpbot.data.cross_asset import ContextSpec, load_context, parse_context_inputs, select_context
from crpbot.data.dataset import load_prepared, prepare_data
from crpbot.data.features import FEATURE_NAMES, compute_features
from crpbot.data.folds import FoldSpec
from crpbot.errors import CrpbotError
from crpbot.evaluation.evaluate import evaluate_model
from crpbot.experiments.walkforward import run_walkforward
from crpbot.model.fit import fit
from crpbot.model.inference import predict_proba, save_model_artifact
from crpbot.model.network import build_model
from crpbot.model.predictor import load_predictor
from crpbot.model.serving import LiveModel
from crpbot.search.space import load_search_space
from crpbot.search.tune import run_search

REPO = Path(__file__).resolve().parents[1]

START = pd.Timestamp("2024-01-01", tz="UTC")
TINY = TrainConfig(
    hidden_size=8,
    num_layers=1,
    dropout=0.0,
    bidirectional=False,
    head_hidden=8,
    lookback=5,
    horizon=1,
    max_train_windows=2048,
    batch_size=128,
    lr=1e-2,
    max_epochs=2,
    patience=2,
    seed=0,
)


def _bars(returns: np.ndarray, start: pd.Timestamp = START, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    """Valid 1-minute OHLCV bars whose close-to-close log returns are ``returns``; rows ``drop`` removed."""
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.r_[100.0, close[:-1]]
    rng = np.random.default_rng(len(returns))
    frame = pd.DataFrame(
        {
            "timestamp": start + pd.to_timedelta(np.arange(len(returns)), unit="min"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0005,
            "low": np.minimum(open_, close) * 0.9995,
            "close": close,
            "volume": rng.uniform(1.0, 2.0, len(returns)),
        }
    )
    return frame.drop(index=list(drop)).reset_index(drop=True)


def _write(directory, coin: str, frame: pd.DataFrame):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{coin}-USD_1m.parquet"
    frame.to_parquet(path)
    return path


def test_alignment_is_strict_by_timestamp_and_a_context_gap_splits_segments(tmp_path) -> None:
    rng = np.random.default_rng(1)
    n = 1500
    missing_btc, missing_eth = 700, 1100  # minutes only one coin lacks
    eth = _write(tmp_path, "ETH", _bars(rng.normal(0, 1e-3, n), drop=(missing_eth,)))
    _write(tmp_path, "BTC", _bars(rng.normal(0, 1e-3, n), drop=(missing_btc,)))
    target = load_bars(eth)
    target.coin = "ETH-USD"
    spec = ContextSpec.from_names(["BTC"])
    context = load_context("ETH", spec, eth)
    data = prepare_data(target, lookback=10, horizon=5, context=context)

    minute = 60 * 10**9
    assert data.feature_names == FEATURE_NAMES + spec.column_names()
    assert (np.diff(data.timestamps) >= minute).all()
    rows_at = {int(ts): i for i, ts in enumerate(data.timestamps)}
    gap_btc, gap_eth = (int((START + pd.Timedelta(minutes=m)).value) for m in (missing_btc, missing_eth))
    assert gap_btc not in rows_at and gap_eth not in rows_at  # a row only where both coins have the bar
    # BTC's warm-up restarts after its gap, and those rows are dropped too: the next row is a new segment
    after = min(ts for ts in rows_at if ts > gap_btc)
    before = max(ts for ts in rows_at if ts < gap_btc)
    assert data.segment_ids[rows_at[after]] != data.segment_ids[rows_at[before]]
    assert after - gap_btc > 100 * minute  # the context coin's own warm-up, not bridged
    for split in ("train", "val", "test"):  # no window or label row spans the gap
        ends = data.window_ends(split, 10)
        first, last = data.timestamps[ends - 9], data.timestamps[ends + 5]
        assert not ((first < gap_btc) & (last > gap_btc)).any()

    # never shifted: each context column is BTC's own feature at the row's own minute (planted returns)
    unscaled = data.features.astype(np.float64) * data.scaler.scale_ + data.scaler.mean_
    own = compute_features(context.bars["BTC-USD"])
    own.index = context.bars["BTC-USD"].frame["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")
    column = data.feature_names.index("BTC-USD:log_ret_1")
    expected = own["log_ret_1"].reindex(data.timestamps).to_numpy()
    np.testing.assert_allclose(unscaled[:, column], expected, rtol=1e-4, atol=1e-7)
    shifted = own["log_ret_1"].reindex(data.timestamps - minute).to_numpy()
    assert not np.allclose(unscaled[:, column], shifted, rtol=1e-4, atol=1e-7)

    # a search's trial without context keeps the same rows and drops only the columns
    plain = select_context(data, ContextSpec())
    assert plain.feature_names == FEATURE_NAMES and len(plain) == len(data)
    np.testing.assert_array_equal(plain.features, data.features[:, : len(FEATURE_NAMES)])


def test_bad_context_inputs_are_one_line_errors_before_ray(tmp_path, capsys) -> None:
    rng = np.random.default_rng(2)
    eth = _write(tmp_path / "now", "ETH", _bars(rng.normal(0, 1e-3, 600)))
    _write(tmp_path / "now", "BTC", _bars(rng.normal(0, 1e-3, 600), start=START + pd.Timedelta(days=30)))
    config = tmp_path / "context.yaml"

    def train(context_coins: list[str], *extra: str) -> str:
        save_config(TINY.replace(context_coins=context_coins), config)
        argv = ["train", "--coin", "ETH", "--config", str(config), "--input", str(eth), *extra]
        assert main([*argv, "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("crpbot: error: ") and err.count("\n") == 1
        assert not (tmp_path / "never").exists()
        return err

    assert "unknown coin 'DOGE'" in train(["DOGE"])
    assert "ETH-USD is the coin being modelled" in train(["ETH"])
    assert "context coin BTC-USD: BTC-USD_1m.parquet" in train(["BTC"])
    assert "does not overlap" in train(["BTC"])
    assert "bars missing" in train(["SOL"])
    assert "pass --context-input SOL=FILE" in train(["SOL"])
    assert "expected COIN=FILE" in train(["BTC"], "--context-input", "BTC")
    assert "context coins: none" in train([], "--context-input", f"BTC={eth}")
    with pytest.raises(CrpbotError, match="given twice"):
        parse_context_inputs(["BTC=a.parquet", "btc-usd=b.parquet"])
    with pytest.raises(CrpbotError, match="context_coins.*BTC is also one of the global model's coins"):
        TINY.replace(coins=["BTC", "ETH", "SOL"], context_coins=["BTC"])
    # the walk-forward checks a contender's context before Ray too
    with pytest.raises(CrpbotError, match="context coin SOL-USD: bars missing"):
        run_walkforward(
            TINY.replace(context_coins=["SOL"]), "ETH", FoldSpec(), input_path=eth, out_dir=tmp_path / "wf"
        )
    assert not (tmp_path / "wf").exists()


@pytest.fixture(scope="module")
def lead_lag(tmp_path_factory):
    """ETH's next one-minute return copies BTC's return of this minute (plus noise): only a model
    that sees BTC's bars can call ETH's next move; ETH's own past says nothing about it."""
    rng = np.random.default_rng(3)
    n = 6000
    btc_returns = rng.normal(0, 1e-3, n)
    eth_returns = np.r_[0.0, btc_returns[:-1]] + rng.normal(0, 5e-4, n)
    directory = tmp_path_factory.mktemp("lead_lag")
    return {
        "ETH": _write(directory, "ETH", _bars(eth_returns)),
        "BTC": _write(directory, "BTC", _bars(btc_returns)),
        "dir": directory,
    }


def _test_accuracy(config: TrainConfig, eth_path) -> tuple[float, object, object]:
    data = load_prepared("ETH", eth_path, config)
    result = fit(config, data, log=lambda _: None)
    model = build_model(config, data.features.shape[1])
    model.load_state_dict(result.best_state)
    ends, probs = predict_proba(model, data, "test", config.lookback)
    return float(np.mean((probs >= 0.5) == (data.labels[ends] == 1))), data, result


def test_planted_lead_lag_is_learned_with_context_and_not_without(lead_lag, tmp_path) -> None:
    alone, _, _ = _test_accuracy(TINY, lead_lag["ETH"])
    context_config = TINY.replace(context_coins=["BTC"], context_features=["log_ret_1", "log_ret_5"])
    with_btc, data, result = _test_accuracy(context_config, lead_lag["ETH"])
    # the noise leaves ~85% callable; ~850 test windows put chance within about +-3.5 points of 50%
    assert with_btc > 0.7, with_btc
    assert alone < 0.57, alone

    # the artifact records the context, and evaluation requires it
    artifact = save_model_artifact(
        tmp_path / "model",
        model_state=result.best_state,
        config=context_config,
        data=data,
        history=result.history,
        best_epoch=result.best_epoch,
        input_path=lead_lag["ETH"],
    )
    record = json.loads((artifact / "config.json").read_text())["context"]
    assert record["coins"] == ["BTC-USD"] and record["columns"] == ["BTC-USD:log_ret_1", "BTC-USD:log_ret_5"]
    assert record["inputs"]["BTC-USD"]["fingerprint"] == data.context["BTC-USD"]["fingerprint"]
    scored = evaluate_model(artifact, out_dir=tmp_path / "eval", log=lambda _: None)
    assert scored.metrics["accuracy"] > 0.7

    # served live, with BTC's latest bars, it gives evaluation's P(up); without them, or misaligned, none
    eth_bars, btc_bars = (pd.read_parquet(lead_lag[coin]).iloc[:-1] for coin in ("ETH", "BTC"))
    live = LiveModel.load(artifact)
    served = live.predict(eth_bars, context={"BTC": btc_bars}, last=3, max_staleness=None)
    evaluated = pd.read_parquet(scored.out_dir / "predictions.parquet").set_index("timestamp")
    for prediction in served:
        assert prediction.prob_up == pytest.approx(evaluated.loc[prediction.timestamp, "prob_up"], abs=1e-5)
    with pytest.raises(CrpbotError, match="uses context coins BTC-USD; got context bars of none"):
        live.predict(eth_bars, max_staleness=None)
    with pytest.raises(CrpbotError, match="context coin BTC-USD: latest bar .* is not ETH-USD's latest"):
        live.predict(eth_bars, context={"BTC": btc_bars.iloc[:-1]}, max_staleness=None)

    predictor = load_predictor(artifact)
    without = load_prepared("ETH", lead_lag["ETH"], TINY)
    with pytest.raises(CrpbotError, match="needs context bars of BTC-USD, its input has none"):
        predictor.predictions(without, "test")

    moved = tmp_path / "moved"
    shutil.move(lead_lag["BTC"], moved)  # the recorded BTC file is gone
    try:
        with pytest.raises(CrpbotError, match=r"context coin BTC-USD: bars missing .* not found"):
            evaluate_model(artifact, out_dir=tmp_path / "eval2", log=lambda _: None)
        other = _write(tmp_path / "other", "BTC", _bars(np.random.default_rng(4).normal(0, 1e-3, 6000)))
        with pytest.raises(CrpbotError, match="BTC-USD: .* not the data the model was trained with"):
            evaluate_model(
                artifact, context_inputs={"BTC": other}, out_dir=tmp_path / "eval3", log=lambda _: None
            )
        # new data to score: its context is looked up beside it, and must be there
        fresh = _write(tmp_path / "fresh", "ETH", _bars(np.zeros(300), start=START + pd.Timedelta(days=60)))
        with pytest.raises(CrpbotError, match="bars missing .beside the input"):
            evaluate_model(artifact, input_path=fresh, out_dir=tmp_path / "eval4", log=lambda _: None)
    finally:
        shutil.move(moved, lead_lag["BTC"])
    assert not any((tmp_path / name).exists() for name in ("eval2", "eval3", "eval4"))


def test_context_search_space_validates_and_labels_its_choices(tmp_path) -> None:
    space = load_search_space(REPO / "tune_configs" / "context_search.yaml")
    dims = {dim.key: dim for dim in space.dimensions}
    assert dims["context_coins"].choices() == ["none", "BTC"]  # Optuna takes str choices, not lists
    assert space.trial_config({"context_coins": "BTC"}).context_coins == ["BTC"]
    assert space.trial_config({"context_coins": "none"}).context_coins == []
    assert space.data_config().context_coins == ["BTC-USD"]  # every trial's rows aligned on BTC
    raw = yaml.safe_load((REPO / "tune_configs" / "context_search.yaml").read_text())
    for key, spec, message in (
        ("context_coins", {"choice": [[], ["DOGE"]]}, "space.context_coins: context_coins: unknown coin"),
        (
            "context_features",
            {"choice": ["all", ["log_ret_1"]]},
            "space.context_features: cannot be searched",
        ),
    ):
        path = tmp_path / f"{key}.yaml"
        path.write_text(
            yaml.safe_dump({**raw, "base": str(REPO / "tune_configs" / "smoke.yaml"), "space": {key: spec}})
        )
        with pytest.raises(CrpbotError, match=message):
            load_search_space(path)
    path = tmp_path / "global.yaml"  # global and context in one search: refused, not half-built
    path.write_text(
        yaml.safe_dump(
            {
                **raw,
                "base": str(REPO / "tune_configs" / "smoke.yaml"),
                "space": {**raw["space"], "coins": {"choice": [[], ["ETH", "SOL"]]}},
            }
        )
    )
    with pytest.raises(CrpbotError, match="global models with context coins is not supported"):
        load_search_space(path)


@pytest.mark.ray
def test_search_over_context_coins_runs_both_choices_on_shared_rows(ray_session, tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "tune_configs" / "smoke.yaml"),
                "overrides": {"max_train_windows": 256, "lookback": 10, "hidden_size": 4},
                "budget": {"num_samples": 2, "max_epochs": 1},
                "space": {"context_coins": {"choice": [[], ["BTC"]]}},
            }
        )
    )
    # BTC lacks five 3-minute stretches of ETH's later bars (each also costs BTC's warm-up): a trial
    # that validated on ETH's own rows would score other rows than the shared ones
    from crpbot.data.bars import default_input

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "ETH-USD_1m.parquet").symlink_to(default_input("ETH"))
    btc = pd.read_parquet(default_input("BTC"))
    holes = np.concatenate([np.arange(start, start + 3) for start in range(21_500, 25_000, 700)])
    btc.drop(index=btc.index[holes]).to_parquet(inputs / "BTC-USD_1m.parquet")
    result = run_search(
        load_search_space(path),
        "ETH",
        input_path=inputs / "ETH-USD_1m.parquet",
        storage=tmp_path / "runs",
        name="context",
        exhaustive=True,
        progress=False,
        log=lambda _: None,
    )
    table = result.table
    assert sorted(table["context_coins"]) == ["BTC", "none"] and (table["status"] != "error").all()
    best = table.set_index("trial_id").loc[best_trial(result.experiment_path), "context_coins"]
    assert load_config(result.best_yaml).context_coins == ([] if best == "none" else ["BTC"])

    # same validation rows for every trial: each trial's reported val loss is recomputed from its
    # checkpoint on the search's shared rows (only minutes BTC has too), with its own columns
    import torch

    from crpbot.model.fit import positive_weight
    from crpbot.model.inference import predict_windows

    torch.set_num_threads(1)
    space = load_search_space(path)
    shared = load_prepared("ETH", inputs / "ETH-USD_1m.parquet", space.data_config())
    alone = load_prepared("ETH", inputs / "ETH-USD_1m.parquet", space.data_config().replace(context_coins=[]))
    assert len(alone.window_ends("val", 10)) != len(shared.window_ends("val", 10))  # other rows
    losses, stamps = lowest_val_loss(result.experiment_path), []
    for trial_id, directory in trial_dirs(result.experiment_path).items():
        choice = table.set_index("trial_id").loc[trial_id, "context_coins"]
        config = space.trial_config({"context_coins": choice})
        data = select_context(shared, ContextSpec.from_config(config))
        ends = data.window_ends("val", config.lookback)
        stamps.append(data.timestamps[ends])
        model = build_model(config, data.features.shape[1])
        model.load_state_dict(last_state(directory)["best_state"])
        up = predict_windows(model, data.features, ends, config.lookback).astype(np.float64)
        labels, weight = data.labels[ends].astype(np.float64), positive_weight(data, config.lookback)
        loss = -np.mean(weight * labels * np.log(up) + (1 - labels) * np.log1p(-up))
        assert loss == pytest.approx(losses[trial_id], rel=1e-4), (choice, loss, losses[trial_id])
    np.testing.assert_array_equal(*stamps)


def test_a_global_model_with_btc_context_learns_the_lead_and_checks_its_inputs(tmp_path) -> None:
    """ETH's and SOL's next returns copy BTC's return of this minute: one global model of ETH and
    SOL with BTC's context calls both, the plain global model neither. The minute BTC lacks is
    dropped from both coins; the artifact records the context, a coin's evaluation rebuilds it, live
    serving needs BTC's bars, and data without BTC's columns is refused."""
    from crpbot.data.multicoin import coin_inputs, prepare_coins

    rng = np.random.default_rng(5)
    n, missing = 6000, 3000
    btc = rng.normal(0, 1e-3, n)
    directory = tmp_path / "bars"
    _write(directory, "BTC", _bars(btc, drop=(missing,)))
    for coin in ("ETH", "SOL"):
        _write(directory, coin, _bars(np.r_[0.0, btc[:-1]] + rng.normal(0, 5e-4, n)))
    plain = TINY.replace(coins=["ETH", "SOL"], max_epochs=3, patience=3)
    config = plain.replace(context_coins=["BTC"], context_features=["log_ret_1", "log_ret_5"])
    inputs = coin_inputs(config.coins, directory)
    accuracy, prepared = {}, {}
    for name, recipe in (("plain", plain), ("context", config)):
        data = prepared[name] = prepare_coins(recipe, inputs)
        result = fit(recipe, data, log=lambda _: None)
        model = build_model(recipe, data.features.shape[1])
        model.load_state_dict(result.best_state)
        ends, probs = predict_proba(model, data, "test", recipe.lookback)  # both coins' test windows
        accuracy[name] = float(np.mean((probs >= 0.5) == (data.labels[ends] == 1)))
    assert accuracy["context"] > 0.7 and accuracy["plain"] < 0.57, accuracy

    data = prepared["context"]
    assert data.feature_names[-2:] == ("BTC-USD:log_ret_1", "BTC-USD:log_ret_5")
    gap = START + pd.Timedelta(minutes=missing)
    for coin in data.coins:  # strict alignment: BTC's missing minute is no row of either coin
        assert gap.value not in data.part(coin).timestamps
        assert gap.value in prepared["plain"].part(coin).timestamps
    artifact = save_model_artifact(
        tmp_path / "model",
        model_state=result.best_state,
        config=config,
        data=data,
        history=result.history,
        best_epoch=result.best_epoch,
        input_path=None,
    )
    record = json.loads((artifact / "config.json").read_text())["context"]
    assert record["coins"] == ["BTC-USD"] and set(record["inputs"]) == {"BTC-USD"}
    # SOL's evaluation (the second coin) rebuilds its rows with BTC's recorded file and checks them
    scored = evaluate_model(artifact, coin="SOL", out_dir=tmp_path / "sol", log=lambda _: None)
    assert scored.metrics["accuracy"] > 0.7, scored.metrics["accuracy"]
    with pytest.raises(CrpbotError, match="needs context bars of BTC-USD, its input has none"):
        load_predictor(artifact, "SOL").predictions(prepared["plain"].part("SOL"), "test")
    # served live for SOL with BTC's latest bars: evaluation's P(up); without them, refused
    sol_bars, btc_bars = (
        pd.read_parquet(directory / f"{coin}-USD_1m.parquet").iloc[:-1] for coin in ("SOL", "BTC")
    )
    live = LiveModel.load(artifact, coin="SOL")
    evaluated = pd.read_parquet(scored.out_dir / "predictions.parquet").set_index("timestamp")
    for prediction in live.predict(sol_bars, context={"BTC": btc_bars}, last=2, max_staleness=None):
        assert prediction.prob_up == pytest.approx(evaluated.loc[prediction.timestamp, "prob_up"], abs=1e-5)
    with pytest.raises(CrpbotError, match="uses context coins BTC-USD; got context bars of none"):
        live.predict(sol_bars, max_staleness=None)

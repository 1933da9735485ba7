"""One model for several coins: shared cut times, the coin embedding, per-coin evaluation and
promotion, refusals, and the coins' arrays shared zero-copy through the object store."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from search_helpers import best_trial

from crpbot.cli import main
from crpbot.config import CONFIG_DIR, TrainConfig, load_config
from crpbot.data.dataset import SPLITS
from crpbot.data.multicoin import MultiCoinData, coin_inputs, prepare_coins
from crpbot.data.scaler import Scaler
from crpbot.data.targets import Target
from crpbot.errors import CrpbotError
from crpbot.evaluation.evaluate import evaluate_model
from crpbot.model.fit import fit
from crpbot.model.inference import predict_proba, save_model_artifact
from crpbot.model.network import build_model
from crpbot.model.predictor import load_predictor
from crpbot.registry.local import current_path, promote

SMOKE = CONFIG_DIR / "smoke.yaml"
REPO_SPACE = CONFIG_DIR / "global_search.yaml"
MINUTE_NS = 60 * 1_000_000_000
GLOBAL = load_config(SMOKE).replace(max_epochs=1, max_train_windows=512, coins=["BTC", "ETH"])


@pytest.fixture(scope="module")
def two_coins() -> MultiCoinData:
    return prepare_coins(GLOBAL, coin_inputs(GLOBAL.coins))


def _write_rows(source, target, rows: slice) -> None:
    frame = pd.read_parquet(source)
    frame.iloc[rows].to_parquet(target, index=False)


def test_global_splits_share_cut_times_across_coins(tmp_path, sample_path) -> None:
    """ETH starts later: the cuts come from the common period, and for every pair of coins one
    coin's train windows and labels end before any other coin's val window starts (val/test too)."""
    for coin in ("BTC", "SOL"):
        shutil.copy(sample_path(coin), tmp_path / f"{coin}-USD_1m.parquet")
    n_rows = len(pd.read_parquet(sample_path("ETH")))
    _write_rows(sample_path("ETH"), tmp_path / "ETH-USD_1m.parquet", slice(n_rows * 2 // 5, None))
    config = GLOBAL.replace(coins=["BTC", "ETH", "SOL"])
    data = prepare_coins(config, coin_inputs(config.coins, tmp_path))
    cuts = data.split_times()
    eth = data.part("ETH")
    assert cuts["train"][0] == eth.timestamps[0]  # BTC's and SOL's earlier rows are in no split
    lookback, horizon = GLOBAL.lookback, GLOBAL.horizon
    spans = {}  # split -> (earliest bar any window reads, latest label row), over every coin
    for coin in data.coins:
        part = data.part(coin)
        assert np.shares_memory(part.features, data.features)  # a view, not a copy
        for split in SPLITS:
            first, last = cuts[split]
            ends = part.window_ends(split, lookback)
            starts, label_rows = part.timestamps[ends - lookback + 1], part.timestamps[ends + horizon]
            assert starts.min() >= first and label_rows.max() <= last, (coin, split)
            low, high = spans.get(split, (starts.min(), label_rows.max()))
            spans[split] = (min(low, starts.min()), max(high, label_rows.max()))
    assert spans["train"][1] < spans["val"][0] and spans["val"][1] < spans["test"][0]
    # the stored split of one coin, as evaluation rebuilds it, is the same rows as in training
    from crpbot.data.bars import load_bars
    from crpbot.data.dataset import prepare_for_config

    bars = load_bars(tmp_path / "ETH-USD_1m.parquet")
    again = prepare_for_config(bars, GLOBAL, scaler=eth.scaler, split_times=cuts)
    np.testing.assert_array_equal(again.features, eth.features)
    assert again.split_bounds == eth.split_bounds
    # a walk-forward fold's cut times are taken as given, for every coin
    later = {**cuts, "test": (cuts["test"][0] + 100 * MINUTE_NS, cuts["test"][1])}
    refit = prepare_coins(config, coin_inputs(config.coins, tmp_path), split_times=later)
    assert refit.split_times() == later
    for coin in refit.coins:
        ends = refit.part(coin).window_ends("test", lookback)
        assert refit.part(coin).timestamps[ends - lookback + 1].min() >= later["test"][0]


def test_global_bad_input_is_one_line_before_ray(tmp_path, sample_path, capsys) -> None:
    for coins, problem in ((["BTC"], "at least two coins"), (["BTC", "btc-usd"], "names a coin twice")):
        with pytest.raises(CrpbotError, match=problem):
            GLOBAL.replace(coins=coins)
    with pytest.raises(CrpbotError, match="unknown coin 'DOGE'"):
        coin_inputs(["BTC", "DOGE"])
    # coins whose bars do not overlap in time
    n_rows = len(pd.read_parquet(sample_path("BTC")))
    _write_rows(sample_path("BTC"), tmp_path / "BTC-USD_1m.parquet", slice(0, n_rows // 3))
    _write_rows(sample_path("ETH"), tmp_path / "ETH-USD_1m.parquet", slice(n_rows // 2, None))
    with pytest.raises(CrpbotError, match="do not overlap in time"):
        prepare_coins(GLOBAL, coin_inputs(GLOBAL.coins, tmp_path))
    # through the CLI: exit 2 and one line, before Ray starts (the coin check precedes init_ray)
    config = tmp_path / "global.yaml"
    config.write_text(SMOKE.read_text() + "coins: [BTC, DOGE]\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "DOGE" in err and len(err.strip().splitlines()) == 1
    config.write_text(SMOKE.read_text() + "coins: [BTC, ETH]\n")
    assert main(["train", "--coin", "BTC", "--config", str(config), "--out", str(tmp_path / "m")]) == 2
    assert "global model" in capsys.readouterr().err
    assert main(["ensemble", "--coin", "BTC", "--config", str(config), "--out", str(tmp_path / "m")]) == 2
    assert "global model" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def _planted_sign_flip(n_per_coin: int = 800, seed: int = 0) -> MultiCoinData:
    """Two coins with the same features; the label is up when feature 0 > 0 for the first coin
    and when it is < 0 for the second. Without knowing the coin nothing beats a coin flip."""
    rng = np.random.default_rng(seed)
    coins = ("BTC-USD", "ETH-USD")
    n = 2 * n_per_coin
    features = rng.standard_normal((n, 2)).astype(np.float32)
    coin_ids = np.repeat(np.arange(2, dtype=np.int32), n_per_coin)
    up = features[:, 0] > 0
    labels = np.where(coin_ids == 0, up, ~up).astype(np.float32)
    purge = 3  # lookback 2 + horizon 1
    train_end, val_end = int(n_per_coin * 0.6), int(n_per_coin * 0.8)
    bounds = {
        "train": (0, train_end),
        "val": (train_end + purge, val_end),
        "test": (val_end + purge, n_per_coin),
    }
    minutes = np.arange(n_per_coin, dtype=np.int64) * MINUTE_NS
    return MultiCoinData(
        coins=coins,
        timestamps=np.tile(minutes, 2),
        features=features,
        labels=labels,
        forward_returns=(labels * 2 - 1).astype(np.float64) * 1e-3,
        segment_ids=coin_ids.copy(),
        coin_ids=coin_ids,
        offsets=np.array([0, n_per_coin, n], dtype=np.int64),
        split_bounds=(bounds, bounds),
        shared_split_times={
            split: (int(minutes[a]), int(minutes[b - 1])) for split, (a, b) in bounds.items()
        },
        horizon=1,
        purge=purge,
        scalers=(Scaler(np.zeros(2), np.ones(2)),) * 2,
        fingerprints=("planted-btc", "planted-eth"),
        input_paths=("", ""),
        feature_names=("x0", "x1"),
        target=Target(horizon=1),
    )


def test_the_coin_embedding_learns_a_per_coin_sign_flip() -> None:
    torch.set_num_threads(1)
    data = _planted_sign_flip()
    base = TrainConfig(
        cell="gru",
        hidden_size=16,
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
        head_hidden=16,
        lookback=2,
        horizon=1,
        lr=0.01,
        batch_size=32,
        max_epochs=4,
        patience=4,
        coins=["BTC", "ETH"],
    )
    accuracy = {}
    for width in (4, 0):
        config = base.replace(coin_embedding=width)
        result = fit(config, data, log=lambda _: None)
        model = build_model(config, 2)
        model.load_state_dict(result.best_state)
        ends, probs = predict_proba(model, data, "test", config.lookback)
        accuracy[width] = float(np.mean((probs >= 0.5) == (data.labels[ends] == 1)))
    assert accuracy[4] > 0.85, accuracy
    assert accuracy[0] < 0.6, accuracy


def test_a_global_artifact_is_evaluated_served_and_promoted_per_coin(
    tmp_path, capsys, two_coins, sample_path
) -> None:
    torch.set_num_threads(1)
    config, data = GLOBAL, two_coins
    result = fit(config, data, log=lambda _: None)
    artifact = save_model_artifact(
        tmp_path / "global",
        model_state=result.best_state,
        config=config,
        data=data,
        history=result.history,
        best_epoch=result.best_epoch,
        input_path=None,
    )
    recorded = json.loads((artifact / "config.json").read_text())
    assert recorded["coins"] == ["BTC-USD", "ETH-USD"] and "coin" not in recorded

    evaluation = evaluate_model(artifact, coin="eth", out_dir=tmp_path / "eval-eth", log=lambda _: None)
    assert evaluation.metrics["coin"] == "ETH-USD"
    # what evaluation scored is ETH's own test windows, with ETH's scaler and ETH's embedding
    scored = pd.read_parquet(tmp_path / "eval-eth" / "predictions.parquet")
    predictor = load_predictor(artifact, "ETH")
    eth = data.part("ETH")
    ends, probs = predict_proba(
        predictor.models[0],
        eth,
        "test",
        config.lookback,
        logit_offset=predictor.logit_offsets[0],
        coin_index=1,
    )
    np.testing.assert_allclose(scored["prob_up"].to_numpy(), probs, rtol=1e-6)
    _, as_btc = predict_proba(
        predictor.models[0],
        eth,
        "test",
        config.lookback,
        logit_offset=predictor.logit_offsets[0],
        coin_index=0,
    )
    assert not np.allclose(as_btc, probs)  # the coin index reaches the network
    # each coin's familiarity, fitted on its own train rows as its scaler: ETH's flags, in the file
    eth_flags = predictor.familiar_at(eth.features, ends)
    np.testing.assert_array_equal(scored["familiar"].to_numpy(), eth_flags)
    assert predictor.familiarity.threshold != load_predictor(artifact, "BTC").familiarity.threshold

    # live prediction of ETH with the global model: the probability evaluation gave those rows
    import dataclasses

    from crpbot.data.bars import load_bars
    from crpbot.model.serving import LiveModel

    bars = load_bars(sample_path("ETH"))
    live = LiveModel.load(artifact, coin="ETH")
    rows = pd.Index(bars.frame["timestamp"]).get_indexer(scored["timestamp"])
    for i in (0, len(scored) // 2, len(scored) - 1):
        t = rows[i]
        head = dataclasses.replace(
            bars, frame=bars.frame.iloc[: t + 1], segment_ids=bars.segment_ids[: t + 1]
        )
        [prediction] = live.predict(head, max_staleness=None)
        assert abs(prediction.prob_up - scored["prob_up"].iloc[i]) <= 1e-6
    code = main(["predict", "--coin", "SOL", "--model", str(artifact), "--input", str(sample_path("SOL"))])
    assert code == 2 and "not trained on SOL-USD" in capsys.readouterr().err

    with pytest.raises(CrpbotError, match="not trained on SOL-USD"):
        evaluate_model(artifact, coin="SOL", out_dir=tmp_path / "eval-sol")
    with pytest.raises(CrpbotError, match="name the coin"):
        evaluate_model(artifact, out_dir=tmp_path / "eval-none")
    assert main(["evaluate", "--model", str(artifact), "--coin", "SOL", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "not trained on SOL-USD" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eval-sol").exists() and not (tmp_path / "e").exists()

    registry = tmp_path / "models"
    for coin in ("BTC", "ETH"):
        promote(artifact, coin, root=registry)
        assert load_predictor(current_path(coin, root=registry), coin).coin == f"{coin}-USD"
    with pytest.raises(CrpbotError, match="not trained on SOL-USD"):
        promote(artifact, "SOL", root=registry)


@pytest.mark.ray
def test_the_coins_arrays_are_shared_read_only_by_every_worker(ray_session, two_coins) -> None:
    """Put once; a task that reads the object twice gets the same mapped buffer both times,
    read-only, and each coin's view of it: the coins' arrays are never copied per worker."""

    @ray_session.remote
    def read_in_a_worker(ref_holder: list) -> dict:
        first, second = ray_session.get(ref_holder[0]), ray_session.get(ref_holder[0])
        names = ("features", "labels", "forward_returns", "timestamps", "segment_ids", "coin_ids")
        return {
            "writeable": [getattr(first, name).flags.writeable for name in names],
            "same_buffer": [np.shares_memory(getattr(first, name), getattr(second, name)) for name in names],
            "views": [np.shares_memory(first.part(coin).features, first.features) for coin in first.coins],
            "train_windows": len(first.window_ends("train", GLOBAL.lookback)),
        }

    ref = ray_session.put(two_coins)
    seen = ray_session.get([read_in_a_worker.remote([ref]) for _ in range(2)])
    for worker in seen:
        assert not any(worker["writeable"])
        assert all(worker["same_buffer"]) and all(worker["views"])
        assert worker["train_windows"] == len(two_coins.window_ends("train", GLOBAL.lookback))


def _global_space(tmp_path, space: dict, budget: dict | None = None):
    import yaml

    path = tmp_path / "global_search.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(SMOKE),
                "overrides": {"max_train_windows": 256},
                "budget": budget or {"num_samples": 2, "max_epochs": 1},
                "space": space,
            }
        )
    )
    return path


def test_global_vs_per_coin_space_is_validated_and_ranked_on_the_searched_coin(tmp_path, two_coins) -> None:
    from crpbot.search.space import load_search_space

    for space, problem in (
        ({"coins": {"choice": [[], ["BTC"]]}}, "at least two coins"),
        ({"coins": {"uniform": [0, 1]}}, "lists of coins"),
        ({"coins": {"choice": [["BTC", "ETH"], ["ETH", "BTC"]]}}, "the same coins"),
    ):
        with pytest.raises(CrpbotError, match=problem):
            load_search_space(_global_space(tmp_path, space))
    assert load_config(CONFIG_DIR / "global.yaml").coins == ["BTC", "ETH", "SOL"]
    space = load_search_space(REPO_SPACE)
    assert space.global_coins() == ["BTC", "ETH", "SOL"]
    assert space.trial_config({"coins": "BTC+ETH+SOL"}).coins == ["BTC", "ETH", "SOL"]
    assert space.trial_config({"coins": "none"}).coins == []
    # a global trial and a one-coin trial of ETH are scored on exactly ETH's validation windows
    offset = two_coins.offsets[1]
    for split in ("val", "test"):
        np.testing.assert_array_equal(
            two_coins.scored_on("ETH").window_ends(split, 60),
            two_coins.part("ETH").window_ends(split, 60) + offset,
        )
    assert len(two_coins.scored_on("ETH").window_ends("train", 60)) == len(two_coins.window_ends("train", 60))


@pytest.mark.ray
def test_a_search_trains_the_global_and_the_per_coin_model(ray_session, tmp_path) -> None:
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    space = load_search_space(_global_space(tmp_path, {"coins": {"choice": [[], ["BTC", "ETH"]]}}))
    with pytest.raises(CrpbotError, match="covers BTC-USD, ETH-USD"):
        run_search(space, "SOL", storage=tmp_path / "runs", name="sol", progress=False, log=lambda _: None)
    result = run_search(
        space,
        "ETH",
        storage=tmp_path / "runs",
        name="global",
        exhaustive=True,
        progress=False,
        log=lambda _: None,
    )
    assert sorted(result.table["coins"]) == ["BTC+ETH", "none"]
    assert (result.table["status"] == "complete").all()
    best = result.table.set_index("trial_id").loc[best_trial(result.experiment_path), "coins"]
    assert result.best_config.coins == ([] if best == "none" else ["BTC", "ETH"])
    assert load_config(result.best_yaml).coins == result.best_config.coins


def test_a_global_walk_forward_scores_each_coin_on_the_per_coin_folds(tmp_path, sample_path) -> None:
    from crpbot.data.bars import load_bars
    from crpbot.data.dataset import usable_timestamps
    from crpbot.data.folds import FoldSpec, plan_folds
    from crpbot.experiments.walkforward_global import run_global_walkforward

    torch.set_num_threads(1)
    spec = FoldSpec(train_days=6, val_days=2, test_days=2, folds=2)
    with pytest.raises(CrpbotError, match="needs a config with coins"):
        run_global_walkforward(GLOBAL.replace(coins=[]), spec, out_dir=tmp_path / "none")
    results = run_global_walkforward(GLOBAL, spec, out_dir=tmp_path / "wf", log=lambda _: None)
    assert list(results) == ["BTC-USD", "ETH-USD"]
    for coin, result in results.items():
        own = plan_folds(
            usable_timestamps(load_bars(sample_path(coin.split("-")[0]))),
            spec,
            lookback=GLOBAL.lookback,
            horizon=GLOBAL.horizon,
        )
        table = result.folds
        assert list(table["test_start"]) == [
            np.datetime_as_string(np.datetime64(fold.split_times["test"][0], "ns"), unit="m") + "Z"
            for fold in own
        ]
        pooled = result.summary["pooled"]
        assert pooled["n"] == table["n"].sum() > 0
        # the pooled edge is the pooled accuracy minus the pooled accuracy of each fold's best baseline
        baseline = float((table["best_baseline_accuracy"] * table["n"]).sum() / table["n"].sum())
        assert result.summary["pooled_edge"]["edge"] == pytest.approx(pooled["accuracy"] - baseline, abs=1e-9)
        # the report says what a global fold does: no temperature (its evaluations score at 1)
        report = (result.out_dir / "report.md").read_text()
        assert (
            "no temperature (scored at temperature 1" in report and "temperature on its own val" not in report
        )
        for fold in table["fold"]:
            metrics = json.loads(
                (result.out_dir / "folds" / str(fold) / "evaluation" / "metrics.json").read_text()
            )
            assert metrics["temperature"] == 1.0
        assert (result.out_dir / "folds.csv").is_file() and (result.out_dir / "summary.json").is_file()

"""Live prediction: train/serve parity with evaluate, the --json contract, and refused inputs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from tiny import TINY_GRU

from crpbot.cli import main
from crpbot.data.bars import load_bars
from crpbot.data.features import HISTORY_BARS, WARMUP_BARS
from crpbot.errors import CrpbotError
from crpbot.evaluation.evaluate import evaluate_model
from crpbot.model.serving import LiveModel

# Short train/val fractions put the test split on both sides of the sample's real gap, so
# evaluate scores rows of two segments: right after a gap (the live slice is the whole short
# segment) and deep inside one (the live slice is cut to HISTORY_BARS + lookback bars).
TINY = replace(TINY_GRU, train_fraction=0.2, val_fraction=0.1)
MINUTE = pd.Timedelta(minutes=1)


@pytest.fixture(scope="module")
def tiny(train_tiny_artifact):
    return train_tiny_artifact(TINY, "BTC")


@pytest.fixture(scope="module")
def tiny_model(tiny):
    return tiny[0]


@pytest.fixture(scope="module")
def bars(sample_path):
    return load_bars(sample_path("BTC"))


def test_predict_on_bars_up_to_t_equals_evaluate_for_row_t(tiny_model, bars, tmp_path, monkeypatch):
    evaluated = evaluate_model(tiny_model, out_dir=tmp_path / "eval", log=lambda _: None)
    scored = pd.read_parquet(evaluated.out_dir / "predictions.parquet")
    rows = pd.Index(bars.frame["timestamp"]).get_indexer(scored["timestamp"])
    segments = bars.segment_ids[rows]
    assert set(segments) == {0, 1}, "the scored rows must span the gap"
    rng = np.random.default_rng(0)
    first_after_gap = np.flatnonzero(segments == 1)[:5]
    unfamiliar = np.flatnonzero(~scored["familiar"].to_numpy())[:5]
    assert len(unfamiliar) > 0, "the sample's test split should hold a few unfamiliar windows"
    picks = np.r_[first_after_gap, unfamiliar, rng.choice(len(scored), size=50, replace=False)]
    model = LiveModel.load(tiny_model)
    flags: dict[int, bool | None] = {}

    def live(i: int) -> float:
        t = rows[i]
        # bars[: t+1] of the validated file (validating the prefix again gives the same rows)
        head = dataclasses.replace(
            bars, frame=bars.frame.iloc[: t + 1], segment_ids=bars.segment_ids[: t + 1]
        )
        [prediction] = model.predict(head, now=bars.frame["timestamp"].iloc[t] + MINUTE)
        assert prediction.timestamp == scored["timestamp"].iloc[i]
        flags[i] = prediction.familiar
        return prediction.prob_up

    served = np.array([live(i) for i in picks])
    assert np.abs(served - scored["prob_up"].to_numpy()[picks]).max() <= 1e-6
    # the familiar flag too, from bars up to t only: evaluate's batch flags read no future bar
    assert [flags[i] for i in picks] == scored["familiar"].to_numpy()[picks].tolist()
    # the same check fails when the live slice keeps only the warm-up, not the averages' history
    monkeypatch.setattr(model, "history_bars", WARMUP_BARS)
    deep = [i for i in picks if np.sum(bars.segment_ids[: rows[i] + 1] == segments[i]) > 1000][:10]
    short = np.array([live(i) for i in deep])
    assert np.abs(short - scored["prob_up"].to_numpy()[deep]).max() > 1e-6


def test_an_ensemble_is_served_with_its_temperature_like_evaluation_scores_it(tiny, bars, tmp_path):
    from crpbot.evaluation.evaluate import stored_split_data
    from crpbot.model.ensemble import build_ensemble
    from crpbot.model.predictor import load_predictor

    member, data = tiny
    ensemble = build_ensemble([member, member], data, tmp_path / "ens")
    predictor = load_predictor(ensemble)
    assert predictor.temperature != 1.0
    scored = predictor.predictions(stored_split_data(predictor), "test")
    model = LiveModel.load(ensemble)
    rows = pd.Index(bars.frame["timestamp"]).get_indexer(pd.to_datetime(scored.timestamps[::2000], utc=True))
    assert (rows >= 0).all()
    for t, expected in zip(rows, scored.probs[::2000], strict=True):
        [prediction] = model.predict(bars.frame.iloc[: t + 1], max_staleness=None)
        assert abs(prediction.prob_up - expected) <= 1e-6
    # the ensemble's familiarity is fitted on its members' train rows: the member's, exactly
    assert predictor.familiarity.threshold == load_predictor(member).familiarity.threshold


def test_cli_json_is_one_parseable_object_for_the_latest_bars(tiny_model, bars, sample_path, capsys):
    argv = ["predict", "--coin", "BTC", "--input", str(sample_path("BTC")), "--model", str(tiny_model)]
    assert main([*argv, "--last", "3", "--json", "--allow-stale"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    record = json.loads(out)
    assert set(record) == {"coin", "version", "model", "horizon_minutes", "target", "predictions"}
    assert record["target"] == {"name": "direction", "horizon": 15}
    assert (record["coin"], record["version"], record["horizon_minutes"]) == ("BTC-USD", tiny_model.name, 15)
    stamps = [p["timestamp"] for p in record["predictions"]]
    assert stamps == [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in bars.frame["timestamp"].iloc[-3:]]
    expected = LiveModel.load(tiny_model).predict(bars, last=3, max_staleness=None)
    assert [p["prob_up"] for p in record["predictions"]] == [p.prob_up for p in expected]
    assert [p["familiar"] for p in record["predictions"]] == [p.familiar for p in expected]
    assert all(isinstance(p["familiar"], bool) for p in record["predictions"])
    assert all(0 < p["prob_up"] < 1 for p in record["predictions"])

    # the bundled sample ended long ago: refused by default, one line, exit 2
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "stale bars: the latest bar closed at" in err and "limit is 5.0 min" in err
    )


def test_too_short_open_or_stale_bars_are_refused(tiny_model, bars, tmp_path):
    from crpbot.registry.artifact import load_weights, read_artifact_json, write_artifact

    config = read_artifact_json(tiny_model, "config.json")
    other = write_artifact(
        tmp_path / "other",
        json_files={
            "config.json": {**config, "feature_names": config["feature_names"][::-1]},
            "scaler.json": read_artifact_json(tiny_model, "scaler.json"),
        },
        tensors=load_weights(tiny_model),
        data_fingerprint="0" * 64,
    )
    with pytest.raises(CrpbotError, match="was trained on other features: its inputs are not the features"):
        LiveModel.load(other)
    model = LiveModel.load(tiny_model)
    frame = bars.frame
    latest = frame["timestamp"].iloc[-1]
    after_gap = pd.concat([frame.iloc[:2000], frame.iloc[2100:2239]])  # 139 bars after the gap
    with pytest.raises(CrpbotError, match=r"after the gap before .* hold 139 gap-free bars; .* needs 140"):
        model.predict(after_gap, max_staleness=None)
    model.predict(pd.concat([frame.iloc[:2000], frame.iloc[2100:2240]]), max_staleness=None)  # 140: enough
    with pytest.raises(CrpbotError, match="the bars hold 100 gap-free bars"):
        model.predict(frame.iloc[:100], max_staleness=None)
    # no gap in the bars: the run may have begun earlier, so fewer than HISTORY_BARS + lookback bars
    # (enough for the warm-up, not for the recursive averages to forget their start) are refused
    needed = model.bars_needed(last=2)
    assert needed == HISTORY_BARS + model.lookback + 1
    with pytest.raises(CrpbotError) as short:
        model.predict(frame.iloc[-(needed - 1) :], last=2, max_staleness=None)
    assert str(short.value).count("\n") == 0 and f"the bars hold {needed - 1:,} gap-free bars" in str(
        short.value
    )
    assert f"predicting the last 2 needs {needed:,} (feature history {HISTORY_BARS} + lookback" in str(
        short.value
    )
    enough = model.predict(frame.iloc[-needed:], last=2, max_staleness=None)
    whole = model.predict(bars, last=2, max_staleness=None)
    assert [p.prob_up for p in enough] == pytest.approx([p.prob_up for p in whole], abs=1e-6)
    with pytest.raises(CrpbotError, match="still open until"):
        model.predict(bars, now=latest + pd.Timedelta(seconds=30))
    fresh = model.predict(bars, now=latest + 6 * MINUTE)
    assert fresh[0].timestamp == latest
    with pytest.raises(CrpbotError, match="stale bars.*6.0 min before now.*limit is 5.0 min"):
        model.predict(bars, now=latest + 7 * MINUTE)
    assert model.predict(bars, now=latest + 7 * MINUTE, max_staleness=pd.Timedelta(minutes=10))


def test_the_promoted_model_is_served_from_the_registry_or_pulled_from_s3(
    tiny_model, sample_path, tmp_path, s3_endpoint, capsys
):
    import boto3

    from crpbot.registry.local import promote
    from crpbot.registry.transfer import push

    bucket = "crpbot-predict-test"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    promote(tiny_model, "BTC", root=origin, version="v1")
    push(origin, bucket, endpoint_url=s3_endpoint)
    argv = ["predict", "--coin", "BTC", "--input", str(sample_path("BTC")), "--json", "--allow-stale"]

    assert main([*argv, "--registry", str(origin)]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*argv, "--registry", str(clone), "--bucket", bucket, "--endpoint-url", s3_endpoint]) == 0
    pulled = json.loads(capsys.readouterr().out)
    assert local["version"] == pulled["version"] == "v1"
    assert pulled["model"].startswith(str(clone)) and pulled["predictions"] == local["predictions"]

    for extra, message in (
        (["--coin", "ETH", "--registry", str(origin)], "no promoted ETH-USD model"),
        (["--model", str(tiny_model), "--bucket", bucket], "--model names the artifact"),
        (["--last", "0"], "invalid --last 0"),
    ):
        assert main([*argv, *extra]) == 2
        assert message in capsys.readouterr().err

"""Champion vs challenger on real artifacts and real predictions: every decision and its record.

Tiny models are fitted directly (no Ray) on the bundled BTC bars: an "old" file (the first 60%)
and the full sample (old + new). A deliberately bad model is a real one whose prior correction
is shifted, so it predicts P(up) ~ 0.05 everywhere: a real artifact with real, bad predictions.
One end-to-end retrain (one coin, the tiny config as the budget, a gate the recipe meets) checks
the wiring: challengers trained by the pipeline's chains, judged, promoted, recorded, pushed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from tiny import TINY_GRU

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.evaluation.compare import compare_on_shared_period
from crpbot.evaluation.gate import GateDecision
from crpbot.pipeline.retrain import decide, judge_challenger
from crpbot.registry.artifact import load_weights, read_artifact_json, read_manifest, write_artifact
from crpbot.registry.history import read_history
from crpbot.registry.local import current_version, promote

PASS = GateDecision(passed=True)
FAIL = GateDecision(passed=False, reasons=["accuracy 0.5100 < min_accuracy 0.6800"])


def _fit(config: TrainConfig, input_path: Path, out: Path) -> Path:
    import torch

    from crpbot.data.dataset import load_prepared
    from crpbot.model.fit import fit
    from crpbot.model.inference import save_model_artifact

    torch.set_num_threads(1)
    data = load_prepared("BTC", input_path, config)
    result = fit(config, data, log=lambda _: None)
    return save_model_artifact(
        out,
        model_state=result.best_state,
        config=config,
        data=data,
        history=result.history,
        best_epoch=result.best_epoch,
        input_path=input_path,
    )


def read_input(artifact: Path) -> Path:
    """The bars file an artifact was trained on."""
    return Path(read_artifact_json(artifact, "config.json")["input_path"])


def _bad_copy(artifact: Path, out: Path) -> Path:
    """The same weights with the prior correction shifted by +3 logits: P(up) ~ 0.05 on every row."""
    config = read_artifact_json(artifact, "config.json")
    config["logit_offset"] += 3.0
    return _copy_with_config(artifact, out, config)


def _copy_with_config(artifact: Path, out: Path, config: dict) -> Path:
    names = ("scaler.json", "features.json", "history.json")
    return write_artifact(
        out,
        tensors=load_weights(artifact),
        data_fingerprint=read_manifest(artifact)["data_fingerprint"],
        json_files={"config.json": config, **{name: read_artifact_json(artifact, name) for name in names}},
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory, sample_path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("retrain")
    bars = pd.read_parquet(sample_path("BTC"))
    old_dir = base / "old"
    old_dir.mkdir()
    bars.iloc[: int(len(bars) * 0.6)].to_parquet(old_dir / "BTC-USD_1m.parquet", index=False)
    full = sample_path("BTC")
    found = {
        "old": _fit(
            TINY_GRU, old_dir / "BTC-USD_1m.parquet", base / "old_model"
        ),  # the champion of last week
        "new": _fit(TINY_GRU, full, base / "new_model"),  # this week's challenger
        # validated up to ~95% of the sample: into the challenger's test period (85% onwards)
        "late": _fit(TINY_GRU.replace(train_fraction=0.8, val_fraction=0.15), full, base / "late_model"),
    }
    found["bad_old"] = _bad_copy(found["old"], base / "bad_old")
    found["bad_new"] = _bad_copy(found["new"], base / "bad_new")
    return found


def test_shared_period_is_unseen_by_both_and_trimmed_or_refused(models) -> None:
    fair = compare_on_shared_period(models["old"], models["new"])
    assert fair.fair and fair.n == fair.challenger_test_rows > 1000, "an older champion saw none of it"
    assert 0.3 < fair.champion["accuracy"] < 0.7 and 0.3 < fair.challenger["accuracy"] < 0.7
    low, high = fair.ci
    assert low <= fair.log_loss_difference <= high
    assert fair.log_loss_difference == pytest.approx(fair.challenger["log_loss"] - fair.champion["log_loss"])

    trimmed = compare_on_shared_period(models["late"], models["new"])
    late_val_end = read_artifact_json(models["late"], "config.json")["split_times"]["val"][1]
    assert trimmed.fair and 0 < trimmed.n < trimmed.challenger_test_rows
    assert "dropped" in trimmed.note
    first_shared = pd.Timestamp(trimmed.period[0].rstrip("Z"), tz="UTC")
    # the champion's 20-bar window of the first shared row starts after its validation period
    assert first_shared - pd.Timedelta(minutes=TINY_GRU.lookback - 1) > pd.Timestamp(late_val_end, tz="UTC")
    assert trimmed.challenger["log_loss"] != fair.challenger["log_loss"], "scored on fewer rows"

    # a champion trained on data newer than the challenger's test period: nothing left to compare,
    # so the champion stays, unless the user's flag lets the gate alone decide
    refused = compare_on_shared_period(models["new"], models["old"])
    assert not refused.fair and refused.n == 0 and refused.note.startswith("no fair comparison")
    assert "retrain input" in refused.note and "not newer" in refused.note
    kept, why = decide(PASS, refused)
    assert not kept and why.startswith(refused.note) and "unjudged, so the champion stays" in why
    promoted, why = decide(PASS, refused, promote_unjudged=True)
    assert promoted and "promoted unjudged, by the user's --promote-unjudged" in why
    assert not decide(FAIL, refused, promote_unjudged=True)[0]


def test_too_few_shared_rows_is_an_error_not_a_decision(models, tmp_path: Path) -> None:
    """A champion validated up to 40 minutes before the challenger's test period ends leaves a few
    shared rows: no interval is honest on them, so the comparison refuses instead of deciding."""
    config = read_artifact_json(models["late"], "config.json")
    test_end = read_artifact_json(models["new"], "config.json")["split_times"]["test"][1]
    config["split_times"]["val"][1] = test_end - 40 * 60 * 10**9
    recent = _copy_with_config(models["late"], tmp_path / "recent", config)
    refusal = r"^not enough shared unseen rows .* need >= 150 \(10 × horizon 15\)$"
    with pytest.raises(CrpbotError, match=refusal):
        compare_on_shared_period(recent, models["new"])


def test_each_decision_is_taken_as_stated_and_recorded(models, tmp_path: Path) -> None:
    root = tmp_path / "models"
    logged: list[str] = []

    # no champion: the gate alone decides
    refused = judge_challenger("BTC", models["bad_old"], FAIL, registry_root=root, log=logged.append)
    assert refused.decision == "not promoted" and current_version("BTC", root=root) is None
    first = judge_challenger("BTC", models["old"], PASS, registry_root=root, log=logged.append)
    assert first.promoted and first.comparison is None and "no champion" in first.reason
    champion = first.challenger_version

    # a champion better on the shared period keeps its place, though the challenger passes the gate
    kept = judge_challenger("BTC", models["bad_new"], PASS, registry_root=root, log=logged.append)
    assert kept.decision == "kept champion" and not kept.promoted
    assert kept.comparison["ci"][0] > 0 and "worse than the champion beyond noise" in kept.reason
    assert current_version("BTC", root=root) == champion

    # a better challenger replaces a bad champion
    bad_root = tmp_path / "bad"
    promote(models["bad_old"], "BTC", root=bad_root, version="bad")
    better = judge_challenger("BTC", models["new"], PASS, registry_root=bad_root, log=logged.append)
    assert better.promoted and better.comparison["ci"][1] < 0
    assert current_version("BTC", root=bad_root) == better.challenger_version != "bad"
    # ... but never one that fails the gate
    judge_challenger("BTC", models["bad_new"], FAIL, registry_root=bad_root, log=logged.append)

    # a champion that no longer verifies is not silently replaced: kept, with the reason recorded
    damaged_root = tmp_path / "damaged"
    damaged = promote(models["old"], "BTC", root=damaged_root, version="old").path / "history.json"
    damaged.chmod(0o644)
    damaged.write_text(damaged.read_text() + " ")
    kept_damaged = judge_challenger("BTC", models["new"], PASS, registry_root=damaged_root, log=logged.append)
    assert kept_damaged.decision == "kept champion" and "comparison failed" in kept_damaged.reason
    assert kept_damaged.unjudged and "the champion stays" in kept_damaged.reason
    assert read_history("BTC", root=damaged_root)[-1]["reason"] == kept_damaged.reason

    records = read_history("BTC", root=root)
    assert [(r["event"], r.get("decision")) for r in records] == [
        ("retrain", "not promoted"),
        ("promote", None),
        ("retrain", "promoted"),
        ("retrain", "kept champion"),
    ]
    last = records[-1]
    assert last["champion"] == champion and last["challenger"] == str(models["bad_new"])
    assert last["challenger_version"] is None and last["gate"]["passed"]
    shared = last["comparison"]
    assert shared["period"] and shared["n"] > 1000
    assert shared["challenger"]["log_loss"] > shared["champion"]["log_loss"] and shared["ci"][0] > 0
    assert records[0]["reason"].startswith("the challenger fails the gate: accuracy")
    bad_records = read_history("BTC", root=bad_root)
    assert [r.get("decision") for r in bad_records if r["event"] == "retrain"] == [
        "promoted",
        "kept champion",
    ]
    assert "fails the gate" in bad_records[-1]["reason"]
    json.dumps(records)  # plain JSON all the way down


def test_bad_retrain_arguments_fail_before_ray(tmp_path: Path, sample_path, capsys) -> None:
    from crpbot.cli import main

    assert (
        main(["retrain", "--coins", "BTC", "--input-dir", str(tmp_path), "--registry", str(tmp_path / "m")])
        == 2
    )
    assert "no input for BTC-USD" in capsys.readouterr().err
    assert main(["retrain", "--coins", "BTC,BTC", "--input-dir", str(sample_path().parent)]) == 2
    assert "listed twice" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.ray
def test_retrain_end_to_end(ray_session, s3_endpoint, models, sample_path, tmp_path) -> None:
    """One coin, the tiny config as its budget, a gate the recipe meets on validation (so no
    search): the challenger is trained by the pipeline's chain, judged against the promoted
    champion, and the decision is recorded and pushed with the registry."""
    import boto3

    from crpbot.config import save_config
    from crpbot.evaluation.gate import GateThresholds
    from crpbot.pipeline.chain import PipelineBudget
    from crpbot.pipeline.retrain import run_retrain

    root = tmp_path / "models"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="retrain")
    promote(models["old"], "BTC", root=root, version="champion")
    save_config(TINY_GRU, tmp_path / "tiny.yaml")  # an absolute path: the budget reads it, not tune_configs/
    budget = PipelineBudget(
        train_config=str(tmp_path / "tiny.yaml"), search_space="smoke_search.yaml", seeds=2
    )
    logged: list[str] = []
    (decision,) = run_retrain(
        ["BTC"],
        input_dir=sample_path().parent,
        budget=budget,
        run_dir=tmp_path / "run",
        registry_root=root,
        bucket="retrain",
        endpoint_url=s3_endpoint,
        thresholds=GateThresholds(min_accuracy=0.0, max_calibration_error=1.0, quorum=1, net_pnl="report"),
        log=logged.append,
    )
    summary = json.loads((tmp_path / "run" / "retrain.json").read_text())
    (outcome,) = summary["outcomes"]
    assert outcome["stage"] == "recipe" and outcome["metrics"]["gate"]["passed"]
    assert summary["decisions"][0]["decision"] == decision.decision
    assert summary["finished_at"] and summary["interrupted"] is None and summary["promote_unjudged"] is False
    assert decision.champion == "champion" and decision.comparison["fair"]
    assert decision.comparison["n"] == decision.comparison["challenger_test_rows"]
    assert decision.decision in ("promoted", "kept champion") and any(
        decision.decision in line for line in logged
    )
    expected = decision.challenger_version if decision.promoted else "champion"
    assert current_version("BTC", root=root) == expected
    assert read_history("BTC", root=root)[-1]["decision"] == decision.decision
    remote = boto3.client("s3", endpoint_url=s3_endpoint).get_object(
        Bucket="retrain", Key="crpbot/BTC-USD/history.jsonl"
    )
    assert remote["Body"].read() == (root / "promoted" / "BTC-USD" / "history.jsonl").read_bytes()


def test_an_unjudged_challenger_keeps_the_champion_unless_the_user_flag_promotes_it(models, tmp_path) -> None:
    """Challenger trained on older bars than the champion's: unjudgeable. Kept and recorded; with
    ``promote_unjudged`` promoted, and the history says it was by the user's flag."""
    root = tmp_path / "models"
    promote(models["new"], "BTC", root=root, version="champion")
    kept = judge_challenger("BTC", models["old"], PASS, registry_root=root, log=lambda _: None)
    assert (kept.decision, kept.unjudged, kept.promoted) == ("kept champion", True, False)
    assert current_version("BTC", root=root) == "champion"
    record = read_history("BTC", root=root)[-1]
    assert record["unjudged"] and not record["promote_unjudged"] and record["reason"] == kept.reason
    assert "not newer than the champion's" in record["reason"] and not record["comparison"]["fair"]

    forced = judge_challenger(
        "BTC", models["old"], PASS, registry_root=root, promote_unjudged=True, log=lambda _: None
    )
    assert (
        forced.promoted and forced.unjudged and current_version("BTC", root=root) == forced.challenger_version
    )
    record = read_history("BTC", root=root)[-1]
    assert record["decision"] == "promoted" and record["unjudged"] and record["promote_unjudged"]
    assert "promoted unjudged, by the user's --promote-unjudged" in record["reason"]


def test_a_context_champion_is_scored_on_its_own_context_bars(models, tmp_path_factory, sample_path) -> None:
    """A champion with ETH context against a challenger without (and one with): both fair, the
    champion scored identically on the same rows; its context bars missing beside the retrain
    input make it unjudgeable, and the champion stays."""
    base = tmp_path_factory.mktemp("context")
    with_eth = TINY_GRU.replace(context_coins=["ETH"])
    old_dir = base / "old"
    old_dir.mkdir()
    (old_dir / "BTC-USD_1m.parquet").write_bytes(read_input(models["old"]).read_bytes())
    (old_dir / "ETH-USD_1m.parquet").write_bytes(sample_path("ETH").read_bytes())
    champion = _fit(with_eth, old_dir / "BTC-USD_1m.parquet", base / "ctx_old")
    context_challenger = _fit(with_eth, sample_path("BTC"), base / "ctx_new")

    plain = compare_on_shared_period(champion, models["new"])
    both = compare_on_shared_period(champion, context_challenger)
    assert plain.fair and both.fair and plain.n > 1000
    assert plain.n == both.n and plain.period == both.period, "the same rows: ETH has no gap there"
    assert plain.champion == both.champion, (
        "the champion is scored on its own inputs whatever the challenger's"
    )
    assert plain.challenger != both.challenger

    # the plain challenger's input lies where no ETH bars are: the champion cannot be scored
    root = tmp_path_factory.mktemp("context_registry")
    promote(champion, "BTC", root=root, version="eth-context")
    kept = judge_challenger("BTC", models["old"], PASS, registry_root=root, log=lambda _: None)
    assert kept.decision == "kept champion" and kept.unjudged
    assert (
        "context coin ETH-USD: bars missing" in kept.reason
        and current_version("BTC", root=root) == "eth-context"
    )


def test_a_failure_judging_one_coin_is_its_outcome_and_retrain_json_keeps_every_decision(
    models, tmp_path
) -> None:
    """ETH's history is damaged, so its decision cannot be recorded: that failure is ETH's outcome,
    BTC is judged after it as usual, and retrain.json holds both."""
    from crpbot.pipeline.retrain import judge_outcomes
    from crpbot.pipeline.run_report import CoinOutcome

    root = tmp_path / "models"
    promote(models["old"], "BTC", root=root, version="champion")
    damaged = root / "promoted" / "ETH-USD" / "history.jsonl"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"time": "2026-01-01T00:00:00+00:00", "event": "promote"')  # cut off
    outcomes = [
        CoinOutcome(coin="ETH-USD", error="no bars"),
        CoinOutcome(coin="BTC-USD", final_model=str(models["new"])),
    ]
    logged: list[str] = []
    path = tmp_path / "retrain.json"
    eth, btc = judge_outcomes(
        outcomes,
        lambda outcome: FAIL if outcome.failed else PASS,
        path,
        {"promote_unjudged": False},
        registry_root=root,
        log=logged.append,
    )
    assert eth.decision == "not promoted" and "last record is cut off" in eth.error
    assert eth.reason.startswith("judging failed:") and any(
        "could not be recorded" in line for line in logged
    )
    assert btc.error is None and btc.comparison["fair"] and btc.decision in ("promoted", "kept champion")
    assert read_history("BTC", root=root)[-1]["decision"] == btc.decision
    summary = json.loads(path.read_text())
    assert summary["finished_at"] and summary["interrupted"] is None
    assert [(d["coin"], d["decision"], d["error"]) for d in summary["decisions"]] == [
        ("ETH-USD", "not promoted", eth.error),
        ("BTC-USD", btc.decision, None),
    ]

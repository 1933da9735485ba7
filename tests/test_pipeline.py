"""The end-to-end pipeline on the bundled real data: the demo's refusal, and a promotion."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import combinations
from pathlib import Path

import pytest
from cli_probe import run_commands_in_a_fresh_process

from crpbot.cli import main
from crpbot.data.bars import default_input
from crpbot.errors import CrpbotError
from crpbot.evaluation.gate import (
    DEFAULT_MAX_CALIBRATION_ERROR,
    DEFAULT_MIN_ACCURACY,
    DEFAULT_QUORUM,
    GateThresholds,
)
from crpbot.model.scoring import ScoringClaim
from crpbot.pipeline.run import _chain_task, run_pipeline
from crpbot.ray_runtime import ClusterSettings
from crpbot.registry.local import current_version, list_versions

pytestmark = pytest.mark.ray


def test_demo_pipeline_refuses_with_reasons(ray_session, tmp_path, capsys) -> None:
    """`make demo`'s command: all three coins, the smoke budget, the recipe's gate."""
    run_dir, registry = tmp_path / "run", tmp_path / "models"
    code = main(["pipeline", "--budget", "smoke", "--run-dir", str(run_dir), "--registry", str(registry)])
    assert code == 0
    out = capsys.readouterr().out

    summary = json.loads((run_dir / "summary.json").read_text())
    assert [c["coin"] for c in summary["coins"]] == ["BTC-USD", "ETH-USD", "SOL-USD"]
    for coin in summary["coins"]:
        # No tiny model reaches 0.68 on validation, so every coin fell back to search + ensemble,
        # and the test split was scored once, on the ensemble.
        assert not coin["recipe_validation"]["passed"]
        assert coin["stage"] == "ensemble"
        assert Path(coin["search_best_yaml"]).is_file()
        metrics = coin["metrics"]
        lo, hi = metrics["accuracy_ci"]
        assert lo <= metrics["accuracy"] <= hi
        assert 0.40 < metrics["accuracy"] < 0.62, "a smoke model far from chance means a bug"
        assert set(metrics["baselines"]) >= {"majority", "momentum", "reversal", "logistic"}
        assert not metrics["gate"]["passed"] and metrics["gate"]["reasons"]
        assert metrics["gate"]["reasons"][0].startswith("accuracy CI lower bound")
        assert (metrics["gate"]["gate_on"], metrics["gate"]["ece_kind"]) == ("ci-lower", "max")
        edge = metrics["edge_over_best_baseline"]
        assert "gbdt" in metrics["baselines"] and edge["chosen_on"] == "val" and edge["n"] == metrics["n"]
        assert edge["ci_low"] <= edge["edge"] <= edge["ci_high"]
        assert metrics["backtest"]["entry_delay_bars"] == 1
        net, net_gate = metrics["net_return_per_trade"], metrics["gate"]["net_pnl"]
        assert net["trades"] == metrics["backtest"]["trades"] and net_gate["mode"] == "require"
        assert (net_gate["reason"] in metrics["gate"]["reasons"]) is not net_gate["passed"]
        assert Path(coin["evaluation_dir"], "report.md").is_file()
    assert summary["batch"]["promoted"] is False
    assert list_versions(registry) == []
    assert "NOT PROMOTED" in out and "test acc [95% CI]" in out and "edge [95% CI]" in out
    assert "net bps/trade [95% CI]" in out
    assert (run_dir / "report.md").read_text().startswith("# crpbot pipeline run (smoke budget)")

    # What a newcomer sees (stdout is no terminal here: plain lines): each coin's stages and end,
    # then the table, last; the workers' output (Ray Train, Tune, the chains) is in the log only.
    lines = out.splitlines()
    assert lines[-1] == "Batch: 0/3 coins pass (quorum 2) -> NOT PROMOTED"
    assert lines[-6].startswith("coin     model     test acc") and lines[-7].startswith("Run report: ")
    assert "pid=" not in out and "Epoch" not in out and "raylet" not in out
    stages = {"BTC-USD: recipe", "ETH-USD: search", "SOL-USD: ensemble", "BTC-USD: test evaluation"}
    assert stages <= set(lines)
    assert sum(line.startswith("== ") for line in lines) == 3 and len(lines) < 40
    log = (run_dir / "pipeline.log").read_text()
    for coin in summary["coins"]:
        name = coin["coin"]
        assert f"[{name}] Epoch 1/" in log and f"[{name} seed 1] Epoch 1/" in log  # Train, ensemble
        assert f"[{name}] trial 4/4 done" in log and f"[{name}] Evaluation written to" in log
    # Ray's known harmless warnings, silenced at their source by their own settings
    for noise in ("PreemptionWatcher", "Experiment state snapshotting", "Configuration for experiment"):
        assert noise not in log

    # The coins ran side by side: every pair of chains overlapped in time.
    timeline = json.loads((run_dir / "pipeline.json").read_text())
    spans = [
        (datetime.fromisoformat(c["started_at"]), datetime.fromisoformat(c["finished_at"]))
        for c in timeline["coins"]
    ]
    assert [c["status"] for c in timeline["coins"]] == ["ok"] * 3
    assert all(
        a_start < b_end and b_start < a_end for (a_start, a_end), (b_start, b_end) in combinations(spans, 2)
    )


def test_a_passing_batch_is_promoted_and_pushed(
    ray_session, s3_endpoint, tmp_path, monkeypatch, capsys
) -> None:
    """With thresholds any model meets, the recipe passes validation (no search) and is promoted.

    Run state goes to S3 too, as on a multi-node cluster. BTC's chain process is killed while it
    runs (as the kernel's OOM killer would): BTC is reported as failed and fails the gate, and
    ETH's finished result is still promoted. ``verbose``: the workers' output streams as it comes.
    """
    import boto3
    from ray.util.state import list_tasks

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="crpbot-models")
    lax = GateThresholds(min_accuracy=0.0, max_calibration_error=1.0, quorum=1, net_pnl="report")
    # Chains of earlier tests in this Ray session share the name and may still be listed as
    # running for a moment (the State API lags): only a chain this run started may be killed.
    earlier = {task.task_id for task in list_tasks(filters=[("name", "=", "chain-BTC-USD")], limit=10_000)}

    def this_runs_btc_chain() -> list:
        listed = list_tasks(filters=[("name", "=", "chain-BTC-USD"), ("state", "=", "RUNNING")], limit=10_000)
        return [task for task in listed if task.task_id not in earlier]

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            run_pipeline,
            ["BTC", "ETH"],
            budget="smoke",
            run_dir=tmp_path / "run",
            registry_root=tmp_path / "models",
            storage="s3://crpbot-models/runs",
            bucket="crpbot-models",
            endpoint_url=s3_endpoint,
            thresholds=lax,
            verbose=True,
        )
        deadline = time.monotonic() + 120
        while not (chains := this_runs_btc_chain()):
            assert time.monotonic() < deadline and not running.done(), "BTC's chain never ran"
            time.sleep(0.5)
        os.kill(chains[0].worker_pid, signal.SIGKILL)
        result = running.result(timeout=280)

    failed, outcome = result.outcomes
    assert failed.coin == "BTC-USD" and failed.failed and failed.error and failed.stage == "failed"
    out = capsys.readouterr().out
    assert "(RayTrainWorker pid=" in out and "[ETH-USD] Epoch 1/" in out  # streamed, as before
    assert f"== BTC-USD: failed: {failed.error}" in out
    assert result.batch["failed_coins"] == ["BTC-USD"]
    assert any(reason.startswith("BTC-USD: chain failed: ") for reason in result.batch["reasons"])
    timeline = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [(c["coin"], c["status"]) for c in timeline["coins"]] == [("BTC-USD", "failed"), ("ETH-USD", "ok")]
    assert "FAILED: " in (tmp_path / "run" / "report.md").read_text()
    assert result.promoted and outcome.stage == "recipe" and outcome.search_best_yaml is None
    assert current_version("ETH-USD", root=tmp_path / "models") == outcome.promoted_version
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="crpbot-models")[
            "Contents"
        ]
    ]
    assert any(outcome.promoted_version in key and key.endswith("model.safetensors") for key in keys)
    assert any(key.startswith("runs/ETH-USD/train/") and key.endswith("state.pt") for key in keys)


def test_a_chain_reads_test_once_and_its_validation_checks_read_only_val(
    ray_session, tmp_path, monkeypatch
) -> None:
    """Every read of a split's rows goes through ``PreparedData.window_ends``; a spy on it (it records
    the split and calls the real method) sees the chain's own steps, which run in this process when
    the chain does: the validation checks of the recipe and the ensemble, the ensemble's temperature
    and the one evaluation. Training, search trials and ensemble members run in Ray workers, out of
    its sight; they read train and val through ``fit``. The recipe misses the gate's 0.68 on val,
    so the chain takes its longest path: recipe, search, seed ensemble, one test evaluation."""
    import yaml
    from tiny import TINY_GRU

    from crpbot.config import save_config
    from crpbot.data.dataset import PreparedData
    from crpbot.evaluation import evaluate
    from crpbot.pipeline import chain

    reads: list[tuple[str, str]] = []
    step = ["chain"]
    window_ends = PreparedData.window_ends

    def spy(self, split, lookback, **kwargs):
        reads.append((step[-1], split))
        return window_ends(self, split, lookback, **kwargs)

    def as_step(name, function):
        def run(*args, **kwargs):
            step.append(name)
            try:
                return function(*args, **kwargs)
            finally:
                step.pop()

        return run

    monkeypatch.setattr(PreparedData, "window_ends", spy)
    monkeypatch.setattr(chain, "validation_check", as_step("validation check", chain.validation_check))
    monkeypatch.setattr(evaluate, "evaluate_model", as_step("evaluation", evaluate.evaluate_model))
    save_config(TINY_GRU, tmp_path / "tiny.yaml")
    (tmp_path / "space.yaml").write_text(
        yaml.safe_dump(
            {
                "base": str(tmp_path / "tiny.yaml"),
                "budget": {"num_samples": 2, "max_epochs": 1},
                "space": {"lr": {"choice": [0.003, 0.01]}},
            }
        )
    )
    budget = chain.PipelineBudget(
        train_config=str(tmp_path / "tiny.yaml"), search_space=str(tmp_path / "space.yaml"), seeds=2
    )
    outcome = chain.run_coin_chain(
        "BTC", default_input("BTC"), tmp_path / "BTC", budget=budget, log=lambda _: None
    )
    assert outcome.stage == "ensemble" and not outcome.recipe_validation["passed"]
    assert [where for where, split in reads if split == "test"] == ["evaluation"], reads
    assert [split for where, split in reads if where == "validation check"] == ["val", "val"], reads
    assert {split for where, split in reads if where == "evaluation"} == {"train", "val", "test"}


def test_bad_pipeline_arguments_are_one_line_errors(tmp_path) -> None:
    """Every mistake fails before the run directory exists and before Ray starts, so the same
    command can be rerun, and a bad third input does not cost two trained coins first."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for coin in ("BTC-USD", "ETH-USD"):
        (inputs / f"{coin}_1m.parquet").symlink_to(default_input(coin))
    (inputs / "SOL-USD_1m.parquet").write_bytes(b"PAR1 not a parquet file PAR1")
    cases = [
        (["--coins", "BTC,DOGE"], "unknown coin 'DOGE'"),
        (["--coins", "BTC,btc"], "listed twice"),
        (["--coins", " , "], "no coins given"),
        (["--input-dir", str(tmp_path)], "no input for BTC-USD"),
        (["--input-dir", str(inputs)], "SOL-USD_1m.parquet"),
        (["--workers", "0"], "invalid number of workers 0"),
        (["--fee-bps", "nan"], "invalid fee nan bps"),
        (["--fee-bps", "inf"], "invalid fee inf bps"),
        (["--fee-bps", "-1"], "invalid fee -1.0 bps"),
        (["--slippage-bps", "nan"], "invalid slippage nan bps"),
        (["--entry-delay-bars", "-1"], "invalid entry delay -1 bars"),
        (["--storage", "s3://"], "no bucket"),
        (["--storage", "s3:/bucket"], "malformed S3 URI"),
        (["--storage", "gs://bucket/runs"], "unsupported scheme 'gs'"),
    ]
    results = run_commands_in_a_fresh_process(
        [["pipeline", *args, "--run-dir", str(tmp_path / "run")] for args, _ in cases],
        cwd=tmp_path,
        watched=[tmp_path / "run", tmp_path / "s3:"],
    )
    for (args, message), run in zip(cases, results, strict=True):
        assert run.code == 2, (args, run.stderr)
        assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
        assert run.stdout == "", "the pipeline started before failing"
        assert not run.ray_started, args
        assert run.existing == [], args


def test_a_run_that_fails_before_writing_leaves_no_run_dir(tmp_path, monkeypatch) -> None:
    """Ray failing to start must not leave an empty run directory that blocks the rerun."""

    def no_cluster(address: str | None) -> None:
        raise CrpbotError(f"could not connect to Ray cluster at {address!r}")

    monkeypatch.setattr("crpbot.pipeline.run.init_ray", no_cluster)
    run_dir = tmp_path / "run"
    with pytest.raises(CrpbotError, match="could not connect"):
        run_pipeline(
            ["BTC"], cluster=ClusterSettings(address="127.0.0.1:1"), run_dir=run_dir, log=lambda _: None
        )
    assert not run_dir.exists()


def test_gate_defaults_come_from_the_gate() -> None:
    from crpbot.cli import build_parser

    args = build_parser().parse_args(["pipeline"])
    assert (args.min_accuracy, args.max_calibration_error, args.quorum) == (
        DEFAULT_MIN_ACCURACY,
        DEFAULT_MAX_CALIBRATION_ERROR,
        DEFAULT_QUORUM,
    )


def test_a_failing_chain_becomes_a_reported_outcome(tmp_path) -> None:
    """What a coin's Ray task returns when its chain raises: the reason and the times, no exception
    (so the other coins' results are kept). Fails before Ray is needed: the input is gone."""
    outcome = _chain_task(
        "SOL-USD",
        {"input_path": tmp_path / "gone.parquet", "coin_dir": tmp_path / "SOL-USD"},
        ScoringClaim(),
    )
    assert outcome.failed and "gone.parquet" in outcome.error and "\n" not in outcome.error
    assert outcome.stage == "failed" and outcome.seconds >= 0
    assert datetime.fromisoformat(outcome.started_at) <= datetime.fromisoformat(outcome.finished_at)

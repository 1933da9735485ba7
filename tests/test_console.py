"""The pipeline's console, fed lines as Ray prints workers' output in the driver (no Ray here)."""

from __future__ import annotations

import sys
import threading
import time

from crpbot.pipeline.console import CHAIN_END, CoinProgress, RunConsole


def ray_prints(source: str, line: str, *, err: bool = False) -> None:
    """What Ray's log thread does with a worker's line: print it, prefixed and coloured, to the
    sys.stdout or sys.stderr of the moment."""
    print(f"\x1b[36m({source} pid=42)\x1b[0m {line}", file=sys.stderr if err else sys.stdout)


def test_quiet_console_logs_workers_shows_stages_and_every_end(tmp_path, capsys) -> None:
    log = tmp_path / "pipeline.log"
    with RunConsole(log, ["BTC-USD", "ETH-USD"]) as console:
        print("Driver says hello")
        ray_prints("chain-BTC-USD", "[BTC-USD] training the recipe (smoke.yaml)")
        ray_prints("RayTrainWorker", "[BTC-USD] Epoch 1/3: Train Loss=0.6784, Val Loss=0.6791")
        ray_prints("TrainController", "[E 1 2] core_worker.cc: a harmless error-level line", err=True)
        print("\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node: 1f")
        print("\x1b[33m(raylet)\x1b[0m Task was killed due to the node running low on memory.")
        ray_prints("chain-ETH-USD", "[ETH-USD] failed: bars.parquet: not found")
        ray_prints("chain-BTC-USD", f"[BTC-USD] {CHAIN_END}")
        console.finished("BTC-USD", "== BTC-USD: recipe scored on test (9 s)")
        console.finished("ETH-USD", "== ETH-USD: failed: bars.parquet: not found (1 s)")
    print("the table")

    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "Driver says hello",
        "BTC-USD: recipe",
        "(raylet) Task was killed due to the node running low on memory.",
        "== BTC-USD: recipe scored on test (9 s)",
        "== ETH-USD: failed: bars.parquet: not found (1 s)",
        "the table",
    ]
    assert captured.err == ""
    written = log.read_text()
    assert "(RayTrainWorker pid=42) [BTC-USD] Epoch 1/3" in written and "core_worker.cc" in written
    assert "(raylet) WARNING" in written and "\x1b[" not in written
    assert written.endswith("== ETH-USD: failed: bars.parquet: not found (1 s)\n")


def test_verbose_console_streams_every_line_as_it_came(tmp_path, capsys) -> None:
    with RunConsole(tmp_path / "pipeline.log", ["BTC-USD"], verbose=True) as console:
        ray_prints("chain-BTC-USD", "[BTC-USD] training the recipe (smoke.yaml)")
        ray_prints("TrainController", "an error-level line", err=True)
        ray_prints("chain-BTC-USD", f"[BTC-USD] {CHAIN_END}")
        console.finished("BTC-USD", "== BTC-USD: recipe scored on test (9 s)")

    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "\x1b[36m(chain-BTC-USD pid=42)\x1b[0m [BTC-USD] training the recipe (smoke.yaml)",
        f"\x1b[36m(chain-BTC-USD pid=42)\x1b[0m [BTC-USD] {CHAIN_END}",
        "== BTC-USD: recipe scored on test (9 s)",
    ]
    assert captured.err == "\x1b[36m(TrainController pid=42)\x1b[0m an error-level line\n"


def test_the_console_waits_for_a_finished_chains_last_lines(tmp_path, capsys) -> None:
    """Ray forwards a chain's output a moment after the chain returned: those lines must land
    before the table, not after it. A chain whose process died sends none: no wait for it."""

    def late_lines() -> None:
        time.sleep(0.3)
        ray_prints("chain-BTC-USD", "[BTC-USD] Evaluation written to runs/x")
        ray_prints("chain-BTC-USD", f"[BTC-USD] {CHAIN_END}")

    with RunConsole(tmp_path / "pipeline.log", ["BTC-USD", "SOL-USD"]) as console:
        console.finished("SOL-USD", "== SOL-USD: failed: the worker died (3 s)", process_died=True)
        threading.Thread(target=late_lines).start()
        console.finished("BTC-USD", "== BTC-USD: ensemble scored on test (9 s)")
    print("the table")

    assert capsys.readouterr().out.splitlines()[-1] == "the table"
    assert (tmp_path / "pipeline.log").read_text().splitlines()[-1].endswith(CHAIN_END)


def test_a_rows_progress_and_eta_follow_its_stage() -> None:
    row = CoinProgress("BTC-USD")
    assert row.update("seed ensemble of the best config (2 seeds)", None)
    row.started -= 30  # thirty seconds into the stage
    row.update("Epoch 1/3: Train Loss=0.6762", "0")
    row.update("Epoch 2/3: Train Loss=0.6732", "0")
    row.update("Epoch 1/3: Train Loss=0.6762", "1")
    coin, stage, progress, _, eta = row.cells(time.monotonic())
    assert (coin, stage, progress) == ("BTC-USD", "ensemble", "epoch 3/6")
    assert 29 <= float(eta.removesuffix(" s")) <= 31  # 10 s per epoch, 3 to go

    assert row.update("fallback search (smoke_search.yaml)", None)
    row.update("Search BTC-USD-search: 4 trials of up to 2 epochs, 2 at a time", None)
    assert row.cells(time.monotonic())[1:3] == ("search", "trial 0/4")
    row.update("trial 1/4 done", None)
    assert row.cells(time.monotonic())[2] == "trial 1/4"

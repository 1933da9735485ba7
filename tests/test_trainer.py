"""Ray Train around the loop: surviving a killed worker, the `crpbot train` CLI with DDP equivalence.

Few tests on purpose: each TorchTrainer start costs ~10-20 s on a 2-CPU machine.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from crpbot.cli import main
from crpbot.config import TrainConfig
from crpbot.data.dataset import load_prepared
from crpbot.model.fit import fit
from crpbot.model.inference import load_model
from crpbot.registry.artifact import load_weights, read_artifact_json, verify_artifact

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tune_configs" / "smoke.yaml"
TINY = TrainConfig(
    hidden_size=8,
    num_layers=1,
    dropout=0.0,
    head_hidden=8,
    lookback=30,
    max_train_windows=512,
    batch_size=128,
    lr=3e-3,
    max_epochs=1,
    seed=5,
)


def _kill_first_worker_after_a_checkpoint(run_dir: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the Ray Train worker once the first epoch's checkpoint is in storage."""
    from ray.util.state import list_actors

    while not stop.is_set():
        if any(run_dir.glob("epoch_*")):
            workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)
                return
        time.sleep(0.1)


@pytest.mark.ray
def test_a_killed_worker_is_restarted_and_training_resumes(ray_session, sample_path, tmp_path) -> None:
    from crpbot.model.trainer import train

    config = TINY.replace(max_train_windows=None, batch_size=256, max_epochs=6, patience=50)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_first_worker_after_a_checkpoint,
        args=(tmp_path / "runs" / "killed", killed, stop),
        daemon=True,
    )
    killer.start()
    try:
        artifact = train(
            config,
            "BTC",
            input_path=sample_path("BTC"),
            out_dir=tmp_path / "model",
            storage_path=tmp_path / "runs",
            run_name="killed",
            max_failures=2,
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed: the run finished before its first checkpoint was seen"
    verify_artifact(artifact)
    history = read_artifact_json(artifact, "history.json")
    # Every epoch exactly once: the new worker group resumed after the last checkpoint.
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]


@pytest.mark.ray
def test_cli_trains_two_workers_with_half_batches_like_one_process_with_full_batches(
    ray_session, s3_endpoint, sample_path, tmp_path, capsys, monkeypatch
) -> None:
    """End to end through the CLI, with the checkpoints on S3 (a real S3 API over HTTP), as on a
    cluster, and two DDP workers: DDP averages the two half-batch gradients into the full-batch
    gradient, so the artifact has the parameters of one process with full batches. One Ray Train
    run checks both (each costs seconds of start-up)."""
    import boto3

    from crpbot.config import save_config

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="crpbot-checkpoints")
    config = tmp_path / "tiny.yaml"
    save_config(TINY.replace(batch_size=64, max_epochs=3), config)  # 64 per worker, 128 in all
    out = tmp_path / "btc-model"
    args = ["train", "--coin", "btc", "--config", str(config), "--epochs", "2", "--seed", "7"]
    code = main([*args, "--workers", "2", "--out", str(out), "--storage", "s3://crpbot-checkpoints/train"])
    assert code == 0
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket="crpbot-checkpoints")["Contents"]]
    assert any(key.startswith("train/") and key.endswith("/state.pt") for key in keys)
    assert f"Model artifact written to {out}" in capsys.readouterr().out
    model, config_json = load_model(out)
    assert config_json["coin"] == "BTC-USD"
    assert config_json["train_config"]["max_epochs"] == 2 and config_json["train_config"]["seed"] == 7
    history = read_artifact_json(out, "history.json")
    assert len(history) == 2

    full_batches = TINY.replace(max_epochs=2, seed=7)
    data = load_prepared("BTC", sample_path("BTC"), full_batches)
    single = fit(full_batches, data, log=lambda _: None)
    distributed = load_weights(out)
    assert distributed.keys() == single.best_state.keys()
    for name, tensor in single.best_state.items():
        torch.testing.assert_close(distributed[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert [row["val_loss"] for row in history] == pytest.approx(
        [row["val_loss"] for row in single.history], rel=1e-4
    )
    # Sanity: the comparison can fail -- a full batch per worker is a different run.
    assert not torch.allclose(
        distributed["head.3.weight"],
        fit(full_batches.replace(batch_size=64), data, log=lambda _: None).best_state["head.3.weight"],
    )

    # The same output again is refused, and the existing artifact is left intact.
    assert main(["train", "--coin", "BTC", "--config", str(SMOKE), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    verify_artifact(out)


@pytest.mark.ray
def test_cli_gpu_without_a_gpu_is_a_clear_error(ray_session, tmp_path, capsys) -> None:
    if ray_session.cluster_resources().get("GPU", 0):
        pytest.skip("this cluster has a GPU")
    code = main(["train", "--coin", "BTC", "--config", str(SMOKE), "--gpu", "--out", str(tmp_path / "m")])
    assert code == 2
    assert "GPU" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_cli_invalid_config_value_names_the_key(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("lr: 0.003", "lr: -1.0"))
    assert main(["train", "--coin", "BTC", "--config", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "lr" in capsys.readouterr().err


def test_cli_unknown_coin_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["train", "--coin", "DOGE", "--config", str(SMOKE), "--out", str(tmp_path / "m")]) == 2
    assert "DOGE" in capsys.readouterr().err


@pytest.mark.ray
def test_workers_map_the_prepared_arrays_read_only_without_warnings(ray_session, sample_path) -> None:
    """What a Ray Train worker does with the object-store copy: no copy, no 'not writable' warning."""
    import warnings

    from crpbot.data.windows import as_tensor

    @ray_session.remote
    def wrap_in_a_worker(data) -> tuple[bool, int, int]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tensor = as_tensor(data.features, torch.device("cpu"))
        shared = tensor.data_ptr() == data.features.ctypes.data
        return data.features.flags.writeable, len(caught), int(shared)

    data = load_prepared("BTC", sample_path("BTC"), TINY)
    writeable, warning_count, shared = ray_session.get(wrap_in_a_worker.remote(ray_session.put(data)))
    assert not writeable  # the object store's buffer, mapped, not a private copy
    assert warning_count == 0
    assert shared == 1

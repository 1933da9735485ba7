"""Ray Train around the loop: DDP equivalence, surviving a killed worker, the `crpbot train` CLI.

Few tests on purpose: each TorchTrainer start costs ~20 s on a 2-CPU machine.
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


@pytest.mark.ray
def test_two_workers_with_half_batches_match_one_process_with_full_batches(
    ray_session, sample_path, tmp_path
) -> None:
    """DDP averages the two half-batch gradients into the full-batch gradient: same parameters."""
    from crpbot.model.trainer import train

    artifact = train(
        TINY.replace(batch_size=64),
        "BTC",
        input_path=sample_path("BTC"),
        num_workers=2,
        out_dir=tmp_path / "ddp",
        storage_path=tmp_path / "runs",
        run_name="ddp",
    )
    data = load_prepared("BTC", sample_path("BTC"), TINY)
    single = fit(TINY, data, log=lambda _: None)
    distributed = load_weights(artifact)
    assert distributed.keys() == single.best_state.keys()
    for name, tensor in single.best_state.items():
        torch.testing.assert_close(distributed[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    history = read_artifact_json(artifact, "history.json")
    assert history[0]["val_loss"] == pytest.approx(single.history[0]["val_loss"], rel=1e-4)
    # Sanity: the comparison can fail -- a full batch per worker is a different run.
    assert not torch.allclose(
        distributed["head.3.weight"],
        fit(TINY.replace(batch_size=64), data, log=lambda _: None).best_state["head.3.weight"],
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
def test_cli_trains_and_writes_a_loadable_artifact(
    ray_session, s3_endpoint, tmp_path, capsys, monkeypatch
) -> None:
    """End to end through the CLI, with the checkpoints on S3 (a real S3 API over HTTP), as on a cluster."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="crpbot-checkpoints")
    out = tmp_path / "btc-model"
    code = main(
        [
            "train",
            "--coin",
            "btc",
            "--config",
            str(SMOKE),
            "--epochs",
            "2",
            "--seed",
            "7",
            "--out",
            str(out),
            "--storage",
            "s3://crpbot-checkpoints/train",
        ]
    )
    assert code == 0
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket="crpbot-checkpoints")["Contents"]]
    assert any(key.startswith("train/") and key.endswith("/state.pt") for key in keys)
    assert f"Model artifact written to {out}" in capsys.readouterr().out
    model, config_json = load_model(out)
    assert config_json["coin"] == "BTC-USD"
    assert config_json["train_config"]["max_epochs"] == 2 and config_json["train_config"]["seed"] == 7
    assert len(read_artifact_json(out, "history.json")) == 2
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

"""Shared fixtures: the bundled real data, one local Ray instance, a real S3 endpoint.

Only one Ray instance per test session: a second instance on the same host breaks
Ray Train's clean-up of stopped trials (field notes), and each start costs seconds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"

# Before anything imports Ray: no stale cluster address, no network calls.
os.environ.pop("RAY_ADDRESS", None)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# As crpbot.ray_runtime sets for every command: no log deduplication. Ray reads it at its first
# import, which a test module may do before crpbot's; deduplicated lines are held back and
# flushed later, into whichever test (and pipeline.log) is running then.
os.environ["RAY_DEDUP_LOGS"] = "0"
# No MLflow tracking into the repo's runs/: tests/test_tracking.py gives each use its own store.
os.environ["CRPBOT_TRACKING_URI"] = "off"
# Ray Train's controller polls its workers every 2 s by default, so each TorchTrainer run waits up
# to that long to see its workers start, report and finish (and a killed worker die): ~6 s per run
# here, over a dozen runs. Polling more often changes when it notices, not what happens.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session")
def sample_path() -> callable:
    """Path of a bundled real sample file, e.g. ``sample_path("BTC")``."""
    return lambda coin="BTC": SAMPLE / f"{coin}-USD_1m.parquet"


@pytest.fixture(scope="session")
def train_tiny_artifact(tmp_path_factory, sample_path):
    """Train a tiny model (either family) on a bundled coin directly, no Ray; returns (artifact dir, data)."""

    def train(config, coin: str):
        import torch

        from crpbot.data.dataset import load_prepared
        from crpbot.model.family import fit_model
        from crpbot.model.inference import save_model_artifact

        torch.set_num_threads(1)
        data = load_prepared(coin, sample_path(coin), config)
        result = fit_model(config, data, log=lambda _: None)
        path = save_model_artifact(
            tmp_path_factory.mktemp("model") / coin.lower(),
            model_state=result.best_state,
            config=config,
            data=data,
            history=result.history,
            best_epoch=result.best_epoch,
            input_path=sample_path(coin),
        )
        return path, data

    return train


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray instance (dashboard on for the State API) for the whole session: 2 CPUs,
    or ``CRPBOT_TEST_RAY_CPUS`` (scripts/gpu_run.sh gives the device's count, so packed GPU trials
    are not held back to two at a time)."""
    import ray

    from crpbot.ray_runtime import init_ray

    init_ray(None, num_cpus=int(os.environ.get("CRPBOT_TEST_RAY_CPUS", "2")), object_store_memory=1 << 30)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API over HTTP: moto's server on 127.0.0.1, with throwaway credentials in the env."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(timeout=10)

"""Multi-node for real: a two-node Ray cluster on this machine, driven through ``--address``.

Two ``ray start`` processes (a head and a worker node, one CPU each) form the cluster, so a
2-worker training can only fit with one rank per node. Each node runs ``ray start --block``
in its own process group and is stopped by that PID: ``ray stop`` would kill every Ray
process on the host, other engineers' test instances included.

Never in the same pytest process as the ``ray_session`` fixture (a second Ray instance on
the host breaks Ray Train's clean-up), so these tests are marked ``multinode`` and run in
their own invocation: ``flock /tmp/crpbot-ray.lock pytest -m multinode tests/test_multinode.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(600)]

RAY = str(Path(sys.executable).with_name("ray"))
CRPBOT = str(Path(sys.executable).with_name("crpbot"))
REPO = Path(__file__).resolve().parents[1]
NODE_MEMORY = 2 << 30
NODE_OBJECT_STORE = 256 << 20


@dataclass
class TwoNodeCluster:
    address: str
    dashboard_url: str
    node_ids: set[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``ray start --block`` in its own process group: SIGTERM to it stops that node's processes."""
    with log.open("w") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_node(proc: subprocess.Popen) -> None:
    """Graceful stop through ``ray start --block``'s SIGTERM handler, then the group, by PID only."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of this node's own process group only
    except ProcessLookupError:
        pass


def _wait_for_nodes(address: str, count: int, procs: list[subprocess.Popen], env: dict[str, str]) -> set[str]:
    """Node ids once ``count`` nodes are alive (asked from a child process: this one stays unconnected)."""
    probe = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
        "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            pytest.fail("a ray start process exited early; see its log in the cluster temp dir")
        result = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
        )
        if result.returncode == 0:
            ids = set(json.loads(result.stdout.strip().splitlines()[-1]))
            if len(ids) >= count:
                return ids
        time.sleep(2)
    pytest.fail(f"the two-node cluster at {address} did not come up")


@pytest.fixture(scope="module")
def two_node_cluster(request) -> Iterator[TwoNodeCluster]:
    if "multinode" not in request.config.getoption("markexpr"):
        pytest.skip("starts its own Ray cluster: run alone, with -m multinode, outside the session's Ray")
    # A short root: Ray's Unix socket paths must stay under 108 bytes.
    temp_root = Path(tempfile.mkdtemp(prefix="crpmn", dir="/tmp"))
    # No drain on SIGTERM: it waits ~30 s for Serve proxies this cluster never runs.
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    env.pop("RAY_ADDRESS", None)
    port, dashboard_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    common = [
        "--num-cpus=1",
        "--num-gpus=0",
        f"--memory={NODE_MEMORY}",
        f"--object-store-memory={NODE_OBJECT_STORE}",
        "--node-ip-address=127.0.0.1",
    ]
    procs = [
        _start_node(
            [
                "--head",
                f"--port={port}",
                f"--temp-dir={temp_root}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={_free_port()}",
                *common,
            ],
            temp_root / "head.log",
            env,
        )
    ]
    try:
        _wait_for_nodes(address, 1, procs, env)
        procs.append(
            _start_node(
                [
                    f"--address={address}",
                    f"--dashboard-agent-listen-port={_free_port()}",
                    f"--metrics-export-port={_free_port()}",
                    *common,
                ],
                temp_root / "worker.log",
                env,
            )
        )
        node_ids = _wait_for_nodes(address, 2, procs, env)
        yield TwoNodeCluster(address, f"http://127.0.0.1:{dashboard_port}", node_ids)
    finally:
        for proc in reversed(procs):
            _stop_node(proc)
        shutil.rmtree(temp_root, ignore_errors=True)


def _crpbot(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI in a child process, so this pytest process never joins the cluster."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run([CRPBOT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, f"crpbot {args[0]}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _actor_nodes(cluster: TwoNodeCluster, class_name: str) -> list[str]:
    """Node id of every actor of a class the cluster ever ran (dead ones included), via the State API."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=cluster.dashboard_url, filters=[("class_name", "=", class_name)], detail=True, limit=1000
    )
    return [actor.node_id for actor in actors]


def test_two_worker_training_puts_one_rank_on_each_node(two_node_cluster, tmp_path):
    out = tmp_path / "model"
    _crpbot(
        [
            "train",
            "--coin",
            "BTC",
            "--config",
            str(REPO / "tune_configs" / "smoke.yaml"),
            "--epochs",
            "1",
            "--workers",
            "2",
            "--address",
            two_node_cluster.address,
            "--out",
            str(out),
            "--storage",
            str(tmp_path / "runs"),
        ],
        cwd=tmp_path,
    )
    assert (out / "manifest.json").is_file()
    worker_nodes = _actor_nodes(two_node_cluster, "RayTrainWorker")
    assert len(worker_nodes) == 2, worker_nodes
    assert set(worker_nodes) == two_node_cluster.node_ids


def test_search_runs_trials_on_both_nodes(two_node_cluster, tmp_path):
    # Two one-CPU trials at once on two one-CPU nodes: one trial per node, by construction.
    trials_before = set(_actor_nodes(two_node_cluster, "ImplicitFunc"))
    _crpbot(
        [
            "tune",
            "--coin",
            "BTC",
            "--config",
            str(REPO / "tune_configs" / "smoke_search.yaml"),
            "--num-samples",
            "2",
            "--epochs",
            "1",
            "--address",
            two_node_cluster.address,
            "--storage",
            str(tmp_path / "runs"),
            "--name",
            "multinode",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
    )
    assert (tmp_path / "out" / "best.yaml").is_file()
    assert len((tmp_path / "out" / "results.csv").read_text().strip().splitlines()) == 1 + 2
    trial_nodes = _actor_nodes(two_node_cluster, "ImplicitFunc")
    assert len(trial_nodes) == 2 and not trials_before, trial_nodes
    assert set(trial_nodes) == two_node_cluster.node_ids

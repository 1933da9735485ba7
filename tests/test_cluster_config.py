"""cluster.yaml passes Ray's own cluster-config schema and keeps the project's promises.

`ray up` has no dry run, so Ray's offline path is the check: ``prepare_config`` fills
the AWS defaults (no network), then ``validate_config`` applies ``ray-schema.json``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _validated(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _pinned(package: str) -> str:
    """The version pyproject.toml pins (tomllib is 3.11+, the project supports 3.10)."""
    text = (REPO / "pyproject.toml").read_text()
    (version,) = re.findall(rf'^\s*"{package}(?:\[[^\]]*\])?==([^"]+)"', text, re.M)
    return version


def test_cluster_yaml_passes_rays_schema(cluster):
    prepared = _validated(cluster)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(head_node_type="no_such_type"),
        lambda c: c["available_node_types"]["gpu_1x"]["resources"].update(GPU="one"),
        lambda c: c.update(max_worker=3),
        lambda c: c["available_node_types"]["gpu_1x"].update(min_workers=9),
    ],
    ids=["unknown-head-type", "non-integer-gpu", "misspelt-key", "min-above-global-max"],
)
def test_schema_check_rejects_broken_configs(cluster, break_it):
    broken = copy.deepcopy(cluster)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _validated(broken)


def test_node_types_cpu_head_and_gpu_workers(cluster):
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    assert types[head]["resources"].get("GPU", 0) == 0
    workers = {name: spec for name, spec in types.items() if name != head}
    gpus = sorted(spec["resources"]["GPU"] for spec in workers.values())
    assert gpus[0] == 1 and gpus[-1] > 1, "want a single-GPU and a multi-GPU worker type"
    for name, spec in workers.items():
        assert spec["min_workers"] == 0, f"{name}: idle GPUs should scale to zero"
        assert 1 <= spec["max_workers"] <= cluster["max_workers"]
    assert cluster["idle_timeout_minutes"] > 0


def test_s3_through_instance_profiles_never_keys(cluster):
    for name, spec in cluster["available_node_types"].items():
        assert "Name" in spec["node_config"].get("IamInstanceProfile", {}), name
    text = (REPO / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_(access_key_id|secret_access_key)", text, re.I)


def test_setup_installs_the_pinned_cuda_torch_and_the_repo(cluster):
    torch_pin = _pinned("torch")
    worker_cmds = " ".join(cluster["worker_setup_commands"])
    assert re.search(
        rf"torch=={re.escape(torch_pin)} --index-url https://download\.pytorch\.org/whl/cu\d+", worker_cmds
    )
    assert "pip install -q -e ~/crpbot" in cluster["head_setup_commands"]
    assert "pip install -q -e ~/crpbot" in cluster["worker_setup_commands"]
    assert cluster["file_mounts"] == {"~/crpbot": "."}
    assert {".git", ".venv", "runs"} <= set(cluster["rsync_exclude"])

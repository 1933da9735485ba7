"""The registry's decision history: promotions and rollbacks recorded, never half-written, carried by S3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
from registry_helpers import make_model_artifact

from crpbot.cli import main
from crpbot.errors import CrpbotError
from crpbot.registry.history import HISTORY_FILE, read_history, record_event
from crpbot.registry.local import promote, rollback
from crpbot.registry.transfer import pull, push


def _registry(tmp_path: Path, name: str, seeds: tuple[int, ...]) -> Path:
    root = tmp_path / name
    for seed in seeds:
        promote(
            make_model_artifact(tmp_path / f"{name}-m{seed}", seed=seed), "BTC", root=root, version=f"v{seed}"
        )
    return root


def test_promotions_and_rollbacks_are_recorded_and_printed(tmp_path: Path, capsys) -> None:
    root = _registry(tmp_path, "models", (1, 2))
    rollback("BTC", "v1", root=root)
    rollback("BTC", "v1", root=root)  # the pointer does not move: nothing to record
    promote(tmp_path / "models-m2", "BTC", root=root)  # already there as v2: the pointer moves back
    events = [(r["event"], r["version"], r["previous"]) for r in read_history("BTC", root=root)]
    assert events == [
        ("promote", "v1", None),
        ("promote", "v2", "v1"),
        ("rollback", "v1", "v2"),
        ("promote", "v2", "v1"),
    ]
    assert main(["registry", "history", "BTC", "--registry", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "rollback" in lines[2] and "v1 is current again (was v2)" in lines[2]
    assert main(["registry", "history", "BTC", "--json", "--registry", str(root)]) == 0
    assert [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()][-1] == "promote"
    assert main(["registry", "history", "ETH", "--registry", str(root)]) == 0
    assert "no history for ETH" in capsys.readouterr().out

    # a damaged history (a cut-off last line) is refused, not appended to, and left as it was
    path = root / "promoted" / "BTC-USD" / HISTORY_FILE
    damaged = path.read_bytes()[:-5]
    path.write_bytes(damaged)
    with pytest.raises(CrpbotError, match="last record is cut off"):
        rollback("BTC", "v1", root=root)
    assert path.read_bytes() == damaged
    assert main(["registry", "history", "BTC", "--registry", str(root)]) == 2
    with pytest.raises(CrpbotError, match="unknown history event"):
        record_event(root, "BTC", "deleted")


def test_history_travels_with_push_and_pull_and_merges_by_union(tmp_path: Path, s3_endpoint: str) -> None:
    bucket = f"crpbot-test-{uuid.uuid4().hex[:10]}"
    raw_s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    raw_s3.create_bucket(Bucket=bucket)
    origin = _registry(tmp_path, "origin", (1, 2))
    rollback("BTC", "v1", root=origin)
    push(origin, bucket, endpoint_url=s3_endpoint)
    key = f"crpbot/BTC-USD/{HISTORY_FILE}"
    history_file = origin / "promoted" / "BTC-USD" / HISTORY_FILE
    assert raw_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == history_file.read_bytes()

    clone = tmp_path / "clone"
    pull(clone, bucket, endpoint_url=s3_endpoint)
    assert (clone / "promoted" / "BTC-USD" / HISTORY_FILE).read_bytes() == history_file.read_bytes()

    # a second machine with its own decisions: its push keeps the origin's records, and a pull
    # back into the origin brings the second machine's without dropping any
    other = _registry(tmp_path, "other", (7,))
    push(other, bucket, endpoint_url=s3_endpoint)
    remote = [
        json.loads(line) for line in raw_s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    ]
    assert sorted(r["version"] for r in remote) == ["v1", "v1", "v2", "v7"]
    pull(origin, bucket, coin="BTC", endpoint_url=s3_endpoint)
    assert sorted(r["version"] for r in read_history("BTC", root=origin)) == ["v1", "v1", "v2", "v7"]
    times = [r["time"] for r in read_history("BTC", root=origin)]
    assert times == sorted(times)

    # a remote history with a damaged record is refused before anything local changes
    raw_s3.put_object(Bucket=bucket, Key=key, Body=b'{"time": "2026-01-01T00:00:00+00:00", "ev\n')
    before = (clone / "promoted" / "BTC-USD" / HISTORY_FILE).read_bytes()
    with pytest.raises(CrpbotError, match="line 1 is not valid JSON"):
        pull(clone, bucket, endpoint_url=s3_endpoint)
    assert (clone / "promoted" / "BTC-USD" / HISTORY_FILE).read_bytes() == before

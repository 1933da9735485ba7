"""S3 push/pull against moto's real HTTP server: round trips, damaged objects, forged versions,
concurrent pushes."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import boto3
import pytest
import torch
from registry_helpers import make_model_artifact, registry_snapshot

from crpbot.cli import main
from crpbot.errors import CrpbotError
from crpbot.model.inference import load_model
from crpbot.registry.artifact import WEIGHTS_FILE
from crpbot.registry.local import current_path, current_version, list_versions, promote, show
from crpbot.registry.transfer import pull, push


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"crpbot-test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def raw_s3(s3_endpoint: str):
    """A plain boto3 client, used only to inspect and damage objects behind the registry's back."""
    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def pushed(tmp_path: Path, s3_endpoint: str, bucket: str) -> Path:
    """A local registry with BTC v1 and v2 (current), pushed to the bucket."""
    root = tmp_path / "origin"
    promote(make_model_artifact(tmp_path / "a"), "BTC", root=root, version="v1")
    promote(make_model_artifact(tmp_path / "b", seed=1), "BTC", root=root, version="v2")
    results = push(root, bucket, endpoint_url=s3_endpoint)
    assert [(r.version, r.uploaded) for r in results] == [("v1", True), ("v2", True)]
    return root


def test_push_pull_round_trip_is_byte_identical_and_loadable(
    tmp_path: Path, s3_endpoint: str, bucket: str, pushed: Path, raw_s3
) -> None:
    keys = sorted(o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert "crpbot/BTC-USD/current.json" in keys and "crpbot/BTC-USD/v2/model.safetensors" in keys

    clone = tmp_path / "clone"
    pulled = pull(clone, bucket, endpoint_url=s3_endpoint)
    assert [(p.coin, p.version, p.new) for p in pulled] == [("BTC-USD", "v2", True)]
    assert current_version("BTC", root=clone) == "v2"
    pull(clone, bucket, coin="BTC", version="v1", endpoint_url=s3_endpoint)
    assert current_version("BTC", root=clone) == "v2", "pulling a named version does not move current"
    origin_files = {k: v for k, v in registry_snapshot(pushed).items() if not k.endswith("current.json")}
    clone_files = {k: v for k, v in registry_snapshot(clone).items() if not k.endswith("current.json")}
    assert clone_files == origin_files
    model, _ = load_model(current_path("BTC", root=clone))
    original, _ = load_model(tmp_path / "b")
    windows = torch.randn(3, 7, 3)
    assert torch.equal(model(windows), original(windows))

    assert [r.uploaded for r in push(pushed, bucket, endpoint_url=s3_endpoint)] == [False, False]
    assert [p.new for p in pull(clone, bucket, endpoint_url=s3_endpoint)] == [False]


def _flip_last_byte(raw_s3, bucket: str, key: str) -> None:
    data = bytearray(raw_s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[-1] ^= 0xFF
    raw_s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))


def _truncate(raw_s3, bucket: str, key: str) -> None:
    data = raw_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    raw_s3.put_object(Bucket=bucket, Key=key, Body=data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, message",
    [
        (_flip_last_byte, "model.safetensors: sha256 does not match its manifest"),
        (_truncate, r"model.safetensors: \d+ bytes, manifest says \d+ \(truncated\?\)"),
        (lambda s3, b, k: s3.delete_object(Bucket=b, Key=k), "model.safetensors is missing"),
    ],
)
def test_damaged_object_fails_and_leaves_local_registry_unchanged(
    tmp_path: Path, s3_endpoint: str, bucket: str, pushed: Path, raw_s3, damage, message: str
) -> None:
    local = tmp_path / "local"
    promote(make_model_artifact(tmp_path / "c", seed=2), "BTC", root=local, version="v0")
    before = registry_snapshot(local)
    damage(raw_s3, bucket, f"crpbot/BTC-USD/v2/{WEIGHTS_FILE}")
    with pytest.raises(CrpbotError, match=message):
        pull(local, bucket, coin="BTC", endpoint_url=s3_endpoint)
    assert registry_snapshot(local) == before
    assert [r.version for r in list_versions(local)] == ["v0"]
    assert not [p for p in (local / "promoted" / "BTC-USD").iterdir() if p.name.startswith(".tmp-")]


def test_consistently_forged_manifest_is_caught_by_the_pointer(
    tmp_path: Path, s3_endpoint: str, bucket: str, pushed: Path, raw_s3
) -> None:
    import hashlib

    base = "crpbot/BTC-USD/v2"
    forged = b"not the weights"
    raw_s3.put_object(Bucket=bucket, Key=f"{base}/{WEIGHTS_FILE}", Body=forged)
    manifest = json.loads(raw_s3.get_object(Bucket=bucket, Key=f"{base}/manifest.json")["Body"].read())
    manifest["files"][WEIGHTS_FILE] = {"sha256": hashlib.sha256(forged).hexdigest(), "size": len(forged)}
    raw_s3.put_object(Bucket=bucket, Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode())
    with pytest.raises(CrpbotError, match="differs from the remote pointer"):
        pull(tmp_path / "local", bucket, endpoint_url=s3_endpoint)
    assert list_versions(tmp_path / "local") == []


def _forge(raw_s3, bucket: str, base: str, payload: bytes) -> str:
    """Rewrite a version's weights and its manifest coherently, as someone with write access could;
    returns the forged manifest's content digest."""
    import hashlib

    from crpbot.registry.artifact import content_digest

    raw_s3.put_object(Bucket=bucket, Key=f"{base}/{WEIGHTS_FILE}", Body=payload)
    manifest = json.loads(raw_s3.get_object(Bucket=bucket, Key=f"{base}/manifest.json")["Body"].read())
    manifest["files"][WEIGHTS_FILE] = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    raw_s3.put_object(Bucket=bucket, Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode())
    return content_digest(manifest)


def test_a_consistently_forged_named_version_is_refused_by_a_digest_from_outside_s3(
    tmp_path: Path, s3_endpoint: str, bucket: str, pushed: Path, raw_s3, capsys
) -> None:
    """Weights, manifest, pointer and history all rewritten to agree: S3 alone vouches for the forgery,
    so the digest must come from this registry's own records or from the user (--digest)."""
    v1 = show("BTC", "v1", root=pushed)["digest"]
    known = tmp_path / "known"  # a machine that pulled current before the forgery: it holds the records
    pull(known, bucket, endpoint_url=s3_endpoint)
    forged = _forge(raw_s3, bucket, "crpbot/BTC-USD/v1", b"forged weights")
    history_key = "crpbot/BTC-USD/history.jsonl"
    history = raw_s3.get_object(Bucket=bucket, Key=history_key)["Body"].read().decode()
    raw_s3.put_object(Bucket=bucket, Key=history_key, Body=history.replace(v1, forged).encode())
    assert (
        forged != v1 and forged in raw_s3.get_object(Bucket=bucket, Key=history_key)["Body"].read().decode()
    )

    before = registry_snapshot(known)
    with pytest.raises(
        CrpbotError, match=f"digest {forged[:12]} differs from the {v1[:12]} this registry recorded"
    ):
        pull(known, bucket, coin="BTC", version="v1", endpoint_url=s3_endpoint)
    assert registry_snapshot(known) == before, "nothing local was written, the forged history not merged"

    fresh = tmp_path / "fresh"  # no record of the push: refused without --digest, and with the true one
    with pytest.raises(CrpbotError, match="no independent digest for BTC-USD v1: .* pass --digest"):
        pull(fresh, bucket, coin="BTC", version="v1", endpoint_url=s3_endpoint)
    with pytest.raises(CrpbotError, match=f"manifest digest {forged[:12]} is not the --digest {v1[:12]}"):
        pull(fresh, bucket, coin="BTC", version="v1", digest=v1, endpoint_url=s3_endpoint)
    assert not fresh.exists() or list_versions(fresh) == []
    argv = ["registry", "pull", "--coin", "BTC", "--version", "v1", "--bucket", bucket]
    argv += ["--endpoint-url", s3_endpoint, "--registry", str(fresh)]
    assert main([*argv, "--digest", v1[:12]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not the --digest" in err
    assert main([*argv, "--digest", "xyz"]) == 2 and "invalid --digest 'xyz'" in capsys.readouterr().err

    # the unforged v2, on the fresh machine: accepted with its digest (a 12-digit prefix will do)
    v2 = show("BTC", "v2", root=pushed)["digest"]
    [pulled] = pull(fresh, bucket, coin="BTC", version="v2", digest=v2[:12], endpoint_url=s3_endpoint)
    assert pulled.digest == v2 and pulled.new


def test_concurrent_pushes_of_different_versions_do_not_clobber(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    roots = []
    for seed in range(3):
        root = tmp_path / f"machine{seed}"
        promote(make_model_artifact(tmp_path / f"m{seed}", seed=seed), "BTC", root=root, version=f"v{seed}")
        roots.append(root)
    errors: list[BaseException] = []

    def push_one(root: Path) -> None:
        try:
            push(root, bucket, endpoint_url=s3_endpoint)
        except BaseException as exc:  # collected and re-checked below
            errors.append(exc)

    threads = [threading.Thread(target=push_one, args=(root,)) for root in roots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    clone = tmp_path / "clone"
    for seed in range(3):  # a fresh machine: each digest comes from the machine that pushed it
        digest = show("BTC", f"v{seed}", root=roots[seed])["digest"]
        pulled = pull(clone, bucket, coin="BTC", version=f"v{seed}", digest=digest, endpoint_url=s3_endpoint)
        assert registry_snapshot(roots[seed] / "promoted" / "BTC-USD" / f"v{seed}") == registry_snapshot(
            pulled[0].path
        )
    pull(clone, bucket, endpoint_url=s3_endpoint)
    assert current_version("BTC", root=clone) in {"v0", "v1", "v2"}, (
        "the pointer names one complete version (last writer wins)"
    )


def test_pushing_different_content_under_an_existing_remote_version_is_refused(
    tmp_path: Path, s3_endpoint: str, bucket: str, pushed: Path, raw_s3
) -> None:
    other = tmp_path / "other"
    promote(make_model_artifact(tmp_path / "c", seed=5), "BTC", root=other, version="v2")
    key = "crpbot/BTC-USD/v2/model.safetensors"
    before = raw_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with pytest.raises(CrpbotError, match="s3://.*/v2 already holds different content"):
        push(other, bucket, endpoint_url=s3_endpoint)
    assert raw_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == before


def test_clear_errors_for_bucket_and_credentials(
    tmp_path: Path, s3_endpoint: str, pushed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CrpbotError, match="s3://no-such-bucket is not accessible"):
        push(pushed, "no-such-bucket", endpoint_url=s3_endpoint)
    with pytest.raises(CrpbotError, match="nothing to push"):
        push(tmp_path / "empty", "whatever", endpoint_url=s3_endpoint)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CrpbotError, match="no AWS credentials found"):
        push(pushed, "whatever", endpoint_url=s3_endpoint)


def test_cli_push_and_pull_with_endpoint_from_environment(
    tmp_path: Path,
    s3_endpoint: str,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_model_artifact(tmp_path / "a")
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    printed: list[str] = []

    def crpbot(*argv: str) -> int:
        code = main(list(argv))
        captured = capsys.readouterr()
        printed.append(captured.out + captured.err)
        return code

    assert (
        crpbot(
            "promote",
            "--model",
            str(tmp_path / "a"),
            "--coin",
            "ETH",
            "--registry",
            str(origin),
            "--bucket",
            bucket,
            "--prefix",
            "team/models",
            "--endpoint-url",
            s3_endpoint,
        )
        == 2
    )
    assert "trained for BTC-USD, not ETH-USD" in printed[-1]
    assert (
        crpbot(
            "promote",
            "--model",
            str(tmp_path / "a"),
            "--coin",
            "BTC",
            "--registry",
            str(origin),
            "--bucket",
            bucket,
            "--prefix",
            "team/models",
            "--endpoint-url",
            s3_endpoint,
        )
        == 0
    )
    assert "uploaded to s3://" in printed[-1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert (
        crpbot("registry", "pull", "--bucket", bucket, "--prefix", "team/models", "--registry", str(clone))
        == 0
    )
    assert "pulled into" in printed[-1]
    assert current_version("BTC", root=clone) == current_version("BTC", root=origin)
    assert crpbot("registry", "push", "--bucket", bucket, "--registry", str(clone), "--coin", "SOL") == 2
    assert "nothing to push: no promoted SOL-USD model" in printed[-1]
    assert crpbot("registry", "pull", "--bucket", "no-such-bucket", "--registry", str(clone)) == 2
    assert "not accessible" in printed[-1]
    assert not [text for text in printed if "testing" in text], "credentials are never printed"

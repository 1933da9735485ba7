"""Run-state storage: a path or ``s3://bucket/prefix``; anything that would silently become a
local directory named after a URI is refused up front (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crpbot.errors import CrpbotError
from crpbot.registry.storage import join, ray_storage, validate_storage


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3:/bucket/runs", "malformed S3 URI"),
        ("S3://bucket", "malformed S3 URI"),
        ("gs://bucket/runs", "unsupported scheme 'gs'"),
        ("file:///tmp/runs", "unsupported scheme 'file'"),
        ("", "storage is empty"),
    ],
)
def test_bad_storage_is_refused(storage: str, message: str) -> None:
    with pytest.raises(CrpbotError, match=message):
        validate_storage(storage)
    with pytest.raises(CrpbotError, match=message):
        join(storage, "BTC-USD")
    with pytest.raises(CrpbotError, match=message):
        ray_storage(storage, default="runs")


@pytest.mark.parametrize(
    "storage", [None, "runs", "./runs:old", "/tmp/x", Path("runs"), "s3://b", "s3://b/p/"]
)
def test_good_storage_passes(storage) -> None:
    validate_storage(storage)


def test_join_keeps_uris_and_paths() -> None:
    assert join("s3://bucket/runs/", "BTC-USD", "train") == "s3://bucket/runs/BTC-USD/train"
    assert join("s3://bucket", "BTC-USD") == "s3://bucket/BTC-USD"
    assert join("runs", "BTC-USD", "train") == Path("runs/BTC-USD/train")
    # joined twice, as the pipeline does (run storage -> coin -> train), a URI stays a URI
    assert join(join("s3://bucket", "BTC-USD"), "train") == "s3://bucket/BTC-USD/train"


def test_ray_storage_local_is_absolute_and_s3_drops_the_scheme(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path, filesystem = ray_storage(None, default="runs")
    assert path == str(tmp_path.resolve() / "runs") and filesystem is None
    path, filesystem = ray_storage("s3://bucket/runs/", default="runs")
    assert path == "bucket/runs" and filesystem is not None


def test_train_and_search_refuse_bad_storage_before_ray(tmp_path, monkeypatch) -> None:
    from crpbot.config import TrainConfig
    from crpbot.model.trainer import train
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    def ray_started(*args, **kwargs):
        pytest.fail("Ray started before the storage was checked")

    monkeypatch.setattr("crpbot.model.trainer.init_ray", ray_started)
    monkeypatch.setattr("crpbot.search.tune.init_ray", ray_started)
    with pytest.raises(CrpbotError, match="no bucket"):
        train(TrainConfig(), "BTC", out_dir=tmp_path / "model", storage_path="s3://")
    space = load_search_space(Path(__file__).resolve().parents[1] / "tune_configs" / "smoke_search.yaml")
    with pytest.raises(CrpbotError, match="unsupported scheme 'gs'"):
        run_search(space, "BTC", storage="gs://bucket/runs", name="s")
    assert not (tmp_path / "model").exists()

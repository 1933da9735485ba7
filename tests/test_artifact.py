"""Safe artifacts: real safetensors/JSON files, real tampering, a real code-running pickle."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from crpbot import __version__
from crpbot.errors import CrpbotError
from crpbot.registry.artifact import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    check_output_location,
    content_digest,
    load_torch_file,
    load_weights,
    read_artifact_json,
    verify_artifact,
    write_artifact,
)


def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.LSTM(input_size=3, hidden_size=4, batch_first=True, bidirectional=True).state_dict()


def make_model(out: Path, **overrides) -> Path:
    kwargs = dict(
        json_files={
            "config.json": {"kind": "model", "coin": "BTC-USD", "input_size": 3},
            "history.json": [{"epoch": 0, "val_loss": 0.69}],
        },
        tensors=tiny_state(),
        data_fingerprint="f" * 64,
    )
    kwargs.update(overrides)
    return write_artifact(out, **kwargs)


def test_round_trip_and_manifest_contents(tmp_path: Path) -> None:
    out = make_model(tmp_path / "model")
    weights = load_weights(out)
    expected = tiny_state()
    assert set(weights) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor)
    assert read_artifact_json(out, "config.json")["coin"] == "BTC-USD"
    manifest = verify_artifact(out)
    assert manifest["crpbot_version"] == __version__
    assert manifest["data_fingerprint"] == "f" * 64
    assert "git_commit" in manifest and "created_at" in manifest
    assert sorted(manifest["files"]) == ["config.json", "history.json", WEIGHTS_FILE]
    assert manifest["files"][WEIGHTS_FILE]["size"] == (out / WEIGHTS_FILE).stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no temp directory left behind"


def test_identical_content_has_identical_digest(tmp_path: Path) -> None:
    first = verify_artifact(make_model(tmp_path / "a"))
    second = verify_artifact(make_model(tmp_path / "b"))
    other = verify_artifact(
        make_model(
            tmp_path / "c",
            data_fingerprint="e" * 64,
            json_files={"config.json": {"kind": "model", "coin": "ETH-USD"}},
        )
    )
    assert content_digest(first) == content_digest(second) != content_digest(other)


def test_existing_directory_refused_then_replaced_only_when_complete(tmp_path: Path) -> None:
    out = make_model(tmp_path / "model")
    with pytest.raises(CrpbotError, match="already exists"):
        make_model(out)
    with pytest.raises(CrpbotError, match="strict JSON"):
        make_model(out, overwrite=True, json_files={"config.json": {"loss": float("nan")}})
    assert read_artifact_json(out, "config.json")["coin"] == "BTC-USD", "failed rewrite kept the old one"
    make_model(out, overwrite=True, json_files={"config.json": {"coin": "SOL-USD"}})
    assert read_artifact_json(out, "config.json") == {"coin": "SOL-USD"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_ensemble_copies_verified_members(tmp_path: Path) -> None:
    members = {f"members/seed_{i}": make_model(tmp_path / f"seed_{i}") for i in range(2)}
    with pytest.raises(CrpbotError, match="collide"):
        write_artifact(
            tmp_path / "ens",
            json_files={},
            data_fingerprint="f",
            copy_dirs={**members, "members": tmp_path / "seed_0"},
        )
    with pytest.raises(CrpbotError, match="unsafe file name"):
        write_artifact(
            tmp_path / "ens",
            json_files={},
            data_fingerprint="f",
            copy_dirs={"../outside": tmp_path / "seed_0"},
        )
    ensemble = write_artifact(
        tmp_path / "ens",
        data_fingerprint="f" * 64,
        copy_dirs=members,
        json_files={
            "config.json": {"kind": "ensemble", "members": sorted(members)},
            "calibration.json": {"temperature": 1.3, "fitted_on": "val"},
        },
    )
    manifest = verify_artifact(ensemble)
    assert "members/seed_1/model.safetensors" in manifest["files"]
    assert "members/seed_1/manifest.json" in manifest["files"]
    member_weights = load_weights(ensemble / "members/seed_0")
    assert torch.equal(member_weights["weight_ih_l0"], tiny_state()["weight_ih_l0"])

    (tmp_path / "seed_0" / WEIGHTS_FILE).write_bytes(b"broken")
    with pytest.raises(CrpbotError, match="seed_0.*model.safetensors"):
        write_artifact(tmp_path / "ens2", json_files={}, data_fingerprint="f", copy_dirs=members)
    assert not (tmp_path / "ens2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: _flip_byte(d / WEIGHTS_FILE), "model.safetensors does not match its sha256"),
        (lambda d: _truncate(d / WEIGHTS_FILE), "model.safetensors has .* bytes, manifest says"),
        (lambda d: (d / "history.json").unlink(), "missing file history.json"),
        (lambda d: (d / "notes.txt").write_text("x"), "unexpected file notes.txt"),
        (lambda d: (d / MANIFEST_FILE).unlink(), "missing file manifest.json"),
        (
            lambda d: _rewrite_manifest(d, lambda m: m["files"]["config.json"].update(sha256="0" * 64)),
            "config.json does not match its sha256",
        ),
        (
            lambda d: _rewrite_manifest(
                d, lambda m: m["files"].update({"../x.json": {"sha256": "0", "size": 1}})
            ),
            "unsafe file name",
        ),
    ],
)
def test_damaged_artifact_is_refused_naming_the_file(tmp_path: Path, damage, message: str) -> None:
    out = make_model(tmp_path / "model")
    damage(out)
    with pytest.raises(CrpbotError, match=message):
        load_weights(out)


def test_read_json_checks_that_file(tmp_path: Path) -> None:
    out = make_model(tmp_path / "model")
    (out / "config.json").write_text(json.dumps({"kind": "model", "coin": "ETH-USD", "input_size": 3}))
    with pytest.raises(CrpbotError, match="config.json"):
        read_artifact_json(out, "config.json")
    with pytest.raises(CrpbotError, match="not listed"):
        read_artifact_json(out, "scaler.json")


class _Payload:
    """Unpickling this creates a marker file: the shape of a code-execution attack, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"weight": torch.zeros(2), "x": _Payload(marker)}
    if writer == "pickle":
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, evil)
    with pytest.raises(CrpbotError, match="refusing to load .*evil.pt"):
        load_torch_file(evil)
    assert not marker.exists()
    # the payload is live: an ordinary unpickler would have run it
    if writer == "pickle":
        pickle.loads(evil.read_bytes())
    else:
        torch.load(evil, weights_only=False)
    assert marker.exists()


def test_weights_only_torch_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(tiny_state(), path)
    loaded = load_torch_file(path)
    assert torch.equal(loaded["weight_hh_l0"], tiny_state()["weight_hh_l0"])
    with pytest.raises(CrpbotError, match="not found"):
        load_torch_file(tmp_path / "absent.pt")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _rewrite_manifest(out: Path, change) -> None:
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    change(manifest)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_output_under_a_file_is_a_one_line_error_before_anything_is_written(tmp_path: Path) -> None:
    afile = tmp_path / "data.parquet"
    afile.write_bytes(b"not a directory")
    with pytest.raises(CrpbotError, match=f"cannot write {afile}/run/model: {afile} is not a directory"):
        check_output_location(afile / "run" / "model")
    with pytest.raises(CrpbotError, match=f"cannot write {afile}: it exists and is not a directory"):
        check_output_location(afile)
    assert check_output_location(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists(), "the check creates nothing"
    with pytest.raises(CrpbotError, match=f"{afile} is not a directory"):
        make_model(afile / "model")
    with pytest.raises(CrpbotError, match="it exists and is not a directory"):
        make_model(afile, overwrite=True)
    assert afile.read_bytes() == b"not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]

"""Local registry: real artifact directories, real SIGKILLed promotions, the real CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from registry_helpers import make_model_artifact, registry_snapshot

from crpbot.cli import main
from crpbot.errors import CrpbotError
from crpbot.model.inference import load_model
from crpbot.registry.artifact import WEIGHTS_FILE
from crpbot.registry.local import (
    POINTER_FILE,
    coin_dir,
    current_path,
    current_version,
    list_versions,
    promote,
    rollback,
    show,
)

REPO = Path(__file__).resolve().parents[1]


def test_promote_then_load_current(tmp_path: Path) -> None:
    root = tmp_path / "models"
    source = make_model_artifact(tmp_path / "run")
    promoted = promote(source, "btc", root=root)
    assert promoted.coin == "BTC-USD" and promoted.new
    assert promoted.path == coin_dir(root, "BTC-USD") / promoted.version
    assert promoted.version.startswith("v") and promoted.version.endswith(promoted.digest[:8])
    assert current_version("BTC", root=root) == promoted.version
    assert current_path("BTC", root=root) == promoted.path
    model, _ = load_model(current_path("BTC", root=root))
    original, _ = load_model(source)
    windows = torch.randn(2, 5, 3)
    assert torch.equal(model(windows), original(windows))
    rows = list_versions(root)
    assert [(r.coin, r.version, r.kind, r.current) for r in rows] == [
        ("BTC-USD", promoted.version, "model", True)
    ]
    described = show("BTC", root=root)
    assert described["verified"] and described["current"] and described["config"]["coin"] == "BTC-USD"
    assert not (promoted.path / WEIGHTS_FILE).stat().st_mode & 0o222, "promoted files are read-only"


def test_same_content_is_idempotent_and_versions_are_immutable(tmp_path: Path) -> None:
    root = tmp_path / "models"
    first = promote(make_model_artifact(tmp_path / "a"), "BTC", root=root, version="v1")
    again = promote(make_model_artifact(tmp_path / "a_rebuilt"), "BTC", root=root)
    assert (again.version, again.new) == ("v1", False), "byte-identical weights and JSON: same version"
    with pytest.raises(CrpbotError, match="already promoted as v1"):
        promote(tmp_path / "a", "BTC", root=root, version="v9")
    before = registry_snapshot(root)
    with pytest.raises(CrpbotError, match="v1 already exists with different content"):
        promote(make_model_artifact(tmp_path / "b", seed=1), "BTC", root=root, version="v1")
    with pytest.raises(CrpbotError, match="trained for BTC-USD, not ETH-USD"):
        promote(tmp_path / "a", "ETH", root=root)
    with pytest.raises(CrpbotError, match="unknown coin"):
        promote(tmp_path / "a", "DOGE", root=root)
    with pytest.raises(CrpbotError, match="invalid version name"):
        promote(tmp_path / "b", "BTC", root=root, version="../evil")
    assert registry_snapshot(root) == before
    assert [r.version for r in list_versions(root)] == [first.version]


def test_tampered_source_is_not_promoted(tmp_path: Path) -> None:
    root = tmp_path / "models"
    source = make_model_artifact(tmp_path / "run")
    weights = source / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CrpbotError, match="model.safetensors does not match its sha256"):
        promote(source, "BTC", root=root)
    assert list_versions(root) == []


def test_rollback_and_refusing_a_corrupt_target(tmp_path: Path) -> None:
    root = tmp_path / "models"
    old = promote(make_model_artifact(tmp_path / "a"), "BTC", root=root, version="v1")
    new = promote(make_model_artifact(tmp_path / "b", seed=1), "BTC", root=root, version="v2")
    assert current_version("BTC", root=root) == new.version
    assert rollback("BTC", "v1", root=root).path == old.path
    assert current_version("BTC", root=root) == "v1"
    assert [r.version for r in list_versions(root) if r.current] == ["v1"]
    with pytest.raises(CrpbotError, match=r"unknown BTC-USD version 'v3' \(promoted: v1, v2\)"):
        rollback("BTC", "v3", root=root)
    weights = new.path / WEIGHTS_FILE
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(CrpbotError, match="v2: model.safetensors has"):
        rollback("BTC", "v2", root=root)
    assert current_version("BTC", root=root) == "v1"


# The child kills itself with a real SIGKILL at the named instant, found through Python's audit
# events (sys.addaudithook), so the product code carries no fault-injection hook.
KILL_AT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    point, model, root = sys.argv[1:4]

    def die_at(event, args):
        if event == "shutil.copyfile" and ".tmp-" in str(args[1]) and point == "mid-copy":
            os.kill(os.getpid(), signal.SIGKILL)
        if event == "os.rename":
            source, target = Path(str(args[0])), Path(str(args[1]))
            if point == "before-rename" and source.name.startswith(".tmp-v") and target.name == "v2":
                os.kill(os.getpid(), signal.SIGKILL)
            if point == "before-pointer" and target.name == "current.json":
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(die_at)
    from crpbot.registry.local import promote
    promote(model, "BTC", root=root, version="v2")
""")


@pytest.mark.parametrize("point", ["mid-copy", "before-rename", "before-pointer"])
def test_killed_promotion_leaves_previous_current_intact(tmp_path: Path, point: str) -> None:
    root = tmp_path / "models"
    promote(make_model_artifact(tmp_path / "a"), "BTC", root=root, version="v1")
    candidate = make_model_artifact(tmp_path / "b", seed=1)
    pointer_before = (coin_dir(root, "BTC-USD") / POINTER_FILE).read_bytes()
    child = subprocess.run(
        [sys.executable, "-c", KILL_AT, point, str(candidate), str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr

    assert (coin_dir(root, "BTC-USD") / POINTER_FILE).read_bytes() == pointer_before
    assert current_version("BTC", root=root) == "v1"
    load_model(current_path("BTC", root=root))
    visible = [r.version for r in list_versions(root)]
    assert visible == (["v1", "v2"] if point == "before-pointer" else ["v1"])
    if point != "before-pointer":
        assert any(p.name.startswith(".tmp-") for p in coin_dir(root, "BTC-USD").iterdir()), (
            "the kill really happened mid-promotion"
        )

    retried = promote(candidate, "BTC", root=root, version="v2")
    assert retried.new == (point != "before-pointer")
    assert current_version("BTC", root=root) == "v2"
    assert not [p for p in coin_dir(root, "BTC-USD").iterdir() if p.name.startswith(".tmp-")]
    show("BTC", "v2", root=root)


def test_cli_promote_list_show_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "models"
    make_model_artifact(tmp_path / "a")
    make_model_artifact(tmp_path / "b", seed=1)
    assert (
        main(
            [
                "promote",
                "--model",
                str(tmp_path / "a"),
                "--coin",
                "BTC",
                "--registry",
                str(root),
                "--version",
                "v1",
            ]
        )
        == 0
    )
    assert main(["promote", "--model", str(tmp_path / "b"), "--coin", "BTC", "--registry", str(root)]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--registry", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("  BTC-USD") and lines[1].startswith("* BTC-USD")
    assert main(["registry", "rollback", "BTC", "v1", "--registry", str(root)]) == 0
    assert "BTC-USD current -> v1" in capsys.readouterr().out
    assert main(["registry", "show", "BTC", "--registry", str(root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "v1" and shown["current"] and shown["verified"]
    assert main(["registry", "show", "SOL", "--registry", str(root)]) == 2
    assert "no promoted SOL-USD model" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert main(["promote", "--model", str(missing), "--coin", "BTC", "--registry", str(root)]) == 2
    assert "artifact directory not found" in capsys.readouterr().err


def test_registry_root_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    source = make_model_artifact(tmp_path / "run")
    afile = tmp_path / "models.parquet"
    afile.write_bytes(b"x")
    with pytest.raises(
        CrpbotError, match=f"cannot write {afile}/promoted/BTC-USD: {afile} is not a directory"
    ):
        promote(source, "BTC", root=afile)
    assert main(["promote", "--model", str(source), "--coin", "BTC", "--registry", str(afile)]) == 2
    assert f"{afile} is not a directory" in capsys.readouterr().err
    assert afile.read_bytes() == b"x"


def test_stray_folders_are_skipped_by_list_with_one_warning(tmp_path: Path, capsys) -> None:
    root = tmp_path / "models"
    promoted = promote(make_model_artifact(tmp_path / "run"), "BTC", root=root)
    (coin_dir(root, "BTC-USD") / "notes").mkdir()
    (coin_dir(root, "BTC-USD") / "notes" / "readme.txt").write_text("mine")
    (root / "promoted" / "scratch").mkdir()
    warnings: list[str] = []
    rows = list_versions(root, log=warnings.append)
    assert [(r.coin, r.version, r.current) for r in rows] == [("BTC-USD", promoted.version, True)]
    assert len(warnings) == 1 and warnings[0].startswith("Warning: skipped 2 folder(s)")
    assert "notes: missing file manifest.json" in warnings[0] and "scratch (not a coin)" in warnings[0]
    assert main(["registry", "list", "--registry", str(root)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith(f"* BTC-USD  {promoted.version}")
    assert captured.err.count("Warning: skipped") == 1

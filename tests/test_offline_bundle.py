"""``scripts/install_offline.sh`` on tiny fabricated bundles: it installs a whole bundle or nothing.

The real bundle (Ray, Optuna, boto3: ~25 MiB, minutes to build) is built and installed into a
fresh virtual environment by ``scripts/check_offline_bundle.sh`` (``make check-bundle``); here
only the installer's checks run, in a second.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install_offline.sh"
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def make_bundle(
    directory: Path, python: str = THIS_PYTHON, tamper: bool = False, assumed: str = "pytest"
) -> Path:
    """A bundle of one module, assuming the image has ``assumed`` (a distribution name)."""
    name = f"crpbot-offline-py{python}-x86_64"
    root = directory / "src" / name
    (root / "site").mkdir(parents=True)
    (root / "site" / "offline_probe.py").write_text("ANSWER = 42\n")
    (root / "ASSUMED.txt").write_text(f"# the image must provide these\n{assumed}\n")
    (root / "MANIFEST.sha256").write_text(
        f"{hashlib.sha256(b'ANSWER = 42' + bytes([10])).hexdigest()}  site/offline_probe.py\n"
        f"{hashlib.sha256((root / 'ASSUMED.txt').read_bytes()).hexdigest()}  ASSUMED.txt\n"
    )
    if tamper:  # a file that no longer matches the manifest
        (root / "site" / "offline_probe.py").write_text("ANSWER = 41\n")
    archive = directory / f"{name}.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(root, arcname=name)
    archive.with_name(archive.name + ".sha256").write_text(
        f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}\n"
    )
    return archive


def install(bundle: Path, prefix: Path, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL), str(bundle), str(prefix)],
        capture_output=True,
        text=True,
        env={"PATH": f"{Path(sys.executable).parent}:{path}", "PYTHON": sys.executable},
    )


def test_a_good_bundle_installs_with_an_activate_file(tmp_path) -> None:
    prefix = tmp_path / "opt" / "crpbot"
    proc = install(make_bundle(tmp_path), prefix)
    assert proc.returncode == 0, proc.stderr
    probe = subprocess.run(
        [
            "bash",
            "-c",
            f'. "{prefix}/activate" && "{sys.executable}" -c "import offline_probe as p; print(p.ANSWER)"',
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "42", probe.stderr
    assert (prefix / "bin" / "ray").is_file() and (prefix / "bin" / "crpbot").is_file()
    assert [p.name for p in prefix.parent.iterdir()] == ["crpbot"]  # no staging directory left


def _corrupt(archive: Path) -> Path:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    return archive


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: make_bundle(d, python="2.7"), "the bundle is for Python 2.7, but"),
        (lambda d: _corrupt(make_bundle(d)), "does not match"),
        (
            lambda d: (_corrupt(b := make_bundle(d)), b.with_name(b.name + ".sha256").unlink())[0],
            "not a readable",
        ),
        (
            lambda d: (b := make_bundle(d, tamper=True), b.with_name(b.name + ".sha256").unlink())[0],
            "MANIFEST",
        ),
        (lambda d: d / "crpbot-offline-py3.12-x86_64.tar.xz", "no bundle at"),
        (
            lambda d: make_bundle(d, assumed="no-such-distribution==1.0"),
            "lacks what the bundle assumes of the image: no-such-distribution==1.0",
        ),
    ],
    ids=["wrong-python", "corrupt-archive", "unreadable", "manifest-mismatch", "missing", "image-lacks"],
)
def test_a_bad_bundle_is_refused_in_one_line_and_leaves_nothing(tmp_path, make, message) -> None:
    bundle = make(tmp_path)
    prefix = tmp_path / "opt" / "crpbot"
    proc = install(bundle, prefix)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not prefix.exists()
    assert not prefix.parent.exists() or list(prefix.parent.iterdir()) == []  # nothing half-unpacked


def test_an_existing_prefix_is_never_overwritten(tmp_path) -> None:
    prefix = tmp_path / "crpbot"
    prefix.mkdir()
    (prefix / "keep.txt").write_text("mine")
    proc = install(make_bundle(tmp_path), prefix)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert [p.name for p in prefix.iterdir()] == ["keep.txt"]


def test_the_same_bundle_again_is_a_no_op(tmp_path) -> None:
    bundle, prefix = make_bundle(tmp_path), tmp_path / "crpbot"
    assert install(bundle, prefix).returncode == 0
    (prefix / "keep.txt").write_text("mine")
    again = install(bundle, prefix)
    assert again.returncode == 0 and "already installed" in again.stdout, again.stderr
    assert (prefix / "keep.txt").read_text() == "mine"


def test_a_missing_xz_binary_is_named_not_reported_as_a_corrupt_bundle(tmp_path) -> None:
    no_xz = tmp_path / "bin"
    no_xz.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name not in ("xz", "unxz", "xzcat"):
            (no_xz / tool.name).symlink_to(tool)
    proc = install(make_bundle(tmp_path), tmp_path / "crpbot", path=str(no_xz))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no xz binary on PATH" in proc.stderr, proc.stderr

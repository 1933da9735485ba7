"""The local model registry: immutable promoted versions per coin and an atomic ``current`` pointer.

Layout (local and, under ``<prefix>/``, on S3)::

    models/promoted/BTC-USD/v20250101T120000Z-1a2b3c4d/   a verified artifact directory, never edited
    models/promoted/BTC-USD/current.json                  {"version": ..., "digest": ...}

Why this shape: a version directory appears only by ``os.rename`` of a complete, verified
copy, and ``current.json`` changes only by ``os.replace``; a crash at any instant therefore
leaves the previous ``current`` naming a complete version. On S3 a version's ``manifest.json``
is its commit marker (written last, conditionally) and the coin's ``current.json`` is written
after the version it names is complete and read back (``crpbot.registry.transfer``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crpbot.data.bars import COINS, normalize_coin
from crpbot.errors import CrpbotError
from crpbot.registry.artifact import (
    content_digest,
    fsync_dir,
    make_dirs,
    read_artifact_json,
    read_manifest,
    verify_artifact,
    write_json_atomic,
)

DEFAULT_ROOT = "models"
PROMOTED_DIR = "promoted"
POINTER_FILE = "current.json"
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_LOCK_FILE = ".lock"
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class PromotedVersion:
    """A version in the local registry; ``new`` is False when the content was already there."""

    coin: str
    version: str
    path: Path
    digest: str = ""
    new: bool = False


@dataclass(frozen=True)
class VersionInfo:
    """One row of ``crpbot registry list``."""

    coin: str
    version: str
    path: Path
    digest: str
    created_at: str
    data_fingerprint: str
    kind: str
    current: bool


def promote(
    model_dir: str | Path, coin: str, *, root: str | Path = DEFAULT_ROOT, version: str | None = None
) -> PromotedVersion:
    """Copy a verified artifact into the registry as an immutable version and make it ``current``.

    Promoting content that is already there (same manifest digest) copies nothing and only moves
    the pointer; a version name that already holds different content is refused.
    """
    coin = normalize_coin(coin)
    model_dir = Path(model_dir)
    manifest = verify_artifact(model_dir)
    _check_artifact_coin(model_dir, manifest, coin)
    digest = content_digest(manifest)
    if version is not None:
        check_version_name(version)
    directory = coin_dir(root, coin)
    with coin_lock(directory):
        existing = _find_digest(directory, digest)
        if existing is not None and version not in (None, existing):
            raise CrpbotError(
                f"{coin}: this model is already promoted as {existing}; not copying it again as {version}"
            )
        name = existing or version or _auto_version_name(digest)
        new = existing is None
        if new:
            if (directory / name).exists():
                raise CrpbotError(
                    f"{coin} version {name} already exists with different content "
                    "(promoted versions are immutable)"
                )
            install(directory, name, digest, lambda tmp: shutil.copytree(model_dir, tmp))
        _move_pointer(directory, "promote", name, digest, source=str(model_dir))
    return PromotedVersion(coin, name, directory / name, digest, new)


def rollback(coin: str, version: str, *, root: str | Path = DEFAULT_ROOT) -> PromotedVersion:
    """Point ``current`` at an earlier version, after verifying that version is intact."""
    coin = normalize_coin(coin)
    directory = coin_dir(root, coin)
    path = _version_path(directory, coin, version)
    digest = content_digest(verify_artifact(path))
    with coin_lock(directory):
        _move_pointer(directory, "rollback", version, digest)
    return PromotedVersion(coin, version, path, digest, False)


def _move_pointer(directory: Path, event: str, version: str, digest: str, **facts: Any) -> None:
    """Point ``current`` at ``version`` and record the move in the coin's history (lock held)."""
    from crpbot.registry.history import append_locked

    previous = read_pointer(directory)
    write_pointer(directory, version, digest)
    if previous is None or previous["version"] != version:
        previous_version = None if previous is None else previous["version"]
        append_locked(directory, event, version=version, previous=previous_version, digest=digest, **facts)


def current_version(coin: str, *, root: str | Path = DEFAULT_ROOT) -> str | None:
    """The version ``current`` names, or None before the first promotion."""
    pointer = read_pointer(coin_dir(root, normalize_coin(coin)))
    return None if pointer is None else pointer["version"]


def current_path(coin: str, *, root: str | Path = DEFAULT_ROOT) -> Path:
    """Directory of the current version of a coin (what inference should load)."""
    coin = normalize_coin(coin)
    version = current_version(coin, root=root)
    if version is None:
        raise CrpbotError(f"no promoted {coin} model in {Path(root) / PROMOTED_DIR}")
    return coin_dir(root, coin) / version


def list_versions(
    root: str | Path = DEFAULT_ROOT, coin: str | None = None, *, log: Callable[[str], None] = print
) -> list[VersionInfo]:
    """Every promoted version (by coin, then name), from manifests; only config.json is hashed (for its kind).

    A folder that is not a version (no readable manifest, or a coin folder of no known coin)
    is skipped and named in one warning line, so one stray folder cannot hide the real versions.
    """
    rows = []
    skipped = []
    for name in [normalize_coin(coin)] if coin else local_coins(root):
        if name not in COINS:
            skipped.append(f"{coin_dir(root, name)} (not a coin)")
            continue
        directory = coin_dir(root, name)
        current = current_version(name, root=root) if directory.is_dir() else None
        for version in version_names(directory):
            try:
                rows.append(_version_info(name, directory / version, version == current))
            except CrpbotError as exc:
                skipped.append(str(exc))
    if skipped:
        log(f"Warning: skipped {len(skipped)} folder(s) that are not promoted versions: {'; '.join(skipped)}")
    return rows


def _version_info(coin: str, path: Path, current: bool) -> VersionInfo:
    manifest = read_manifest(path)
    kind = ""
    if "config.json" in manifest["files"]:
        config = read_artifact_json(path, "config.json")
        kind = str(config.get("kind", "")) if isinstance(config, dict) else ""
    return VersionInfo(
        coin,
        path.name,
        path,
        content_digest(manifest),
        str(manifest.get("created_at", "")),
        str(manifest.get("data_fingerprint", "")),
        kind,
        current,
    )


def show(coin: str, version: str | None = None, *, root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """Verify one version (default: current) and describe it: manifest facts plus its config.json."""
    coin = normalize_coin(coin)
    directory = coin_dir(root, coin)
    current = current_version(coin, root=root) if directory.is_dir() else None
    version = version or current
    if version is None:
        raise CrpbotError(f"no promoted {coin} model in {Path(root) / PROMOTED_DIR}")
    path = _version_path(directory, coin, version)
    manifest = verify_artifact(path)
    files = manifest["files"]
    return {
        "coin": coin,
        "version": version,
        "current": version == current,
        "path": str(path),
        "digest": content_digest(manifest),
        "verified": True,
        "created_at": manifest.get("created_at"),
        "crpbot_version": manifest.get("crpbot_version"),
        "git_commit": manifest.get("git_commit"),
        "data_fingerprint": manifest.get("data_fingerprint"),
        "files": len(files),
        "bytes": sum(entry["size"] for entry in files.values()),
        "config": read_artifact_json(path, "config.json") if "config.json" in files else None,
    }


def coin_dir(root: str | Path, coin: str) -> Path:
    return Path(root) / PROMOTED_DIR / coin


def install(directory: Path, version: str, digest: str, fill: Any) -> None:
    """Fill a temp dir beside the version, verify it, freeze it, rename it into place."""
    tmp = directory / f"{_TEMP_PREFIX}{version}-{uuid.uuid4().hex[:12]}"
    try:
        fill(tmp)
        installed = verify_artifact(tmp)
        if content_digest(installed) != digest:
            raise CrpbotError(f"{directory.name} version {version}: content changed while it was copied")
        _make_files_read_only(tmp)
        os.rename(tmp, directory / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(directory)


@contextlib.contextmanager
def coin_lock(directory: Path) -> Iterator[None]:
    """Serialise writers of one coin (promote, pull, rollback) and clear temp dirs of crashed ones."""
    make_dirs(directory)
    with open(directory / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            for leftover in directory.glob(f"{_TEMP_PREFIX}*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_pointer(directory: Path, version: str, digest: str) -> None:
    write_json_atomic(directory / POINTER_FILE, pointer_record(version, digest))


def pointer_record(version: str, digest: str) -> dict[str, str]:
    return {
        "version": version,
        "digest": digest,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_pointer(directory: Path) -> dict[str, str] | None:
    path = directory / POINTER_FILE
    if not path.is_file():
        return None
    pointer = parse_pointer(path.read_bytes(), str(path))
    if not (directory / pointer["version"]).is_dir():
        raise CrpbotError(f"{path} names version {pointer['version']}, which is not in the registry")
    return pointer


def parse_pointer(raw: bytes, where: str) -> dict[str, str]:
    try:
        pointer = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CrpbotError(f"{where} is not valid JSON") from exc
    if not (
        isinstance(pointer, dict)
        and isinstance(pointer.get("version"), str)
        and isinstance(pointer.get("digest"), str)
    ):
        raise CrpbotError(f"{where} lacks a version and digest")
    check_version_name(pointer["version"])
    return pointer


def check_same_content(manifest: dict, digest: str, where: str) -> None:
    if content_digest(manifest) != digest:
        raise CrpbotError(f"{where} already holds different content (versions are immutable)")


def _check_artifact_coin(model_dir: Path, manifest: dict, coin: str) -> None:
    """Refuse what is not a model/ensemble artifact, or a model not trained on ``coin``."""
    if "config.json" not in manifest["files"]:
        raise CrpbotError(f"{model_dir} is not a model artifact: no config.json")
    config = read_artifact_json(model_dir, "config.json")
    if not isinstance(config, dict) or config.get("kind") not in ("model", "ensemble"):
        raise CrpbotError(f"{model_dir}/config.json: kind must be 'model' or 'ensemble'")
    covered = config.get("coins")  # a global model: promoted for each coin it was trained on
    if isinstance(covered, list):
        if coin not in covered:
            raise CrpbotError(f"{model_dir} is a global model of {', '.join(covered)}, not trained on {coin}")
        return
    trained_for = config.get("coin")
    if trained_for is not None and normalize_coin(trained_for) != coin:
        raise CrpbotError(f"{model_dir} was trained for {trained_for}, not {coin}")


def _find_digest(directory: Path, digest: str) -> str | None:
    for version in version_names(directory):
        if content_digest(read_manifest(directory / version)) == digest:
            return version
    return None


def _version_path(directory: Path, coin: str, version: str) -> Path:
    check_version_name(version)
    path = directory / version
    if not path.is_dir():
        known = ", ".join(version_names(directory)) or "none"
        raise CrpbotError(f"unknown {coin} version {version!r} (promoted: {known})")
    return path


def version_names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def local_coins(root: str | Path) -> list[str]:
    promoted = Path(root) / PROMOTED_DIR
    if not promoted.is_dir():
        return []
    return sorted(p.name for p in promoted.iterdir() if p.is_dir() and not p.name.startswith("."))


def _auto_version_name(digest: str) -> str:
    return f"v{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{digest[:8]}"


def check_version_name(version: str) -> None:
    if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version) or version == POINTER_FILE:
        raise CrpbotError(f"invalid version name {version!r}: use letters, digits, '.', '_' or '-'")


def _make_files_read_only(root: Path) -> None:
    """A promoted version is immutable; read-only files catch accidental in-place edits."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

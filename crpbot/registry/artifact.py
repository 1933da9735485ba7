"""Safe artifact directories: safetensors weights, JSON for everything else, a sha256 manifest.

Why: a model directory travels (registry, S3, other machines), so loading it must never run
code (no pickle) and must notice any changed, missing or extra byte before it is used.
Every directory is built beside its destination and renamed into place, so a crash leaves
either the old directory or the new complete one, never a half-written mix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from crpbot import __version__
from crpbot.errors import CrpbotError

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "crpbot-artifact/1"
_CHUNK = 1 << 20


def write_artifact(
    out_dir: str | Path,
    *,
    json_files: dict[str, Any],
    tensors: dict[str, Any] | None = None,
    data_fingerprint: str,
    copy_dirs: dict[str, Path] | None = None,
    text_files: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Build an artifact in a temp dir beside ``out_dir``, seal it with a manifest, rename it into place.

    ``tensors`` go to ``model.safetensors``; ``json_files[name]`` to the JSON file ``name``;
    ``text_files[name]`` to the UTF-8 text file ``name`` (a GBDT's LightGBM model file);
    ``copy_dirs[sub]`` (verified first when it is an artifact itself) is copied to ``sub/``.
    An existing ``out_dir`` is refused unless ``overwrite``; then it is replaced only after
    the new directory is complete.
    """
    out_dir = Path(out_dir)
    json_files = dict(json_files)
    copy_dirs = dict(copy_dirs or {})
    text_files = dict(text_files or {})
    _check_entry_names(json_files, copy_dirs, with_weights=tensors is not None, text_files=text_files)
    if not isinstance(data_fingerprint, str) or not data_fingerprint:
        raise CrpbotError("artifact data_fingerprint must be a non-empty string")
    if out_dir.exists() and not overwrite:
        raise CrpbotError(f"artifact directory already exists: {out_dir} (pass overwrite to replace it)")
    make_dirs(out_dir.parent, purpose=out_dir)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        if tensors is not None:
            _write_weights(tmp / WEIGHTS_FILE, tensors)
        for name, value in json_files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            _write_json_file(tmp / name, value)
        for name, text in text_files.items():
            _write_text_file(tmp / name, text)
        for sub, source in copy_dirs.items():
            source = Path(source)
            if not source.is_dir():
                raise CrpbotError(f"artifact copy source is not a directory: {source}")
            if (source / MANIFEST_FILE).is_file():
                verify_artifact(source)
            shutil.copytree(source, tmp / sub, symlinks=True)
        manifest = {
            "format": MANIFEST_FORMAT,
            "crpbot_version": __version__,
            "git_commit": git_commit(),
            "data_fingerprint": data_fingerprint,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": _scan_files(tmp),
        }
        _write_json_file(tmp / MANIFEST_FILE, manifest)
        fsync_dir(tmp)
        _move_into_place(tmp, out_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def check_output_location(path: str | Path) -> Path:
    """Refuse an output directory that could never be created, before hours of work go into it.

    ``path`` must be absent or a directory, and its nearest existing ancestor a writable
    directory (not a file, as in ``--out some.parquet/run``). Nothing is created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CrpbotError(f"cannot write {path}: it exists and is not a directory")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CrpbotError(f"cannot write {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CrpbotError(f"cannot write {path}: {ancestor} is not writable")
    return path


def make_dirs(directory: str | Path, *, purpose: str | Path | None = None) -> None:
    """``mkdir -p directory``, with a one-line CrpbotError naming the path (``purpose``: what it is for)."""
    directory = Path(directory)
    check_output_location(purpose if purpose is not None else directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CrpbotError(f"cannot create directory {directory}: {exc.strerror or exc}") from exc


def verify_artifact(path: str | Path) -> dict:
    """Check every file against the manifest and return the manifest; the error names the bad file."""
    path = Path(path)
    manifest = read_manifest(path)
    expected: dict[str, dict] = manifest["files"]
    actual = _list_files(path)
    missing = sorted(set(expected) - set(actual))
    if missing:
        raise CrpbotError(
            f"artifact {path}: missing file {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise CrpbotError(
            f"artifact {path}: unexpected file {extra[0]} not in {MANIFEST_FILE}"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for name in sorted(expected):
        _check_file(path, name, expected[name], actual[name])
    return manifest


def read_manifest(path: str | Path) -> dict:
    """The parsed, shape-checked manifest of an artifact directory (file hashes not checked)."""
    path = Path(path)
    if not path.is_dir():
        raise CrpbotError(f"artifact directory not found: {path}")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CrpbotError(f"artifact {path}: missing file {MANIFEST_FILE}")
    return parse_manifest(manifest_path.read_bytes(), f"artifact {path}")


def parse_manifest(raw: bytes, where: str) -> dict:
    """Shape-check manifest bytes (also those fetched from S3): format, safe names, sha256 and size."""
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CrpbotError(f"{where}: {MANIFEST_FILE} is not valid JSON") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CrpbotError(f"{where}: {MANIFEST_FILE} is not a {MANIFEST_FORMAT} manifest")
    for name, entry in files.items():
        _check_relative_name(name, f"{where}: {MANIFEST_FILE} lists")
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int)
        ):
            raise CrpbotError(f"{where}: {MANIFEST_FILE} entry for {name} lacks sha256/size")
    return manifest


def content_digest(manifest: dict) -> str:
    """sha256 over the manifest's file list: equal for byte-identical artifacts, whenever they were built."""
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_artifact_json(path: str | Path, name: str) -> Any:
    """Parse one JSON file of an artifact after checking its size and sha256 against the manifest."""
    return json.loads(_read_verified(Path(path), name))


def read_artifact_text(path: str | Path, name: str) -> str:
    """One UTF-8 text file of an artifact, its size and sha256 checked against the manifest."""
    try:
        return _read_verified(Path(path), name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CrpbotError(f"artifact {path}: {name} is not UTF-8 text") from exc


def load_weights(path: str | Path) -> dict[str, Any]:
    """Verify the whole artifact, then load its safetensors weights on the CPU (never a pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    manifest = verify_artifact(path)
    if WEIGHTS_FILE not in manifest["files"]:
        raise CrpbotError(f"artifact {path}: has no {WEIGHTS_FILE}")
    try:
        return load(_read_verified(path, WEIGHTS_FILE))
    except SafetensorError as exc:
        raise CrpbotError(f"artifact {path}: {WEIGHTS_FILE} is not a valid safetensors file ({exc})") from exc


def load_torch_file(path: str | Path) -> Any:
    """Load a legacy ``.pt`` file only through PyTorch's weights-only unpickler; anything else is refused."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CrpbotError(f"torch file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrpbotError(f"refusing to load {path}: not a weights-only torch file ({reason})") from exc


def hash_file(path: str | Path) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: str | Path, value: Any) -> None:
    """Replace a small JSON file atomically: readers see the old or the new content, never a mix."""
    path = Path(path)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:12]}"
    try:
        _write_json_file(tmp, value)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _check_entry_names(
    json_files: dict[str, Any], copy_dirs: dict[str, Path], *, with_weights: bool, text_files: dict[str, str]
) -> None:
    """Entries are safe relative names ("config.json", "members/seed_0"); none may contain another."""
    names = [MANIFEST_FILE, *([WEIGHTS_FILE] if with_weights else []), *json_files, *text_files, *copy_dirs]
    for name in [*json_files, *text_files, *copy_dirs]:
        _check_relative_name(name, "artifact entries include")
    for name in text_files:
        if not name.endswith(".txt"):
            raise CrpbotError(f"artifact text file {name!r} must end in .txt")
    for name in json_files:
        if not name.endswith(".json"):
            raise CrpbotError(f"artifact JSON file {name!r} must end in .json")
    for i, name in enumerate(names):
        for other in names[i + 1 :]:
            if name == other or other.startswith(name + "/") or name.startswith(other + "/"):
                raise CrpbotError(f"artifact entries {name!r} and {other!r} collide")


def _check_relative_name(name: Any, context: str) -> None:
    """Refuse names that could escape the artifact directory (absolute, '..', backslashes)."""
    if not isinstance(name, str) or not name:
        raise CrpbotError(f"{context} an empty or non-string file name")
    parts = PurePosixPath(name).parts
    if (
        name.startswith("/")
        or "\\" in name
        or any(part in ("..", ".") for part in parts)
        or PurePosixPath(*parts).as_posix() != name
    ):
        raise CrpbotError(f"{context} an unsafe file name {name!r}")


def _write_weights(path: Path, tensors: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    if not tensors:
        raise CrpbotError("artifact tensors must not be empty (pass None for an artifact without weights)")
    prepared = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise CrpbotError(f"artifact tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        # clone: safetensors refuses tensors that share storage (tied weights, views)
        prepared[name] = tensor.detach().to("cpu").contiguous().clone()
    save_file(prepared, str(path), metadata={"format": "pt"})
    _fsync_file(path)


def _write_json_file(path: Path, value: Any) -> None:
    try:
        text = json.dumps(value, indent=2, sort_keys=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CrpbotError(f"cannot write {path.name} as strict JSON: {exc}") from exc
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_text_file(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _list_files(root: Path) -> dict[str, Path]:
    """Every regular file under root by POSIX relative name, except the root manifest; links are refused."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if full.is_symlink():
                raise CrpbotError(f"artifact {root}: {full.relative_to(root).as_posix()} is a symlink")
        for name in filenames:
            full = Path(dirpath) / name
            relative = full.relative_to(root).as_posix()
            if relative != MANIFEST_FILE:
                found[relative] = full
    return found


def _scan_files(root: Path) -> dict[str, dict[str, Any]]:
    return {
        name: {"sha256": hash_file(full), "size": full.stat().st_size}
        for name, full in sorted(_list_files(root).items())
    }


def _check_file(root: Path, name: str, entry: dict, full: Path) -> None:
    size = full.stat().st_size
    if size != entry["size"]:
        raise CrpbotError(f"artifact {root}: {name} has {size} bytes, manifest says {entry['size']}")
    if hash_file(full) != entry["sha256"]:
        raise CrpbotError(f"artifact {root}: {name} does not match its sha256 in {MANIFEST_FILE}")


def _read_verified(path: Path, name: str) -> bytes:
    """Read a file once and check those very bytes, so nothing can change between check and use."""
    entry = read_manifest(path)["files"].get(name)
    if entry is None:
        raise CrpbotError(f"artifact {path}: {name} is not listed in {MANIFEST_FILE}")
    full = path / name
    if not full.is_file() or full.is_symlink():
        raise CrpbotError(f"artifact {path}: missing file {name}")
    data = full.read_bytes()
    check_bytes(data, entry, f"artifact {path}: {name}")
    return data


def check_bytes(data: bytes, entry: dict, where: str, hint: str = "") -> None:
    """Check in-memory bytes against their manifest entry (size, then sha256); ``hint`` ends the error."""
    if len(data) != entry["size"]:
        raise CrpbotError(f"{where} has {len(data)} bytes, manifest says {entry['size']}{hint}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CrpbotError(f"{where} does not match its sha256 in {MANIFEST_FILE}{hint}")


def _move_into_place(tmp: Path, out_dir: Path, *, overwrite: bool) -> None:
    if not out_dir.exists():
        try:
            os.rename(tmp, out_dir)
        except OSError as exc:  # someone created it meanwhile
            raise CrpbotError(f"artifact directory already exists: {out_dir}") from exc
    elif not overwrite:
        raise CrpbotError(f"artifact directory already exists: {out_dir} (pass overwrite to replace it)")
    else:
        old = out_dir.parent / f".old-{out_dir.name}-{uuid.uuid4().hex[:12]}"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out_dir.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the crpbot source tree, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None

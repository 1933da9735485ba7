"""The registry's S3 mirror: verified push and pull of promoted versions.

Every object is written only if absent (If-None-Match) and read back against the version's
manifest; a version's ``manifest.json`` is its commit marker, written last, and a coin's
``current.json`` only after the version it names is complete. A pull lands in a temporary
directory beside the local version, is checked against the manifest (and the remote
pointer's digest) and only then renamed into place, under the same per-coin lock as a local
promotion (``crpbot.registry.local``). A coin's decision history (``history.jsonl``) travels
with it: records are never edited, so push and pull merge it by union
(``crpbot.registry.history``), conditionally on S3, and refuse a copy with a damaged record.

Files matching their manifest prove only that the manifest and the files agree: someone who can
write the bucket can rewrite both coherently (and the pointer, and the history). So which
manifest is the right one comes from outside S3 where it can: a digest the user passes
(``--digest``, from ``crpbot registry show`` on the machine that pushed), and the digests this
registry itself recorded for the version (its ``current.json`` and its history's promote and
rollback records, read before this pull merges anything; a record an earlier pull merged in
is trusted from then on). A named version with neither is
refused; the remote current, with no local record of its version, is trusted as the bucket
says (whoever can write the bucket decides what is current).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crpbot.data.bars import normalize_coin
from crpbot.errors import CrpbotError
from crpbot.registry import s3
from crpbot.registry.artifact import (
    MANIFEST_FILE,
    check_bytes,
    content_digest,
    parse_manifest,
    read_manifest,
    verify_artifact,
)
from crpbot.registry.history import HISTORY_FILE, merged, parse_history, write_bytes_atomic
from crpbot.registry.local import (
    POINTER_FILE,
    PROMOTED_DIR,
    PromotedVersion,
    check_same_content,
    check_version_name,
    coin_dir,
    coin_lock,
    install,
    local_coins,
    parse_pointer,
    pointer_record,
    read_pointer,
    version_names,
    write_pointer,
)

DEFAULT_PREFIX = "crpbot"
# conditional history uploads that lose a race re-merge and retry this often
_HISTORY_ATTEMPTS = 5


@dataclass(frozen=True)
class PushedVersion:
    """One version on S3 after a push; ``uploaded`` is False when it was already there, identical."""

    coin: str
    version: str
    url: str
    uploaded: bool


def push(
    root: str | Path,
    bucket: str,
    *,
    coin: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    endpoint_url: str | None = None,
) -> list[PushedVersion]:
    """Upload every local version (of one coin or all) and then each coin's ``current`` pointer.

    Each object is written only if absent (If-None-Match) and read back against the manifest,
    so concurrent pushes of different versions cannot clobber each other's bytes.
    """
    prefix = _check_prefix(prefix)
    coins = [normalize_coin(coin)] if coin else local_coins(root)
    if not coins:
        raise CrpbotError(f"nothing to push: no promoted models in {Path(root) / PROMOTED_DIR}")
    client = s3.make_client(endpoint_url)
    s3.check_bucket(client, bucket)
    pushed = []
    for name in coins:
        directory = coin_dir(root, name)
        versions = version_names(directory)
        if not versions:
            raise CrpbotError(f"nothing to push: no promoted {name} model in {Path(root) / PROMOTED_DIR}")
        for version in versions:
            pushed.append(_push_version(client, bucket, prefix, name, directory / version))
        _push_history(client, bucket, prefix, name, directory)
        pointer = read_pointer(directory)
        if pointer is not None:
            body = json.dumps(pointer_record(pointer["version"], pointer["digest"]), indent=2).encode()
            s3.put_bytes(client, bucket, f"{prefix}/{name}/{POINTER_FILE}", body)
    return pushed


def pull(
    root: str | Path,
    bucket: str,
    *,
    coin: str | None = None,
    version: str | None = None,
    digest: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    endpoint_url: str | None = None,
) -> list[PromotedVersion]:
    """Download a version (default: each coin's remote ``current``) into the local registry.

    Files land in a temporary directory, are checked against the manifest (and the pointer's
    digest), and only then renamed into place; pulling the remote current also moves the
    local pointer. The manifest's digest must also match ``digest`` (the full digest or a prefix
    of >= 12 hex digits) and every digest this registry recorded for the version; a named version
    needs one of the two (see the module docstring). Any mismatch raises and leaves the local
    registry as it was.
    """
    prefix = _check_prefix(prefix)
    if version is not None and coin is None:
        raise CrpbotError("pulling a named version needs a coin")
    if digest is not None:
        if version is None:
            raise CrpbotError("--digest checks a named version: give --coin and --version too")
        digest = _check_digest(digest)
    client = s3.make_client(endpoint_url)
    s3.check_bucket(client, bucket)
    remote_coins = [coin] if coin else s3.list_subprefixes(client, bucket, prefix)
    coins = [normalize_coin(name) for name in remote_coins]
    if not coins:
        raise CrpbotError(f"nothing to pull: no models under s3://{bucket}/{prefix}/")
    pulled = []
    for name in coins:
        recorded = _recorded_digests(Path(root), name)  # before this pull merges any remote record
        expected_digest = None
        wanted = version
        if wanted is None:
            pointer_url = f"s3://{bucket}/{prefix}/{name}/{POINTER_FILE}"
            raw = s3.get_bytes(client, bucket, f"{prefix}/{name}/{POINTER_FILE}")
            if raw is None:
                raise CrpbotError(f"{pointer_url} is missing: no current {name} model on S3")
            pointer = parse_pointer(raw, pointer_url)
            wanted, expected_digest = pointer["version"], pointer["digest"]
        # checked before anything local changes; merged in once the version is in place
        history = _fetch_history(client, bucket, prefix, name)
        pulled.append(
            _pull_version(
                client,
                bucket,
                prefix,
                Path(root),
                name,
                wanted,
                expected_digest,
                trusted=_Trusted(digest, recorded.get(wanted, set())),
                move_current=version is None,
            )
        )
        if history is not None:
            _merge_history(Path(root), name, history)
    return pulled


def _push_history(client: Any, bucket: str, prefix: str, coin: str, directory: Path) -> None:
    """Upload the union of the local and the remote history, so no machine's records are dropped.

    The replacement is conditional on the ETag read just before (If-Match, or If-None-Match for
    the first upload): a push that raced another one re-reads, re-merges and tries again instead
    of overwriting the other's records. The upload is read back and compared byte for byte.
    """
    path = directory / HISTORY_FILE
    if not path.is_file():
        return
    local = path.read_bytes()
    parse_history(local, str(path))
    key = f"{prefix}/{coin}/{HISTORY_FILE}"
    url = f"s3://{bucket}/{key}"
    for _ in range(_HISTORY_ATTEMPTS):
        remote, etag = s3.get_bytes_and_etag(client, bucket, key)
        if remote is not None:
            parse_history(remote, url)
        combined = merged(local, remote or b"")
        if combined == remote:
            return
        written = (
            s3.put_bytes(client, bucket, key, combined, if_absent=True)
            if etag is None
            else s3.put_bytes(client, bucket, key, combined, if_match=etag)
        )
        if written:
            back = s3.get_bytes(client, bucket, key) or b""
            if not set(combined.splitlines()) <= set(back.splitlines()):  # a later push may add, not drop
                raise CrpbotError(f"{url} read back after upload lacks records that were written")
            return
    raise CrpbotError(f"{url} kept changing during this push ({_HISTORY_ATTEMPTS} tries): push again")


def _fetch_history(client: Any, bucket: str, prefix: str, coin: str) -> bytes | None:
    """The remote history, every record checked complete, before anything local changes."""
    key = f"{prefix}/{coin}/{HISTORY_FILE}"
    remote = s3.get_bytes(client, bucket, key)
    if remote is not None:
        parse_history(remote, f"s3://{bucket}/{key}")
    return remote


def _merge_history(root: Path, coin: str, remote: bytes) -> None:
    directory = coin_dir(root, coin)
    with coin_lock(directory):
        path = directory / HISTORY_FILE
        local = path.read_bytes() if path.is_file() else b""
        parse_history(local, str(path))
        combined = merged(local, remote)
        if combined != local:
            write_bytes_atomic(path, combined)


def _push_version(client: Any, bucket: str, prefix: str, coin: str, path: Path) -> PushedVersion:
    manifest = verify_artifact(path)
    digest = content_digest(manifest)
    base = f"{prefix}/{coin}/{path.name}"
    url = f"s3://{bucket}/{base}"
    remote = s3.get_bytes(client, bucket, f"{base}/{MANIFEST_FILE}")
    if remote is not None:
        check_same_content(parse_manifest(remote, url), digest, url)
        return PushedVersion(coin, path.name, url, uploaded=False)
    for name, entry in sorted(manifest["files"].items()):
        data = (path / name).read_bytes()
        check_bytes(data, entry, f"local {path / name}")
        s3.put_bytes(client, bucket, f"{base}/{name}", data, if_absent=True)
        back = s3.get_bytes(client, bucket, f"{base}/{name}")
        check_bytes(back or b"", entry, f"{url}/{name} read back after upload", " (another push writing it?)")
    manifest_bytes = (path / MANIFEST_FILE).read_bytes()
    if not s3.put_bytes(client, bucket, f"{base}/{MANIFEST_FILE}", manifest_bytes, if_absent=True):
        remote = s3.get_bytes(client, bucket, f"{base}/{MANIFEST_FILE}") or b""
        check_same_content(parse_manifest(remote, url), digest, url)
    return PushedVersion(coin, path.name, url, uploaded=True)


@dataclass(frozen=True)
class _Trusted:
    """Digests of a version from outside S3: the user's ``--digest`` and this registry's records."""

    given: str | None
    recorded: set[str]

    def check(self, digest: str, url: str, coin: str, version: str, *, named: bool, local: bool) -> None:
        if self.given is not None and not digest.startswith(self.given):
            raise CrpbotError(
                f"{url}: manifest digest {digest[:12]} is not the --digest {self.given[:12]} given "
                "(forged on S3, or another version under this name?); nothing pulled"
            )
        if self.recorded and digest not in self.recorded:
            raise CrpbotError(
                f"{url}: manifest digest {digest[:12]} differs from the "
                f"{', '.join(sorted(d[:12] for d in self.recorded))} this registry recorded for {coin} "
                f"{version} (forged on S3?); nothing pulled"
            )
        if named and not local and self.given is None and not self.recorded:
            raise CrpbotError(
                f"no independent digest for {coin} {version}: this registry has no record of it and "
                f"S3 alone cannot vouch for {url}; pass --digest (`crpbot registry show {coin} {version}` "
                "on the machine that pushed it prints it)"
            )


def _recorded_digests(root: Path, coin: str) -> dict[str, set[str]]:
    """version -> digests this registry recorded: its ``current.json`` and its promote/rollback records."""
    directory = coin_dir(root, coin)
    found: dict[str, set[str]] = {}
    pointer = read_pointer(directory) if directory.is_dir() else None
    if pointer is not None:
        found.setdefault(pointer["version"], set()).add(pointer["digest"])
    path = directory / HISTORY_FILE
    if path.is_file():
        for record in parse_history(path.read_bytes(), str(path)):
            if isinstance(record.get("version"), str) and isinstance(record.get("digest"), str):
                found.setdefault(record["version"], set()).add(record["digest"])
    return found


def _check_digest(digest: str) -> str:
    cleaned = digest.strip().lower()
    if len(cleaned) < 12 or any(char not in "0123456789abcdef" for char in cleaned):
        raise CrpbotError(f"invalid --digest {digest!r}: the version's content digest, >= 12 hex digits")
    return cleaned


def _pull_version(
    client: Any,
    bucket: str,
    prefix: str,
    root: Path,
    coin: str,
    version: str,
    expected_digest: str | None,
    *,
    trusted: _Trusted,
    move_current: bool,
) -> PromotedVersion:
    check_version_name(version)
    base = f"{prefix}/{coin}/{version}"
    url = f"s3://{bucket}/{base}"
    manifest_bytes = s3.get_bytes(client, bucket, f"{base}/{MANIFEST_FILE}")
    if manifest_bytes is None:
        raise CrpbotError(f"{url}/{MANIFEST_FILE} is missing: no such version, or its push did not finish")
    manifest = parse_manifest(manifest_bytes, url)
    digest = content_digest(manifest)
    if expected_digest is not None and digest != expected_digest:
        raise CrpbotError(
            f"{url}: manifest digest {digest[:12]} differs from the remote pointer's "
            f"{expected_digest[:12]} (tampered manifest?)"
        )
    directory = coin_dir(root, coin)
    trusted.check(digest, url, coin, version, named=not move_current, local=(directory / version).is_dir())

    def download(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / MANIFEST_FILE).write_bytes(manifest_bytes)
        for name, entry in sorted(manifest["files"].items()):
            size, sha256 = s3.download_hashed(client, bucket, f"{base}/{name}", tmp / name)
            if size != entry["size"]:
                raise CrpbotError(f"{url}/{name}: {size} bytes, manifest says {entry['size']} (truncated?)")
            if sha256 != entry["sha256"]:
                raise CrpbotError(f"{url}/{name}: sha256 does not match its manifest (tampered?)")

    with coin_lock(directory):
        target = directory / version
        new = not target.exists()
        if new:
            install(directory, version, digest, download)
        else:
            check_same_content(read_manifest(target), digest, f"local {coin} version {version}")
            verify_artifact(target)
        if move_current:
            write_pointer(directory, version, digest)
    return PromotedVersion(coin, version, target, digest, new)


def _check_prefix(prefix: str) -> str:
    cleaned = prefix.strip("/")
    if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise CrpbotError(f"invalid S3 prefix {prefix!r}")
    return cleaned

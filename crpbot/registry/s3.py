"""The few S3 operations the registry needs, with botocore failures turned into one-line errors.

Why a separate module: the registry decides *what* to move and in which order; this module
only moves bytes. Credentials come from boto3's default chain (environment, profile,
instance role); they are never read, stored or printed here. The endpoint comes from
``endpoint_url`` or boto3's own ``AWS_ENDPOINT_URL`` (moto, MinIO).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crpbot.errors import CrpbotError

_CHUNK = 1 << 20


def make_client(endpoint_url: str | None = None) -> Any:
    """An S3 client from boto3's default credential chain; fails early when there are no credentials."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise CrpbotError("no AWS credentials found (environment, ~/.aws profile or instance role)")
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    return session.client("s3", endpoint_url=endpoint_url or None, config=config)


@contextlib.contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Re-raise botocore failures as CrpbotError('<what>: <code>'), without request details."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "error")
        message = error.get("Message") or ""
        raise CrpbotError(f"{what}: {code}{f' ({message})' if message else ''}") from exc
    except BotoCoreError as exc:
        raise CrpbotError(f"{what}: {type(exc).__name__}: {exc}") from exc


def check_bucket(client: Any, bucket: str) -> None:
    """Fail with a clear line when the bucket is missing or not ours, before any transfer starts."""
    with s3_errors(f"s3://{bucket} is not accessible"):
        client.head_bucket(Bucket=bucket)


def put_bytes(
    client: Any, bucket: str, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
) -> bool:
    """Upload one object; returns False when its condition fails instead of writing.

    ``if_absent`` writes only a new key (If-None-Match: *); ``if_match`` replaces the object only
    while its ETag is still that one (a compare-and-swap for objects that grow, like a history).
    """
    from botocore.exceptions import ClientError

    extra = {"IfNoneMatch": "*"} if if_absent else {}
    if if_match is not None:
        extra["IfMatch"] = if_match
    with s3_errors(f"upload of s3://{bucket}/{key} failed"):
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
        except ClientError as exc:
            if extra and _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
    return True


def get_bytes_and_etag(client: Any, bucket: str, key: str) -> tuple[bytes | None, str | None]:
    """The whole object and its ETag (for a later ``put_bytes(if_match=...)``), or (None, None)."""
    from botocore.exceptions import ClientError

    with s3_errors(f"download of s3://{bucket}/{key} failed"):
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None, None
            raise
        return response["Body"].read(), response["ETag"]


def get_bytes(client: Any, bucket: str, key: str) -> bytes | None:
    """The whole object, or None when the key does not exist."""
    from botocore.exceptions import ClientError

    with s3_errors(f"download of s3://{bucket}/{key} failed"):
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise


def download_hashed(client: Any, bucket: str, key: str, dest: Path) -> tuple[int, str]:
    """Stream an object to ``dest`` and return (size, sha256) of the bytes written; missing key -> error."""
    from botocore.exceptions import ClientError

    digest = hashlib.sha256()
    size = 0
    with s3_errors(f"download of s3://{bucket}/{key} failed"):
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise CrpbotError(f"s3://{bucket}/{key} is missing") from exc
            raise
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as handle:
            while chunk := body.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                handle.write(chunk)
    return size, digest.hexdigest()


def list_subprefixes(client: Any, bucket: str, prefix: str) -> list[str]:
    """Names of the 'directories' directly under ``prefix/`` (e.g. the coins of a registry)."""
    names: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    with s3_errors(f"listing s3://{bucket}/{prefix}/ failed"):
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/", Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.append(common["Prefix"][len(prefix) + 1 :].rstrip("/"))
    return sorted(names)


def _code(exc: Any) -> str:
    return exc.response.get("Error", {}).get("Code", "")

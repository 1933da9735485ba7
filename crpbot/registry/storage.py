"""Where Ray Train and Ray Tune keep checkpoints and experiment state: a local path or S3.

On a multi-node cluster a checkpoint is written by the node that ran the worker and read back
by the driver, so run state must live on shared storage: ``s3://bucket/prefix`` (AWS, or a
custom endpoint through the standard ``AWS_ENDPOINT_URL`` variables) or a shared file system.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from crpbot.errors import CrpbotError

# "scheme:/" at the start: a URI (or an ``s3:/bucket`` typo) rather than a local path. Two
# letters at least, so a Windows drive ("C:/runs") stays a path.
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")


def is_remote(storage: str | Path | None) -> bool:
    return storage is not None and str(storage).startswith("s3://")


def validate_storage(storage: str | Path | None) -> None:
    """Refuse storage that would silently become a local directory: ``s3://`` with no bucket,
    an ``s3:/bucket`` typo, another scheme (``gs://``), an empty string.

    Called before anything is started or written, so a typo costs a second, not a run.
    """
    if storage is None:
        return
    text = str(storage)
    if not text.strip():
        raise CrpbotError("storage is empty: expected a local path or s3://bucket/prefix")
    if is_remote(text):
        if not urlparse(text).netloc:
            raise CrpbotError(f"storage {text!r}: no bucket (expected s3://bucket/prefix)")
        return
    scheme = _URI.match(text)
    if scheme and scheme.group(1).lower() == "s3":
        raise CrpbotError(f"storage {text!r}: malformed S3 URI (expected s3://bucket/prefix)")
    if scheme:
        raise CrpbotError(
            f"storage {text!r}: unsupported scheme {scheme.group(1)!r}; expected a local path or "
            "s3://bucket/prefix"
        )


def join(storage: str | Path, *parts: str) -> str | Path:
    """``storage`` with sub-paths appended, keeping ``s3://`` URIs as strings (validated first, so a
    bad URI is refused rather than joined into a local path)."""
    validate_storage(storage)
    if is_remote(storage):
        return "/".join([str(storage).rstrip("/"), *parts])
    return Path(storage).joinpath(*parts)


def ray_storage(storage: str | Path | None, default: str) -> tuple[str, Any]:
    """(``storage_path``, ``storage_filesystem``) for a Ray ``RunConfig``.

    Local paths are made absolute (Ray needs that); ``s3://bucket/prefix`` becomes
    ``bucket/prefix`` plus a pyarrow S3 filesystem, because Ray refuses an ``s3://`` URI
    together with an explicit filesystem, and the explicit filesystem is what carries a
    custom endpoint to every node.
    """
    validate_storage(storage)
    if not is_remote(storage):
        return str(Path(storage if storage is not None else default).resolve()), None
    import pyarrow.fs

    parsed = urlparse(str(storage))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if endpoint:
        url = urlparse(endpoint)
        options.update(endpoint_override=url.netloc or url.path, scheme=url.scheme or "https")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        # keys from the driver's environment travel with the pickled filesystem to workers whose
        # environment lacks them (on AWS nodes the instance role provides them instead)
        options.update(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=os.environ.get("AWS_SESSION_TOKEN"),
        )
    return f"{parsed.netloc}{parsed.path}".rstrip("/"), pyarrow.fs.S3FileSystem(**options)

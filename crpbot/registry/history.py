"""Each coin's decision history: why ``current`` is what it is, one JSON record per line.

Layout: ``models/promoted/<COIN>/history.jsonl`` beside ``current.json`` (and, under
``<prefix>/<COIN>/``, on S3). Every promotion, rollback and retrain decision appends one record
(``time``, ``event`` and the event's facts), so "why is this model live, and what did it beat?"
has an answer after the fact, as MLflow's model-version history gives one.

Append-only, and never half-written: a record is added by writing the old bytes plus one line
to a temporary file and renaming it over the old one, under the coin's lock. Records are never
edited, so two copies of one history (local and S3) merge by union: a pull keeps every record
of both, and a push uploads the union (conditionally, so a racing push is re-merged, not lost).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crpbot.data.bars import normalize_coin
from crpbot.errors import CrpbotError
from crpbot.registry.artifact import fsync_dir
from crpbot.registry.local import DEFAULT_ROOT, coin_dir, coin_lock

HISTORY_FILE = "history.jsonl"
EVENTS = ("promote", "rollback", "retrain")


def record_event(root: str | Path, coin: str, event: str, **facts: Any) -> dict[str, Any]:
    """Append one record to the coin's history under its lock; returns the record written."""
    directory = coin_dir(root, normalize_coin(coin))
    with coin_lock(directory):
        return append_locked(directory, event, **facts)


def append_locked(directory: Path, event: str, **facts: Any) -> dict[str, Any]:
    """Append one record; the caller holds the coin's lock (``crpbot.registry.local.coin_lock``)."""
    if event not in EVENTS:
        raise CrpbotError(f"unknown history event {event!r}: expected one of {', '.join(EVENTS)}")
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "event": event, **facts}
    line = json.dumps(record, allow_nan=False, sort_keys=False) + "\n"
    path = directory / HISTORY_FILE
    old = path.read_bytes() if path.is_file() else b""
    parse_history(old, str(path))  # never append to a damaged history
    write_bytes_atomic(path, old + line.encode())
    return record


def read_history(coin: str, *, root: str | Path = DEFAULT_ROOT) -> list[dict[str, Any]]:
    """The coin's records, oldest first (empty before its first promotion)."""
    path = coin_dir(root, normalize_coin(coin)) / HISTORY_FILE
    return parse_history(path.read_bytes(), str(path)) if path.is_file() else []


def parse_history(raw: bytes, where: str) -> list[dict[str, Any]]:
    """Every line must be a complete JSON record with a time and a known event (a cut-off line is not)."""
    if raw and not raw.endswith(b"\n"):
        raise CrpbotError(f"{where}: the last record is cut off (no final newline)")
    records = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CrpbotError(f"{where}: line {number} is not valid JSON") from exc
        if not (
            isinstance(record, dict) and isinstance(record.get("time"), str) and record.get("event") in EVENTS
        ):
            raise CrpbotError(f"{where}: line {number} lacks a time or a known event")
        records.append(record)
    return records


def merged(local: bytes, remote: bytes) -> bytes:
    """Every record of both copies, once each, in time order: merging never drops a decision.

    Two registries that promoted independently (two machines) both keep their records; the
    usual case, one copy extending the other, returns the longer one unchanged.
    """
    if local.startswith(remote):
        return local
    if remote.startswith(local):
        return remote
    lines = local.splitlines(keepends=True)
    known = set(lines)
    lines += [line for line in remote.splitlines(keepends=True) if line not in known]
    return b"".join(sorted(lines, key=lambda line: json.loads(line)["time"]))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by a complete, synced copy of ``data``: readers see old or new, never a mix."""
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def describe(record: dict[str, Any]) -> str:
    """One line of ``crpbot registry history``: when, what, which versions, and why."""
    event = record["event"]
    head = f"{record['time']}  {event:8}"
    if event == "promote":
        return f"{head} {record.get('version')} is current (was {record.get('previous') or 'none'})"
    if event == "rollback":
        return f"{head} {record.get('version')} is current again (was {record.get('previous') or 'none'})"
    decision = record.get("decision", "?")
    champion = record.get("champion") or "none"
    challenger = record.get("challenger_version") or "(not promoted)"
    line = f"{head} {decision}: challenger {challenger} vs champion {champion}: {record.get('reason', '')}"
    shared = record.get("comparison") or {}
    if shared.get("fair") and "fails the gate" in line:  # a passing challenger's reason already says it
        low, high = shared["ci"]
        line += (
            f" (shared period: log loss {shared['challenger']['log_loss']:.4f} vs "
            f"{shared['champion']['log_loss']:.4f}, difference CI [{low:+.4f}, {high:+.4f}])"
        )
    return line

"""Coins, loading and validation of 1-minute OHLCV bars.

Read from Parquet, CSV, or freqtrade's own files (``<PAIR>-1m.feather`` with a ``date``
column, ``.json`` or ``.json.gz`` candle lists ``[ms, open, high, low, close, volume]``), so users of
freqtrade's data folders need no conversion script; every format gets the same validation.
Everything downstream trusts these bars, so the rules are explicit. Repaired (and
reported): row order, exact duplicate rows, naive timestamps (read as UTC), extra
columns. Errors (one line naming the problem): a missing, empty or unreadable file
(or a directory), missing columns, non-numeric or boolean OHLCV, unparseable or
sub-minute timestamps, duplicate timestamps with different values, non-finite or
non-positive prices, a bar whose high/low do not contain its open/close, negative
or non-finite volume. Gaps are never filled: they are reported and start a new
segment, so nothing downstream bridges them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crpbot.errors import CrpbotError

COINS: tuple[str, ...] = ("BTC-USD", "ETH-USD", "SOL-USD")
COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
MINUTE_NS = 60 * 1_000_000_000
GAPS_SHOWN = 5  # a file with hundreds of gaps prints these and a total, not a line per gap
READABLE = (".parquet", ".pq", ".csv", ".feather", ".json", ".json.gz")
# freqtrade names its candle files <BASE>_<QUOTE>-1m.<ext>, e.g. BTC_USDT-1m.feather
FREQTRADE_NAME = re.compile(
    r"^(?P<base>[A-Z0-9]+)_(?P<quote>USD|USDT|USDC)-1m\.(feather|json|json\.gz)$", re.IGNORECASE
)


def normalize_coin(coin: str) -> str:
    """Accept ``BTC``, ``btc`` or ``BTC-USD`` and return the canonical ``BTC-USD``."""
    name = str(coin).strip().upper()
    if not name.endswith("-USD"):
        name = f"{name}-USD"
    if name not in COINS:
        known = ", ".join(c.split("-")[0] for c in COINS)
        raise CrpbotError(f"unknown coin {coin!r}: expected one of {known} (or BTC-USD style)")
    return name


def default_input(coin: str) -> Path:
    """The bundled real sample for a coin (resolved from the package, so any cwd works)."""
    return SAMPLE_DIR / f"{normalize_coin(coin)}_1m.parquet"


@dataclass
class DataReport:
    """What loading found and did, so every command can print the data problems it saw."""

    rows_read: int
    rows_kept: int
    repairs: list[str] = field(default_factory=list)
    gaps: list[tuple[pd.Timestamp, pd.Timestamp, int]] = field(default_factory=list)
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None

    @property
    def missing_bars(self) -> int:
        return sum(missing for _, _, missing in self.gaps)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line; only the first ``GAPS_SHOWN`` gaps are listed."""
        out = [f"rows read {self.rows_read:,}, kept {self.rows_kept:,}, {self.first} -> {self.last}"]
        out += [f"repaired: {repair}" for repair in self.repairs]
        out += [
            f"gap: {after} -> {before} ({_count(missing, 'bar')} missing, not filled)"
            for after, before, missing in self.gaps[:GAPS_SHOWN]
        ]
        if len(self.gaps) > GAPS_SHOWN:
            more = _count(len(self.gaps) - GAPS_SHOWN, "more gap")
            out.append(f"... and {more}, {_count(self.missing_bars, 'bar')} missing in all")
        if not self.repairs and not self.gaps:
            out.append("no data problems found")
        return out


@dataclass
class Bars:
    """Validated bars: sorted unique UTC minutes, float64 OHLCV, one segment id per gap-free run."""

    frame: pd.DataFrame
    segment_ids: np.ndarray
    report: DataReport
    source: str
    fingerprint: str
    coin: str = ""
    _features: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.frame)

    def features(self) -> np.ndarray:
        """``compute_features`` as float64 rows, computed once per Bars and carried with it.

        A walk-forward's folds and a scan's cells prepare the same bars many times; computed on
        the driver before the bars go into Ray's object store, no fold computes it again.
        """
        if self._features is None:
            from crpbot.data.features import compute_features

            self._features = compute_features(self).to_numpy(dtype=np.float64)
        return self._features

    def head(self, rows: int) -> Bars:
        """The first ``rows`` bars (a scan's data before its final period); own fingerprint."""
        frame = self.frame.iloc[:rows].reset_index(drop=True)
        return Bars(
            frame=frame,
            segment_ids=self.segment_ids[:rows],
            report=self.report,
            source=self.source,
            fingerprint=_fingerprint(frame, timestamps_ns(frame["timestamp"])),
            coin=self.coin,
        )

    def tail(self, rows: int) -> Bars:
        """The last ``rows`` bars with their segment ids (live prediction needs no more); own fingerprint."""
        frame = self.frame.iloc[-rows:].reset_index(drop=True)
        return Bars(
            frame=frame,
            segment_ids=self.segment_ids[-rows:],
            report=self.report,
            source=self.source,
            fingerprint=_fingerprint(frame, timestamps_ns(frame["timestamp"])),
            coin=self.coin,
        )


def find_input(directory: str | Path, coin: str) -> Path:
    """A coin's bars in ``directory``: ``BTC-USD_1m.parquet`` or freqtrade's ``BTC_USDT-1m.feather``/json.

    More than one candidate is refused: picking one silently could train on the stale copy.
    """
    coin = normalize_coin(coin)
    base = coin.split("-")[0]
    directory = Path(directory)
    names = [f"{coin}_1m.parquet"] + [
        f"{base}_{quote}-1m.{ext}"
        for quote in ("USDT", "USD", "USDC")
        for ext in ("feather", "json", "json.gz")
    ]
    found = [directory / name for name in names if (directory / name).is_file()]
    if not found:
        raise CrpbotError(
            f"no input for {coin} in {directory}: expected {names[0]} or {names[1]} (freqtrade)"
        )
    if len(found) > 1:
        raise CrpbotError(
            f"several inputs for {coin} in {directory}: {', '.join(p.name for p in found)}; keep one"
        )
    return found[0]


def load_bars(path: str | Path) -> Bars:
    """Read, validate and (explicitly) repair a file of 1-minute bars (see ``READABLE``)."""
    path = Path(path)
    return validate_bars(_read_table(path), name=path.name, source=str(path))


def validate_bars(raw: pd.DataFrame, *, name: str = "bars", source: str = "") -> Bars:
    """Validate and repair a table of bars already in memory (a bot's latest candles, a merge).

    ``name`` starts every error message; ``date`` (freqtrade's name) is read as ``timestamp``.
    """
    if "timestamp" not in raw.columns and "date" in raw.columns:
        raw = raw.rename(columns={"date": "timestamp"})
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise CrpbotError(f"{name}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    if raw.empty:
        raise CrpbotError(f"{name}: no rows")
    report = DataReport(rows_read=len(raw), rows_kept=len(raw))
    extra = [c for c in raw.columns if c not in COLUMNS]
    if extra:
        report.repairs.append(f"ignored extra column(s) {', '.join(map(str, extra))}")
    frame = pd.DataFrame({"timestamp": _parse_timestamps(raw["timestamp"], name, report)})
    for column in COLUMNS[1:]:
        frame[column] = _numeric(raw[column], column, name)
    _check_values(frame, name)
    frame = _sort_and_deduplicate(frame, name, report)
    ns = timestamps_ns(frame["timestamp"])
    if np.any(ns % MINUTE_NS):
        bad = frame["timestamp"].iloc[int(np.argmax(ns % MINUTE_NS != 0))]
        raise CrpbotError(f"{name}: timestamp {bad} is not on a whole minute (1-minute bars expected)")
    steps = np.diff(ns) // MINUTE_NS
    gap_rows = np.flatnonzero(steps > 1)
    segment_ids = np.zeros(len(frame), dtype=np.int32)
    segment_ids[gap_rows + 1] = 1
    segment_ids = np.cumsum(segment_ids, dtype=np.int32)
    report.gaps = [
        (frame["timestamp"].iloc[i], frame["timestamp"].iloc[i + 1], int(steps[i] - 1)) for i in gap_rows
    ]
    report.rows_kept = len(frame)
    report.first, report.last = frame["timestamp"].iloc[0], frame["timestamp"].iloc[-1]
    return Bars(
        frame=frame,
        segment_ids=segment_ids,
        report=report,
        source=source or name,
        fingerprint=_fingerprint(frame, ns),
        coin=_coin_from_name(name),
    )


def timestamps_ns(timestamps: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch (UTC) of a tz-aware timestamp column."""
    return timestamps.to_numpy(dtype="datetime64[ns]").view("int64")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _read_table(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise CrpbotError(f"input is a directory, not a file: {path}")
    if not path.is_file():
        raise CrpbotError(f"input file not found: {path}")
    if path.stat().st_size == 0:
        raise CrpbotError(f"{path.name}: file is empty")
    suffix = ".json.gz" if path.name.lower().endswith(".json.gz") else path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".feather":
            return pd.read_feather(path)
        if suffix in (".json", ".json.gz"):
            raw = path.read_bytes()
            return _freqtrade_candles(
                json.loads(gzip.decompress(raw) if suffix == ".json.gz" else raw), path.name
            )
    except CrpbotError:
        raise
    except Exception as exc:  # any reader failure is a bad file from the user's point of view
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CrpbotError(f"{path.name}: unreadable {suffix[1:]} file ({first})") from exc
    raise CrpbotError(f"{path.name}: unsupported file type {suffix or '(none)'} (use {', '.join(READABLE)})")


def _freqtrade_candles(rows: object, name: str) -> pd.DataFrame:
    """freqtrade's JSON candles: a list of ``[epoch ms, open, high, low, close, volume]``."""
    if not isinstance(rows, list) or not all(isinstance(row, list) and len(row) == 6 for row in rows):
        raise CrpbotError(
            f"{name}: not freqtrade candles (expected a list of [ms, open, high, low, close, volume])"
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if not rows:
        return frame
    ms = pd.to_numeric(frame["timestamp"], errors="coerce")
    if ms.isna().any() or pd.api.types.is_bool_dtype(frame["timestamp"]):
        row = int(np.argmax(ms.isna().to_numpy())) if ms.isna().any() else 0
        raise CrpbotError(f"{name}: candle {row + 1:,} has no epoch-millisecond time ({rows[row][0]!r})")
    return frame.assign(timestamp=pd.to_datetime(ms.astype("int64"), unit="ms", utc=True))


def _parse_timestamps(values: pd.Series, name: str, report: DataReport) -> pd.Series:
    """UTC datetimes from datetime, string or epoch (s/ms/us/ns, inferred by magnitude) values."""
    try:
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.to_numpy(dtype="float64")
            if not np.isfinite(numbers).all():
                raise CrpbotError(f"{name}: missing or non-finite timestamp(s)")
            magnitude = np.abs(numbers).max()
            unit = next(
                u for u, floor in (("ns", 1e17), ("us", 1e14), ("ms", 1e11), ("s", -1.0)) if magnitude > floor
            )
            report.repairs.append(f"epoch timestamps read as {unit} since 1970 UTC")
            parsed = pd.to_datetime(values.astype("int64"), unit=unit, utc=True)
        elif isinstance(values.dtype, pd.DatetimeTZDtype):
            parsed = values.dt.tz_convert("UTC")
        else:
            parsed = pd.to_datetime(values, utc=False, format="ISO8601")
            if parsed.dt.tz is None:
                report.repairs.append("naive timestamps read as UTC")
                parsed = parsed.dt.tz_localize("UTC")
            else:
                parsed = parsed.dt.tz_convert("UTC")
    except CrpbotError:
        raise
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise CrpbotError(_timestamp_problem(values, name, exc)) from exc
    if parsed.isna().any():
        raise CrpbotError(f"{name}: {int(parsed.isna().sum())} missing timestamp(s)")
    return parsed.astype("datetime64[ns, UTC]").reset_index(drop=True)


def _timestamp_problem(values: pd.Series, name: str, exc: Exception) -> str:
    """One line naming the first value pandas cannot parse (its own message is a multi-line hint)."""
    try:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
        unparsed = (parsed.isna() & values.notna()).to_numpy()
    except (ValueError, TypeError, OverflowError, AttributeError):
        unparsed = np.zeros(len(values), dtype=bool)
    if unparsed.any():
        row = int(np.argmax(unparsed))
        value = str(values.iloc[row])
        shown = repr(value if len(value) <= 40 else f"{value[:40]}...")
        return (
            f"{name}: unparseable timestamp {shown} in row {row + 1:,} of {len(values):,} "
            "(expected ISO 8601 text, datetimes or epoch numbers)"
        )
    return f"{name}: unparseable timestamp column ({str(exc).splitlines()[0].rstrip(':')})"


def _numeric(values: pd.Series, column: str, name: str) -> np.ndarray:
    try:
        numbers = pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError) as exc:
        raise CrpbotError(f"{name}: column {column} is not numeric ({str(exc).splitlines()[0]})") from exc
    if pd.api.types.is_bool_dtype(numbers):  # True/False would silently become 1.0/0.0
        raise CrpbotError(f"{name}: column {column} holds booleans, not numbers")
    return numbers.to_numpy(dtype="float64", na_value=np.nan)


def _check_values(frame: pd.DataFrame, name: str) -> None:
    """Errors, not repairs: a bad price cannot be guessed without inventing data."""

    def fail_where(mask: np.ndarray, what: str) -> None:
        if mask.any():
            first = frame["timestamp"].iloc[int(np.argmax(mask))]
            raise CrpbotError(f"{name}: {int(mask.sum())} row(s) with {what} (first at {first})")

    for column in COLUMNS[1:]:
        fail_where(~np.isfinite(frame[column].to_numpy()), f"NaN or infinite {column}")
    for column in PRICE_COLUMNS:
        fail_where(frame[column].to_numpy() <= 0, f"non-positive {column}")
    high, low = frame["high"].to_numpy(), frame["low"].to_numpy()
    body_top = np.maximum(frame["open"].to_numpy(), frame["close"].to_numpy())
    body_bottom = np.minimum(frame["open"].to_numpy(), frame["close"].to_numpy())
    fail_where(high < low, "high < low")
    fail_where((high < body_top) | (low > body_bottom), "open/close outside [low, high]")
    fail_where(frame["volume"].to_numpy() < 0, "negative volume")


def _sort_and_deduplicate(frame: pd.DataFrame, name: str, report: DataReport) -> pd.DataFrame:
    ns = timestamps_ns(frame["timestamp"])
    if np.any(np.diff(ns) < 0):
        report.repairs.append("rows were not in time order: sorted")
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    exact = frame.duplicated(keep="first")
    if exact.any():
        report.repairs.append(f"dropped {int(exact.sum())} exact duplicate row(s)")
        frame = frame[~exact.to_numpy()].reset_index(drop=True)
    clash = frame["timestamp"].duplicated(keep=False)
    if clash.any():
        first = frame.loc[clash, "timestamp"].iloc[0]
        raise CrpbotError(
            f"{name}: {int(clash.sum())} rows share a timestamp with different values (first at {first})"
        )
    return frame


def _fingerprint(frame: pd.DataFrame, ns: np.ndarray) -> str:
    """sha256 over the exact rows used: same bars -> same fingerprint, whatever the file format."""
    digest = hashlib.sha256(np.ascontiguousarray(ns, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(frame[list(COLUMNS[1:])].to_numpy(), dtype="<f8").tobytes())
    return digest.hexdigest()


def _coin_from_name(name: str) -> str:
    prefix = name.split("_")[0].upper()
    if prefix in COINS:
        return prefix
    freqtrade = FREQTRADE_NAME.match(name)
    coin = f"{freqtrade['base'].upper()}-USD" if freqtrade else ""
    return coin if coin in COINS else ""

"""Walk-forward folds: consecutive train/val/test periods, purged, whose test periods tile the end.

A "day" here is 1,440 one-minute bars of data present (rows ``prepare_data`` keeps), not a
calendar day: the shared data has months-long gaps, and calendar periods would put whole folds
into them. Each fold's periods are reported with their real timestamps.

Fold k: train, then ``purge = lookback + horizon`` unused rows, val, another purge, test -- the
same purge ``prepare_data`` puts between its splits. Folds move forward by one test period,
so the test periods do not overlap and tile the evaluated span, which ends at the last usable
row. ``rolling`` keeps the train period's length; ``expanding`` keeps its start at the first
usable row. ``folds=N`` keeps the last N folds. Each fold is expressed as ``split_times``, so
``prepare_for_config(bars, config, split_times=fold.split_times)`` gives it its own train-only
scaler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crpbot.errors import CrpbotError

DAY_BARS = 1440
WINDOWS = ("rolling", "expanding")
PERIODS = ("train", "val", "test")


@dataclass(frozen=True)
class FoldSpec:
    """How to cut folds, validated at construction so bad options fail before any work starts."""

    train_days: float = 180.0
    val_days: float = 14.0
    test_days: float = 14.0
    step_days: float | None = None  # None: test_days (the only step whose test periods tile)
    window: str = "rolling"
    folds: int | None = None  # None: every fold that fits

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise CrpbotError(f"unknown window kind {self.window!r}: expected {' or '.join(WINDOWS)}")
        for name in ("train_days", "val_days", "test_days", "step_days"):
            value = getattr(self, name)
            if value is None and name == "step_days":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CrpbotError(f"invalid --{name.replace('_', '-')} {value!r}: must be a number")
            if value <= 0:
                raise CrpbotError(f"invalid --{name.replace('_', '-')} {value!r}: must be > 0")
        if self.step_days is not None and _rows(self.step_days) != _rows(self.test_days):
            how = "overlap" if self.step_days < self.test_days else "leave untested gaps between them"
            raise CrpbotError(
                f"--step-days {self.step_days:g} differs from --test-days {self.test_days:g}: test periods "
                f"would {how}; they must tile the evaluated span, so step by one test period"
            )
        if self.folds is not None and (isinstance(self.folds, bool) or self.folds < 1):
            raise CrpbotError(f"invalid --folds {self.folds!r}: must be >= 1")

    def rows(self) -> dict[str, int]:
        """Rows per period (a day is ``DAY_BARS`` rows of data present)."""
        return {"train": _rows(self.train_days), "val": _rows(self.val_days), "test": _rows(self.test_days)}


@dataclass(frozen=True)
class Fold:
    """One fold: row ranges into the usable rows and the same periods as (first_ns, last_ns)."""

    index: int
    bounds: dict[str, tuple[int, int]]
    split_times: dict[str, tuple[int, int]]

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "bounds": {name: list(bounds) for name, bounds in self.bounds.items()},
            "split_times": {name: list(times) for name, times in self.split_times.items()},
        }


def plan_folds(timestamps: np.ndarray, spec: FoldSpec, *, lookback: int, horizon: int) -> list[Fold]:
    """The folds of ``spec`` on usable rows with these ``timestamps`` (int64 ns, increasing).

    The last fold's test period ends at the last row; earlier folds step back one test period
    each. Raises :class:`CrpbotError` when the periods do not fit the data or ``spec.folds``
    asks for more folds than fit.
    """
    timestamps = np.asarray(timestamps, dtype=np.int64)
    n = len(timestamps)
    purge = lookback + horizon
    rows = spec.rows()
    for name in PERIODS:
        # a period must hold at least one whole window and its label row
        if rows[name] <= purge:
            flag = "--step-days/--test-days" if name == "test" else f"--{name}-days"
            raise CrpbotError(
                f"{flag} {getattr(spec, f'{name}_days'):g} is {rows[name]} bars, which leaves no {name} "
                f"window of lookback {lookback} + horizon {horizon} bars"
            )
    first = rows["train"] + rows["val"] + rows["test"] + 2 * purge
    if first > n:
        raise CrpbotError(
            f"periods longer than the data: train {spec.train_days:g} + val {spec.val_days:g} + test "
            f"{spec.test_days:g} days need {first:,} usable bars with purges, the data has {n:,} "
            f"({n / DAY_BARS:.1f} days of bars)"
        )
    step = rows["test"]
    possible = (n - first) // step + 1
    count = possible if spec.folds is None else spec.folds
    if count > possible:
        raise CrpbotError(
            f"--folds {spec.folds} is more than fit: {possible} fold(s) of train {spec.train_days:g} + "
            f"val {spec.val_days:g} + test {spec.test_days:g} days in {n / DAY_BARS:.1f} days of bars"
        )
    folds = []
    for index in range(count):
        test_end = n - (count - 1 - index) * step
        test_start = test_end - rows["test"]
        val_end = test_start - purge
        val_start = val_end - rows["val"]
        train_end = val_start - purge
        train_start = 0 if spec.window == "expanding" else train_end - rows["train"]
        bounds = {
            "train": (train_start, train_end),
            "val": (val_start, val_end),
            "test": (test_start, test_end),
        }
        split_times = {
            name: (int(timestamps[start]), int(timestamps[end - 1])) for name, (start, end) in bounds.items()
        }
        folds.append(Fold(index=index, bounds=bounds, split_times=split_times))
    return folds


def _rows(days: float) -> int:
    return int(round(days * DAY_BARS))

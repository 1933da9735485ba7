"""What a row's label says about the next ``horizon`` minutes: every target, defined here once.

Each target labels row t from the bars of t's gap-free segment. The label may read the future
(that is what a label is); everything it is compared against -- the volatility ``σ`` of
``triple_barrier``, the median of ``volatility`` -- is a rolling statistic of bars <= t only,
and a rolling window that would reach into an earlier segment is undefined, like the features.

- ``direction`` (the default): 1 if close[t+h] > close[t], 0 if below, undefined on a tie.
- ``triple_barrier``: barriers at close[t] * exp(± barrier_k * σ * sqrt(h)), σ the standard
  deviation of the ``sigma_window`` 1-minute log returns ending at t (sqrt(h) scales it to the
  horizon, so ``barrier_k = 1`` is one standard deviation of an h-minute random walk). 1 if a
  later bar's high reaches the upper barrier before any bar's low reaches the lower one, 0 for
  the reverse, undefined when neither is reached by bar t+h (the vertical barrier) or both are
  first reached inside the same bar (which came first is unknowable from its high and low).
- ``net_direction``: ``direction``, but only where |close[t+h]/close[t] - 1| exceeds
  ``min_move_bps`` (default: the round trip at the default costs); smaller moves are undefined.
- ``volatility``: 1 if |close[t+h]/close[t] - 1| exceeds the median of the same quantity over
  the trailing ``vol_window`` rows whose moves had finished by t (|close[s]/close[s-h] - 1|,
  s <= t), else 0. Not directional: no backtest, no net-return criterion.

Undefined labels are NaN: never trained, validated or scored. The forward return (the backtest's
outcome, held ``h`` minutes) is close[t+h]/close[t] - 1 for every target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crpbot.config import TARGET_KEYS, TARGETS
from crpbot.errors import CrpbotError

if TYPE_CHECKING:
    from crpbot.config import TrainConfig

DEFAULT_BARRIER_K = 1.0
DEFAULT_SIGMA_WINDOW = 60
# the round trip at the backtest's default costs: 10 bps fee per side, no slippage
DEFAULT_MIN_MOVE_BPS = 20.0
DEFAULT_VOL_WINDOW = 1440
DEFAULTS: dict[str, float | int] = {
    "barrier_k": DEFAULT_BARRIER_K,
    "sigma_window": DEFAULT_SIGMA_WINDOW,
    "min_move_bps": DEFAULT_MIN_MOVE_BPS,
    "vol_window": DEFAULT_VOL_WINDOW,
}
# What P(label = 1) means, for predictions shown to a user (h: the horizon in minutes).
QUESTIONS = {
    "direction": "P(up in {h} min)",
    "triple_barrier": "P(upper barrier first in {h} min)",
    "net_direction": "P(up | a move > {min_move_bps:g} bps in {h} min)",
    "volatility": "P(|move| > trailing median in {h} min)",
}


@dataclass(frozen=True)
class Target:
    """A target, its horizon and its own parameters (defaults filled in, other targets' None)."""

    name: str = "direction"
    horizon: int = 15
    barrier_k: float | None = None
    sigma_window: int | None = None
    min_move_bps: float | None = None
    vol_window: int | None = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> Target:
        """The config's target, its own keys at their defaults where the config leaves them null."""
        own = {key: getattr(config, key) for key in TARGET_KEYS[config.target]}
        return cls(
            name=config.target,
            horizon=config.horizon,
            **{key: DEFAULTS[key] if value is None else value for key, value in own.items()},
        )

    @property
    def directional(self) -> bool:
        """Whether label 1 means "up": only then does a trade follow from a prediction."""
        return self.name != "volatility"

    def params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TARGET_KEYS[self.name]}

    def to_dict(self) -> dict[str, Any]:
        """What an artifact records, so a model is only compared with one asked the same question."""
        return {"name": self.name, "horizon": self.horizon, **self.params()}

    def describe(self) -> str:
        """E.g. ``triple_barrier (barrier_k 1, sigma_window 60), 15 minutes``."""
        params = ", ".join(f"{key} {value:g}" for key, value in self.params().items())
        return f"{self.name}{f' ({params})' if params else ''}, {self.horizon} minutes"

    def question(self) -> str:
        """What a predicted probability is the probability of, e.g. ``P(up in 15 min)``."""
        return QUESTIONS[self.name].format(h=self.horizon, **self.params())


def target_from_record(record: dict[str, Any]) -> Target:
    """The target an artifact's config.json records (``Target.to_dict``)."""
    if record.get("name") not in TARGETS:
        raise CrpbotError(f"unknown target {record.get('name')!r} in the artifact")
    return Target(**record)


def forward_returns(close: np.ndarray, segment_ids: np.ndarray, horizon: int) -> np.ndarray:
    """close[t+h]/close[t] - 1, NaN where t+h is past the end of t's segment."""
    out = np.full(len(close), np.nan, dtype=np.float64)
    if len(close) > horizon:
        inside = np.flatnonzero(segment_ids[:-horizon] == segment_ids[horizon:])
        out[inside] = close[inside + horizon] / close[inside] - 1
    return out


def past_moves(forward: np.ndarray, segment_ids: np.ndarray, horizon: int) -> np.ndarray:
    """close[t]/close[t-h] - 1 at row t (bars <= t only): the forward return stored on row t-h,
    NaN where t-h lies in another segment."""
    out = np.full(len(forward), np.nan, dtype=np.float64)
    if len(forward) > horizon:
        same = segment_ids[:-horizon] == segment_ids[horizon:]
        out[horizon:][same] = forward[:-horizon][same]
    return out


def trailing_median_abs_move(past: np.ndarray, window: int) -> np.ndarray:
    """Median of |past move| over the ``window`` rows ending at t; NaN unless all are defined
    (so a window never reaches into an earlier segment, whose first h rows have no past move)."""
    return pd.Series(np.abs(past)).rolling(window, min_periods=window).median().to_numpy()


def rolling_sigma(close: np.ndarray, segment_ids: np.ndarray, window: int) -> np.ndarray:
    """Standard deviation of the ``window`` 1-minute log returns ending at t (bars <= t); NaN
    unless all lie in t's segment (a segment's first row has no return, so no window spans one)."""
    log_return = np.full(len(close), np.nan)
    if len(close) > 1:
        same = segment_ids[1:] == segment_ids[:-1]
        log_return[1:][same] = np.diff(np.log(close))[same]
    return pd.Series(log_return).rolling(window, min_periods=window).std().to_numpy()


def compute_labels(
    target: Target, bars: dict[str, np.ndarray], segment_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(labels as float32 with NaN where undefined, forward returns) of ``bars`` (close, high, low
    arrays of consecutive rows, ``segment_ids`` telling where the gaps are)."""
    close = np.asarray(bars["close"], dtype=np.float64)
    h = target.horizon
    forward = forward_returns(close, segment_ids, h)
    later = np.full(len(close), np.nan)
    if len(close) > h:
        later[:-h] = close[h:]
    defined = np.isfinite(forward)
    if target.name in ("direction", "net_direction"):
        labels = np.full(len(close), np.nan)
        labels[defined] = np.where(
            later[defined] > close[defined], 1.0, np.where(later[defined] < close[defined], 0.0, np.nan)
        )
        if target.name == "net_direction":
            labels[~(np.abs(forward) > target.min_move_bps / 1e4)] = np.nan
    elif target.name == "volatility":
        median = trailing_median_abs_move(past_moves(forward, segment_ids, h), target.vol_window)
        labels = np.where(
            defined & np.isfinite(median), (np.abs(forward) > median).astype(np.float64), np.nan
        )
    elif target.name == "triple_barrier":
        labels = _triple_barrier(target, close, bars["high"], bars["low"], segment_ids, defined)
    else:  # the config refuses unknown targets; an artifact's is checked by target_of
        raise CrpbotError(f"unknown target {target.name!r}: expected one of {', '.join(TARGETS)}")
    return labels.astype(np.float32), forward


def _triple_barrier(
    target: Target,
    close: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    segment_ids: np.ndarray,
    defined: np.ndarray,
) -> np.ndarray:
    """First-touch labels; bars t+1..t+h are scanned one offset at a time (h passes over n rows)."""
    h = target.horizon
    width = target.barrier_k * rolling_sigma(close, segment_ids, target.sigma_window) * np.sqrt(h)
    upper, lower = close * np.exp(width), close * np.exp(-width)
    high, low = np.asarray(high, dtype=np.float64), np.asarray(low, dtype=np.float64)
    never = h + 1
    first_up = np.full(len(close), never)
    first_down = np.full(len(close), never)
    rows = np.flatnonzero(defined & np.isfinite(width))  # t+h in t's segment, σ known at t
    for step in range(1, h + 1):
        up = rows[(first_up[rows] == never) & (high[rows + step] >= upper[rows])]
        down = rows[(first_down[rows] == never) & (low[rows + step] <= lower[rows])]
        first_up[up] = step
        first_down[down] = step
    labels = np.full(len(close), np.nan)
    labels[rows] = np.where(
        first_up[rows] < first_down[rows], 1.0, np.where(first_down[rows] < first_up[rows], 0.0, np.nan)
    )
    return labels

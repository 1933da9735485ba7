"""Labels, purged chronological splits and the prepared arrays: the data contract of training.

The label of row t is the config's target (``crpbot.data.targets``); by default 1 if
close[t+h] > close[t], 0 if below, and ties are left unlabelled (NaN) because a flat outcome
is neither direction. Unlabelled rows are never trained, validated, tested or scored; their
forward return stays finite (a tie's is 0.0), so a backtest still trades them.

Two leaks are closed here. Splits are chronological with a purge of at least
``lookback + horizon`` rows between them, and a window end is only served when its
whole window and its label row lie inside one split and one gap-free segment, so no
window or label of one split touches another. The scaler is fitted on train rows
only and travels with the artifact, so evaluation reuses it instead of refitting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crpbot.data.bars import Bars, default_input, load_bars, normalize_coin, timestamps_ns
from crpbot.data.cross_asset import Context, ContextSpec, load_context
from crpbot.data.features import FEATURE_NAMES, WARMUP_BARS
from crpbot.data.scaler import Scaler
from crpbot.data.targets import Target, compute_labels
from crpbot.errors import CrpbotError

if TYPE_CHECKING:
    from crpbot.config import TrainConfig

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class PreparedData:
    """Scaled features, labels and split row ranges of one coin; see docs/ARCHITECTURE.md."""

    coin: str
    timestamps: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    forward_returns: np.ndarray
    segment_ids: np.ndarray
    split_bounds: dict[str, tuple[int, int]]
    horizon: int
    purge: int
    scaler: Scaler
    feature_names: tuple[str, ...]
    fingerprint: str
    target: Target
    # context coin -> {"path", "fingerprint"} of its bars (crpbot.data.cross_asset); empty without
    context: dict[str, dict[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def window_ends(self, split: str, lookback: int, *, labelled: bool = True) -> np.ndarray:
        """Rows t whose window [t-lookback+1, t] and label row t+h lie in ``split`` and one segment.

        Rows without a label (t+h past the segment end, a tie, or undefined for the target) are
        not served, unless ``labelled`` is False: then every row with a forward return is served
        (a trading rule would trade it, and pay the round trip for a zero or small move), which
        is what a backtest needs.

        Every read of a split's rows (fitting, scoring, choosing) goes through here, so counting
        the calls counts the reads: ``tests/test_pipeline.py`` checks a coin's chain reads test once.
        """
        return self._window_ends(split, lookback, labelled)

    def window_count(self, split: str, lookback: int, *, labelled: bool = True) -> int:
        """How many windows :meth:`window_ends` would serve: a check that a split is usable, no read."""
        return len(self._window_ends(split, lookback, labelled))

    def _window_ends(self, split: str, lookback: int, labelled: bool) -> np.ndarray:
        if split not in self.split_bounds:
            raise CrpbotError(f"no {split!r} split in this data (have {', '.join(self.split_bounds)})")
        if lookback < 1:
            raise CrpbotError(f"lookback must be >= 1, got {lookback}")
        start, end = self.split_bounds[split]
        ends = np.arange(start + lookback - 1, end - self.horizon, dtype=np.int64)
        segment = self.segment_ids
        same_segment = (segment[ends - lookback + 1] == segment[ends]) & (
            segment[ends + self.horizon] == segment[ends]
        )
        defined = self.labels[ends] if labelled else self.forward_returns[ends]
        return ends[same_segment & ~np.isnan(defined)]

    def split_times(self) -> dict[str, tuple[int, int]]:
        """Split bounds as (first_ns, last_ns) so an artifact can reproduce them on reload."""
        return {
            name: (int(self.timestamps[start]), int(self.timestamps[end - 1]))
            for name, (start, end) in self.split_bounds.items()
        }


def prepare_data(
    bars: Bars,
    *,
    lookback: int,
    horizon: int,
    train_fraction: float = 0.7,
    val_fraction: float = 0.15,
    scaler: Scaler | None = None,
    split_times: dict | None = None,
    context: Context | None = None,
    target: Target | None = None,
) -> PreparedData:
    """Features, labels, purged chronological splits and a train-only scaler for training.

    ``context``: other coins' features joined on by timestamp (rows any coin lacks are dropped).
    ``target``: what the labels say (default: ``direction`` at ``horizon``; its horizon must match).
    """
    if lookback < 1 or horizon < 1:
        raise CrpbotError(f"lookback and horizon must be >= 1, got {lookback} and {horizon}")
    if not (0 < train_fraction < 1 and 0 < val_fraction < 1 and train_fraction + val_fraction < 1):
        raise CrpbotError(
            f"invalid split fractions train={train_fraction}, val={val_fraction}: "
            "each in (0, 1) and their sum < 1"
        )
    target = _check_target(target, horizon)
    rows = usable_rows(bars, target, context)
    _check_horizon_fits(rows["segment_ids"], lookback, horizon)
    purge = lookback + horizon
    if split_times is None:
        bounds = fraction_bounds(len(rows["labels"]), purge, train_fraction, val_fraction)
    else:
        bounds = _bounds_from_times(rows["timestamps"], split_times, purge)
    train_start, train_end = bounds["train"]
    if scaler is None:
        scaler = Scaler.fit(rows["features"][train_start:train_end])
    data = _assemble(bars, rows, bounds, target, purge, scaler, context)
    for split in SPLITS:
        if data.window_count(split, lookback) == 0:
            start, end = bounds[split]
            ties = data.window_count(split, lookback, labelled=False)
            if ties and target.name == "direction":  # no outcome has a direction: more won't help
                raise CrpbotError(
                    f"the {split} split ({end - start} rows) has {ties:,} gap-free windows but every "
                    f"outcome is a tie (close {horizon} bars later equals close now), so none has a "
                    "label; are the prices constant?"
                )
            if ties:
                raise CrpbotError(
                    f"the {split} split ({end - start} rows) has {ties:,} gap-free windows but the "
                    f"target {target.describe()} labels none of them; use more data or other target keys"
                )
            raise CrpbotError(
                f"the {split} split ({end - start} rows) holds no gap-free window of "
                f"lookback {lookback} + horizon {horizon}; use more data"
            )
    return data


def prepare_inference(
    bars: Bars,
    *,
    scaler: Scaler,
    horizon: int,
    context: Context | None = None,
    target: Target | None = None,
) -> PreparedData:
    """The whole input as a "test" split, scaled with a saved scaler (for ``evaluate --input``)."""
    if horizon < 1:
        raise CrpbotError(f"horizon must be >= 1, got {horizon}")
    target = _check_target(target, horizon)
    rows = usable_rows(bars, target, context)
    return _assemble(bars, rows, {"test": (0, len(rows["labels"]))}, target, 0, scaler, context)


def _check_target(target: Target | None, horizon: int) -> Target:
    if target is None:
        return Target(horizon=horizon)
    if target.horizon != horizon:
        raise CrpbotError(f"the target's horizon {target.horizon} differs from the horizon {horizon}")
    return target


def _check_horizon_fits(segment_ids: np.ndarray, lookback: int, horizon: int) -> None:
    """A horizon no gap-free run can hold is a config error, named as such (not "too little data")."""
    longest = int(np.bincount(segment_ids).max())
    if lookback + horizon > longest:
        raise CrpbotError(
            f"invalid config value horizon={horizon}: lookback {lookback} + horizon {horizon} bars "
            f"exceed the longest gap-free run of this data ({longest:,} usable rows)"
        )


def load_prepared(
    coin: str,
    input_path: str | Path | None,
    config: TrainConfig,
    context_inputs: dict[str, str | Path] | None = None,
) -> PreparedData:
    """Load a coin's bars (bundled sample by default) and prepare them with a config's settings.

    The config's ``context_coins`` are loaded too: from ``context_inputs`` (coin -> file), else
    beside ``input_path`` (see ``crpbot.data.cross_asset``).
    """
    bars, context = _load_coin(coin, input_path, config, context_inputs)
    return prepare_for_config(bars, config, context=context)


def load_label_variants(
    coin: str, input_path: str | Path | None, config: TrainConfig, variants: list[dict[str, Any]]
) -> dict[tuple, PreparedData]:
    """One coin's data labelled once per variant (config keys that change the labels: the horizon,
    a target's parameters), keyed by the variant's values in order.

    Every variant has the same rows, splits and scaler: the splits are cut once with ``config``'s
    purge, which must be the largest of them (``SearchSpace.data_config``), and the features array
    is one array shared by all, not a copy per variant.
    """
    bars, context = _load_coin(coin, input_path, config, None)
    shared = prepare_for_config(bars, config, context=context)
    out = {}
    for values in variants:
        labelled = prepare_for_config(
            bars,
            config.replace(**values),
            scaler=shared.scaler,
            split_times=shared.split_times(),
            context=context,
        )
        out[tuple(values.values())] = dataclasses.replace(labelled, features=shared.features)
    return out


def _load_coin(
    coin: str,
    input_path: str | Path | None,
    config: TrainConfig,
    context_inputs: dict[str, str | Path] | None,
) -> tuple[Bars, Context | None]:
    coin = normalize_coin(coin)
    bars = load_bars(input_path if input_path is not None else default_input(coin))
    bars.coin = coin
    return bars, load_context(coin, ContextSpec.from_config(config), input_path, context_inputs)


def prepare_for_config(
    bars: Bars,
    config: TrainConfig,
    *,
    scaler: Scaler | None = None,
    split_times: dict | None = None,
    context: Context | None = None,
) -> PreparedData:
    """``prepare_data`` with a training config's lookback, target, horizon and split fractions."""
    return prepare_data(
        bars,
        lookback=config.lookback,
        horizon=config.horizon,
        train_fraction=config.train_fraction,
        val_fraction=config.val_fraction,
        scaler=scaler,
        split_times=split_times,
        context=context,
        target=Target.from_config(config),
    )


def no_defined_rows_error(bars: Bars) -> CrpbotError:
    """Why no row has every feature: the warm-up restarts after each gap, so short runs give none."""
    longest = int(np.bincount(bars.segment_ids).max())
    return CrpbotError(
        f"{Path(bars.source).name}: no row has all features defined: no gap-free run is longer "
        f"than the {WARMUP_BARS}-bar warm-up (longest run {longest:,} of {len(bars):,} bars)"
    )


def usable_rows(bars: Bars, target: Target, context: Context | None = None) -> dict[str, np.ndarray]:
    """Rows with every feature defined, their labels and forward returns, and segments.

    With ``context``, the context coins' columns count as features: a row where any coin lacks
    its bar is NaN there, so it is dropped and the next row starts a new segment.

    Labels are ``target``'s (``crpbot.data.targets``), computed once here on the kept rows and
    their segments. Labels and returns are NaN where t+h is past the end of the row's segment;
    elsewhere the forward return is finite (a tie's is 0.0: it makes zero PnL).
    """
    features = bars.features()
    if context is not None:
        features = np.hstack([features, context.columns(bars)])
    keep = np.isfinite(features).all(axis=1)
    if not keep.any():
        raise no_defined_rows_error(bars)
    rows = np.flatnonzero(keep)
    # a new segment after every gap and after every dropped row, so segments stay contiguous
    breaks = np.r_[True, (np.diff(rows) != 1) | (np.diff(bars.segment_ids[rows]) != 0)]
    segment_ids = (np.cumsum(breaks) - 1).astype(np.int32)
    prices = {name: bars.frame[name].to_numpy()[rows] for name in ("close", "high", "low")}
    labels, forward_returns = compute_labels(target, prices, segment_ids)
    return {
        "timestamps": timestamps_ns(bars.frame["timestamp"])[rows],
        "features": features[keep],
        "labels": labels,
        "forward_returns": forward_returns,
        "segment_ids": segment_ids,
    }


def fraction_bounds(
    n_rows: int, purge: int, train_fraction: float, val_fraction: float
) -> dict[str, tuple[int, int]]:
    """Chronological row ranges with ``purge`` unused rows between consecutive splits."""
    per_split = purge  # one window and its label row: lookback + horizon rows
    smallest_fraction = min(train_fraction, val_fraction, 1 - train_fraction - val_fraction)
    usable = n_rows - 2 * purge
    train_rows = int(usable * train_fraction)
    val_rows = int(usable * val_fraction)
    test_rows = usable - train_rows - val_rows
    if min(train_rows, val_rows, test_rows) < per_split:
        needed = 2 * purge + int(np.ceil((per_split + 1) / smallest_fraction))
        raise CrpbotError(
            f"too little data: {n_rows} usable rows after warm-up, about {needed} needed "
            f"(each split needs >= lookback + horizon = {per_split} rows, plus {purge}-row purges; "
            f"got train/val/test {max(train_rows, 0)}/{max(val_rows, 0)}/{max(test_rows, 0)})"
        )
    val_start = train_rows + purge
    test_start = val_start + val_rows + purge
    return {"train": (0, train_rows), "val": (val_start, val_start + val_rows), "test": (test_start, n_rows)}


def _bounds_from_times(timestamps: np.ndarray, split_times: dict, purge: int) -> dict[str, tuple[int, int]]:
    """Row ranges of an earlier split (from an artifact), checked against this data."""
    missing = [name for name in SPLITS if name not in split_times]
    if missing:
        raise CrpbotError(f"split_times lacks {', '.join(missing)}")
    bounds = {}
    for name in SPLITS:
        first_ns, last_ns = (int(v) for v in split_times[name])
        start = int(np.searchsorted(timestamps, first_ns, side="left"))
        end = int(np.searchsorted(timestamps, last_ns, side="right"))
        if end <= start:
            raise CrpbotError(f"the saved {name} split ({first_ns}..{last_ns} ns) has no rows in this data")
        bounds[name] = (start, end)
    for before, after in zip(SPLITS[:-1], SPLITS[1:], strict=True):
        if bounds[after][0] - bounds[before][1] < purge:
            raise CrpbotError(
                f"saved splits {before}/{after} are closer than the purge of {purge} rows "
                "for this lookback + horizon"
            )
    return bounds


def _assemble(
    bars: Bars,
    rows: dict[str, np.ndarray],
    bounds: dict[str, tuple[int, int]],
    target: Target,
    purge: int,
    scaler: Scaler,
    context: Context | None = None,
) -> PreparedData:
    return PreparedData(
        coin=bars.coin,
        timestamps=rows["timestamps"],
        features=scaler.transform(rows["features"]),
        labels=rows["labels"],
        forward_returns=rows["forward_returns"],
        segment_ids=rows["segment_ids"],
        split_bounds=bounds,
        horizon=target.horizon,
        purge=purge,
        scaler=scaler,
        feature_names=FEATURE_NAMES + (context.spec.column_names() if context is not None else ()),
        fingerprint=bars.fingerprint,
        target=target,
        context=context.sources() if context is not None else {},
    )


def usable_timestamps(bars: Bars, context: Context | None = None) -> np.ndarray:
    """Timestamps (int64 ns) of the rows ``prepare_data`` keeps: the rows split times index.

    Walk-forward folds are planned on these rows so their split times map back to exactly the
    row ranges (and purges) planned; with ``context``, only minutes every context coin has too.
    """
    return usable_rows(bars, Target(horizon=1), context)["timestamps"]

"""Several coins' prepared arrays as one training set for a global model, split at shared times.

A global model trains one network on every coin's windows. Two rules keep that honest and
cheap:

- **One set of cut times for all coins.** The train/val/test cut timestamps are computed once,
  on the timestamps every coin has (the intersection of their usable rows), and each coin is
  split at those times (``prepare_for_config(..., split_times=...)``). So no coin's test (or
  validation) period lies inside another coin's training period: BTC's test minutes are never
  in ETH's training windows.
- **One scaler per coin, fitted on that coin's train rows.** Coins differ in volatility (SOL's
  1-minute returns are about twice BTC's); a shared scaler would leave BTC's return features
  squeezed near zero beside SOL's. Per-coin standardisation puts every coin on the scale a
  per-coin model sees, and evaluating one coin of a global model reuses that coin's scaler.

The coins' arrays are concatenated once into contiguous arrays (the same layout as one coin's,
plus ``coin_ids``), so the object store holds them once and every worker and trial maps them
read-only; ``window_ends`` offsets each coin's valid window ends into the shared index, and
segments are numbered per coin so no window crosses from one coin into the next.

**Context coins** (``context_coins``, :mod:`crpbot.data.cross_asset`) join every coin's rows the
same way they join a one-coin model's: each context coin's features on the row of the same
minute, strictly, so a row exists only where the coin and every context coin have the bar. The
context coins are other coins than the model's (the config refuses an overlap): a global model
of ETH and SOL with BTC's context, not BTC's rows with BTC as their own context.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crpbot.data.bars import Bars, default_input, load_bars, normalize_coin
from crpbot.data.cross_asset import Context, ContextSpec, load_context
from crpbot.data.dataset import PreparedData, fraction_bounds, prepare_for_config, usable_rows
from crpbot.data.scaler import Scaler
from crpbot.data.targets import Target
from crpbot.errors import CrpbotError

if TYPE_CHECKING:
    from crpbot.config import TrainConfig


@dataclass
class MultiCoinData:
    """Every coin's rows, concatenated in ``coins`` order; row r belongs to ``coins[coin_ids[r]]``.

    Arrays follow the one-coin contract (docs/ARCHITECTURE.md); ``offsets[i]:offsets[i+1]``
    are coin i's rows, ``split_bounds[i]`` its split row ranges (local to the coin).
    """

    coins: tuple[str, ...]
    timestamps: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    forward_returns: np.ndarray
    segment_ids: np.ndarray
    coin_ids: np.ndarray
    offsets: np.ndarray
    split_bounds: tuple[dict[str, tuple[int, int]], ...]
    shared_split_times: dict[str, tuple[int, int]]
    horizon: int
    purge: int
    scalers: tuple[Scaler, ...]
    fingerprints: tuple[str, ...]
    input_paths: tuple[str, ...]
    feature_names: tuple[str, ...]
    target: Target
    # coins whose val/test windows are served (None: all); train windows always come from all
    scored_coins: tuple[int, ...] | None = None
    # context coin -> {"path", "fingerprint"} of its bars, shared by every coin (empty without)
    context: dict[str, dict[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def coin(self) -> str:
        """A label for logs and run names (``BTC+ETH+SOL``)."""
        return "+".join(coin.split("-")[0] for coin in self.coins)

    @property
    def fingerprint(self) -> str:
        """sha256 over the coins and their data fingerprints: the inputs of this training set."""
        pairs = zip(self.coins, self.fingerprints, strict=True)
        text = "\n".join(f"{coin} {digest}" for coin, digest in pairs)
        return hashlib.sha256(text.encode()).hexdigest()

    def part(self, coin: str) -> PreparedData:
        """One coin's rows as a ``PreparedData`` of views into the shared arrays (no copy)."""
        index = self.coin_index(coin)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return PreparedData(
            coin=self.coins[index],
            timestamps=self.timestamps[start:end],
            features=self.features[start:end],
            labels=self.labels[start:end],
            forward_returns=self.forward_returns[start:end],
            segment_ids=self.segment_ids[start:end],
            split_bounds=self.split_bounds[index],
            horizon=self.horizon,
            purge=self.purge,
            scaler=self.scalers[index],
            feature_names=self.feature_names,
            fingerprint=self.fingerprints[index],
            target=self.target,
            context=self.context,
        )

    def coin_index(self, coin: str) -> int:
        coin = normalize_coin(coin)
        if coin not in self.coins:
            raise CrpbotError(f"{coin} is not one of this data's coins ({', '.join(self.coins)})")
        return self.coins.index(coin)

    def scored_on(self, coin: str) -> MultiCoinData:
        """The same arrays (no copy), with val and test windows of ``coin`` only.

        A search ranks a global trial on the searched coin's validation windows, the very
        windows its one-coin trials are ranked on (``part(coin)``), so the two compare.
        """
        return dataclasses.replace(self, scored_coins=(self.coin_index(coin),))

    def window_ends(self, split: str, lookback: int, *, labelled: bool = True) -> np.ndarray:
        """Valid window ends of ``split`` as rows of the shared arrays: every coin's (train), or
        the scored coins' (val, test)."""
        served = (
            range(len(self.coins)) if split == "train" or self.scored_coins is None else self.scored_coins
        )
        return np.concatenate(
            [
                self.part(self.coins[index]).window_ends(split, lookback, labelled=labelled)
                + self.offsets[index]
                for index in served
            ]
        )

    def split_times(self) -> dict[str, tuple[int, int]]:
        """The cut times every coin was split at."""
        return dict(self.shared_split_times)


def coin_inputs(coins: Sequence[str], data_dir: str | Path | None = None) -> dict[str, Path]:
    """Each coin's bars file: ``<data_dir>/<COIN>-USD_1m.parquet`` (default: the bundled samples).

    Unknown and missing coins are one-line errors here, before any Ray work.
    """
    names = [normalize_coin(coin) for coin in coins]
    paths = {
        coin: (Path(data_dir) / f"{coin}_1m.parquet" if data_dir is not None else default_input(coin))
        for coin in names
    }
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise CrpbotError(f"no bars file for the global model's coin(s): {', '.join(missing)}")
    return paths


def shared_split_times(
    timestamps_by_coin: dict[str, np.ndarray], *, purge: int, train_fraction: float, val_fraction: float
) -> dict[str, tuple[int, int]]:
    """Cut times for all coins: fraction splits of the timestamps every coin has, with the purge.

    Each coin has at least the common rows between two cuts, so every coin's splits keep at
    least ``purge`` rows apart.
    """
    common = None
    for coin, stamps in timestamps_by_coin.items():
        common = stamps if common is None else np.intersect1d(common, stamps, assume_unique=True)
        if len(common) == 0:
            spans = ", ".join(f"{name} {_span(times)}" for name, times in timestamps_by_coin.items())
            raise CrpbotError(f"the global model's coins do not overlap in time (up to {coin}): {spans}")
    assert common is not None
    try:
        bounds = fraction_bounds(len(common), purge, train_fraction, val_fraction)
    except CrpbotError as exc:
        raise CrpbotError(f"the coins' common period is too short: {exc}") from exc
    return {split: (int(common[start]), int(common[end - 1])) for split, (start, end) in bounds.items()}


def prepare_coins(
    config: TrainConfig,
    inputs: dict[str, Path],
    *,
    split_times: dict | None = None,
    context_inputs: Mapping[str, str | Path] | None = None,
) -> MultiCoinData:
    """The global model's training set: shared cut times, per-coin train-only scalers, one copy.

    Two passes over the coins, so that peak memory is the final arrays plus one coin's working
    set (not every coin's float64 features at once): the first finds each coin's usable
    timestamps, the second prepares each coin at the shared cut times and writes it into the
    preallocated shared arrays. ``split_times`` (a walk-forward fold's, or an artifact's) fixes
    the cut times instead of the config's fractions of the common period. The config's context
    coins are loaded once (:func:`load_coins_context`) and joined onto every coin's rows.
    """
    coins = [normalize_coin(coin) for coin in inputs]
    purge = config.lookback + config.horizon
    context = load_coins_context(config, inputs, context_inputs)
    stamps = {}
    for coin in coins:
        stamps[coin] = usable_rows(_load(inputs[coin], coin), Target.from_config(config), context)[
            "timestamps"
        ]
    cuts = (
        split_times
        if split_times is not None
        else shared_split_times(
            stamps, purge=purge, train_fraction=config.train_fraction, val_fraction=config.val_fraction
        )
    )
    offsets = np.cumsum([0, *(len(stamps[coin]) for coin in coins)]).astype(np.int64)
    del stamps
    total, n_features = int(offsets[-1]), None
    arrays: dict[str, np.ndarray] = {}
    split_bounds, scalers, fingerprints, feature_names = [], [], [], ()
    segment_base = 0
    for index, coin in enumerate(coins):
        start, end = int(offsets[index]), int(offsets[index + 1])
        try:
            part = prepare_for_config(_load(inputs[coin], coin), config, split_times=cuts, context=context)
        except CrpbotError as exc:
            raise CrpbotError(f"{coin}: {exc}") from exc
        if n_features is None:
            n_features, feature_names = part.features.shape[1], part.feature_names
            arrays = {
                "timestamps": np.empty(total, dtype=np.int64),
                "features": np.empty((total, n_features), dtype=np.float32),
                "labels": np.empty(total, dtype=np.float32),
                "forward_returns": np.empty(total, dtype=np.float64),
                "segment_ids": np.empty(total, dtype=np.int32),
                "coin_ids": np.empty(total, dtype=np.int32),
            }
        for name in ("timestamps", "features", "labels", "forward_returns"):
            arrays[name][start:end] = getattr(part, name)
        # segments numbered across coins: a window can never run from one coin into the next
        arrays["segment_ids"][start:end] = part.segment_ids + segment_base
        segment_base += int(part.segment_ids.max()) + 1
        arrays["coin_ids"][start:end] = index
        split_bounds.append(part.split_bounds)
        scalers.append(part.scaler)
        fingerprints.append(part.fingerprint)
    return MultiCoinData(
        coins=tuple(coins),
        offsets=offsets,
        split_bounds=tuple(split_bounds),
        shared_split_times={split: (int(first), int(last)) for split, (first, last) in cuts.items()},
        horizon=config.horizon,
        purge=purge,
        scalers=tuple(scalers),
        fingerprints=tuple(fingerprints),
        input_paths=tuple(str(inputs[coin]) for coin in coins),
        feature_names=feature_names,
        target=Target.from_config(config),
        context=context.sources() if context is not None else {},
        **arrays,
    )


def load_coins_context(
    config: TrainConfig, inputs: Mapping[str, Path], context_inputs: Mapping[str, str | Path] | None = None
) -> Context | None:
    """The context coins' bars for every coin of a global model (None without context coins).

    Loaded once, found as for a one-coin model (``context_inputs``, else beside the first coin's
    file: the coins' files share one data directory); none may be one of the model's coins.
    """
    spec = ContextSpec.from_config(config)
    if not spec:
        return None
    coins = [normalize_coin(coin) for coin in inputs]
    for coin in coins:
        spec.check_target(coin)
    return load_context(coins[0], spec, inputs[coins[0]], context_inputs)


def _load(path: Path, coin: str) -> Bars:
    bars = load_bars(path)
    bars.coin = coin
    return bars


def _span(timestamps: np.ndarray) -> str:
    if len(timestamps) == 0:
        return "(no usable rows)"
    first, last = (np.datetime_as_string(np.datetime64(int(t), "ns"), unit="m") for t in timestamps[[0, -1]])
    return f"{first}..{last}"

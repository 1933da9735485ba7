"""Cross-asset context: other coins' features beside the target's, aligned by timestamp.

BTC tends to move first and alts follow within minutes, so an ETH model may gain from seeing
BTC's bars. A context coin's features are computed on its own series (its own warm-up, its own
gaps), so its feature at minute t uses its bars <= t only, and they are placed on the target's
row of the same minute by exact timestamp: never shifted, never filled. A target row whose
minute a context coin lacks (or where that coin is still warming up) gets NaN context features
and is dropped like any row with an undefined feature, which starts a new segment
(``dataset.usable_rows``). So a row exists only where every coin has its bar, no window or
label spans a gap in any coin, and the scaler and the purge work on the joined rows as before.

Where a context coin's bars come from, first match wins: an explicit path
(``--context-input BTC=FILE``); the file ``BTC-USD_1m.parquet`` beside the target's input (the
layout ``crpbot pipeline --input-dir`` reads, and the bundled samples' too); the bundled sample
when no target input is given. Re-scoring an artifact's stored splits uses the files recorded in
the artifact instead of the convention, and refuses a file whose fingerprint differs from the
one trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crpbot.data.bars import Bars, default_input, load_bars, normalize_coin, timestamps_ns
from crpbot.data.features import FEATURE_NAMES
from crpbot.data.scaler import Scaler
from crpbot.data.timeframes import column_names as timeframe_columns
from crpbot.data.timeframes import timeframe_features
from crpbot.errors import CrpbotError

if TYPE_CHECKING:
    from crpbot.config import TrainConfig
    from crpbot.data.dataset import PreparedData

ALL_FEATURES = "all"


@dataclass(frozen=True)
class ContextSpec:
    """The columns beside a coin's own features, the part of the recipe an artifact records: its
    higher-timeframe features (``crpbot.data.timeframes``), then which coins give context and
    which of their features."""

    coins: tuple[str, ...] = ()
    features: tuple[str, ...] = FEATURE_NAMES
    timeframes: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, config: TrainConfig) -> ContextSpec:
        return cls.from_names(config.context_coins, config.context_features, config.timeframes)

    @classmethod
    def from_names(
        cls,
        coins: Sequence[str],
        features: str | Sequence[str] = ALL_FEATURES,
        timeframes: Sequence[int] = (),
    ) -> ContextSpec:
        """Canonical coin names and checked feature names (one-line errors naming the bad one)."""
        canonical = []
        for coin in coins:
            try:
                canonical.append(normalize_coin(coin))
            except CrpbotError as exc:
                raise CrpbotError(f"context_coins: {exc}") from exc
        if len(set(canonical)) != len(canonical):
            raise CrpbotError(f"context_coins: a coin is listed twice: {', '.join(canonical)}")
        if isinstance(features, str):
            if features != ALL_FEATURES:
                raise CrpbotError(f"context_features: expected 'all' or a list of names, got {features!r}")
            chosen = FEATURE_NAMES
        else:
            unknown = [name for name in features if name not in FEATURE_NAMES]
            if unknown:
                raise CrpbotError(f"context_features: unknown feature(s) {', '.join(map(str, unknown))}")
            chosen = tuple(features)
        return cls(coins=tuple(canonical), features=chosen, timeframes=tuple(int(k) for k in timeframes))

    def __bool__(self) -> bool:
        return bool(self.coins or self.timeframes)

    def column_names(self) -> tuple[str, ...]:
        """Names of the added columns: ``tf15_log_ret_1`` style, then the context coins'."""
        return timeframe_columns(self.timeframes) + self.coin_columns()

    def coin_columns(self) -> tuple[str, ...]:
        """Names of the context coins' columns, ``BTC-USD:log_ret_1`` style, coin by coin."""
        return tuple(f"{coin}:{name}" for coin in self.coins for name in self.features)

    def check_target(self, coin: str) -> None:
        """A coin is not its own context: its features are already the first columns."""
        if coin in self.coins:
            raise CrpbotError(f"context_coins: {coin} is the coin being modelled; a context coin must differ")


@dataclass
class Context:
    """The context coins' validated bars, ready to be joined onto a target's rows."""

    spec: ContextSpec
    bars: dict[str, Bars]

    def columns(self, target: Bars) -> np.ndarray:
        """``float64 [len(target), n_columns]``: the target's higher-timeframe features, then each
        context feature on the target row of the same minute, NaN where that coin has no bar (or
        no defined feature) at that minute."""
        target_ns = timestamps_ns(target.frame["timestamp"])
        blocks = [timeframe_features(target, self.spec.timeframes)]
        for coin in self.spec.coins:
            bars = self.bars[coin]
            own_ns = timestamps_ns(bars.frame["timestamp"])
            values = bars.features()[:, [FEATURE_NAMES.index(name) for name in self.spec.features]]
            at = np.minimum(np.searchsorted(own_ns, target_ns), len(own_ns) - 1)
            found = own_ns[at] == target_ns
            if not found.any():
                raise CrpbotError(
                    f"context coin {coin}: {Path(bars.source).name} ({_span(own_ns)}) does not overlap "
                    f"the {target.coin or 'target'} bars ({_span(target_ns)})"
                )
            block = np.full((len(target_ns), len(self.spec.features)), np.nan)
            block[found] = values[at[found]]
            blocks.append(block)
        return np.hstack(blocks)

    def sources(self) -> dict[str, dict[str, str]]:
        """Per coin the file read and its fingerprint, recorded in the artifact to check reloads."""
        return {
            coin: {"path": str(Path(bars.source).resolve()), "fingerprint": bars.fingerprint}
            for coin, bars in self.bars.items()
        }


def parse_context_inputs(items: Sequence[str] | None) -> dict[str, Path]:
    """``["BTC=path.parquet", ...]`` (the ``--context-input`` option) as canonical coin -> path."""
    inputs: dict[str, Path] = {}
    for item in items or ():
        coin, sep, path = str(item).partition("=")
        if not sep or not coin.strip() or not path.strip():
            raise CrpbotError(f"--context-input {item!r}: expected COIN=FILE, e.g. BTC=BTC-USD_1m.parquet")
        canonical = normalize_coin(coin)
        if canonical in inputs:
            raise CrpbotError(f"--context-input: {canonical} is given twice")
        inputs[canonical] = Path(path.strip())
    return inputs


def load_context(
    coin: str,
    spec: ContextSpec,
    input_path: str | Path | None,
    given: Mapping[str, str | Path] | None = None,
    recorded: Mapping[str, Mapping[str, str]] | None = None,
) -> Context | None:
    """The context bars of ``coin``'s recipe (None without context coins), found as the module says.

    ``recorded``: an artifact's ``context.inputs``; each file must then have the recorded
    fingerprint, or the rows (and so the stored splits) would not be the ones trained on.
    """
    coin = normalize_coin(coin)
    given = {normalize_coin(name): Path(path) for name, path in (given or {}).items()}
    extra = sorted(set(given) - set(spec.coins))
    if extra:
        uses = ", ".join(spec.coins) or "none"
        raise CrpbotError(f"context input given for {', '.join(extra)}; the model's context coins: {uses}")
    if not spec:
        return None
    spec.check_target(coin)
    bars = {}
    for name in spec.coins:
        path = _context_path(name, input_path, given, recorded)
        loaded = load_bars(path)
        loaded.coin = name
        if recorded is not None and loaded.fingerprint != recorded.get(name, {}).get("fingerprint"):
            raise CrpbotError(
                f"context coin {name}: {path} is not the data the model was trained with "
                f"(fingerprint differs), so its stored splits cannot be reproduced"
            )
        bars[name] = loaded
    return Context(spec=spec, bars=bars)


def select_context(data: PreparedData, spec: ContextSpec) -> PreparedData:
    """``data`` with only the context columns of ``spec`` (a subset of its own), same rows.

    A search whose space varies ``context_coins`` prepares its data once with every coin it names,
    so all trials share rows, splits and validation windows; each trial keeps its own columns.
    Standardisation is per column, so the subset's scaler is the columns' own statistics.
    """
    wanted = (*FEATURE_NAMES, *spec.column_names())
    if wanted == tuple(data.feature_names):
        return data
    position = {name: i for i, name in enumerate(data.feature_names)}
    missing = [name for name in wanted if name not in position]
    if missing:
        raise CrpbotError(f"context columns {', '.join(missing[:3])} are not in the prepared data")
    columns = np.array([position[name] for name in wanted], dtype=np.int64)
    return dataclasses.replace(
        data,
        features=np.ascontiguousarray(data.features[:, columns]),
        scaler=Scaler(mean_=data.scaler.mean_[columns], scale_=data.scaler.scale_[columns]),
        feature_names=wanted,
        context={coin: data.context[coin] for coin in spec.coins},
    )


def context_record(spec: ContextSpec, sources: Mapping[str, Any]) -> dict[str, Any]:
    """What an artifact's config.json stores under ``context``: enough for any loader to rebuild
    the columns (coins, features, the coins' column names, timeframes) and to check the files
    (path, fingerprint)."""
    return {
        "coins": list(spec.coins),
        "features": list(spec.features),
        "columns": list(spec.coin_columns()),
        "timeframes": list(spec.timeframes),
        "inputs": {coin: dict(sources[coin]) for coin in spec.coins},
    }


def spec_from_record(record: Mapping[str, Any] | None) -> ContextSpec:
    """The spec an artifact's ``context`` record describes (empty for an artifact without one)."""
    if not record:
        return ContextSpec()
    return ContextSpec.from_names(
        record.get("coins", []), record.get("features", ALL_FEATURES), record.get("timeframes", [])
    )


def _context_path(
    coin: str,
    input_path: str | Path | None,
    given: Mapping[str, Path],
    recorded: Mapping[str, Mapping[str, str]] | None,
) -> Path:
    short = coin.split("-")[0]
    if coin in given:
        path, how = given[coin], "given"
    elif recorded is not None:
        if coin not in recorded:
            raise CrpbotError(f"context coin {coin}: the artifact records no input file for it")
        path, how = Path(recorded[coin]["path"]), "recorded in the model"
    elif input_path is None:
        path, how = default_input(coin), "bundled sample"
    else:  # the bundled samples follow the same naming, so a sample target finds sample context
        path, how = Path(input_path).parent / f"{coin}_1m.parquet", "beside the input"
    if not path.is_file():
        raise CrpbotError(
            f"context coin {coin}: bars missing ({how}: {path} not found); pass --context-input {short}=FILE"
        )
    return path


def _span(ns: np.ndarray) -> str:
    first, last = (np.datetime64(int(value), "ns").astype("datetime64[m]") for value in (ns[0], ns[-1]))
    return f"{first} .. {last}"

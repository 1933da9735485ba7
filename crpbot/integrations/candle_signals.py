"""A crpbot model's P(up) and trade signals for a trading bot's candles (freqtrade's, or any table).

What the freqtrade strategy (``crpbot.integrations.freqtrade_strategy``) delegates to, kept free of
freqtrade so it is testable and reusable without it:

- :func:`load_signal_model`: the model (an artifact path, the coin's promoted version in a
  registry, or pulled from S3 first, as ``crpbot predict`` finds it), checked for the pair and
  timeframe it will trade, with the threshold ``crpbot evaluate`` trades at.
- :meth:`SignalModel.score`: P(up) for every candle at once, through ``evaluate``'s own path
  (``inference_data``: the features over the whole table, scaled with the artifact's train-only
  scaler, then ``Predictor.proba_at``), so a candle's P(up) equals the one ``crpbot evaluate``
  gives that row of the same bars. Unlike evaluate it also scores the last ``horizon`` candles
  (they have no label yet, and a bot trades on exactly those). Beside it, which candles' windows
  are unfamiliar (``Predictor.familiar_at``: outside what the model saw in training).
- :func:`entry_sides`: long at P(up) >= τ, short at P(up) <= 1 - τ (where shorting is allowed),
  the rule of ``crpbot.evaluation.backtest``; nothing on an unfamiliar window.

The threshold τ is chosen on the model's validation split exactly as ``crpbot evaluate`` chooses it
(``validation_threshold``: the smallest selective threshold whose validation accuracy reaches the
gate's ``min_accuracy``, else 0.5), or given. Nothing is chosen on test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.data.bars import normalize_coin, timestamps_ns, validate_bars
from crpbot.errors import CrpbotError
from crpbot.evaluation.evaluate import inference_data, stored_split_data, validation_threshold
from crpbot.evaluation.gate import GateThresholds
from crpbot.model.serving import LiveModel

TIMEFRAME = "1m"  # crpbot's models read 1-minute bars (higher timeframes are built from them)
SETTINGS = ("model", "registry", "bucket", "prefix", "endpoint_url", "threshold", "min_accuracy")


@dataclass(frozen=True)
class SignalModel:
    """A loaded model with the threshold it trades at and where that threshold came from."""

    live: LiveModel
    threshold: float
    threshold_source: str

    @property
    def horizon(self) -> int:
        return self.live.horizon

    @property
    def startup_candles(self) -> int:
        """Candles before the first one scored: the feature history and one window (``LiveModel``)."""
        return self.live.bars_needed()

    @property
    def abstains(self) -> bool:
        """Whether the model can flag unfamiliar windows (an artifact from before familiarity.json cannot)."""
        return self.live.predictor.familiarity is not None

    def score(self, candles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """P(up) of each candle (``date`` or ``timestamp`` and OHLCV columns), NaN where no complete
        window ends (the feature warm-up and the first ``lookback - 1`` candles of each gap-free run),
        and whether the candle's window is unfamiliar (False where no window ends, and everywhere
        for a model that cannot tell: :attr:`abstains`)."""
        predictor = self.live.predictor
        bars = validate_bars(candles, name="candles")
        bars.coin = predictor.coin
        # the path would locate context coins' files; the models served here have none
        data = inference_data(predictor, bars, Path("candles"))
        ends = scorable_ends(data.segment_ids, predictor.lookback)
        probs = np.full(len(candles), np.nan)
        unfamiliar = np.zeros(len(candles), dtype=bool)
        if len(ends) == 0:
            return probs, unfamiliar
        rows = np.searchsorted(candle_ns(candles), data.timestamps[ends])
        probs[rows] = predictor.proba_at(data.features, ends)
        familiar = predictor.familiar_at(data.features, ends)
        if familiar is not None:
            unfamiliar[rows] = ~familiar
        return probs, unfamiliar


def scorable_ends(segment_ids: np.ndarray, lookback: int) -> np.ndarray:
    """Rows whose window of ``lookback`` rows lies in one gap-free run: ``PreparedData.window_ends``
    without its need for a label ``horizon`` rows later (a bot trades the newest candle)."""
    ends = np.arange(lookback - 1, len(segment_ids), dtype=np.int64)
    return ends[segment_ids[ends - lookback + 1] == segment_ids[ends]]


def candle_ns(candles: pd.DataFrame) -> np.ndarray:
    """The candles' open times as int64 ns (freqtrade's ``date``, or crpbot's ``timestamp``)."""
    column = "date" if "date" in candles.columns else "timestamp"
    return timestamps_ns(pd.to_datetime(candles[column], utc=True))


def entry_sides(
    probs: np.ndarray, threshold: float, *, can_short: bool, unfamiliar: np.ndarray | None = None
) -> np.ndarray:
    """+1 (long) where P(up) >= τ, -1 (short, only when ``can_short``) where P(up) <= 1 - τ, else 0;
    NaN (no window) and ``unfamiliar`` windows (abstain) are 0. Otherwise the rule of
    ``crpbot.evaluation.backtest.run_backtest``."""
    probs = np.asarray(probs, dtype=np.float64)
    sides = np.where(probs >= threshold, 1, 0)
    if can_short:
        sides = np.where((sides == 0) & (probs <= 1 - threshold), -1, sides)
    if unfamiliar is not None:
        sides = np.where(unfamiliar, 0, sides)
    return sides.astype(np.int8)


def pair_coin(pair: str) -> str:
    """The crpbot coin of an exchange pair: its base currency (``BTC/USDT``, ``BTC/USDT:USDT`` and
    ``BTC/USD`` are all BTC-USD; crpbot's prices are in USD and a stablecoin quote tracks it)."""
    return normalize_coin(pair.split("/")[0])


def load_signal_model(settings: Mapping[str, Any], *, pairs: list[str], timeframe: str) -> SignalModel:
    """The model ``settings`` name (keys :data:`SETTINGS`), refused for other pairs or a timeframe.

    ``model``: an artifact directory (a registry version is one); otherwise the coin's promoted
    model in ``registry`` (default ``models``), pulled from S3 ``bucket`` (``prefix``,
    ``endpoint_url``) first when given. ``threshold``: τ in [0.5, 1]; by default the one
    ``crpbot evaluate`` chooses on validation with the gate's ``min_accuracy``.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise CrpbotError(f"unknown crpbot setting {', '.join(unknown)}: expected {', '.join(SETTINGS)}")
    if timeframe != TIMEFRAME:
        raise CrpbotError(f"crpbot models read {TIMEFRAME} candles; the strategy's timeframe is {timeframe}")
    if not pairs:
        raise CrpbotError("the strategy needs the pairs it trades (exchange.pair_whitelist)")
    coins = sorted({pair_coin(pair) for pair in pairs})
    if len(coins) != 1:
        raise CrpbotError(f"one model trades one coin; the pairs {', '.join(pairs)} are {', '.join(coins)}")
    [coin] = coins
    live = _load_live(settings, coin)
    if live.coin != coin:
        raise CrpbotError(f"the model predicts {live.coin}; the pairs {', '.join(pairs)} are {coin}")
    if live.context:
        raise CrpbotError(
            f"the model reads context coins ({', '.join(live.context.coins)}); the strategy serves "
            "models of the traded pair's own bars only"
        )
    if not live.target.directional:
        raise CrpbotError(f"the model's target {live.target.name} is not a direction: nothing to trade")
    threshold, source = _threshold(settings, live)
    return SignalModel(live=live, threshold=threshold, threshold_source=source)


def _load_live(settings: Mapping[str, Any], coin: str) -> LiveModel:
    remote = {key: settings[key] for key in ("prefix", "endpoint_url") if settings.get(key)}
    if settings.get("model"):
        if settings.get("registry") or settings.get("bucket"):
            raise CrpbotError("crpbot setting model names the artifact; it excludes registry and bucket")
        return LiveModel.load(settings["model"], coin=coin)
    if remote and not settings.get("bucket"):
        raise CrpbotError("crpbot settings prefix and endpoint_url need bucket")
    return LiveModel.promoted(
        coin, registry=settings.get("registry"), bucket=settings.get("bucket"), **remote
    )


def _threshold(settings: Mapping[str, Any], live: LiveModel) -> tuple[float, str]:
    given = settings.get("threshold")
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0.5 <= given <= 1.0:
            raise CrpbotError(f"invalid crpbot threshold {given!r}: must be a number in [0.5, 1]")
        return float(given), "given"
    min_accuracy = settings.get("min_accuracy", GateThresholds().min_accuracy)
    try:
        validation = live.predictor.predictions(stored_split_data(live.predictor), "val")
    except CrpbotError as exc:
        raise CrpbotError(
            f"cannot choose the threshold on the model's validation split ({exc}); give crpbot "
            "threshold (e.g. the one in its evaluation's metrics.json, backtest.threshold)"
        ) from exc
    return validation_threshold(validation, GateThresholds(min_accuracy=min_accuracy).min_accuracy)

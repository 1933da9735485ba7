"""A freqtrade strategy that trades a crpbot model's P(up), as ``crpbot evaluate``'s backtest does.

Use it from ``user_data/strategies/`` with a two-line file (freqtrade loads only classes defined in
that folder's files)::

    from crpbot.integrations.freqtrade_strategy import CrpbotStrategy

    class CrpbotBTC(CrpbotStrategy):
        pass

and a ``"crpbot"`` section in freqtrade's config naming the model (``crpbot.integrations.
candle_signals.load_signal_model``: ``model`` path, or ``registry`` / ``bucket`` for the coin's
promoted one, optional ``threshold``), ``"timeframe": "1m"`` and one coin's pair(s).

The model is loaded once, when freqtrade builds the strategy, and refused there (one line) when its
coin, timeframe or features do not match. ``populate_indicators`` scores every candle in one
batch (``crpbot_prob_up``), and flags the candles whose window lies outside what the model saw in
training (``crpbot_unfamiliar``, ``crpbot.model.familiarity``): those never trade. Otherwise a candle
at or above the evaluation's threshold τ enters long, one at or below 1 - τ short when trading
futures (``can_short`` follows ``trading_mode``); each trade exits
after ``horizon`` minutes at that candle's open (``minimal_roi = {horizon: -1}``, freqtrade's
time-based exit) -- freqtrade fills an entry at the next candle's open. No stop-loss or exit
signal: the model's horizon is the only exit, as in crpbot's backtest.

freqtrade fills missing minutes with flat zero-volume candles; the strategy scores them as candles
(a live feed has them too), where crpbot's own data starts a new run after a gap, so P(up) in the
``lookback`` minutes after such a gap differs from ``crpbot evaluate``'s on the raw file.
"""

from __future__ import annotations

import logging
from typing import Any

from crpbot.errors import CrpbotError

try:
    from freqtrade.exceptions import OperationalException
    from freqtrade.strategy import IStrategy
except ImportError as exc:  # one line, naming the extra, instead of a traceback
    raise CrpbotError(
        f"the freqtrade strategy needs freqtrade ({exc.name} is missing): pip install 'crpbot[freqtrade]'"
    ) from exc
from pandas import DataFrame

from crpbot.integrations.candle_signals import TIMEFRAME, SignalModel, entry_sides, load_signal_model

PROB_COLUMN = "crpbot_prob_up"
UNFAMILIAR_COLUMN = "crpbot_unfamiliar"
logger = logging.getLogger(__name__)


class CrpbotStrategy(IStrategy):
    """Long above the validation-chosen τ, short below 1 - τ (futures), out after ``horizon`` minutes."""

    INTERFACE_VERSION = 3
    timeframe = TIMEFRAME
    stoploss = -0.99  # freqtrade requires one; the horizon is the exit (a 99% move never comes first)
    use_exit_signal = False
    process_only_new_candles = True
    # settings of a subclass, overridden key by key by the config's "crpbot" section
    crpbot: dict[str, Any] = {}

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        settings = {**self.crpbot, **config.get("crpbot", {})}
        try:
            self.signal_model: SignalModel = load_signal_model(
                settings,
                pairs=list(config.get("exchange", {}).get("pair_whitelist", [])),
                timeframe=config.get("timeframe", self.timeframe),
            )
        except CrpbotError as exc:  # freqtrade reports these as one line and stops
            raise OperationalException(f"crpbot: {exc}") from exc
        self.can_short = str(config.get("trading_mode", "spot")) == "futures"
        self.minimal_roi = {str(self.signal_model.horizon): -1}
        self.startup_candle_count = self.signal_model.startup_candles
        live = self.signal_model.live
        logger.info(
            f"crpbot: model {live.predictor.path} (version {live.version}, {live.coin}), exit after "
            f"{live.horizon} min, threshold {self.signal_model.threshold} "
            f"({self.signal_model.threshold_source}), {'long and short' if self.can_short else 'long only'}"
        )
        if not self.signal_model.abstains:
            logger.warning(
                "crpbot: the model predates familiarity.json: unfamiliar windows cannot be told apart "
                "and are traded like any other"
            )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """P(up) of every candle, in one batch through ``crpbot evaluate``'s scoring path, and the
        candles whose window is unfamiliar."""
        dataframe[PROB_COLUMN], dataframe[UNFAMILIAR_COLUMN] = self.signal_model.score(dataframe)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        sides = entry_sides(
            dataframe[PROB_COLUMN].to_numpy(),
            self.signal_model.threshold,
            can_short=self.can_short,
            unfamiliar=dataframe[UNFAMILIAR_COLUMN].to_numpy(dtype=bool),
        )
        dataframe["enter_long"] = (sides == 1).astype(int)
        if self.can_short:
            dataframe["enter_short"] = (sides == -1).astype(int)
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """No exit signal: a trade ends ``horizon`` minutes after entry (``minimal_roi``)."""
        return dataframe

"""Live prediction: a model's P(up) for the latest closed bars, computed exactly as in training.

A bot loads a :class:`LiveModel` once (a given artifact, or the coin's promoted one, pulled
and verified from S3 when a bucket is given) and calls :meth:`LiveModel.predict` on each new
bar. Only the trailing bars the prediction needs are featurised: the window (``lookback``)
plus ``HISTORY_BARS`` of feature history (``HISTORY_BARS`` k-minute bars for a model with
timeframe k, ``crpbot.data.timeframes``), so the recursive averages agree with the ones
training computed from the segment start (see ``crpbot.data.features``); the features are
scaled with the artifact's train-only scaler and scored through the same
``Predictor.proba_at`` as evaluation, so P(up) at bar t equals evaluate's for row t.

Three inputs are refused rather than answered: bars without a gap that are fewer than
``HISTORY_BARS + lookback`` (the run may have begun earlier, and the recursive averages would
then differ from training's), bars whose last run after a gap is too short for the feature
warm-up plus a window (the features would be undefined), and bars whose latest
bar closed longer ago than ``max_staleness`` (the bot's feed stopped; a prediction for a
market that has moved on is worse than none). "Stale" is measured from the latest bar's
close (its open time + 1 minute) to ``now`` (UTC wall clock unless given).

Each prediction says whether its window is familiar: inside what the model saw in training
(``crpbot.model.familiarity``; a bot should not act on ``familiar=False``); ``None`` for an artifact
from before familiarity.json existed (unknown, not "familiar").

A model with context coins (``crpbot.data.cross_asset``) also needs each context coin's latest
bars, ending at the same minute as the target's and gap-free over the same span; anything else
is refused (one line), since a context feature from another minute would be a different input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.data.bars import Bars, normalize_coin, validate_bars
from crpbot.data.cross_asset import Context, spec_from_record
from crpbot.data.features import compute_features, feature_manifest
from crpbot.data.scaler import Scaler
from crpbot.data.timeframes import history_minutes, warmup_minutes
from crpbot.errors import CrpbotError
from crpbot.model.predictor import Predictor, load_predictor

DEFAULT_MAX_STALENESS = pd.Timedelta(minutes=5)
BAR = pd.Timedelta(minutes=1)


@dataclass(frozen=True)
class LivePrediction:
    """P(label = 1) at bar t (its open time, UTC), from one model version: for the default target
    P(close[t + horizon] > close[t]); ``LiveModel.target`` says what it is for others.
    ``familiar``: the window lies inside what the model saw in training (False: abstain; None:
    unknown, the artifact predates familiarity.json)."""

    coin: str
    timestamp: pd.Timestamp
    prob_up: float
    horizon_minutes: int
    version: str
    familiar: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "coin": self.coin,
            "timestamp": self.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "prob_up": self.prob_up,
            "horizon_minutes": self.horizon_minutes,
            "version": self.version,
            "familiar": self.familiar,
        }


class LiveModel:
    """A loaded model or ensemble with its scaler, ready to score the latest bars many times."""

    def __init__(self, predictor: Predictor, *, version: str) -> None:
        manifest = feature_manifest()
        trained = predictor.config_json.get("feature_names")
        self.context = spec_from_record(predictor.config_json.get("context"))
        if trained != manifest["names"] + list(self.context.column_names()):
            found = "records no feature names" if trained is None else "was trained on other features"
            raise CrpbotError(
                f"model {predictor.path} {found}: its inputs are not the features this crpbot "
                f"computes (feature version {manifest['version']}); retrain it"
            )
        self.predictor = predictor
        self.version = version
        self.coin = predictor.coin
        self.lookback = predictor.lookback
        self.horizon = predictor.train_config.horizon
        self.target = predictor.target  # what prob_up is the probability of (crpbot.data.targets)
        self.scaler = Scaler.from_dict(predictor.scaler)
        # the 1-minute features' needs, or more for higher timeframes (crpbot.data.timeframes)
        self.history_bars = history_minutes(self.context.timeframes)

    @classmethod
    def load(cls, path: str | Path, *, version: str | None = None, coin: str | None = None) -> LiveModel:
        """A verified artifact directory; ``version`` defaults to the directory's name.

        ``coin`` is required for a global model (one of the coins it was trained on; others are
        refused) and, when given for a one-coin model, must be its coin.
        """
        path = Path(path)
        return cls(load_predictor(path, coin), version=version or path.name)

    @classmethod
    def promoted(
        cls,
        coin: str,
        *,
        registry: str | Path | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        endpoint_url: str | None = None,
    ) -> LiveModel:
        """The coin's current promoted model; with ``bucket``, the remote current is pulled (verified)."""
        from crpbot.registry.local import DEFAULT_ROOT, current_path, current_version
        from crpbot.registry.transfer import DEFAULT_PREFIX, pull

        coin = normalize_coin(coin)
        root = Path(registry if registry is not None else DEFAULT_ROOT)
        if bucket is not None:
            [pulled] = pull(
                root, bucket, coin=coin, prefix=prefix or DEFAULT_PREFIX, endpoint_url=endpoint_url
            )
            return cls.load(pulled.path, version=pulled.version, coin=coin)
        path = current_path(coin, root=root)
        return cls.load(path, version=current_version(coin, root=root) or path.name, coin=coin)

    def bars_needed(self, last: int = 1) -> int:
        """Trailing bars featurised to predict the last ``last`` bars (fewer suffice after a gap)."""
        return self.history_bars + self.lookback + last - 1

    def predict(
        self,
        bars: Bars | pd.DataFrame,
        *,
        last: int = 1,
        now: pd.Timestamp | None = None,
        max_staleness: pd.Timedelta | None = DEFAULT_MAX_STALENESS,
        context: Mapping[str, Bars | pd.DataFrame] | None = None,
    ) -> list[LivePrediction]:
        """P(up) for each of the last ``last`` bars, oldest first.

        ``bars``: validated ``Bars`` or a raw table (``timestamp``/``date`` and OHLCV columns,
        validated here). ``max_staleness=None`` skips the staleness check. ``context``: the
        latest bars of each of the model's context coins (coin -> bars), required by such a model.
        """
        if last < 1:
            raise CrpbotError(f"--last must be >= 1, got {last}")
        if isinstance(bars, pd.DataFrame):
            bars = validate_bars(bars, name="bars")
        if bars.coin and self.coin and bars.coin != self.coin:
            raise CrpbotError(
                f"{Path(bars.source).name} holds {bars.coin} bars, the model predicts {self.coin}"
            )
        latest = bars.frame["timestamp"].iloc[-1]
        self._check_fresh(latest, now, max_staleness)
        run = self._check_history(bars, last)
        recent = bars.tail(min(run, self.bars_needed(last)))
        features = compute_features(recent).to_numpy(dtype=np.float64)
        if self.context or context:
            features = np.hstack([features, self._context_columns(recent, context or {})])
        features = features[-(self.lookback + last - 1) :]
        if not np.isfinite(features).all():
            raise CrpbotError("features of the latest bars are not all finite; check the bars")
        scaled = self.scaler.transform(features)
        ends = np.arange(len(scaled) - last, len(scaled), dtype=np.int64)
        probs = self.predictor.proba_at(scaled, ends)
        flags = self.predictor.familiar_at(scaled, ends)
        known = [None] * len(ends) if flags is None else [bool(flag) for flag in flags]
        stamps = recent.frame["timestamp"].iloc[-len(scaled) :].iloc[ends]
        return [
            LivePrediction(self.coin, stamp, float(prob), self.horizon, self.version, familiar)
            for stamp, prob, familiar in zip(stamps, probs, known, strict=True)
        ]

    def _check_history(self, bars: Bars, last: int) -> int:
        """Refuse bars too short for the features training computed at these minutes.

        After a gap inside ``bars`` the last run starts where training's features restarted too, so
        warm-up + lookback bars give training's numbers. Without a gap the run may have begun
        before the first bar given, and training's recursive averages remember that start: fewer
        than :meth:`bars_needed` bars would give features that differ from training's (~1e-3 sd in
        ``rsi_14`` at 180 bars), a silently different prediction, so they are refused. Returns the
        length of the last gap-free run.
        """
        run = _last_run_length(bars.segment_ids)
        more = f" + {last - 1} more" if last > 1 else ""
        if run == len(bars) and run < self.bars_needed(last):
            raise CrpbotError(
                f"the bars hold {run:,} gap-free bars; predicting the last {last} needs "
                f"{self.bars_needed(last):,} (feature history {self.history_bars:,} + lookback "
                f"{self.lookback}{more}) to compute training's features; pass more bars, or bars from "
                "before the gap that starts them"
            )
        first = bars.frame["timestamp"].iloc[-run]
        warmup = warmup_minutes(self.context.timeframes, first.value // 60_000_000_000)
        needed = warmup + self.lookback + last - 1
        if run < needed:
            raise CrpbotError(
                f"the bars after the gap before {first} hold {run:,} gap-free "
                f"bars; predicting the last {last} needs {needed:,} (feature warm-up {warmup:,} + "
                f"lookback {self.lookback}{more})"
            )
        return run

    def _context_columns(self, recent: Bars, context: Mapping[str, Bars | pd.DataFrame]) -> np.ndarray:
        """The context coins' features on ``recent``'s minutes, from their bars over the same span."""
        given = {normalize_coin(coin): bars for coin, bars in context.items()}
        needed = ", ".join(self.context.coins) or "none"
        if set(given) != set(self.context.coins):
            raise CrpbotError(
                f"the model uses context coins {needed}; got context bars of {', '.join(given) or 'none'}"
            )
        latest = recent.frame["timestamp"].iloc[-1]
        aligned = {}
        for coin in self.context.coins:
            bars = given[coin]
            if isinstance(bars, pd.DataFrame):
                bars = validate_bars(bars, name=f"{coin} bars")
            own_latest = bars.frame["timestamp"].iloc[-1]
            if own_latest != latest:
                raise CrpbotError(
                    f"context coin {coin}: latest bar {own_latest} is not {self.coin}'s latest {latest}; "
                    "pass bars up to the same minute"
                )
            if _last_run_length(bars.segment_ids) < len(recent):
                raise CrpbotError(
                    f"context coin {coin}: its bars have a gap within the last {len(recent):,} minutes "
                    f"that the prediction reads"
                )
            aligned[coin] = bars.tail(len(recent))
        return Context(spec=self.context, bars=aligned).columns(recent)

    @staticmethod
    def _check_fresh(latest: pd.Timestamp, now: pd.Timestamp | None, limit: pd.Timedelta | None) -> None:
        now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
        if now.tzinfo is None:
            raise CrpbotError(f"now must be a UTC time, got the naive {now}")
        closed = latest + BAR
        if now < closed:
            raise CrpbotError(
                f"the latest bar ({latest}) is still open until {closed}; pass closed bars only "
                "(training never saw a forming bar)"
            )
        if limit is not None and now - closed > limit:
            raise CrpbotError(
                f"stale bars: the latest bar closed at {closed}, {_minutes(now - closed)} before now "
                f"({now.floor('s')}); the limit is {_minutes(limit)} (see --max-staleness, --allow-stale)"
            )


def _last_run_length(segment_ids: np.ndarray) -> int:
    """Bars in the last gap-free run (segment ids are non-decreasing)."""
    return int(len(segment_ids) - np.searchsorted(segment_ids, segment_ids[-1], side="left"))


def _minutes(delta: pd.Timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:,.1f} min" if minutes < 120 else str(delta.floor("min"))

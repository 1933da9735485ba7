"""Champion vs challenger: both scored on the same newest rows that neither trained or validated on.

The rows are the challenger's test split, minus every window that touches the champion's own
train/validation period (so an older champion is scored on data it has not seen either; a
champion trained on newer data than the challenger's test split leaves nothing to compare, and
the comparison says so). Both models score the same windows (same timestamps, same labels),
and the difference is judged by the paired CI of per-row log loss (``metrics.paired_interval``):
the two models are right and wrong on largely the same stretches, so pairing resolves a difference
that two separate intervals would hide, and its HAC variance keeps the overlap of the labels honest.
Too few shared rows for that interval is an error (the caller keeps the champion), never a
decision on the point estimate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crpbot.errors import CrpbotError
from crpbot.evaluation.evaluate import MINUTE_NS, stored_split_data
from crpbot.evaluation.metrics import accuracy, brier_score, paired_interval, require_rows
from crpbot.model.predictor import Predictor, load_predictor

CI_LEVEL = 0.95


@dataclass(frozen=True)
class Comparison:
    """What both models scored on the shared rows; ``fair`` is False when there were none.

    ``log_loss_difference`` is challenger minus champion (negative: the challenger is better),
    with its paired ``ci`` (``ci_method`` says how it was computed).
    """

    fair: bool
    note: str
    challenger_test_rows: int
    n: int = 0
    period: list[str] | None = None
    champion: dict[str, float] = field(default_factory=dict)
    challenger: dict[str, float] = field(default_factory=dict)
    log_loss_difference: float | None = None
    ci: list[float] | None = None
    ci_method: str = ""

    @property
    def challenger_worse_beyond_noise(self) -> bool:
        """The whole CI of (challenger - champion) log loss lies above 0."""
        return self.fair and self.ci is not None and self.ci[0] > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare_on_shared_period(champion_dir: str | Path, challenger_dir: str | Path) -> Comparison:
    """Score both artifacts on the challenger's test rows that the champion has not seen either."""
    challenger = load_predictor(challenger_dir)
    champion = load_predictor(champion_dir, challenger.coin)  # a global champion, opened for this coin
    horizon = challenger.train_config.horizon
    data = stored_split_data(challenger)
    test = challenger.predictions(data, "test")
    total = len(test)
    if champion.train_config.horizon != horizon:
        return Comparison(
            fair=False,
            note=(
                f"no fair comparison: the champion predicts {champion.train_config.horizon} minutes "
                f"ahead, the challenger {horizon}"
            ),
            challenger_test_rows=total,
        )
    if champion.config_json.get("feature_names") != challenger.config_json.get("feature_names"):
        return Comparison(
            fair=False,
            note="no fair comparison: the champion and the challenger use different features",
            challenger_test_rows=total,
        )
    seen_start, seen_end = (
        int(champion.config_json["split_times"][s][i]) for s, i in (("train", 0), ("val", 1))
    )
    unseen = _unseen_window_ends(data, champion, seen_start, seen_end)
    shared_ts, in_test, in_champion = np.intersect1d(
        test.timestamps, data.timestamps[unseen], return_indices=True
    )
    if len(shared_ts) == 0:
        return Comparison(
            fair=False,
            note=(
                f"no fair comparison: the champion trained or validated on data up to {_iso(seen_end)}, "
                f"which covers all {total:,} rows of the challenger's test period"
            ),
            challenger_test_rows=total,
        )
    require_rows(len(shared_ts), horizon, "shared unseen rows (champion vs challenger)")
    labels = test.labels[in_test]
    challenger_probs = test.probs[in_test]
    champion_probs = _champion_probs(champion, challenger, data, unseen[in_champion])
    challenger_losses = row_log_losses(labels, challenger_probs)
    champion_losses = row_log_losses(labels, champion_probs)
    interval = paired_interval(challenger_losses, champion_losses, horizon=horizon, level=CI_LEVEL)
    trimmed = total - len(shared_ts)
    note = f"{len(shared_ts):,} rows of the challenger's test period; " + (
        f"{trimmed:,} rows dropped whose windows the champion had seen or could not fill "
        f"(its train/val period ends {_iso(seen_end)})"
        if trimmed
        else "the champion saw none of them"
    )
    return Comparison(
        fair=True,
        note=note,
        challenger_test_rows=total,
        n=len(shared_ts),
        period=[_iso(shared_ts[0]), _iso(shared_ts[-1])],
        champion=_scores(labels, champion_probs, champion_losses),
        challenger=_scores(labels, challenger_probs, challenger_losses),
        log_loss_difference=float(challenger_losses.mean() - champion_losses.mean()),
        ci=[interval.low, interval.high],
        ci_method=f"per-row log loss, challenger - champion: {interval.method}",
    )


def row_log_losses(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-row negative log-likelihood, clipped like ``metrics.log_loss`` (whose mean this is)."""
    eps = np.finfo(np.float64).eps
    probs = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    labels = np.asarray(labels, dtype=np.float64)
    return -(labels * np.log(probs) + (1 - labels) * np.log1p(-probs))


def _unseen_window_ends(data: Any, champion: Predictor, seen_start: int, seen_end: int) -> np.ndarray:
    """Rows of the challenger's test split where the champion's whole window and label lie outside
    its train/val period (the rule ``evaluate --input`` applies) and inside one segment."""
    lookback = champion.lookback
    start, end = data.split_bounds["test"]
    span = dataclasses.replace(data, split_bounds={"test": (max(0, start - lookback + 1), end)})
    ends = span.window_ends("test", lookback)
    window_first = data.timestamps[ends] - (lookback - 1) * MINUTE_NS
    window_last = data.timestamps[ends] + data.horizon * MINUTE_NS
    return ends[(window_last < seen_start) | (window_first > seen_end)]


def _champion_probs(champion: Predictor, challenger: Predictor, data: Any, rows: np.ndarray) -> np.ndarray:
    """The champion's P(up) at ``rows``: features from the same bars, scaled with its own scaler."""
    from crpbot.data.bars import default_input, load_bars
    from crpbot.data.dataset import prepare_inference
    from crpbot.data.scaler import Scaler

    path = Path(challenger.config_json["input_path"])
    bars = load_bars(path if path.is_file() else default_input(challenger.coin))
    bars.coin = challenger.coin
    own = prepare_inference(bars, scaler=Scaler.from_dict(champion.scaler), horizon=data.horizon)
    if bars.fingerprint != data.fingerprint or not np.array_equal(own.timestamps, data.timestamps):
        raise CrpbotError(f"{path} changed while the champion and the challenger were being compared")
    first, last = int(rows[0]) - champion.lookback + 1, int(rows[-1]) + data.horizon + 1
    own = dataclasses.replace(own, split_bounds={"test": (max(0, first), min(len(own), last))})
    ends, probs = champion.predict_proba(own, "test")
    position = np.minimum(np.searchsorted(ends, rows), len(ends) - 1)
    if not np.array_equal(ends[position], rows):
        raise CrpbotError("the champion could not score every shared row (a bug in the row selection)")
    return probs[position]


def _scores(labels: np.ndarray, probs: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    return {
        "log_loss": float(losses.mean()),
        "accuracy": accuracy(labels, probs),
        "brier": brier_score(labels, probs),
    }


def _iso(ns: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="m") + "Z"

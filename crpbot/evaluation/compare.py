"""Champion vs challenger: both scored on the same newest rows that neither trained or validated on.

The rows are the challenger's test split, minus every window that touches the champion's own
train/validation period (so an older champion is scored on data it has not seen either; a
champion trained on newer data than the challenger's test split leaves nothing to compare, and
the comparison says so). Both models score the same timestamps with the same labels, each on
its own inputs: its own scaler and its own context coins' bars (a context champion against a
challenger without context, or the reverse, is compared on the rows where both have a window),
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
from crpbot.evaluation.evaluate import MINUTE_NS, inference_data, stored_split_data
from crpbot.evaluation.metrics import accuracy, brier_score, paired_interval, require_rows
from crpbot.model.predictions import Predictions
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
    """Score both artifacts on the challenger's test rows that the champion has not seen either.

    Each model is scored on its own inputs at the same timestamps: the challenger on its stored
    test split, the champion on the challenger's input file prepared with its own scaler and its
    own context coins (found as ``evaluate --input`` finds them: beside that file). Rows where
    either model lacks a complete window (a context coin's gap) are left out of both.
    """
    challenger = load_predictor(challenger_dir)
    champion = load_predictor(champion_dir, challenger.coin)  # a global champion, opened for this coin
    horizon = challenger.train_config.horizon
    data = stored_split_data(challenger)
    test = challenger.predictions(data, "test")
    total = len(test)
    if champion.target != challenger.target:  # another horizon, target or target parameter
        return Comparison(
            fair=False,
            note=(
                f"no fair comparison: the champion predicts {champion.target.describe()}, "
                f"the challenger {challenger.target.describe()}"
            ),
            challenger_test_rows=total,
        )
    if _own_features(champion) != _own_features(challenger):
        return Comparison(
            fair=False,
            note="no fair comparison: the champion and the challenger use different features",
            challenger_test_rows=total,
        )
    seen_start, seen_end = (
        int(champion.config_json["split_times"][s][i]) for s, i in (("train", 0), ("val", 1))
    )
    if data.timestamps[-1] <= seen_end:
        return Comparison(
            fair=False,
            note=(
                f"no fair comparison: the retrain input (up to {_iso(data.timestamps[-1])}) is not newer "
                f"than the champion's train/val data (up to {_iso(seen_end)}), which covers all "
                f"{total:,} rows of the challenger's test period"
            ),
            challenger_test_rows=total,
        )
    own = _champion_predictions(champion, challenger, data, int(test.timestamps[0]))
    unseen = np.flatnonzero(_unseen(own.timestamps, champion, seen_start, seen_end))
    shared_ts, in_test, in_unseen = np.intersect1d(
        test.timestamps, own.timestamps[unseen], return_indices=True
    )
    if len(shared_ts) == 0:
        return Comparison(
            fair=False,
            note=(
                f"no fair comparison: no row of the challenger's {total:,} test rows has a complete "
                f"champion window outside the champion's train/val period (which ends {_iso(seen_end)})"
            ),
            challenger_test_rows=total,
        )
    require_rows(len(shared_ts), horizon, "shared unseen rows (champion vs challenger)")
    champion_rows = unseen[in_unseen]
    labels = test.labels[in_test]
    if not np.array_equal(own.labels[champion_rows], labels):
        raise CrpbotError("the champion's and the challenger's labels differ on the same rows (a bug)")
    challenger_probs = test.probs[in_test]
    champion_probs = own.probs[champion_rows]
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


def _own_features(predictor: Predictor) -> list[str]:
    """The model's features without its context columns: each model is fed its own context bars,
    so only these must agree for both to be scored on the same target bars."""
    context = set(predictor.config_json.get("context", {}).get("columns", []))
    return [name for name in predictor.config_json.get("feature_names") or () if name not in context]


def _unseen(timestamps: np.ndarray, champion: Predictor, seen_start: int, seen_end: int) -> np.ndarray:
    """Mask of rows whose champion window and label lie wholly outside its train/val period (the
    rule ``evaluate --input`` applies)."""
    window_first = timestamps - (champion.lookback - 1) * MINUTE_NS
    window_last = timestamps + champion.train_config.horizon * MINUTE_NS
    return (window_last < seen_start) | (window_first > seen_end)


def _champion_predictions(
    champion: Predictor, challenger: Predictor, data: Any, first_ns: int
) -> Predictions:
    """The champion's predictions on the challenger's input from ``first_ns`` (the challenger's first
    test row) on: the same target bars, the champion's own scaler and context coins."""
    from crpbot.data.bars import default_input, load_bars

    path = Path(challenger.config_json["input_path"])
    path = path if path.is_file() else default_input(challenger.coin)
    bars = load_bars(path)
    bars.coin = challenger.coin
    if bars.fingerprint != data.fingerprint:
        raise CrpbotError(f"{path} changed while the champion and the challenger were being compared")
    own = inference_data(champion, bars, path)  # the same horizon: checked before this is called
    start = int(np.searchsorted(own.timestamps, first_ns - (champion.lookback - 1) * MINUTE_NS))
    own = dataclasses.replace(own, split_bounds={"test": (start, len(own))})
    return champion.predictions(own, "test")


def _scores(labels: np.ndarray, probs: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    return {
        "log_loss": float(losses.mean()),
        "accuracy": accuracy(labels, probs),
        "brier": brier_score(labels, probs),
    }


def _iso(ns: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="m") + "Z"

"""Abstaining on unfamiliar windows: the distance, its validation-chosen threshold, and serving's flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny import TINY_GRU

from crpbot.data.bars import load_bars
from crpbot.errors import CrpbotError
from crpbot.evaluation.evaluate import stored_split_data
from crpbot.model.familiarity import FAMILIARITY_FILE, Familiarity
from crpbot.model.predictor import load_predictor
from crpbot.model.serving import LiveModel
from crpbot.registry.artifact import read_manifest

CORRELATED = np.array([[1.0, 0.95, 0.0], [0.95, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Heavy-tailed (Student t, 4 df) rows with two strongly correlated features, like returns."""
    normal = rng.multivariate_normal(np.zeros(3), CORRELATED, size=n)
    return normal / np.sqrt(rng.chisquare(4, size=(n, 1)) / 4)


def test_the_threshold_keeps_99_percent_of_validation_and_flags_what_train_never_held() -> None:
    rng = np.random.default_rng(0)
    val = _rows(rng, 5_000)
    fitted = Familiarity.fit(_rows(rng, 20_000), val)
    kept = fitted.familiar(val).mean()
    assert 0.99 <= kept <= 0.99 + 1 / len(val)
    assert 0.97 <= fitted.familiar(_rows(rng, 5_000)).mean() <= 0.995  # fresh rows of the same law
    # far outside the training range, and a row whose correlated features disagree although each
    # one alone is ordinary (|z| = 2.5): the Mahalanobis distance flags both
    assert not fitted.familiar(np.array([[40.0, 40.0, 0.0], [2.5, -2.5, 0.0]])).any()
    assert fitted.familiar(np.array([[2.5, 2.5, 0.0]])).all()
    # the record is plain JSON and gives back the same distances
    again = Familiarity.from_dict(json.loads(json.dumps(fitted.to_dict())))
    np.testing.assert_array_equal(again.distance(val), fitted.distance(val))
    assert again.threshold == fitted.threshold


def test_bad_records_and_rows_are_one_line_errors() -> None:
    fitted = Familiarity.fit(np.eye(3).repeat(4, axis=0), np.eye(3))
    record = fitted.to_dict()
    with pytest.raises(CrpbotError, match="invalid familiarity record"):
        Familiarity.from_dict({**record, "precision": [[1.0]]})
    with pytest.raises(CrpbotError, match="invalid familiarity record"):
        Familiarity.from_dict({key: value for key, value in record.items() if key != "threshold"})
    with pytest.raises(CrpbotError, match="expects rows of 3 features"):
        fitted.familiar(np.zeros((2, 4)))


def test_a_model_flags_a_window_shifted_far_outside_training_and_no_future_bar_enters(
    train_tiny_artifact, sample_path
) -> None:
    artifact, _ = train_tiny_artifact(TINY_GRU, "BTC")
    assert FAMILIARITY_FILE in read_manifest(artifact)["files"]  # sealed like the weights
    predictor = load_predictor(artifact)
    data = stored_split_data(predictor)
    val = data.window_ends("val", predictor.lookback, labelled=False)
    assert predictor.familiar_at(data.features, val).mean() >= 0.99

    model = LiveModel.load(artifact)
    bars = _tail(sample_path("BTC"), model.bars_needed(2))
    before = model.predict(bars, last=2, max_staleness=None)
    shifted = bars.copy()
    shifted.loc[shifted.index[-1], ["open", "high", "low", "close"]] *= 1.5  # a 50% jump in one minute
    after = model.predict(shifted, last=2, max_staleness=None)
    assert after[1].familiar is False and after[1].to_dict()["familiar"] is False
    # the bar before the jump is scored from bars up to it: the later bar changes nothing there
    assert (after[0].prob_up, after[0].familiar) == (before[0].prob_up, before[0].familiar)
    assert before[0].familiar is not None


def _tail(path: Path, n: int) -> pd.DataFrame:
    """The last ``n`` rows of a bars file as a raw table (``LiveModel.predict`` validates it)."""
    return load_bars(path).frame.tail(n).reset_index(drop=True)

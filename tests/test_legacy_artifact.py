"""An artifact written by the flat-layout code (before the stage packages) still loads and predicts.

``tests/fixtures/legacy_ensemble`` was built at commit a4fb4e7 by the old modules; artifacts name
no module paths (safetensors + JSON), so the move must not change a single probability.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crpbot.config import TrainConfig
from crpbot.data.bars import default_input, load_bars
from crpbot.evaluation.evaluate import stored_split_data
from crpbot.model.predictor import load_predictor
from crpbot.model.serving import LiveModel
from crpbot.registry.artifact import verify_artifact

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_a_pre_move_ensemble_loads_and_predicts_the_same() -> None:
    expected = json.loads((FIXTURES / "legacy_ensemble_expected.json").read_text())
    path = FIXTURES / "legacy_ensemble"
    verify_artifact(path)
    predictor = load_predictor(path)
    assert len(predictor.models) == 2 and predictor.temperature == expected["temperature"]
    # from before targets existed: no recorded target, so its config's (today's direction label)
    assert "target" not in predictor.config_json and predictor.target.to_dict() == {
        "name": "direction",
        "horizon": 15,
    }
    data = stored_split_data(predictor)
    ends, probs = predictor.predict_proba(data, "val")
    _, raw = predictor.raw_proba(data, "val")
    assert len(ends) == expected["n_val"] and ends[0] == expected["val_ends_first"]
    np.testing.assert_allclose(raw[:20], expected["val_raw_probs_first_20"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(probs[:20], expected["val_probs_first_20"], rtol=0, atol=1e-6)
    assert abs(probs.mean() - expected["val_mean_prob"]) < 1e-6
    # from before familiarity.json: unknown (None), never "familiar", in batch and in serving
    assert predictor.familiarity is None and predictor.familiar_at(data.features, ends) is None
    [served] = LiveModel.load(path).predict(load_bars(default_input("ETH")), max_staleness=None)
    assert served.familiar is None and served.to_dict()["familiar"] is None


def test_artifact_json_names_no_module_paths(train_tiny_artifact) -> None:
    """What keeps artifacts loadable across moves: no file of an old or a new artifact names a module."""
    config = TrainConfig(
        hidden_size=4,
        num_layers=1,
        head_hidden=4,
        lookback=10,
        max_train_windows=128,
        batch_size=64,
        max_epochs=1,
        patience=1,
    )
    fresh, _ = train_tiny_artifact(config, "BTC")
    for root in (FIXTURES / "legacy_ensemble", fresh):
        for path in root.rglob("*.json"):
            assert "crpbot." not in path.read_text(), path

"""Where a predictor scores: in a Ray task holding a chain's claim, on the threads it was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from crpbot.errors import CrpbotError
from crpbot.model.inference import predict_windows
from crpbot.model.predictor import Predictor, load_predictor
from crpbot.model.scoring import ScoringClaim, chain_claim, held_resources, mean_proba, scoring_claim
from tests.tiny import TINY_GRU


def thread_count() -> nn.Module:
    """A model answering every window with the number of torch threads its forward pass ran on, as
    its logit. Defined in a function: Ray's workers cannot import this test module, and cloudpickle
    sends a local class by value."""

    class ThreadCount(nn.Module):
        def forward(self, windows: torch.Tensor, coins: torch.Tensor | None = None) -> torch.Tensor:
            return windows.new_full((len(windows),), float(torch.get_num_threads()))

    return ThreadCount()


def test_a_claim_is_whole_cpus_and_a_share_of_one_gpu():
    assert ScoringClaim() == ScoringClaim(cpus=1, gpus=0.0)
    for bad in ({"cpus": 0}, {"cpus": 1.5}, {"cpus": True}, {"gpus": 1.5}, {"gpus": -0.25}):
        with pytest.raises(CrpbotError, match="invalid scoring claim"):
            ScoringClaim(**bad)


def test_outside_ray_a_prediction_scores_here_on_the_cpu():
    assert held_resources() == ("cpu", None)
    features = np.zeros((30, 3), dtype=np.float32)
    before = torch.get_num_threads()
    probs = mean_proba([thread_count()], [0.0], features, np.array([10, 29]), 5)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-before)), rtol=1e-6)


@pytest.mark.ray
def test_a_claimed_scoring_task_runs_on_the_claimed_cpus_and_agrees_with_local_scoring(
    ray_session, train_tiny_artifact
):
    path, data = train_tiny_artifact(TINY_GRU, "BTC")
    predictor = load_predictor(path)
    ends = np.asarray(data.window_ends("val", TINY_GRU.lookback), dtype=np.int64)
    torch.set_num_threads(1)  # what Ray gives a chain task that claims no CPU

    local = predictor.raw_proba_at(data.features, ends, device="cpu")
    old_batching = predict_windows(
        predictor.models[0],
        data.features,
        ends,
        TINY_GRU.lookback,
        batch_size=256,
        logit_offset=predictor.logit_offsets[0],
    )
    with scoring_claim(ScoringClaim(cpus=2)):
        claimed = predictor.raw_proba_at(data.features, ends)
        threads = Predictor(
            [thread_count()], logit_offsets=[0.0], config_json=predictor.config_json, scaler={}
        ).raw_proba_at(data.features, ends[:3])

    assert len(claimed) == len(ends) > 1000
    np.testing.assert_allclose(claimed, local, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(old_batching, local, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(threads, 1 / (1 + np.exp(-2.0)), rtol=1e-6)  # 2 threads, not Ray's 1
    assert torch.get_num_threads() == 1  # the caller's own setting is untouched


@pytest.mark.ray
def test_chains_claim_an_equal_part_of_a_node_or_their_gpu_share(ray_session):
    cpus = int(ray_session.cluster_resources()["CPU"])  # one node
    assert chain_claim(1, None) == ScoringClaim(cpus=cpus)
    assert chain_claim(cpus + 1, None) == ScoringClaim(cpus=1)
    assert chain_claim(3, 0.25) == ScoringClaim(cpus=1, gpus=0.25)

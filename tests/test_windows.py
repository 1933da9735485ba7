"""Zero-copy window views and the batched gather equal naive slicing; gap-crossing windows never appear."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crpbot.data.bars import load_bars
from crpbot.data.dataset import PreparedData, prepare_data
from crpbot.data.windows import gather_windows, window_view

LOOKBACK = 32


@pytest.fixture(scope="module")
def prepared(sample_path) -> PreparedData:
    return prepare_data(load_bars(sample_path("SOL")), lookback=LOOKBACK, horizon=15)


def test_window_view_shares_the_numpy_storage(prepared):
    features = torch.from_numpy(prepared.features)
    assert features.data_ptr() == prepared.features.ctypes.data  # from_numpy: no copy
    view = window_view(features, LOOKBACK)
    assert view.shape == (len(prepared) - LOOKBACK + 1, LOOKBACK, features.shape[1])
    assert view.untyped_storage().data_ptr() == features.untyped_storage().data_ptr()
    for start in (0, 1, 777, len(view) - 1):
        assert torch.equal(view[start], features[start : start + LOOKBACK])


@pytest.mark.parametrize("lookback", [1, 7, LOOKBACK])
def test_gather_equals_naive_slicing(prepared, lookback):
    features = torch.from_numpy(prepared.features)
    ends = prepared.window_ends("train", lookback)
    picked = np.random.default_rng(lookback).choice(ends, size=512, replace=False)
    batch = gather_windows(features, torch.from_numpy(picked), lookback)
    assert batch.shape == (512, lookback, features.shape[1]) and batch.is_contiguous()
    naive = np.stack([prepared.features[t - lookback + 1 : t + 1] for t in picked])
    np.testing.assert_array_equal(batch.numpy(), naive)


def test_served_windows_never_cross_a_gap(prepared):
    segments = torch.from_numpy(prepared.segment_ids.astype(np.int64)).unsqueeze(1)
    for split in prepared.split_bounds:
        ends = torch.from_numpy(prepared.window_ends(split, LOOKBACK))
        window_segments = gather_windows(segments, ends, LOOKBACK).squeeze(2)
        assert bool((window_segments == window_segments[:, :1]).all())
    # and the gap really is in the data, so the check above had something to catch
    assert (np.diff(prepared.segment_ids) != 0).sum() >= 1


def test_out_of_range_ends_are_refused_not_wrapped(prepared):
    features = torch.from_numpy(prepared.features)
    with pytest.raises(IndexError, match="window ends must lie in"):
        gather_windows(features, torch.tensor([LOOKBACK - 2]), LOOKBACK)
    with pytest.raises(IndexError, match="window ends must lie in"):
        gather_windows(features, torch.tensor([len(prepared)]), LOOKBACK)
    with pytest.raises(ValueError, match="lookback must be in"):
        window_view(features, len(prepared) + 1)

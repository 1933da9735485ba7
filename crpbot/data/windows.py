"""Sliding windows as zero-copy views of one contiguous feature array, and a batched gather.

``window_view`` exposes every window without copying (for scoring all windows in
order); a training batch is one ``index_select`` of its rows: no per-sample Python,
no materialised tensor of all windows. Which end rows are valid (inside one split and one
gap-free segment) is decided once by ``PreparedData.window_ends``. ``as_tensor`` puts the
feature array on a device without a copy on the CPU.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def window_view(features: torch.Tensor, lookback: int) -> torch.Tensor:
    """All windows as a ``[N - lookback + 1, lookback, F]`` view sharing ``features``' storage."""
    if features.dim() != 2:
        raise ValueError(f"features must be [N, F], got shape {tuple(features.shape)}")
    n_rows, n_features = features.shape
    if not 1 <= lookback <= n_rows:
        raise ValueError(f"lookback must be in [1, {n_rows}], got {lookback}")
    row_stride, feature_stride = features.stride()
    return features.as_strided(
        (n_rows - lookback + 1, lookback, n_features), (row_stride, row_stride, feature_stride)
    )


def gather_windows(features: torch.Tensor, ends: torch.Tensor, lookback: int) -> torch.Tensor:
    """Windows ending at rows ``ends`` as one contiguous ``[B, lookback, F]`` tensor.

    A single ``index_select`` of rows: measured 1.7x faster than fancy-indexing the
    strided view, because it copies whole feature rows instead of strided elements.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [N, F], got shape {tuple(features.shape)}")
    n_rows, n_features = features.shape
    ends = ends.to(device=features.device, dtype=torch.long)
    # Checked on the CPU only: on an accelerator int(...) would stall the queue twice per batch.
    # Training ends come from PreparedData.window_ends, which are in range by construction, and
    # an out-of-range index still fails inside index_select there.
    on_cpu = ends.device.type == "cpu"
    if ends.numel() and on_cpu and (int(ends.min()) < lookback - 1 or int(ends.max()) >= n_rows):
        raise IndexError(f"window ends must lie in [{lookback - 1}, {n_rows - 1}]")
    offsets = torch.arange(1 - lookback, 1, device=features.device)
    rows = (ends[:, None] + offsets).reshape(-1)
    return features.index_select(0, rows).view(len(ends), lookback, n_features)


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor over ``array`` without copying on the CPU.

    Arrays from the Ray object store are read-only; torch warns because it cannot mark the
    tensor read-only. Nothing here writes to features or labels, so the warning is silenced.
    """
    array = np.asarray(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)

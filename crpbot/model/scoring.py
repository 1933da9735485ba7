"""Where a predictor scores: on the CPUs and GPU its process holds, or in a Ray task claimed for it.

Scoring (a validation check, an ensemble's temperature fit, a test evaluation) is a forward pass
of every member over tens of thousands of windows. A pipeline's chain task claims no CPU or GPU
(``crpbot.pipeline.run``: it must hold nothing while it waits for its training runs), so Ray runs
it on one thread: the recipe scored ~480 windows/s there, 20+ minutes per coin on full BTC. So a
chain declares a :class:`ScoringClaim` around its work (:func:`scoring_claim`), and every
prediction made inside it runs in a Ray task holding those resources: a share of a GPU with
``--gpu``, large batches on it; without, as many torch threads as the CPUs claimed. Outside a
claim (the CLI, a walk-forward fold task) a prediction runs in the calling process, on the GPU
the process holds if Ray gave it one, with as many threads as the CPUs Ray gave it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from crpbot.errors import CrpbotError
from crpbot.model.fit import EVAL_BATCH

# Windows per forward pass: the CPU's batch is the evaluation loop's; a GPU needs many more
# windows per launch to be busy (8192 recipe windows hold ~1 GiB of activations).
BATCH = {"cpu": EVAL_BATCH, "cuda": 8192}


@dataclass(frozen=True)
class ScoringClaim:
    """The resources a scoring task claims: whole CPUs (its torch threads) and a share of one GPU."""

    cpus: int = 1
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, int) or self.cpus < 1:
            raise CrpbotError(f"invalid scoring claim: {self.cpus!r} CPUs, must be an integer >= 1")
        if not 0 <= self.gpus <= 1:
            raise CrpbotError(f"invalid scoring claim: GPU share {self.gpus!r}, must be in [0, 1]")


_CLAIM: ContextVar[ScoringClaim | None] = ContextVar("crpbot_scoring_claim", default=None)


@contextmanager
def scoring_claim(claim: ScoringClaim | None) -> Iterator[None]:
    """Every prediction inside runs in a Ray task holding ``claim`` (``None``: in this process)."""
    token = _CLAIM.set(claim)
    try:
        yield
    finally:
        _CLAIM.reset(token)


def mean_proba(
    models: Sequence[torch.nn.Module],
    logit_offsets: Sequence[float],
    features: np.ndarray,
    ends: np.ndarray,
    lookback: int,
    *,
    coin_index: int | None = None,
    device: str | None = None,
) -> np.ndarray:
    """The models' mean prior-corrected P(up) of the windows ending at rows ``ends`` of ``features``.

    ``device`` forces this process and that device; ``None`` scores in a task holding the current
    :func:`scoring_claim`, or else here on the resources this process holds.
    """
    ends = np.asarray(ends, dtype=np.int64)
    claim = _CLAIM.get()
    if device is not None or claim is None or len(ends) == 0:
        return _score_here(models, logit_offsets, features, ends, lookback, coin_index, device)
    import ray

    # Only the rows the windows read travel to the task (validation is ~15% of a coin's rows).
    first = max(0, int(ends.min()) - lookback + 1)
    rows = np.ascontiguousarray(features[first : int(ends.max()) + 1])
    task = ray.remote(num_cpus=claim.cpus, num_gpus=claim.gpus, max_retries=0)(_score_here)
    return ray.get(
        task.remote(list(models), list(logit_offsets), rows, ends - first, lookback, coin_index, None)
    )


def held_resources() -> tuple[str, int | None]:
    """The device and the number of CPUs this process holds: ("cuda", n) in a Ray task or actor
    given a GPU (or a share), ("cpu", n) in one given n CPUs, ("cpu", None) outside Ray's workers."""
    if "ray" not in sys.modules:  # serving and the CLI score without ever importing Ray
        return "cpu", None
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_task_id() is None:
        return "cpu", None  # a driver: torch's own default threads (the machine's cores)
    held = ray.get_runtime_context().get_assigned_resources()
    device = "cuda" if held.get("GPU", 0) > 0 and torch.cuda.is_available() else "cpu"
    return device, max(1, int(held.get("CPU", 1)))


@torch.inference_mode()
def _score_here(
    models: Sequence[torch.nn.Module],
    logit_offsets: Sequence[float],
    features: np.ndarray,
    ends: np.ndarray,
    lookback: int,
    coin_index: int | None,
    device: str | None,
) -> np.ndarray:
    """:func:`mean_proba` in this process: ``device``, or the one it holds, with the CPUs it holds."""
    from crpbot.model.inference import predict_windows

    held_device, cpus = held_resources()
    device = device or held_device
    before = torch.get_num_threads()
    if cpus is not None:
        torch.set_num_threads(cpus)  # Ray starts a task's worker with OMP_NUM_THREADS=1 at most
    try:
        total: Any = None
        for model, offset in zip(models, logit_offsets, strict=True):
            probs = predict_windows(
                model,
                features,
                ends,
                lookback,
                batch_size=BATCH[torch.device(device).type],
                device=device,
                logit_offset=offset,
                coin_index=coin_index,
            )
            model.cpu()  # back where artifacts and callers expect it
            total = probs.astype(np.float64) if total is None else total + probs
        return total / len(models)
    finally:
        torch.set_num_threads(before)


def chain_claim(chains: int, gpu_share: float | None) -> ScoringClaim:
    """What each of ``chains`` coin chains run side by side claims to score: ``gpu_share`` of a GPU
    and one CPU with ``--gpu`` (``None``: none), else an equal part of the largest node's CPUs."""
    if gpu_share is not None:
        return ScoringClaim(cpus=1, gpus=gpu_share)
    import ray

    largest = max(node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"])
    return ScoringClaim(cpus=max(1, int(largest // chains)))

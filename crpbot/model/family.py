"""The one place the model family (``config.model``) is dispatched: fit, store, load.

Every way of training -- Ray Train's worker aside, a search trial, an ensemble member, a
walk-forward fold -- fits through :func:`fit_model`; :func:`stored_model` and :func:`load_family_model`
are the artifact's side. Everything downstream (the temperature, evaluation, the gate, the
registry, serving) sees only windows in and logits out, whichever family made them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.model.fit import FitResult, fit, positive_weight


def fit_model(
    config: TrainConfig, data: Any, *, device: str | torch.device = "cpu", log: Callable[[str], None] = print
) -> FitResult:
    """Train ``config``'s family on ``data``: the recurrent loop, or LightGBM's boosting."""
    if config.model == "gbdt":
        from crpbot.model.gbdt import fit_gbdt

        return fit_gbdt(config, data, log=log)
    return fit(config, data, device=device, log=log)


def check_device(config: TrainConfig, use_gpu: bool, num_workers: int = 1) -> None:
    """A GBDT boosts in one CPU task (``num_threads`` threads): a GPU or data-parallel workers would
    be claimed and left idle, so they are refused before Ray starts."""
    if config.model != "gbdt":
        return
    if use_gpu:
        raise CrpbotError("model gbdt trains on CPUs (LightGBM): drop --gpu")
    if num_workers != 1:
        raise CrpbotError(
            f"model gbdt trains in one Ray task, not {num_workers} workers: set num_threads in the config"
        )


def fit_in_task(config_dict: dict[str, Any], data: Any, device: str) -> FitResult:
    """One fit as the body of a Ray task: its CPU's one thread, lines tagged with coin and seed
    (several coins and seeds train side by side)."""
    from crpbot.ray_runtime import quiet_worker_logs

    quiet_worker_logs()
    torch.set_num_threads(1)  # one task per core; more threads only contend
    config = TrainConfig.from_dict(config_dict)
    tag = f"[{data.coin} seed {config.seed}]"
    return fit_model(config, data, device=device, log=lambda line: print(f"{tag} {line}"))


def fit_on_ray(
    configs: list[TrainConfig],
    data: Any,
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 0,
) -> list[FitResult]:
    """Fit each config as its own Ray task, all at once, on ``data`` put into the object store once.

    A CrpbotError inside a task (bad data, divergence, one class of labels) is re-raised as the
    user error it is; anything else stays Ray's error.
    """
    import ray

    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(fit_in_task)
    data_ref = ray.put(data)
    device = "cuda" if num_gpus else "cpu"
    pending = [task.remote(config.to_dict(), data_ref, device) for config in configs]
    try:
        return ray.get(pending)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, CrpbotError):
            raise CrpbotError(str(exc.cause)) from exc
        raise


@dataclass(frozen=True)
class StoredModel:
    """What an artifact stores of a fitted model: its files and the numbers config.json records."""

    tensors: dict[str, torch.Tensor] | None
    text_files: dict[str, str] | None
    pos_weight: float
    param_count: int


def stored_model(config: TrainConfig, state: dict[str, torch.Tensor] | str, data: Any) -> StoredModel:
    """A network's weights (safetensors; the weighted loss's pos_weight), or a GBDT's LightGBM
    model file (unweighted log loss: pos_weight 1, so its logit_offset is 0)."""
    if config.model == "gbdt":
        from crpbot.model.gbdt import GBDT_FILE, leaf_count

        return StoredModel(None, {GBDT_FILE: state}, 1.0, leaf_count(state))
    count = sum(int(tensor.numel()) for tensor in state.values())
    return StoredModel(state, None, positive_weight(data, config.lookback), count)


def load_family_model(
    config: TrainConfig, config_json: dict[str, Any], artifact_dir: str | Path
) -> nn.Module:
    """The verified model of an artifact directory, in eval mode on the CPU."""
    from crpbot.registry.artifact import load_weights, read_artifact_text, verify_artifact

    if config.model == "gbdt":
        from crpbot.model.gbdt import GBDT_FILE, GbdtClassifier

        verify_artifact(artifact_dir)
        return GbdtClassifier(
            read_artifact_text(artifact_dir, GBDT_FILE), config, list(config_json["feature_names"])
        ).eval()
    from crpbot.model.network import build_model

    model = build_model(config, int(config_json["input_size"]))
    try:
        model.load_state_dict(load_weights(artifact_dir))
    except RuntimeError as exc:
        raise CrpbotError(
            f"artifact {artifact_dir}: weights do not fit the architecture in config.json"
        ) from exc
    return model.eval()

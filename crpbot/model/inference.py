"""Inference with one trained network, and its artifact on disk.

:func:`predict_proba` scores the windows of a split with the prior correction the weighted
loss needs (``sigmoid(logit - logit_offset)``, see ``crpbot.model.fit``);
:func:`save_model_artifact` writes weights, config, scaler, feature manifest and history as a
verified artifact; :func:`load_model` reads one back. Kept apart from the loop because serving
a model (evaluation, ensembles, prediction) needs these and never the optimiser.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crpbot.config import TrainConfig
from crpbot.data.windows import as_tensor, gather_windows
from crpbot.errors import CrpbotError
from crpbot.model.family import load_family_model, stored_model
from crpbot.model.fit import EVAL_BATCH


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    data: Any,
    split: str,
    lookback: int,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
    logit_offset: float = 0.0,
    labelled: bool = True,
    coin_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Window end rows of ``split`` and P(close[t+h] > close[t]) for each: ``sigmoid(logits - logit_offset)``.

    Pass the artifact's ``logit_offset`` (``log(pos_weight)``) to undo the shift the weighted
    loss puts on the logits; 0.0 returns the plain sigmoid. ``labelled=False`` also scores
    windows whose outcome is a tie (see ``PreparedData.window_ends``). A global model scores one
    coin's data with that coin's ``coin_index`` (its place in the artifact's ``coins``).
    """
    ends = np.asarray(data.window_ends(split, lookback, labelled=labelled), dtype=np.int64)
    probs = predict_windows(
        model,
        data.features,
        ends,
        lookback,
        batch_size=batch_size,
        device=device,
        logit_offset=logit_offset,
        coin_ids=getattr(data, "coin_ids", None),
        coin_index=coin_index,
    )
    return ends, probs


@torch.inference_mode()
def predict_windows(
    model: nn.Module,
    features: np.ndarray,
    ends: np.ndarray,
    lookback: int,
    *,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
    logit_offset: float = 0.0,
    coin_ids: np.ndarray | None = None,
    coin_index: int | None = None,
) -> np.ndarray:
    """P(up) of the windows ending at rows ``ends`` of scaled ``features``: the one scoring path
    shared by evaluation (a split's windows) and live prediction (the latest bars' windows).

    A global model needs each window's coin: ``coin_ids`` per row (a ``MultiCoinData``'s), or one
    ``coin_index`` for every window (one coin's bars).
    """
    device = torch.device(device)
    features = as_tensor(features, device)
    row_coins = None if coin_ids is None else as_tensor(coin_ids, device)
    ends_on_device = torch.from_numpy(np.asarray(ends, dtype=np.int64)).to(device)
    model.to(device).eval()
    probs = []
    for start in range(0, len(ends), batch_size):
        batch = ends_on_device[start : start + batch_size]
        if row_coins is not None:
            coins = row_coins[batch]
        elif coin_index is not None:
            coins = torch.full((len(batch),), coin_index, dtype=torch.int64, device=device)
        else:
            coins = None
        logits = model(gather_windows(features, batch, lookback), coins).float()
        probs.append(torch.sigmoid(logits - logit_offset).cpu())
    return torch.cat(probs).numpy() if probs else np.empty(0, dtype=np.float32)


def save_model_artifact(
    out_dir: str | Path,
    *,
    model_state: dict[str, torch.Tensor] | str,
    config: TrainConfig,
    data: Any,
    history: list[dict[str, float]],
    best_epoch: int,
    input_path: str | Path | None,
    overwrite: bool = False,
) -> Path:
    """Write a model artifact directory (weights, config, scaler, feature manifest, history, and
    familiarity.json: the train-fitted distance and validation-chosen threshold that flag unfamiliar
    windows, ``crpbot.model.familiarity``; one per coin for a global model, as its scalers).

    ``model_state`` is a network's weights, or a GBDT's LightGBM model text (``model.txt``, see
    ``crpbot.model.family.stored_model``).
    A model with context coins or timeframes records them under ``context`` (``crpbot.data.cross_asset``).
    config.json records the loss's ``pos_weight`` and ``logit_offset = log(pos_weight)``, which
    every reader must subtract from the logits (``predict_proba(..., logit_offset=...)``).
    A global model (``data`` a ``MultiCoinData``; ``input_path`` unused, each coin's file is
    recorded) records ``coins`` instead of ``coin``, each coin's input file and data
    fingerprint, and one train-only scaler per coin in scaler.json (``{"coins": {coin: ...}}``).
    """
    from crpbot.data.cross_asset import ContextSpec, context_record
    from crpbot.data.timeframes import artifact_manifest
    from crpbot.model.familiarity import FAMILIARITY_FILE, fit_familiarity
    from crpbot.registry.artifact import write_artifact

    stored = stored_model(config, model_state, data)
    config_json = {
        "kind": "model",
        "coin": data.coin,
        "train_config": config.to_dict(),
        # the target with its defaults filled in: what the labels meant when this model was trained
        "target": data.target.to_dict(),
        "input_size": int(data.features.shape[1]),
        "feature_names": list(data.feature_names),
        "split_times": {
            split: [int(bound) for bound in bounds] for split, bounds in data.split_times().items()
        },
        "input_path": str(input_path),
        "best_epoch": int(best_epoch),
        "pos_weight": float(stored.pos_weight),
        "logit_offset": math.log(stored.pos_weight),
        "param_count": stored.param_count,
    }
    spec = ContextSpec.from_config(config)
    if spec:  # the timeframes, context coins' columns and files: evaluate and predict rebuild and check them
        config_json["context"] = context_record(spec, getattr(data, "context", {}))
    coins = getattr(data, "coins", None)
    if coins is None:
        scaler_json = data.scaler.to_dict()
    else:
        del config_json["coin"]
        config_json.update(
            coins=list(coins),
            input_path=None,
            input_paths=dict(zip(coins, data.input_paths, strict=True)),
            data_fingerprints=dict(zip(coins, data.fingerprints, strict=True)),
        )
        scaler_json = {
            "coins": {coin: scaler.to_dict() for coin, scaler in zip(coins, data.scalers, strict=True)}
        }
    return write_artifact(
        out_dir,
        json_files={
            "config.json": config_json,
            "scaler.json": scaler_json,
            "features.json": artifact_manifest(config.timeframes),
            "history.json": history,
            FAMILIARITY_FILE: fit_familiarity(data, config.lookback),
        },
        tensors=stored.tensors,
        text_files=stored.text_files,
        data_fingerprint=data.fingerprint,
        overwrite=overwrite,
    )


def load_model(artifact_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The verified model of an artifact directory (eval mode, CPU) and its config.json.

    The model is a network or a GBDT (``crpbot.model.gbdt.GbdtClassifier``): windows in, logits out.
    """
    from crpbot.registry.artifact import read_artifact_json

    config_json = read_artifact_json(artifact_dir, "config.json")
    if not isinstance(config_json, dict) or config_json.get("kind") != "model":
        raise CrpbotError(f"artifact {artifact_dir}: config.json does not describe a single model")
    config = TrainConfig.from_dict(config_json.get("train_config"), source=f"{artifact_dir}/config.json")
    return load_family_model(config, config_json, artifact_dir), config_json

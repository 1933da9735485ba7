"""Seed ensembles on Ray and their one validation-fitted temperature.

K members differ only in their seed. Each member is one ``ray.remote`` task that calls
``crpbot.model.family.fit_model`` (a network's loop or a GBDT's boosting, whose seed draws its
bagging and feature fractions) directly on the prepared arrays put once into the object store: a
task starts in well under a second, a TorchTrainer per member costs ~20 s here. The members'
prior-corrected probabilities are averaged (``crpbot.model.predictor``), then one temperature
-- fitted on the validation split by minimising NLL on the logit of the average -- sharpens or
softens the result. The test split is never read here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.model.predictions import Predictions
from crpbot.model.predictor import CALIBRATION_FILE, Predictor, load_predictor
from crpbot.ray_runtime import init_ray, require_gpus


def fit_ensemble_temperature(predictor: Predictor, data: Any) -> dict[str, Any]:
    """Fit the temperature on the validation split's averaged probabilities (never test)."""
    from crpbot.model.calibration import TemperatureScaler

    ends, probs = predictor.raw_proba(data, "val")
    validation = Predictions(
        split="val",
        timestamps=data.timestamps[ends],
        probs=probs,
        labels=np.asarray(data.labels[ends], dtype=np.float64),
        forward_returns=data.forward_returns[ends],
    )
    scaler = TemperatureScaler().fit_predictions(validation)
    return {
        "temperature": scaler.temperature_,
        "fitted_on": validation.split,
        "val_windows": len(validation),
        "val_nll_before": scaler.nll_before_,
        "val_nll_after": scaler.nll_after_,
    }


def build_ensemble(
    member_dirs: Sequence[str | Path],
    data: Any,
    out_dir: str | Path,
    *,
    calibrate: bool = True,
    overwrite: bool = False,
) -> Path:
    """Assemble member model artifacts into one ensemble artifact (temperature fitted on val;
    familiarity fitted on train, its threshold on val).

    Members must share coin, data recipe, scaler and splits: they differ only in the seed.
    """
    from crpbot.data.timeframes import artifact_manifest
    from crpbot.model.familiarity import FAMILIARITY_FILE, fit_familiarity
    from crpbot.registry.artifact import read_artifact_json, write_artifact

    member_dirs = [Path(d) for d in member_dirs]
    if not member_dirs:
        raise CrpbotError("an ensemble needs at least one member")
    members = [load_predictor(d) for d in member_dirs]
    first = members[0].config_json
    for directory, member in zip(member_dirs, members, strict=True):
        if member.config_json.get("kind") != "model":
            raise CrpbotError(f"ensemble member {directory} is not a single-model artifact")
        for key in ("coin", "split_times", "input_size", "feature_names", "context"):
            if member.config_json.get(key) != first.get(key):
                raise CrpbotError(f"ensemble member {directory} differs from {member_dirs[0]} in {key}")
        if member.scaler != members[0].scaler:
            raise CrpbotError(f"ensemble member {directory} has another scaler than {member_dirs[0]}")
    if {name: list(bounds) for name, bounds in data.split_times().items()} != first["split_times"]:
        raise CrpbotError("the data given to fit the ensemble's temperature is not split like its members")
    seeds = [m.config_json["train_config"]["seed"] for m in members]
    # named by seed as the artifact contract says; by position when seeds repeat (copied members)
    names = (
        [f"members/seed_{s}" for s in seeds]
        if len(set(seeds)) == len(seeds)
        else [f"members/member_{i}" for i in range(len(seeds))]
    )
    predictor = Predictor(
        [m.models[0] for m in members],
        logit_offsets=[m.logit_offsets[0] for m in members],
        config_json=first,
        scaler=members[0].scaler,
    )
    calibration = (
        fit_ensemble_temperature(predictor, data) if calibrate else {"temperature": 1.0, "fitted_on": None}
    )
    config_json = {
        **{
            key: first[key]
            for key in ("coin", "train_config", "input_size", "feature_names", "split_times", "input_path")
        },
        **({"context": first["context"]} if "context" in first else {}),
        **({"target": first["target"]} if "target" in first else {}),
        "kind": "ensemble",
        "members": names,
        "seeds": seeds,
        "best_epochs": [m.config_json.get("best_epoch") for m in members],
        "param_count": sum(int(m.config_json.get("param_count", 0)) for m in members),
    }
    history = [
        {"member": i, **row}
        for i, d in enumerate(member_dirs)
        for row in read_artifact_json(d, "history.json")
    ]
    return write_artifact(
        out_dir,
        json_files={
            "config.json": config_json,
            "scaler.json": members[0].scaler,
            "features.json": artifact_manifest(first["train_config"].get("timeframes", [])),
            "history.json": history,
            CALIBRATION_FILE: calibration,
            # refitted on the same train/val rows (members may predate it): train fits, val thresholds
            FAMILIARITY_FILE: fit_familiarity(data, predictor.lookback),
        },
        data_fingerprint=data.fingerprint,
        copy_dirs=dict(zip(names, member_dirs, strict=True)),
        overwrite=overwrite,
    )


def train_ensemble(
    config: TrainConfig,
    coin: str,
    *,
    seeds: int | Sequence[int] = 5,
    input_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    address: str | None = None,
    use_gpu: bool = False,
    gpu_share: float = 1.0,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train ``config`` under several seeds in parallel on Ray; write the calibrated ensemble artifact.

    ``seeds`` is a count K (seeds ``config.seed .. config.seed + K - 1``) or explicit seeds.
    ``gpu_share`` (with ``use_gpu``): the fraction of a GPU each member claims; a small RNN leaves
    most of a GPU idle, so 0.25 trains four seeds on one GPU at once.
    """
    from crpbot.data.bars import default_input, normalize_coin
    from crpbot.data.dataset import load_prepared
    from crpbot.model.family import check_device, fit_on_ray
    from crpbot.model.inference import save_model_artifact
    from crpbot.registry.artifact import check_output_location, make_dirs, read_artifact_json

    check_device(config, use_gpu)
    if not (isinstance(gpu_share, (int, float)) and 0 < gpu_share <= 1):
        raise CrpbotError(f"invalid GPU share {gpu_share!r}: must be in (0, 1]")
    seed_list = list(range(config.seed, config.seed + seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or len(set(seed_list)) != len(seed_list) or any(s < 0 for s in seed_list):
        raise CrpbotError(f"invalid ensemble seeds {seeds!r}: need at least one, distinct and >= 0")
    if config.coins:
        raise CrpbotError(
            f"the config is a global model of {', '.join(config.coins)}: ensembles train one coin's "
            "model; train the global model with crpbot train"
        )
    coin = normalize_coin(coin)
    input_path = Path(input_path) if input_path is not None else default_input(coin)
    out_dir = (
        Path(out_dir)
        if out_dir is not None
        else Path("models") / coin / f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if out_dir.exists() and not overwrite:
        raise CrpbotError(f"output directory already exists: {out_dir}")
    check_output_location(out_dir)
    data = load_prepared(coin, input_path, config)  # fail on bad input before starting Ray

    init_ray(address)
    if use_gpu:
        require_gpus(1)
    log(f"Training {len(seed_list)} members of {coin} (seeds {', '.join(map(str, seed_list))}) on Ray")
    results = fit_on_ray(
        [config.replace(seed=seed) for seed in seed_list], data, num_gpus=gpu_share if use_gpu else 0
    )

    make_dirs(out_dir.parent, purpose=out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-members-{out_dir.name}-", dir=out_dir.parent))
    try:
        member_dirs = []
        for seed, result in zip(seed_list, results, strict=True):
            member_dirs.append(
                save_model_artifact(
                    staging / f"seed_{seed}",
                    model_state=result.best_state,
                    config=config.replace(seed=seed),
                    data=data,
                    history=result.history,
                    best_epoch=result.best_epoch,
                    input_path=input_path,
                )
            )
        artifact = build_ensemble(member_dirs, data, out_dir, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    temperature = read_artifact_json(artifact, CALIBRATION_FILE)["temperature"]
    log(f"Ensemble of {len(seed_list)} written to {artifact} (temperature {temperature:.3f}, fitted on val)")
    return artifact

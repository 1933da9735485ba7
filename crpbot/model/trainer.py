"""Data-parallel training on Ray Train: a ``TorchTrainer`` whose workers each run ``training.fit``.

The prepared arrays are put into the object store once; every worker maps them read-only
(zero-copy) instead of re-reading and re-featurising the Parquet file. Each epoch rank 0
writes a checkpoint (model, optimizer, scheduler, early stopping, RNG, history, best weights),
so a worker group restarted after a failure resumes from the last finished epoch. The driver
turns the final checkpoint's best weights into a model artifact directory.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.ray_runtime import init_ray, quiet_worker_logs, require_gpus

# A checkpoint's training state, in Ray Train and Ray Tune checkpoints alike (crpbot.search.tune).
STATE_FILE = "state.pt"


def train(
    config: TrainConfig,
    coin: str | None,
    *,
    input_path: str | Path | None = None,
    context_inputs: dict[str, str | Path] | None = None,
    data_dir: str | Path | None = None,
    num_workers: int = 1,
    use_gpu: bool = False,
    address: str | None = None,
    out_dir: str | Path | None = None,
    storage_path: str | Path | None = None,
    run_name: str | None = None,
    max_failures: int = 2,
    progress: bool | None = None,
) -> Path:
    """Train ``coin`` with ``num_workers`` DDP workers and write the best model; returns the artifact dir.

    ``context_inputs`` (coin -> file): bars of the config's ``context_coins`` when not the files
    beside ``input_path`` (see ``crpbot.data.cross_asset``).
    A config with ``coins`` trains one global model on those coins instead (``coin`` None; each
    coin's bars from ``data_dir/<COIN>-USD_1m.parquet``, default the bundled samples); the
    coins' arrays are built once and shared through the object store like one coin's.

    ``progress``: rank 0 prints samples/s and an ETA within long epochs (default: when this
    process's output is a terminal; logs and CI keep one line per epoch).
    """
    from crpbot.data.bars import default_input, normalize_coin
    from crpbot.data.dataset import load_prepared
    from crpbot.data.multicoin import coin_inputs, prepare_coins
    from crpbot.model.family import check_device, fit_on_ray
    from crpbot.model.inference import save_model_artifact
    from crpbot.registry.artifact import check_output_location
    from crpbot.registry.storage import validate_storage

    if num_workers < 1:
        raise CrpbotError(f"invalid number of workers {num_workers}: must be >= 1")
    if max_failures < 0:
        raise CrpbotError(f"invalid max_failures {max_failures}: must be >= 0")
    validate_storage(storage_path)
    check_device(config, use_gpu, num_workers)
    if config.coins:
        if coin is not None or input_path is not None:
            raise CrpbotError(
                f"the config trains a global model of {', '.join(config.coins)}: "
                "give no coin or input file (each coin's bars come from the data directory)"
            )
        inputs = coin_inputs(config.coins, data_dir)
        coin = "GLOBAL-" + "-".join(name.split("-")[0] for name in inputs)
    else:
        if coin is None:
            raise CrpbotError("name the coin to train (or list coins in the config for a global model)")
        if data_dir is not None:
            raise CrpbotError("a data directory is for a global model's coins; give one coin's --input")
        coin = normalize_coin(coin)
        input_path = Path(input_path) if input_path is not None else default_input(coin)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out_dir) if out_dir is not None else Path("models") / coin / stamp
    if out_dir.exists():
        raise CrpbotError(f"output directory already exists: {out_dir}")
    # Validate the output and the input before starting Ray: a bad path fails in a second, not
    # after a cluster start and hours of training.
    check_output_location(out_dir)
    data = (
        prepare_coins(config, inputs, context_inputs=context_inputs)
        if config.coins
        else load_prepared(coin, input_path, config, context_inputs)
    )

    init_ray(address)
    if config.model == "gbdt":  # boosting is one task on num_threads CPUs, not a worker group
        (fitted,) = fit_on_ray([config], data, num_cpus=config.num_threads, max_retries=max_failures)
        best_state, history, best_epoch = fitted.best_state, fitted.history, fitted.best_epoch
    else:
        best_state, history, best_epoch = _fit_on_ray_train(
            config, data, coin, stamp, num_workers, use_gpu, storage_path, run_name, max_failures, progress
        )
    artifact = save_model_artifact(
        out_dir,
        model_state=best_state,
        config=config,
        data=data,
        history=history,
        best_epoch=best_epoch,
        input_path=input_path,
    )
    return artifact


def _fit_on_ray_train(
    config: TrainConfig,
    data: Any,
    coin: str,
    stamp: str,
    num_workers: int,
    use_gpu: bool,
    storage_path: str | Path | None,
    run_name: str | None,
    max_failures: int,
    progress: bool | None,
) -> tuple[dict[str, Any], list[dict[str, float]], int]:
    """A network's data-parallel fit on a TorchTrainer: (best weights, history, best epoch)."""
    import ray
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
        TrainingFailedError,
    )
    from ray.train.torch import TorchTrainer

    from crpbot.registry.storage import ray_storage

    if use_gpu:
        require_gpus(num_workers)
    storage, filesystem = ray_storage(storage_path, default="runs/train")
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "config": config.to_dict(),
            "data": ray.put(data),
            "progress": sys.stdout.isatty() if progress is None else progress,
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=run_name or f"train-{coin}-{stamp}-{uuid.uuid4().hex[:6]}",
            storage_path=storage,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # the epoch lines, not Ray's chatter
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        user_error = _find_user_error(exc)
        if user_error is not None:
            raise CrpbotError(str(user_error)) from exc
        raise
    if result.checkpoint is None:
        raise CrpbotError("training finished without a checkpoint (no epoch completed)")
    state = _load_state(result.checkpoint)
    return state["best_state"], state["history"], state["early_stopping"]["best_epoch"]


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the shared loop, reporting each epoch with rank 0's checkpoint."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from crpbot.model.fit import fit

    quiet_worker_logs()

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))  # one worker per core; oversubscription halves throughput
    config = TrainConfig.from_dict(loop_config["config"])
    data = ray.get(loop_config["data"])  # numpy arrays map the object store read-only: no copy
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        resume = _load_state(checkpoint)

    def say(line: str) -> None:
        print(f"[{data.coin}] {line}", flush=True)  # coins train side by side in a pipeline

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            saved = None
            if rank == 0:
                torch.save(state, Path(tmp) / STATE_FILE)
                saved = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=f"epoch_{metrics['epoch']:04d}")

    fit(
        config,
        data,
        device=ray.train.torch.get_device(),
        reporter=report,
        resume=resume,
        rank=rank,
        world_size=world_size,
        wrap_model=ray.train.torch.prepare_model if world_size > 1 else None,
        log=say,
        progress=say if loop_config.get("progress") else None,
    )


def _load_state(checkpoint: Any) -> dict[str, Any]:
    """A checkpoint's training state, through PyTorch's weights-only loader (no arbitrary pickle)."""
    from crpbot.registry.artifact import load_torch_file

    with checkpoint.as_directory() as directory:
        return load_torch_file(Path(directory) / STATE_FILE)


def _find_user_error(exc: BaseException) -> CrpbotError | None:
    """The CrpbotError a worker raised (bad data, divergence), if that is why training failed."""
    failures = list(getattr(exc, "worker_failures", {}).values())
    for failure in failures:
        seen: BaseException | None = failure
        while seen is not None:
            if isinstance(seen, CrpbotError):
                return seen
            seen = seen.__cause__
    return None

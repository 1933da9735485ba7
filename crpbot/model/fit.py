"""The one training loop.

Every way of training runs :func:`fit`: the Ray Train worker (``crpbot.model.trainer``), a search
trial, an ensemble member. Only the ``reporter`` differs -- it is called once per epoch with
the epoch's metrics and a self-describing checkpoint dict, and decides where they go
(``ray.train.report``, ``ray.tune.report``, nowhere).

Batches are drawn nanoGPT-style: the features live in one tensor on the device, each batch is
a tensor of window end rows, and ``gather_windows`` builds ``[B, L, F]`` in one indexing op.
No Dataset, no DataLoader, no per-sample Python.

The loss weights positives by ``w = negatives / positives`` of the training labels
(:func:`positive_weight`). Under that loss the optimal logit is ``logit(P(up)) + log(w)``,
so every probability leaves ``crpbot.model.inference.predict_proba`` prior-corrected:
``sigmoid(logit - log(w))``, with ``log(w)`` stored in the artifact as ``logit_offset``.
Temperature scaling has no intercept and could not remove this shift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from crpbot.config import TrainConfig
from crpbot.data.windows import as_tensor, gather_windows
from crpbot.errors import CrpbotError
from crpbot.model.network import build_model, param_count

Reporter = Callable[[dict[str, float], dict[str, Any]], None]
EVAL_BATCH = 2048
# How often a long epoch reports its progress when asked to (a terminal is watching).
PROGRESS_SECONDS = 10.0


@dataclass
class FitResult:
    """What a finished run hands back: the best weights (CPU) and the per-epoch history.

    A GBDT's run (``crpbot.model.gbdt``) hands back its LightGBM model text as ``best_state`` and
    one history row per boosting round."""

    best_state: dict[str, torch.Tensor] | str
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool


@dataclass
class EarlyStopping:
    """Stop when val loss has not improved by more than ``min_delta`` for ``patience`` epochs."""

    patience: int
    min_delta: float
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, val_loss: float, epoch: int) -> bool:
        """Record one epoch; True when it is the new best."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def fit(
    config: TrainConfig,
    data: Any,
    *,
    device: str | torch.device = "cpu",
    reporter: Reporter | None = None,
    resume: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
    progress_every: float = PROGRESS_SECONDS,
) -> FitResult:
    """Train one model on ``data`` (a ``PreparedData``); this rank trains on its shard of each epoch.

    The ``state`` a reporter receives holds live tensors: serialise it before returning.
    ``resume`` is such a state dict, saved earlier: training continues after its epoch
    and ends exactly as the uninterrupted run would have. ``wrap_model`` wraps the model for
    data parallelism (``ray.train.torch.prepare_model``); gradients are then averaged across
    ranks, and the val loss is summed across ranks so every rank stops at the same epoch.
    ``progress`` (rank 0 only) receives a line with samples/s and the epoch's ETA every
    ``progress_every`` seconds within an epoch: for a terminal; logs keep one line per epoch.
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    bf16 = on_cuda and config.bf16
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    say = log if rank == 0 else _silent

    features = as_tensor(data.features, device)
    labels = as_tensor(data.labels, device)
    coin_ids = row_coin_ids(data, device)
    data_coins = len(getattr(data, "coins", ()))
    if len(config.coins) != data_coins:
        raise CrpbotError(
            f"config.coins names {len(config.coins)} coin(s) but the data holds {data_coins or 'one'} "
            "coin(s): a global model trains on prepare_coins' data, a one-coin model on one coin's"
        )
    train_ends = np.asarray(data.window_ends("train", config.lookback), dtype=np.int64)
    val_ends = torch.from_numpy(np.asarray(data.window_ends("val", config.lookback), dtype=np.int64))
    per_epoch = min(len(train_ends), config.max_train_windows or len(train_ends))
    if per_epoch < world_size or len(val_ends) == 0:
        raise CrpbotError(
            f"too little data to train {world_size} worker(s): {per_epoch} train windows per epoch and "
            f"{len(val_ends)} val windows at lookback {config.lookback}"
        )
    pos_weight = positive_weight(data, config.lookback)
    logit_offset = math.log(pos_weight)  # logits - log(w) estimate logit(P(up)) under the weighted loss

    torch.manual_seed(config.seed)
    net = build_model(config, features.shape[1]).to(device)
    model = wrap_model(net) if wrap_model is not None else net
    optimizer = _make_optimizer(config, net)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=config.t0, T_mult=config.t_mult, eta_min=config.eta_min
    )
    # pos_weight = negatives/positives up-weights the rarer class; it shifts the optimal logit by log(w)
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    stopper = EarlyStopping(config.patience, config.min_delta)
    history: list[dict[str, float]] = []
    best_state = _cpu_copy(net.state_dict())
    first_epoch = 1
    if resume is not None:
        net.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        stopper = EarlyStopping(**resume["early_stopping"])
        history, best_state = list(resume["history"]), resume["best_state"]
        torch.set_rng_state(resume["rng"]["torch"])
        if on_cuda and resume["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
        first_epoch = resume["epoch"] + 1
        say(f"Resuming after epoch {resume['epoch']} (best epoch {stopper.best_epoch})")
    else:
        say(
            f"Model: {config.cell.upper()} x{config.num_layers}, hidden {config.hidden_size}, "
            f"{'bi' if config.bidirectional else 'uni'}directional: {param_count(net):,} parameters; "
            f"{len(train_ends):,} train / {len(val_ends):,} val windows; {world_size} worker(s)"
        )

    for epoch in range(first_epoch, config.max_epochs + 1):
        if stopper.should_stop:
            break
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        shard = torch.from_numpy(epoch_shard(train_ends, config, epoch, rank, world_size)).to(device)

        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        next_progress = started + progress_every
        for start in range(0, len(shard), config.batch_size):
            ends = shard[start : start + config.batch_size]
            windows = gather_windows(features, ends, config.lookback)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(windows, None if coin_ids is None else coin_ids[ends])
            loss = criterion(logits.float(), labels[ends])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            optimizer.step()
            loss_sum += loss.detach().double() * len(ends)  # stays on the device: no sync per step
            if progress is not None and rank == 0 and (now := time.perf_counter()) >= next_progress:
                done = start + len(ends)
                rate = done / (now - started)
                progress(
                    f"  epoch {epoch}: {done:,}/{len(shard):,} windows ({done / len(shard):.0%}), "
                    f"{rate:,.0f} samples/s, ETA {(len(shard) - done) / rate:.0f} s"
                )
                next_progress = now + progress_every
        if on_cuda:
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - started  # training throughput excludes validation
        scheduler.step()
        train_sums = torch.stack(
            [loss_sum, torch.tensor(float(len(shard)), dtype=torch.float64, device=device)]
        )

        val_sums = _evaluate(
            net,
            features,
            labels,
            coin_ids,
            val_ends[rank::world_size].to(device),
            criterion,
            config.lookback,
            bf16,
            logit_offset,
        )
        if world_size > 1:
            torch.distributed.all_reduce(train_sums)
            torch.distributed.all_reduce(val_sums)
        train_loss = float(train_sums[0] / train_sums[1])
        val_loss, val_acc = float(val_sums[0] / val_sums[2]), float(val_sums[1] / val_sums[2])
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise CrpbotError(
                f"training diverged at epoch {epoch}: train loss {train_loss}, val loss {val_loss}"
            )
        if stopper.update(val_loss, epoch):
            best_state = _cpu_copy(net.state_dict())
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,
            "samples_per_second": float(train_sums[1]) / train_seconds,
        }
        history.append(metrics)
        say(
            f"Epoch {epoch}/{config.max_epochs}: Train Loss={train_loss:.4f}, Val Loss={val_loss:.4f}, "
            f"Val Acc={val_acc:.4f}, LR={lr:.6f}"
        )
        if reporter is not None:
            reporter(
                dict(metrics),
                {
                    "epoch": epoch,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "early_stopping": asdict(stopper),
                    "best_state": best_state,
                    "history": history,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if on_cuda else None,
                    },
                },
            )

    if stopper.should_stop:
        say(
            f"Early stopping after epoch {history[-1]['epoch']}: val loss has not improved by more than "
            f"{config.min_delta} for {config.patience} epochs; best epoch {stopper.best_epoch}"
        )
    return FitResult(
        best_state=best_state,
        history=history,
        best_epoch=stopper.best_epoch,
        stopped_early=stopper.should_stop,
    )


def row_coin_ids(data: Any, device: torch.device) -> torch.Tensor | None:
    """The coin index of every row of a global model's data (``MultiCoinData``); None for one coin."""
    coin_ids = getattr(data, "coin_ids", None)
    return None if coin_ids is None else as_tensor(coin_ids, device)


def positive_weight(data: Any, lookback: int) -> float:
    """The loss's ``pos_weight``: negatives / positives among the train split's window ends.

    ``fit`` trains with it and ``save_model_artifact`` stores it (and ``log`` of it, the logit
    offset that undoes its shift), so both always see the same number.
    """
    train_ends = np.asarray(data.window_ends("train", lookback), dtype=np.int64)
    positives = float(np.asarray(data.labels)[train_ends].sum())
    negatives = len(train_ends) - positives
    if positives == 0 or negatives == 0:
        raise CrpbotError("training labels are all one class; cannot weight the loss")
    return negatives / positives


def epoch_shard(
    train_ends: np.ndarray, config: TrainConfig, epoch: int, rank: int, world_size: int
) -> np.ndarray:
    """This rank's training window ends for one epoch.

    The permutation depends only on (seed, epoch), so it is the same on every rank and after a
    resume; it is trimmed to a multiple of world_size so every rank runs the same number of steps.
    """
    order = np.random.default_rng([config.seed, epoch]).permutation(len(train_ends))
    if config.max_train_windows is not None:
        order = order[: config.max_train_windows]
    usable = len(order) // world_size * world_size
    return train_ends[order[:usable][rank::world_size]]


@torch.no_grad()
def _evaluate(
    net: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    coin_ids: torch.Tensor | None,
    ends: torch.Tensor,
    criterion: nn.Module,
    lookback: int,
    bf16: bool,
    logit_offset: float = 0.0,
) -> torch.Tensor:
    """Sums (loss * n, correct, n) over this rank's val windows, with the raw (unwrapped) model.

    The raw model, because a DDP forward may run collectives and ranks have unequal val shards.
    A window counts as "up" when its prior-corrected logit ``logits - logit_offset`` is >= 0,
    exactly as ``predict_proba`` >= 0.5 would call it.
    """
    net.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=features.device)
    for start in range(0, len(ends), EVAL_BATCH):
        batch = ends[start : start + EVAL_BATCH]
        with torch.autocast(features.device.type, dtype=torch.bfloat16, enabled=bf16):
            windows = gather_windows(features, batch, lookback)
            logits = net(windows, None if coin_ids is None else coin_ids[batch]).float()
        target = labels[batch]
        sums[0] += criterion(logits, target).double() * len(batch)
        sums[1] += ((logits - logit_offset >= 0).float() == target).sum()
        sums[2] += len(batch)
    return sums


def _make_optimizer(config: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[
        config.optimizer
    ]
    return kind(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def _silent(_: str) -> None:
    """Log sink for ranks other than 0."""

"""The gradient-boosting model family (``model: gbdt``): LightGBM on tabular rows of the windows.

A row is the last bar's (train-scaled) features plus past returns over the lookback
(``crpbot.data.tabular.lookback_lags``), and for a global model the coin as a categorical column.
Trees ignore the scaling, but reading the scaled features keeps one data contract: the scaler
travels with the artifact and live prediction scales bars exactly as for the recurrent models.

The boosting stops early on a chronological tail of the train split (``stopping_fraction``),
purged by ``lookback + horizon`` from the rows it fits, so validation stays for what it is for
elsewhere: the temperature, the search's ranking and the gate's validation check. The loss is
the plain log loss (no class weight), so the raw score is already a logit of P(up): the
artifact's ``logit_offset`` is 0. LightGBM runs with ``deterministic`` and a fixed thread count:
the same config and data give the same model file, byte for byte.

:class:`GbdtClassifier` puts the booster behind the recurrent network's interface (windows in,
logits out), so every scoring path -- evaluation, ensembles, the temperature, serving -- runs
unchanged on either family.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from crpbot.config import TrainConfig
from crpbot.data.tabular import lagged_columns, lookback_lags, tabular_rows, window_rows
from crpbot.errors import CrpbotError
from crpbot.model.fit import FitResult

# LightGBM's own text model format inside the artifact (never a pickle).
GBDT_FILE = "model.txt"
COIN_COLUMN = "coin"
NS_PER_MINUTE = 60_000_000_000


def columns(config: TrainConfig, feature_names: list[str] | tuple[str, ...]) -> list[str]:
    """The tabular columns, in order: features, lagged returns, then the coin of a global model."""
    names = [*feature_names, *lagged_columns(lookback_lags(config.lookback))]
    return [*names, COIN_COLUMN] if config.coins else names


def lightgbm_params(config: TrainConfig) -> dict[str, Any]:
    """LightGBM's parameters for ``config``: seeded, deterministic, on ``num_threads`` threads."""
    return {
        "objective": "binary",
        "metric": "binary_logloss",
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1 if config.bagging_fraction < 1 else 0,
        "lambda_l2": config.lambda_l2,
        "seed": config.seed,
        "bagging_seed": config.seed,
        "feature_fraction_seed": config.seed,
        "data_random_seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,  # else LightGBM picks row- or column-wise by timing them
        "num_threads": config.num_threads,
        "verbosity": -1,
    }


def stopping_split(data: Any, ends: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Train window ends split into (fit rows, early-stopping rows): the latest ``stopping_fraction``
    by time stop the boosting; a fit row's label must end before any stopping row's window starts
    (a purge of ``lookback + horizon`` minutes, as between the splits)."""
    stamps = np.asarray(data.timestamps[ends], dtype=np.int64)
    cut = np.sort(stamps)[len(stamps) - max(1, round(len(stamps) * config.stopping_fraction))]
    purge = (config.lookback + config.horizon) * NS_PER_MINUTE
    return ends[stamps <= cut - purge], ends[stamps >= cut]


def fit_gbdt(config: TrainConfig, data: Any, *, log: Callable[[str], None] = print) -> FitResult:
    """Boost trees on ``data``'s train windows; the result's ``best_state`` is the LightGBM model text
    cut at the best early-stopping round, its history one row per round (train, stopping-tail and
    validation log loss; validation is recorded, never used to stop)."""
    import lightgbm as lgb

    started = time.perf_counter()
    lags = lookback_lags(config.lookback)
    fit_rows, stop_rows = stopping_split(data, np.asarray(data.window_ends("train", config.lookback)), config)
    val_rows = np.asarray(data.window_ends("val", config.lookback), dtype=np.int64)
    names = columns(config, data.feature_names)
    sets = {}
    for part, rows in (("fit", fit_rows), ("early stopping", stop_rows), ("validation", val_rows)):
        labels = np.asarray(data.labels[rows])
        if len(np.unique(labels)) < 2:
            raise CrpbotError(
                f"the GBDT's {part} rows ({len(rows):,}) hold {'no' if len(rows) == 0 else 'one class of'} "
                "labels; use more data (or a smaller stopping_fraction)"
            )
        sets[part] = (table_rows(config, data, rows, lags), labels.astype(np.float64))
    params = lightgbm_params(config)
    categorical = [COIN_COLUMN] if config.coins else "auto"
    train_set = lgb.Dataset(*sets["fit"], feature_name=names, categorical_feature=categorical, params=params)
    stop_set = lgb.Dataset(*sets["early stopping"], reference=train_set)
    curves: dict[str, Any] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[train_set, stop_set],
        valid_names=["train", "stop"],
        callbacks=[
            lgb.early_stopping(config.early_stopping_rounds, verbose=False),
            lgb.record_evaluation(curves),
        ],
        keep_training_booster=True,  # every round, for the history; the model file keeps the best
    )
    rounds = len(curves["train"]["binary_logloss"])
    best = booster.best_iteration or rounds
    val_loss, val_acc = validation_curve(booster, *sets["validation"], rounds, config.num_threads)
    per_round = (time.perf_counter() - started) / rounds
    history = [
        {
            "epoch": i + 1,
            "train_loss": float(curves["train"]["binary_logloss"][i]),
            "stop_loss": float(curves["stop"]["binary_logloss"][i]),
            "val_loss": val_loss[i],
            "val_acc": val_acc[i],
            "epoch_seconds": per_round,
        }
        for i in range(rounds)
    ]
    log(
        f"GBDT: {len(fit_rows):,} fit rows, {len(stop_rows):,} early-stopping rows; best round {best} of "
        f"{rounds} (stopping-tail loss {history[best - 1]['stop_loss']:.4f}); val loss "
        f"{val_loss[best - 1]:.4f}, val acc {val_acc[best - 1]:.4f}"
    )
    return FitResult(
        best_state=booster.model_to_string(num_iteration=best),
        history=history,
        best_epoch=best,
        stopped_early=rounds < config.num_boost_round,
    )


def table_rows(config: TrainConfig, data: Any, rows: np.ndarray, lags: Any) -> np.ndarray:
    """The tabular rows of the windows ending at ``rows`` of ``data`` (a window holds every lag, so
    these equal :func:`~crpbot.data.tabular.window_rows` of the windows serving builds)."""
    table = tabular_rows(data.features, rows, data.feature_names, data.segment_ids, lags)
    if config.coins:
        table = np.hstack([table, np.asarray(data.coin_ids[rows], dtype=np.float32)[:, None]])
    return table


def validation_curve(
    booster: Any, table: np.ndarray, labels: np.ndarray, rounds: int, threads: int
) -> tuple[list[float], list[float]]:
    """Validation log loss and accuracy after each round, from the trees' summed raw scores."""
    raw = np.zeros(len(labels))
    losses, accuracies = [], []
    for i in range(rounds):
        raw += booster.predict(table, start_iteration=i, num_iteration=1, raw_score=True, num_threads=threads)
        # log loss from logits without overflow: log(1 + e^-z) for y=1, log(1 + e^z) for y=0
        losses.append(float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -raw, raw)))))
        accuracies.append(float(np.mean((raw >= 0) == (labels == 1))))
    return losses, accuracies


class GbdtClassifier(nn.Module):
    """A LightGBM booster behind the recurrent network's interface: ``[B, L, F]`` windows (and, for
    a global model, each window's coin index) in, logits out -- the booster's raw score."""

    def __init__(self, model_text: str, config: TrainConfig, feature_names: list[str]) -> None:
        import lightgbm as lgb

        super().__init__()
        try:
            self.booster = lgb.Booster(model_str=model_text)
        except lgb.basic.LightGBMError as exc:
            raise CrpbotError(f"the GBDT model file is not a LightGBM model ({exc})") from exc
        self.config = config
        self.feature_names = list(feature_names)
        self.lags = lookback_lags(config.lookback)
        expected = columns(config, self.feature_names)
        if self.booster.feature_name() != expected:
            raise CrpbotError("the GBDT model file's columns differ from the artifact's feature_names")

    def forward(self, windows: torch.Tensor, coins: torch.Tensor | None = None) -> torch.Tensor:
        table = window_rows(windows.detach().float().cpu().numpy(), self.feature_names, self.lags)
        if self.config.coins:
            if coins is None:
                raise CrpbotError("a global GBDT scores a window only with its coin")
            table = np.hstack([table, coins.detach().cpu().numpy().astype(np.float32)[:, None]])
        raw = self.booster.predict(table, raw_score=True, num_threads=self.config.num_threads)
        return torch.from_numpy(np.asarray(raw, dtype=np.float32)).to(windows.device)


def leaf_count(model_text: str) -> int:
    """The fitted values of a model file: its trees' leaves (the artifact's ``param_count``)."""
    return sum(int(count) for count in re.findall(r"^num_leaves=(\d+)$", model_text, flags=re.MULTILINE))

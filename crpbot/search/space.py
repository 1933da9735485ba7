"""Search spaces as YAML: which ``TrainConfig`` keys a search varies, and its budget.

A space file names a base training config and, for some of its keys, a
distribution. Validation is strict and happens before any Ray work starts, so a
typo costs a one-line error instead of a cluster's worth of failed trials::

    base: default.yaml            # resolved relative to this file
    overrides: {patience: 3}      # fixed changes to the base, optional
    seed: 0                       # seeds the TPE sampler
    budget: {num_samples: 40, max_epochs: 20, grace_period: 3, reduction_factor: 3,
             max_concurrent: null}  # null: as many trials as the cluster has CPUs (GPUs)
    space:
      cell: {choice: [lstm, gru]}
      lr: {loguniform: [1.0e-4, 3.0e-3]}
      dropout: {uniform: [0.1, 0.5]}
      hidden_size: {int: [32, 256]}   # inclusive bounds
      context_coins: {choice: [[], [BTC]]}  # with or without BTC's features (crpbot.data.cross_asset)

Every value a distribution can produce is checked against ``TrainConfig``, so a
trial never fails on a config the space itself made up.

Horizons and target parameters: ``horizon: {choice: [5, 15, 60]}`` (or a choice of the base
target's own keys, e.g. ``barrier_k``) change the labels and, for the horizon, the purge. Each
choice's labels are prepared once before Ray, on the same rows, splits (cut with the largest
lookback + horizon) and scaler (:func:`label_keys`); a trial trains on its own. They must be
choices, and the target itself is not searched: validation losses of different questions do not
rank models, and a search is ranked by them (a horizon search compares per-horizon rows of its
table, not one winner).

Global vs per-coin: ``coins: {choice: [[], [BTC, ETH, SOL]]}`` lets the search try one model
of the searched coin against one global model of the listed coins (which must include the
searched coin); both are ranked on the searched coin's validation windows. List values reach
Ray Tune and Optuna as labels (``BTC+ETH+SOL``, ``none``; Optuna's choices are plain scalars).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from crpbot.config import TrainConfig, config_keys, load_config, load_yaml
from crpbot.data.cross_asset import ContextSpec
from crpbot.errors import CrpbotError

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
TOP_LEVEL_KEYS = ("base", "overrides", "seed", "budget", "space")
BUDGET_KEYS = (
    "num_samples",
    "max_epochs",
    "grace_period",
    "reduction_factor",
    "max_concurrent",
    "gpus_per_trial",
)
# The budget owns max_epochs; notes are provenance, not a hyperparameter; the context features
# and the timeframes fix the data's columns, which every trial shares (context_coins selects
# among them); the model family is the base config's (a trial of the other family would refuse
# its keys); models of different targets answer different questions, so no validation loss ranks them.
NOT_SEARCHABLE = ("max_epochs", "notes", "context_features", "timeframes", "model", "target")
# Keys that change the labels (crpbot.data.targets): each choice is prepared once, before Ray.
LABEL_KEYS = ("horizon", "barrier_k", "sigma_window", "min_move_bps", "vol_window")


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``kind`` is a distribution name, ``values`` its choices or (low, high)."""

    key: str
    kind: str
    values: tuple[Any, ...]

    def grid_values(self) -> tuple[Any, ...]:
        """The values an exhaustive grid enumerates (choices only: a range has no grid)."""
        if self.kind != "choice":
            raise CrpbotError(f"space.{self.key}: a {self.kind} range cannot be enumerated as a grid")
        return tuple(self.choices())

    def largest(self) -> Any:
        return max(self.values)

    def choices(self) -> list[Any]:
        """The choices as Tune and Optuna see them: a list (``context_coins``) as one label, since
        Optuna's categorical choices must be None, bool, int, float or str."""
        return [_label(value) for value in self.values]

    def decode(self, sampled: Any) -> Any:
        """The config value of a sampled choice (a label back to its list)."""
        if self.kind != "choice":
            return sampled
        return next((value for value in self.values if _label(value) == sampled), sampled)


@dataclass(frozen=True)
class Budget:
    """How much a search may spend, and how ASHA cuts weak trials."""

    num_samples: int
    max_epochs: int
    grace_period: int = 1
    reduction_factor: int = 3
    max_concurrent: int | None = None
    # share of a GPU each trial takes with --gpu: a small RNN leaves most of a GPU idle, so
    # 0.25 runs four trials per GPU
    gpus_per_trial: float = 1.0


@dataclass(frozen=True)
class SearchSpace:
    """A validated search: base config, searched dimensions, budget and sampler seed."""

    source: str
    base: TrainConfig
    dimensions: tuple[Dimension, ...]
    budget: Budget
    seed: int = 0

    def keys(self) -> list[str]:
        return [dim.key for dim in self.dimensions]

    def trial_config(self, params: dict[str, Any]) -> TrainConfig:
        """The full training config of one trial: base, budget's epochs, sampled values.

        A GBDT has no epochs (its rounds stop early on its own): the budget's ``max_epochs`` is
        then only ASHA's horizon and stays out of the config."""
        dims = {dim.key: dim for dim in self.dimensions}
        values = {key: dims[key].decode(value) if key in dims else value for key, value in params.items()}
        epochs = {} if self.base.model == "gbdt" else {"max_epochs": self.budget.max_epochs}
        return self.base.replace(**epochs, **values)

    def global_coins(self) -> list[str]:
        """The coins of every global model this space can train ([] when it trains none)."""
        lists = [list(self.base.coins)] + [
            list(value) for dim in self.dimensions if dim.key == "coins" for value in dim.values
        ]
        return next((coins for coins in lists if coins), [])

    def label_keys(self) -> list[str]:
        """The searched keys that change the labels (:data:`LABEL_KEYS`), in space order."""
        return [dim.key for dim in self.dimensions if dim.key in LABEL_KEYS]

    def label_variants(self) -> list[dict[str, Any]]:
        """Every combination of the label keys' choices: one set of labels each ([] without any)."""
        dims = [dim for dim in self.dimensions if dim.key in LABEL_KEYS]
        if not dims:
            return []
        return [
            dict(zip(self.label_keys(), values, strict=True)) for values in product(*(d.values for d in dims))
        ]

    def data_config(self) -> TrainConfig:
        """The config to prepare the shared data with: the largest lookback and horizon set the
        purge, so the windows of every trial respect it; every context coin the space names is
        aligned, so every trial sees the same rows and validation windows (each keeps its own
        columns, ``crpbot.data.cross_asset.select_context``)."""
        horizons = [dim.largest() for dim in self.dimensions if dim.key == "horizon"]
        lookbacks = [dim.largest() for dim in self.dimensions if dim.key == "lookback"]
        coins = list(ContextSpec.from_config(self.base).coins)
        for dim in self.dimensions:
            if dim.key == "context_coins":
                for value in dim.values:
                    coins += [coin for coin in ContextSpec.from_names(value).coins if coin not in coins]
        return self.base.replace(
            lookback=max([self.base.lookback, *lookbacks]),
            horizon=max([self.base.horizon, *horizons]),
            context_coins=coins,
        )

    def with_budget(self, *, num_samples: int | None = None, max_epochs: int | None = None) -> SearchSpace:
        """The same space with command-line budget overrides (grace period capped at max epochs)."""
        changes: dict[str, Any] = {}
        if num_samples is not None:
            changes["num_samples"] = _positive_int(num_samples, "num_samples", "budget")
        if max_epochs is not None:
            changes["max_epochs"] = _positive_int(max_epochs, "max_epochs", "budget")
        budget = dataclasses.replace(self.budget, **changes)
        budget = dataclasses.replace(budget, grace_period=min(budget.grace_period, budget.max_epochs))
        return dataclasses.replace(self, budget=budget)


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    raw = load_yaml(path)
    where = str(path)
    _reject_unknown(raw, TOP_LEVEL_KEYS, where)
    base = _load_base(raw.get("base"), path)
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise CrpbotError(f"{where}: overrides must be a mapping of config keys")
    try:
        base = base.replace(**overrides)
    except CrpbotError as exc:
        raise CrpbotError(f"{where}: overrides: {exc}") from exc
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise CrpbotError(f"{where}: space must be a non-empty mapping of config keys to distributions")
    dimensions = tuple(_parse_dimension(key, spec, base, where) for key, spec in space.items())
    global_sets = {tuple(value) for dim in dimensions if dim.key == "coins" for value in dim.values if value}
    if len(global_sets) > 1:
        raise CrpbotError(
            f"{where}: space.coins: every global choice must list the same coins, in the same order"
        )
    names_context = bool(base.context_coins) or any(
        any(dim.values) for dim in dimensions if dim.key == "context_coins"
    )
    if (global_sets or base.coins) and names_context:
        # a trial keeps its context columns by slicing one coin's data (select_context), not built
        # for the global data; a global model with context coins trains by `crpbot train`
        raise CrpbotError(f"{where}: a search over global models with context coins is not supported")
    labels = [dim.key for dim in dimensions if dim.key in LABEL_KEYS]
    if labels and (global_sets or base.coins):
        raise CrpbotError(f"{where}: space.{labels[0]}: a search over global models cannot vary the labels")
    budget = _parse_budget(raw.get("budget"), where)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise CrpbotError(f"{where}: seed must be an integer >= 0, got {seed!r}")
    return SearchSpace(source=where, base=base, dimensions=dimensions, budget=budget, seed=seed)


def _load_base(base: Any, path: Path) -> TrainConfig:
    if base is None:
        return TrainConfig()
    if not isinstance(base, str):
        raise CrpbotError(f"{path}: base must be a path to a training config, got {base!r}")
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    return load_config(base_path)


def _parse_dimension(key: Any, spec: Any, base: TrainConfig, where: str) -> Dimension:
    if key not in config_keys():
        raise CrpbotError(f"{where}: space.{key}: not a training config key")
    if key in NOT_SEARCHABLE:
        raise CrpbotError(
            f"{where}: space.{key}: cannot be searched (max_epochs is set by budget; "
            "context_features and timeframes fix the data's columns; model is the base config's family; "
            "models of different targets answer different questions, so no validation loss ranks them: "
            "search one target per space)"
        )
    if not isinstance(spec, dict) or len(spec) != 1:
        raise CrpbotError(f"{where}: space.{key}: expected one distribution, e.g. {{choice: [a, b]}}")
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise CrpbotError(
            f"{where}: space.{key}: unknown distribution {kind!r} "
            f"(expected one of {', '.join(DISTRIBUTIONS)})"
        )
    if not isinstance(args, list) or not args:
        raise CrpbotError(f"{where}: space.{key}: {kind} needs a non-empty list")
    field_type = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[key]
    if field_type == "list[str]" and (kind != "choice" or not all(isinstance(v, list) for v in args)):
        raise CrpbotError(
            f"{where}: space.{key}: expected {{choice: [[], [BTC, ETH, SOL]]}} (lists of coins)"
        )
    if key in LABEL_KEYS and kind != "choice":
        raise CrpbotError(
            f"{where}: space.{key}: changes the labels, so it must be a choice (each choice's labels "
            "are prepared once, before Ray)"
        )
    if kind == "choice":
        if len({repr(v) for v in args}) != len(args):
            raise CrpbotError(f"{where}: space.{key}: choice values must be distinct")
    else:
        _check_range(key, kind, args, field_type, where)
    for value in args:  # every choice, both bounds: a value the trial could get must be a valid config
        try:
            base.replace(**{key: value})
            if key == "context_coins":
                ContextSpec.from_names(value)  # known coins (the config checks only the form)
        except CrpbotError as exc:
            raise CrpbotError(f"{where}: space.{key}: {exc}") from exc
    return Dimension(key=key, kind=kind, values=tuple(args))


def _label(value: Any) -> Any:
    return ("+".join(str(item) for item in value) or "none") if isinstance(value, list) else value


def _check_range(key: str, kind: str, args: list, field_type: str, where: str) -> None:
    wanted = "int" if kind == "int" else "float"
    if field_type != wanted:
        raise CrpbotError(
            f"{where}: space.{key}: {kind} ranges need a key of type {wanted}, {key} is {field_type}"
        )
    numbers_ok = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in args
    )
    if len(args) != 2 or not numbers_ok:
        raise CrpbotError(f"{where}: space.{key}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise CrpbotError(f"{where}: space.{key}: int bounds must be integers, got {args!r}")
    if not low < high:
        raise CrpbotError(f"{where}: space.{key}: bad range {args!r}: low must be < high")
    if kind == "loguniform" and low <= 0:
        raise CrpbotError(f"{where}: space.{key}: bad range {args!r}: loguniform needs low > 0")


def _parse_budget(raw: Any, where: str) -> Budget:
    if not isinstance(raw, dict):
        raise CrpbotError(f"{where}: budget must be a mapping with num_samples and max_epochs")
    _reject_unknown(raw, BUDGET_KEYS, f"{where}: budget")
    for required in ("num_samples", "max_epochs"):
        if required not in raw:
            raise CrpbotError(f"{where}: budget.{required} is required")
    gpus_per_trial = raw.get("gpus_per_trial", 1.0)
    if (
        isinstance(gpus_per_trial, bool)
        or not isinstance(gpus_per_trial, (int, float))
        or not 0 < gpus_per_trial <= 1
    ):
        raise CrpbotError(
            f"{where}: budget.gpus_per_trial must be a number in (0, 1], got {gpus_per_trial!r}"
        )
    values = {
        key: _positive_int(value, key, f"{where}: budget")
        for key, value in raw.items()
        if not (key == "max_concurrent" and value is None) and key != "gpus_per_trial"
    }
    values["gpus_per_trial"] = float(gpus_per_trial)
    if values.get("reduction_factor", 3) < 2:
        raise CrpbotError(f"{where}: budget.reduction_factor must be >= 2")
    budget = Budget(**values)
    if budget.grace_period > budget.max_epochs:
        raise CrpbotError(f"{where}: budget.grace_period must be <= budget.max_epochs")
    return budget


def _positive_int(value: Any, key: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CrpbotError(f"{where}.{key} must be an integer >= 1, got {value!r}")
    return value


def _reject_unknown(mapping: dict, allowed, where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise CrpbotError(f"{where}: unknown key(s): {', '.join(unknown)} (allowed: {', '.join(allowed)})")

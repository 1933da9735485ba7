"""A scan's grid as YAML: which questions to try, each combination a cell, validated before Ray.

::

    budget: smoke                    # the default --budget (smoke, cpu or gpu)
    base: {gbdt: gbdt.yaml}          # per family, the config a cell starts from (optional;
                                     # default tune_configs/gbdt.yaml and default.yaml)
    overrides: {gbdt: {num_boost_round: 200}}  # fixed keys per family (optional)
    grid:
      model: [gbdt]
      target: [direction, volatility]
      horizon: [15, 60]
      timeframes: [[], [5, 15, 60]]
      num_leaves: [15, 63]           # a model key may be scanned too (every cell must accept it)

Every cell's config is built and checked here (``TrainConfig``), so a typo or a value a family
refuses is a one-line error naming the key. Keys that would let a cell read other data than the
scan's (context coins: their bars are not split at the final period), several coins, or set what
the budget owns (epochs, window caps) are not scannable.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from crpbot.config import CONFIG_DIR, MODELS, TrainConfig, config_keys, load_config, load_yaml
from crpbot.data.folds import FoldSpec
from crpbot.errors import CrpbotError

TOP_LEVEL_KEYS = ("budget", "base", "overrides", "grid")
NOT_SCANNABLE = (
    "notes",
    "coins",
    "coin_embedding",
    "context_coins",
    "context_features",
    "max_epochs",
    "max_train_windows",
    "train_fraction",
    "val_fraction",
)
DEFAULT_BASES = {"gbdt": "gbdt.yaml", "rnn": "default.yaml"}
# the order of a cell's name and of the report's axes
NAME_ORDER = ("model", "target", "horizon", "timeframes")


@dataclass(frozen=True)
class ScanBudget:
    """Fold geometry, default final period and the recurrent family's training budget."""

    name: str
    spec: FoldSpec
    holdout_days: float
    rnn: dict[str, Any]


BUDGETS = {
    # the bundled sample: ~21 days per coin, 3 of them the final period, 3 folds of 8/2/2 days
    "smoke": ScanBudget(
        "smoke",
        FoldSpec(train_days=8, val_days=2, test_days=2, folds=3),
        holdout_days=3,
        rnn={"max_epochs": 2, "max_train_windows": 2000},
    ),
    # one CPU per fold: two months of train, two-week val and test periods, four folds
    "cpu": ScanBudget(
        "cpu",
        FoldSpec(train_days=60, val_days=14, test_days=14, folds=4),
        holdout_days=30,
        rnn={"max_epochs": 8, "max_train_windows": 20000},
    ),
    # the walk-forward's default geometry (every fold that fits) and a full training budget
    "gpu": ScanBudget(
        "gpu",
        FoldSpec(train_days=180, val_days=14, test_days=14),
        holdout_days=30,
        rnn={"max_epochs": 30},
    ),
}


@dataclass(frozen=True)
class Cell:
    """One combination of the grid: its name (a directory name too) and its full config."""

    name: str
    values: dict[str, Any]
    config: TrainConfig


@dataclass(frozen=True)
class ScanGrid:
    source: str
    budget: str
    keys: tuple[str, ...]
    cells: tuple[Cell, ...]
    raw: dict[str, Any]

    def max_horizon(self) -> int:
        return max(cell.config.horizon for cell in self.cells)

    def max_lookback(self) -> int:
        return max(cell.config.lookback for cell in self.cells)


def budget_for(name: str) -> ScanBudget:
    if name not in BUDGETS:
        raise CrpbotError(f"unknown budget {name!r}: expected one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


def load_scan_grid(path: str | Path) -> ScanGrid:
    """Read and validate a scan grid; every cell's config is built here."""
    path = Path(path)
    raw = load_yaml(path)
    where = str(path)
    unknown = sorted(str(key) for key in raw if key not in TOP_LEVEL_KEYS)
    if unknown:
        raise CrpbotError(
            f"{where}: unknown key(s): {', '.join(unknown)} (allowed: {', '.join(TOP_LEVEL_KEYS)})"
        )
    budget = raw.get("budget", "cpu")
    if budget not in BUDGETS:
        raise CrpbotError(f"{where}: budget: unknown {budget!r} (expected one of {', '.join(BUDGETS)})")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise CrpbotError(f"{where}: grid must be a non-empty mapping of config keys to lists of values")
    for key, values in grid.items():
        _check_dimension(key, values, where)
    if "model" not in grid:
        raise CrpbotError(f"{where}: grid.model is required (e.g. model: [gbdt])")
    bases = _family_mapping(raw.get("base"), "base", where)
    overrides = _family_mapping(raw.get("overrides"), "overrides", where)
    keys = tuple(sorted(grid, key=lambda key: (NAME_ORDER + (key,)).index(key)))
    cells = []
    for combination in product(*(grid[key] for key in keys)):
        values = dict(zip(keys, combination, strict=True))
        family = values["model"]
        try:
            config = _base(bases, family, path).replace(**overrides.get(family, {}), **values)
        except CrpbotError as exc:
            raise CrpbotError(f"{where}: cell {cell_name(values)}: {exc}") from exc
        if config.coins or config.context_coins:
            raise CrpbotError(
                f"{where}: cell {cell_name(values)}: its base config names coins or context coins; "
                "a scan reads one coin's bars at a time"
            )
        cells.append(Cell(name=cell_name(values), values=values, config=config))
    return ScanGrid(source=where, budget=budget, keys=keys, cells=tuple(cells), raw=raw)


def cell_name(values: dict[str, Any]) -> str:
    """``gbdt_direction_h15_tf5-15-60``: readable, and a directory name."""
    parts = []
    for key, value in values.items():
        if key == "horizon":
            parts.append(f"h{value}")
        elif key == "timeframes":
            parts.append("tf" + ("-".join(str(k) for k in value) or "0"))
        elif key in ("model", "target"):
            parts.append(str(value))
        else:
            parts.append(f"{key}{value}")
    return "_".join(parts)


def _check_dimension(key: Any, values: Any, where: str) -> None:
    if key not in config_keys():
        raise CrpbotError(f"{where}: grid.{key}: not a training config key")
    if key in NOT_SCANNABLE:
        raise CrpbotError(
            f"{where}: grid.{key}: cannot be scanned (the budget sets epochs and window caps; a scan "
            "reads one coin's bars split at its final period, so no context coins or global models)"
        )
    if not isinstance(values, list) or not values:
        raise CrpbotError(f"{where}: grid.{key}: expected a non-empty list of values")
    if len({repr(value) for value in values}) != len(values):
        raise CrpbotError(f"{where}: grid.{key}: values must be distinct")
    if key == "model" and any(value not in MODELS for value in values):
        raise CrpbotError(f"{where}: grid.model: expected values among {', '.join(MODELS)}, got {values!r}")
    if key == "timeframes" and not all(isinstance(value, list) for value in values):
        raise CrpbotError(f"{where}: grid.timeframes: expected lists of minutes, e.g. [[], [5, 15, 60]]")
    if key == "horizon" and not all(
        isinstance(value, int) and not isinstance(value, bool) for value in values
    ):
        raise CrpbotError(f"{where}: grid.horizon: expected whole minutes, got {values!r}")


def _family_mapping(value: Any, name: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or any(key not in MODELS for key in value):
        raise CrpbotError(f"{where}: {name} must map a model family ({', '.join(MODELS)}) to its {name}")
    if name == "overrides":
        for family, keys in value.items():
            if not isinstance(keys, dict):
                raise CrpbotError(f"{where}: overrides.{family} must be a mapping of config keys")
            bad = sorted(set(keys) & set(NOT_SCANNABLE))
            if bad:
                raise CrpbotError(f"{where}: overrides.{family}.{bad[0]}: cannot be set in a scan")
    return value


def _base(bases: dict[str, Any], family: str, path: Path) -> TrainConfig:
    """A family's base config: the grid's ``base`` entry (relative to the grid file) or the shipped one."""
    if family not in bases:
        return load_config(CONFIG_DIR / DEFAULT_BASES[family])
    entry = Path(bases[family])
    config = load_config(entry if entry.is_absolute() else path.parent / entry)
    if config.model != family:
        raise CrpbotError(f"{path}: base.{family}: {entry} is a {config.model} config")
    return config

"""Training configuration: one flat, validated record loaded from YAML.

Flat on purpose: a search space (``tune_configs/*_search.yaml``) names the same
keys, and a search's best trial is written back as a config that
``crpbot train --config`` runs unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from crpbot.errors import CrpbotError

# The shipped configs and search spaces, found from the package so commands work from any directory.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "tune_configs"
CELLS = ("lstm", "gru")
MODELS = ("rnn", "gbdt")
OPTIMIZERS = ("adam", "adamw", "radam")
MAX_SEED = 2**32 - 1
# The targets (crpbot.data.targets) and the keys each one owns; a key is null on every other target.
TARGET_KEYS: dict[str, tuple[str, ...]] = {
    "direction": (),
    "triple_barrier": ("barrier_k", "sigma_window"),
    "net_direction": ("min_move_bps",),
    "volatility": ("vol_window",),
}
TARGETS = tuple(TARGET_KEYS)


@dataclass(frozen=True)
class TrainConfig:
    """Architecture, data windowing and optimisation settings of one training run."""

    # model
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 3
    dropout: float = 0.35
    bidirectional: bool = True
    head_hidden: int = 64
    # hand the last bar's features to the head beside the recurrent summary (a linear rule on the
    # latest bar, e.g. the 15-minute reversal, is then one layer away); off by default
    skip_last_bar: bool = False
    # data
    lookback: int = 60
    horizon: int = 15
    train_fraction: float = 0.70
    val_fraction: float = 0.15
    # --- target (crpbot.data.targets): what row t's label says about the next `horizon` minutes.
    # Each target-specific key belongs to one target and stays null on the others (null on its
    # own target: its default, shown in crpbot.data.targets)
    target: str = "direction"
    barrier_k: float | None = None  # triple_barrier: barriers at ± barrier_k * σ * sqrt(horizon)
    sigma_window: int | None = None  # triple_barrier: 1-minute returns in σ
    min_move_bps: float | None = None  # net_direction: smallest |move| labelled
    vol_window: int | None = None  # volatility: trailing rows in the median move
    # cap on training windows drawn per epoch (None: all); smoke runs use it
    max_train_windows: int | None = None
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 32
    grad_clip: float = 1.0
    t0: int = 10
    t_mult: int = 2
    eta_min: float = 1e-6
    max_epochs: int = 50
    patience: int = 7
    min_delta: float = 0.001
    seed: int = 0
    # bf16 autocast of the forward pass on CUDA (ignored on CPU). Measured on an H100 it does
    # not speed up the default model (benchmarks/RESULTS.md); it halves activation memory.
    bf16: bool = True
    # cross-asset context (crpbot.data.cross_asset): other coins whose features, aligned by
    # timestamp, are added beside the target's; "all" of their features or a list of names
    context_coins: list[str] = field(default_factory=list)
    context_features: str | list[str] = "all"
    # higher-timeframe features (crpbot.data.timeframes): for each k, the price and volume features
    # of the last closed k-minute bar beside every 1-minute bar; each k in [2, lookback]
    timeframes: list[int] = field(default_factory=list)
    # free-form note carried into artifacts (e.g. which search produced it)
    notes: dict[str, Any] = field(default_factory=dict)
    # a global model: one network trained on these coins' windows (empty: one coin's model).
    # Coin names are checked against the known coins where their bars are loaded.
    coins: list[str] = field(default_factory=list)
    # width of the learned coin embedding appended to every bar of a global model's window
    # (0: the network is not told which coin a window comes from)
    coin_embedding: int = 4
    # --- model family (crpbot.model.gbdt): "rnn" trains the network above; "gbdt" LightGBM's
    # gradient-boosted trees on tabular rows (the last bar's features, lagged returns over the
    # lookback, a coin column for a global model). The keys below are the trees' and refused on an
    # rnn config (and the network's keys on a gbdt config) when set away from their defaults.
    model: str = "rnn"
    num_leaves: int = 15
    learning_rate: float = 0.05
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    num_boost_round: int = 500
    early_stopping_rounds: int = 30
    # the chronological tail of the train split that early stopping reads (purged from the fit rows)
    stopping_fraction: float = 0.15
    num_threads: int = 1

    def __post_init__(self) -> None:
        _check_types(self)
        self._check_values()
        self._check_family()

    def _check_family(self) -> None:
        """A key of the other family set away from its default would be silently ignored: refuse it."""
        if self.model not in MODELS:
            raise CrpbotError(
                f"invalid config value model={self.model!r}: expected one of {', '.join(MODELS)}"
            )
        foreign = RNN_KEYS if self.model == "gbdt" else GBDT_KEYS
        for key in foreign:
            if getattr(self, key) != _DEFAULTS[key]:
                raise CrpbotError(
                    f"config key {key} is not a setting of model {self.model!r} "
                    f"(it belongs to {'rnn' if self.model == 'gbdt' else 'gbdt'} models): remove it"
                )

    def _check_values(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise CrpbotError(f"invalid config value {key}={getattr(self, key)!r}: {what}")

        need(self.cell in CELLS, "cell", f"expected one of {', '.join(CELLS)}")
        self._check_target(need)
        need(self.optimizer in OPTIMIZERS, "optimizer", f"expected one of {', '.join(OPTIMIZERS)}")
        for key in (
            "hidden_size",
            "num_layers",
            "head_hidden",
            "lookback",
            "horizon",
            "batch_size",
            "t0",
            "t_mult",
            "max_epochs",
            "patience",
        ):
            need(getattr(self, key) >= 1, key, "must be >= 1")
        need(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        need(0.0 < self.train_fraction < 1.0, "train_fraction", "must be in (0, 1)")
        need(0.0 < self.val_fraction < 1.0, "val_fraction", "must be in (0, 1)")
        need(
            self.train_fraction + self.val_fraction < 1.0,
            "val_fraction",
            "train_fraction + val_fraction must leave a test split (< 1)",
        )
        need(
            self.max_train_windows is None or self.max_train_windows >= 1,
            "max_train_windows",
            "must be >= 1 or null",
        )
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "must be a positive number")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.grad_clip > 0, "grad_clip", "must be > 0")
        need(0 <= self.eta_min < self.lr, "eta_min", "must be in [0, lr)")
        need(self.min_delta >= 0, "min_delta", "must be >= 0")
        # torch.manual_seed and numpy take 32-bit seeds; a larger one overflows inside a Ray worker
        need(0 <= self.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}]")
        need(self.coin_embedding >= 0, "coin_embedding", "must be >= 0")
        for key in ("min_data_in_leaf", "num_boost_round", "early_stopping_rounds", "num_threads"):
            need(getattr(self, key) >= 1, key, "must be >= 1")
        need(self.num_leaves >= 2, "num_leaves", "must be >= 2")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(0.0 < self.feature_fraction <= 1.0, "feature_fraction", "must be in (0, 1]")
        need(0.0 < self.bagging_fraction <= 1.0, "bagging_fraction", "must be in (0, 1]")
        need(self.lambda_l2 >= 0, "lambda_l2", "must be >= 0")
        need(0.0 < self.stopping_fraction < 1.0, "stopping_fraction", "must be in (0, 1)")
        need(all(coin.strip() for coin in self.coins), "coins", "coin names must be non-empty")
        need(len(self.coins) != 1, "coins", "a global model needs at least two coins (empty: one coin)")
        short = [coin.strip().upper().removesuffix("-USD") for coin in self.coins]
        need(len(set(short)) == len(short), "coins", "names a coin twice")
        # the coin and feature names themselves are checked by the data stage, which knows them
        coins = [str(coin).strip().upper().removesuffix("-USD") for coin in self.context_coins]
        need(all(coins), "context_coins", "coin names must be non-empty")
        need(len(set(coins)) == len(coins), "context_coins", "a coin is listed twice")
        # a global model's coin is never its own context (its features are already the first
        # columns of its windows): context coins are other coins, e.g. coins [ETH, SOL] + [BTC]
        both = sorted(set(coins) & set(short))
        need(not both, "context_coins", f"{', '.join(both)} is also one of the global model's coins")
        need(all(k >= 2 for k in self.timeframes), "timeframes", "each must be whole minutes >= 2")
        need(len(set(self.timeframes)) == len(self.timeframes), "timeframes", "a timeframe is listed twice")
        need(
            all(k <= self.lookback for k in self.timeframes),
            "timeframes",
            f"each must be <= lookback {self.lookback}: a window must cover one bar of each timeframe",
        )
        if isinstance(self.context_features, str):
            need(self.context_features == "all", "context_features", "expected 'all' or a list of names")
        else:
            need(bool(self.context_features), "context_features", "an empty list: use 'all' or name features")
            need(
                len(set(self.context_features)) == len(self.context_features),
                "context_features",
                "a feature is listed twice",
            )

    def _check_target(self, need: Any) -> None:
        need(self.target in TARGETS, "target", f"expected one of {', '.join(TARGETS)}")
        for owner, keys in TARGET_KEYS.items():
            for key in keys:
                need(
                    owner == self.target or getattr(self, key) is None,
                    key,
                    f"only the {owner} target uses it (target is {self.target}); remove it",
                )
        need(self.barrier_k is None or self.barrier_k > 0, "barrier_k", "must be > 0")
        need(self.sigma_window is None or self.sigma_window >= 2, "sigma_window", "must be >= 2")
        need(self.min_move_bps is None or self.min_move_bps >= 0, "min_move_bps", "must be >= 0")
        need(self.vol_window is None or self.vol_window >= 1, "vol_window", "must be >= 1")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some keys changed (validated like a fresh config)."""
        unknown = sorted(set(changes) - config_keys())
        if unknown:
            raise CrpbotError(f"unknown config key(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        if not isinstance(values, dict):
            raise CrpbotError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
        unknown = sorted(set(values) - config_keys())
        if unknown:
            raise CrpbotError(f"{source}: unknown config key(s): {', '.join(unknown)}")
        return cls(**values)


def config_keys() -> set[str]:
    return {f.name for f in fields(TrainConfig)}


# The keys only one family reads (the rest -- data, windowing, seed, coins, context -- both do).
GBDT_KEYS: tuple[str, ...] = (
    "num_leaves",
    "learning_rate",
    "min_data_in_leaf",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l2",
    "num_boost_round",
    "early_stopping_rounds",
    "stopping_fraction",
    "num_threads",
)
RNN_KEYS: tuple[str, ...] = (
    "cell",
    "hidden_size",
    "num_layers",
    "dropout",
    "bidirectional",
    "head_hidden",
    "skip_last_bar",
    "max_train_windows",
    "optimizer",
    "lr",
    "weight_decay",
    "batch_size",
    "grad_clip",
    "t0",
    "t_mult",
    "eta_min",
    "max_epochs",
    "patience",
    "min_delta",
    "bf16",
    "coin_embedding",
)
_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(TrainConfig) if f.default is not dataclasses.MISSING
}


def _check_types(config: TrainConfig) -> None:
    """Reject values of the wrong type by key, so YAML typos fail loudly.

    (``lr: 1e-3`` is a string in YAML 1.1, which PyYAML follows.)
    """
    for f in fields(config):
        value = getattr(config, f.name)
        expected = f.type
        if expected == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected == "int | None":
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        elif expected == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
                # YAML's .inf/.nan are floats; every range check below would pass some of them
                if not math.isfinite(value):
                    raise CrpbotError(f"invalid config value {f.name}={value!r}: must be a finite number")
                object.__setattr__(config, f.name, value)
        elif expected == "float | None":
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
            if ok and value is not None:
                value = float(value)
                if not math.isfinite(value):
                    raise CrpbotError(f"invalid config value {f.name}={value!r}: must be a finite number")
                object.__setattr__(config, f.name, value)
        elif expected == "bool":
            ok = isinstance(value, bool)
        elif expected == "str":
            ok = isinstance(value, str)
        elif expected == "dict[str, Any]":
            ok = isinstance(value, dict)
        elif expected == "list[str]":
            ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        elif expected == "list[int]":
            ok = isinstance(value, list) and all(
                isinstance(item, int) and not isinstance(item, bool) for item in value
            )
            if not ok:
                raise CrpbotError(
                    f"invalid config value {f.name}={value!r}: expected a list of whole numbers of minutes"
                )
        elif expected == "str | list[str]":
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(item, str) for item in value)
            )
        else:  # pragma: no cover - a new field type must be added above
            raise AssertionError(f"unhandled config field type {expected!r}")
        if not ok:
            raise CrpbotError(
                f"invalid config value {f.name}={value!r}: expected {expected}, got {type(value).__name__}"
            )


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key {key!r} on line {line}")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a repeated key is an error: PyYAML keeps the last one
    silently, so ``lr: 0.5`` followed later by ``lr: 0.001`` would train with a value the reader
    of the file may not see. Merge keys (``<<``) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if repeated:
                raise _DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise CrpbotError(f"config file not found: {path}")
    try:
        loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise CrpbotError(f"{path}: key {exc.key!r} appears twice (again on line {exc.line})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CrpbotError(f"{path}: not valid YAML{where}") from exc
    if not isinstance(loaded, dict):
        raise CrpbotError(f"{path}: expected a mapping of keys at the top level")
    return loaded


def load_config(path: str | Path) -> TrainConfig:
    """Load and validate a training config YAML file."""
    return TrainConfig.from_dict(load_yaml(path), source=str(path))


def save_config(config: TrainConfig, path: str | Path, header: str = "") -> None:
    """Write a config as YAML that :func:`load_config` reads back unchanged."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    Path(path).write_text(text)

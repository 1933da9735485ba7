"""The training config: every shipped YAML loads, and bad values fail by key."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest

from crpbot.config import TrainConfig, load_config, load_yaml, save_config
from crpbot.errors import CrpbotError

CONFIGS = Path(__file__).resolve().parents[1] / "tune_configs"


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml", "gpu.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.lookback >= 1 and config.horizon >= 1


def test_default_is_the_improved_recipe() -> None:
    config = load_config(CONFIGS / "default.yaml")
    assert (config.cell, config.hidden_size, config.num_layers, config.dropout) == ("lstm", 128, 3, 0.35)
    assert config.bidirectional and config.lookback == 60 and config.horizon == 15
    assert (config.lr, config.weight_decay, config.t0, config.t_mult, config.eta_min) == (
        1e-3,
        1e-5,
        10,
        2,
        1e-6,
    )
    assert (config.max_epochs, config.patience, config.min_delta) == (50, 7, 0.001)


def test_the_gpu_recipe_differs_from_the_recipe_only_in_batch_and_learning_rate() -> None:
    recipe, gpu = load_config(CONFIGS / "default.yaml"), load_config(CONFIGS / "gpu.yaml")
    assert gpu == recipe.replace(batch_size=512, lr=0.004)  # sqrt(512 / 32) = 4: a named budget


def test_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(cell="gru", hidden_size=64, notes={"from": "test"})
    save_config(config, tmp_path / "c.yaml", header="written by a test")
    assert load_config(tmp_path / "c.yaml") == config
    assert (tmp_path / "c.yaml").read_text().startswith("# written by a test\n")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("cell: transformer\n", "cell"),
        ("hidden_size: 0\n", "hidden_size"),
        ("dropout: 1.5\n", "dropout"),
        ("lr: '1e-3'\n", "lr"),
        ("batch_size: 3.5\n", "batch_size"),
        ("train_fraction: 0.9\nval_fraction: 0.2\n", "val_fraction"),
        ("optimizer: sgd\n", "optimizer"),
        ("bidirectional: 1\n", "bidirectional"),
        ("weight_decay: .inf\n", "weight_decay"),
        ("min_delta: .inf\n", "min_delta"),
        ("grad_clip: .inf\n", "grad_clip"),
        ("dropout: .nan\n", "dropout"),
        ("eta_min: -.inf\n", "eta_min"),
        ("seed: -1\n", "seed"),
        ("seed: 99999999999999999999\n", "seed"),
        ("seed: 4294967296\n", "seed"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CrpbotError, match=rf"\b{key}="):
        load_config(path)


def test_unknown_key_and_bad_files(tmp_path: Path) -> None:
    (tmp_path / "unknown.yaml").write_text("hiden_size: 64\n")
    with pytest.raises(CrpbotError, match="unknown config key.*hiden_size"):
        load_config(tmp_path / "unknown.yaml")
    with pytest.raises(CrpbotError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("cell: [lstm\n")
    with pytest.raises(CrpbotError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(CrpbotError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_replace_validates() -> None:
    with pytest.raises(CrpbotError, match="num_layers="):
        TrainConfig().replace(num_layers=0)
    with pytest.raises(CrpbotError, match="unknown config key"):
        TrainConfig().replace(layers=2)


def test_every_float_must_be_finite_and_the_seed_32_bit() -> None:
    floats = [f.name for f in fields(TrainConfig) if f.type == "float"]
    assert {"lr", "weight_decay", "grad_clip", "min_delta", "eta_min", "dropout"} <= set(floats)
    for key in floats:
        for value in (math.inf, -math.inf, math.nan):
            with pytest.raises(CrpbotError, match=rf"{key}=.*finite"):
                TrainConfig(**{key: value})
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1


def test_a_repeated_key_is_an_error_naming_it_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("lr: 0.5\ncell: gru\nlr: 0.001\n")
    with pytest.raises(CrpbotError, match=r"key 'lr' appears twice \(again on line 3\)"):
        load_config(path)
    # also inside a nested mapping (notes), and through load_yaml, which search spaces use
    path.write_text("notes:\n  a: 1\n  a: 2\n")
    with pytest.raises(CrpbotError, match=r"key 'a' appears twice \(again on line 3\)"):
        load_yaml(path)
    # a merge key may still be overridden: that is what it is for
    path.write_text("base: &b {x: 1, y: 2}\nnotes:\n  <<: *b\n  x: 3\n")
    assert load_yaml(path)["notes"] == {"x": 3, "y": 2}

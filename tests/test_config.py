"""The training config: every shipped YAML loads, and bad values fail by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from crpbot.config import TrainConfig, load_config, save_config
from crpbot.errors import CrpbotError

CONFIGS = Path(__file__).resolve().parents[1] / "tune_configs"


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
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

"""Small real artifacts and registry snapshots shared by the registry and S3 tests."""

from __future__ import annotations

from pathlib import Path

import torch

from crpbot.config import TrainConfig
from crpbot.model.network import build_model
from crpbot.registry.artifact import write_artifact


def make_model_artifact(out: Path, *, seed: int = 0, coin: str = "BTC-USD") -> Path:
    """A tiny but real model artifact that crpbot.model.inference.load_model accepts."""
    config = TrainConfig(hidden_size=4, num_layers=1, head_hidden=4, dropout=0.0, seed=seed)
    torch.manual_seed(seed)
    net = build_model(config, 3)
    return write_artifact(
        out,
        tensors=net.state_dict(),
        data_fingerprint=f"{seed:064d}",
        json_files={
            "config.json": {"kind": "model", "coin": coin, "train_config": config.to_dict(), "input_size": 3}
        },
    )


def registry_snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the registry (lock file aside) with its bytes: 'unchanged' means equal snapshots."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }

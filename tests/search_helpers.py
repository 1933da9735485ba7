"""What a finished search's trials reported, read back from its experiment directory (not its table).

Each trial's ``result.json`` holds one JSON record per reported epoch; its checkpoints hold the
training state (``state.pt``: the model and its best state so far). Tests compare the search's
choice with these, so "the best trial" is checked against the trials' own numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def trial_dirs(experiment_path: str | Path) -> dict[str, Path]:
    """trial_id -> the trial's directory."""
    found = {}
    for result in Path(experiment_path).glob("*/result.json"):
        records = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        found[records[0]["trial_id"]] = result.parent
    return found


def lowest_val_loss(experiment_path: str | Path) -> dict[str, float]:
    """trial_id -> the lowest val loss the trial reported over its epochs."""
    lowest = {}
    for trial_id, directory in trial_dirs(experiment_path).items():
        records = [json.loads(line) for line in (directory / "result.json").read_text().splitlines() if line]
        lowest[trial_id] = min(float(record["val_loss"]) for record in records)
    return lowest


def best_trial(experiment_path: str | Path) -> str:
    """The trial with the lowest reported val loss."""
    losses = lowest_val_loss(experiment_path)
    return min(losses, key=losses.__getitem__)


def last_state(directory: Path) -> Any:
    """The training state of the trial's latest checkpoint."""
    from crpbot.registry.artifact import load_torch_file

    latest = max(directory.glob("checkpoint_*"), key=lambda path: path.name)
    return load_torch_file(latest / "state.pt")

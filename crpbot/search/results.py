"""What a finished search leaves behind: the results table, ``results.csv``, ``best.yaml``, the study.

Kept apart from running the search (``crpbot.search.tune``) because these read Tune's
finished results and Optuna's saved state, and are what a user opens afterwards.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from crpbot.config import TrainConfig, save_config
from crpbot.search.space import SearchSpace

METRIC = "best_val_loss"
RESULT_COLUMNS = (
    "best_val_loss",
    "val_acc",
    "best_epoch",
    "epochs_run",
    "status",
    "trial_seconds",
    "train_seconds",
    "setup_seconds",
    "overhead_seconds",
)


def results_table(grid, space: SearchSpace) -> pd.DataFrame:
    """One row per trial: parameters, best val loss and acc, epochs, why it ended, timings."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        params = {key: (result.config or {}).get(key) for key in space.keys()}
        epochs = int(metrics.get("epoch", 0))
        if result.error is not None:
            status = "error"
        elif epochs >= space.budget.max_epochs:
            status = "complete"
        elif metrics.get("patience_stop"):
            status = "early-stopped (patience)"
        else:
            status = "stopped (ASHA)"
        trial_seconds = float(metrics.get("trial_seconds", math.nan))
        train_seconds = float(metrics.get("train_seconds", math.nan))
        rows.append(
            {
                "trial_id": metrics.get("trial_id", Path(result.path).name),
                **params,
                "best_val_loss": metrics.get(METRIC, math.nan),
                "val_acc": metrics.get("best_val_acc", math.nan),
                "best_epoch": metrics.get("best_epoch"),
                "epochs_run": epochs,
                "status": status,
                "trial_seconds": trial_seconds,
                "train_seconds": train_seconds,
                "setup_seconds": float(metrics.get("setup_seconds", math.nan)),
                "overhead_seconds": trial_seconds - train_seconds,
            }
        )
    table = pd.DataFrame(rows, columns=["trial_id", *space.keys(), *RESULT_COLUMNS])
    return table.sort_values("best_val_loss", na_position="last").reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["trial_seconds", "train_seconds", "setup_seconds"])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def write_outputs(
    out: Path, table: pd.DataFrame, best_config: TrainConfig, experiment_path: str, filesystem
) -> tuple[Path, Path]:
    """Write results.csv and best.yaml atomically (temp file, then rename); copy them to remote storage."""
    out.mkdir(parents=True, exist_ok=True)
    results_csv, best_yaml = out / "results.csv", out / "best.yaml"
    tmp_csv, tmp_yaml = out / ".results.csv.tmp", out / ".best.yaml.tmp"
    table.to_csv(tmp_csv, index=False)
    save_config(
        best_config,
        tmp_yaml,
        header=(
            f"Best trial {best_config.notes['trial_id']} of search {best_config.notes['search']} "
            f"(val loss {best_config.notes['best_val_loss']:.4f}).\n"
            f"Run: crpbot train --coin {best_config.notes['coin'].split('-')[0]} --config {best_yaml}"
        ),
    )
    os.replace(tmp_csv, results_csv)
    os.replace(tmp_yaml, best_yaml)
    if filesystem is not None:
        for path in (results_csv, best_yaml):
            with filesystem.open_output_stream(f"{experiment_path}/{path.name}") as stream:
                stream.write(path.read_bytes())
    return results_csv, best_yaml


PLOTS = ("optimization_history.png", "param_importances.png")


def write_plots(study, out: Path) -> list[str]:
    """Optuna's optimisation-history and parameter-importance plots beside ``results.csv``.

    Returns one note per plot that could not be drawn: importance needs at least two completed
    trials, and fANOVA fails on studies where no parameter varies.
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    notes = []
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    makers = {"optimization_history.png": optuna_plots.plot_optimization_history}
    if len(completed) >= 2:
        makers["param_importances.png"] = optuna_plots.plot_param_importances
    else:
        notes.append(f"param_importances.png not drawn: {len(completed)} completed trial(s), 2 needed")
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # "importances will be equal" and the like
                axes = make(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            notes.append(f"{name} not drawn: {reason}")
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        tmp = out / f".{name}.tmp.png"
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(figure)
        tmp.replace(out / name)
    return notes


def load_study(experiment_path: str, filesystem):
    """The Optuna study of an experiment, read back from the searcher state Tune saved."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = ConcurrencyLimiter(OptunaSearch(), max_concurrent=1)
    if filesystem is None:
        searcher.restore_from_dir(experiment_path)
    else:
        import pyarrow.fs

        with tempfile.TemporaryDirectory() as local:
            for info in filesystem.get_file_info(pyarrow.fs.FileSelector(experiment_path)):
                if info.base_name.startswith("searcher-state-"):
                    with filesystem.open_input_stream(info.path) as stream:
                        (Path(local) / info.base_name).write_bytes(stream.read())
            searcher.restore_from_dir(local)
    return searcher.searcher._ot_study  # OptunaSearch keeps its study here; there is no public getter

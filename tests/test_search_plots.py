"""The search's plots are Optuna's own; a study too small or too flat for one gets a note, not a crash."""

from __future__ import annotations

import optuna

from crpbot.search.results import PLOTS, write_plots

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(trials: int, objective) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=trials)
    return study


def test_history_and_importance_are_written_beside_the_results(tmp_path) -> None:
    study = _study(
        6,
        lambda t: (
            t.suggest_float("lr", 1e-4, 1e-2, log=True) + len(t.suggest_categorical("cell", ["lstm", "gru"]))
        ),
    )
    assert write_plots(study, tmp_path) == []
    for name in PLOTS:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOTS)  # no temp files left


def test_one_trial_gets_its_history_and_a_note_for_importance(tmp_path) -> None:
    notes = write_plots(_study(1, lambda t: t.suggest_float("lr", 1e-4, 1e-2)), tmp_path)
    assert notes == ["param_importances.png not drawn: 1 completed trial(s), 2 needed"]
    assert [p.name for p in tmp_path.iterdir()] == ["optimization_history.png"]


def test_a_flat_study_does_not_crash(tmp_path) -> None:
    notes = write_plots(_study(3, lambda t: float(len(t.suggest_categorical("cell", ["lstm"])))), tmp_path)
    assert (tmp_path / "optimization_history.png").is_file()
    assert all("\n" not in note for note in notes)

"""Search-space YAML: the shipped spaces validate, and every kind of mistake is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crpbot.cli import main
from crpbot.errors import CrpbotError
from crpbot.search.space import load_search_space

REPO = Path(__file__).resolve().parents[1]
SMOKE_BASE = str(REPO / "tune_configs" / "smoke.yaml")


def write_space(tmp_path: Path, **changes) -> Path:
    raw = {
        "base": SMOKE_BASE,
        "seed": 0,
        "budget": {"num_samples": 4, "max_epochs": 2, "grace_period": 1},
        "space": {"cell": {"choice": ["lstm", "gru"]}, "lr": {"loguniform": [1e-3, 1e-2]}},
    }
    raw.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_fallback_space_covers_the_recipe_grid():
    space = load_search_space(REPO / "tune_configs" / "fallback_search.yaml")
    dims = {dim.key: dim for dim in space.dimensions}
    assert dims["cell"].values == ("lstm", "gru")
    assert dims["num_layers"].values == (2, 3, 4)
    assert dims["hidden_size"].values == (64, 128, 192)
    assert dims["lookback"].values == (60, 90, 120)
    assert dims["optimizer"].values == ("adam", "adamw", "radam")
    assert (dims["dropout"].kind, dims["dropout"].values) == ("uniform", (0.1, 0.5))
    assert (dims["lr"].kind, dims["lr"].values) == ("loguniform", (1e-4, 3e-3))
    assert "batch_size" in dims
    # the data is prepared once with the largest lookback, so every trial respects the purge
    assert space.data_config().lookback == 120
    trial = space.trial_config({"cell": "gru", "lookback": 90})
    assert (trial.cell, trial.lookback, trial.max_epochs) == ("gru", 90, space.budget.max_epochs)


@pytest.mark.parametrize("budget", ["smoke", "full", "gpu", "gbdt-smoke", "gbdt"])
def test_every_pipeline_budget_names_files_that_load(budget):
    from crpbot.config import CONFIG_DIR
    from crpbot.pipeline.chain import BUDGETS, checked_budget

    plan = BUDGETS[budget]
    space = load_search_space(CONFIG_DIR / plan.search_space)
    recipe = checked_budget(plan)  # the fallback searches the recipe's family, target and horizon
    assert space.budget.num_samples >= 1
    assert recipe.model == space.base.model == ("gbdt" if budget.startswith("gbdt") else "rnn")
    if budget == "gpu":  # trials and seeds are packed four to a GPU
        assert space.budget.gpus_per_trial == plan.gpu_share == 0.25
        fallback = load_search_space(CONFIG_DIR / BUDGETS["full"].search_space)
        assert [d.key for d in space.dimensions] == [d.key for d in fallback.dimensions]


def test_a_budget_whose_search_is_of_another_family_or_question_is_refused(tmp_path):
    from crpbot.config import CONFIG_DIR
    from crpbot.pipeline.chain import BUDGETS, PipelineBudget, checked_budget

    with pytest.raises(CrpbotError, match="recipe gbdt.yaml has model 'gbdt' but the search smoke_search"):
        checked_budget(PipelineBudget(train_config="gbdt.yaml", search_space="smoke_search.yaml", seeds=2))
    (tmp_path / "h60.yaml").write_text(
        (CONFIG_DIR / "gbdt.yaml").read_text().replace("horizon: 15", "horizon: 60")
    )
    with pytest.raises(
        CrpbotError, match="has horizon 60 but the search gbdt_search.yaml searches horizon 15"
    ):
        checked_budget(PipelineBudget(str(tmp_path / "h60.yaml"), "gbdt_search.yaml", seeds=2))
    with pytest.raises(CrpbotError, match="model gbdt trains on CPUs"):
        checked_budget(BUDGETS["gbdt"], use_gpu=True)


def test_int_range_is_inclusive_and_sets_the_data_lookback(tmp_path):
    space = load_search_space(write_space(tmp_path, space={"lookback": {"int": [30, 90]}}))
    assert space.dimensions[0].values == (30, 90)
    assert space.data_config().lookback == 90


def test_smoke_space_and_budget_overrides():
    space = load_search_space(REPO / "tune_configs" / "smoke_search.yaml")
    assert space.base.max_train_windows is not None  # tests and the demo stay small
    smaller = space.with_budget(num_samples=2, max_epochs=1)
    assert (smaller.budget.num_samples, smaller.budget.max_epochs, smaller.budget.grace_period) == (2, 1, 1)
    with pytest.raises(CrpbotError, match="num_samples"):
        space.with_budget(num_samples=0)


def test_fractional_gpus_per_trial(tmp_path):
    space = load_search_space(
        write_space(tmp_path, budget={"num_samples": 4, "max_epochs": 2, "gpus_per_trial": 0.25})
    )
    assert space.budget.gpus_per_trial == 0.25
    assert load_search_space(write_space(tmp_path)).budget.gpus_per_trial == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spaec": {}}, r"unknown key\(s\): spaec"),
        ({"space": {"hidden": {"choice": [8, 16]}}}, r"space\.hidden: not a training config key"),
        ({"space": {"lr": {"lognormal": [1e-3, 1e-2]}}}, r"space\.lr: unknown distribution 'lognormal'"),
        ({"space": {"lr": {"loguniform": [1e-2, 1e-3]}}}, r"space\.lr: bad range"),
        ({"space": {"lr": {"loguniform": [0, 1e-3]}}}, r"space\.lr: bad range .*low > 0"),
        ({"space": {"dropout": {"uniform": [0.1]}}}, r"space\.dropout: uniform needs \[low, high\]"),
        ({"space": {"dropout": {"uniform": [0.1, 1.5]}}}, r"space\.dropout: .*dropout=1\.5"),
        (
            {"space": {"hidden_size": {"uniform": [8, 64]}}},
            r"space\.hidden_size: uniform ranges need a key of type float",
        ),
        ({"space": {"hidden_size": {"int": [8.5, 64]}}}, r"space\.hidden_size: int bounds must be integers"),
        ({"space": {"lr": {"int": [1, 3]}}}, r"space\.lr: int ranges need a key of type int"),
        ({"space": {"cell": {"choice": ["lstm", "rnn"]}}}, r"space\.cell: .*cell='rnn'"),
        ({"space": {"cell": {"choice": []}}}, r"space\.cell: choice needs a non-empty list"),
        ({"space": {"max_epochs": {"choice": [2, 3]}}}, r"space\.max_epochs: cannot be searched"),
        ({"space": {}}, r"space must be a non-empty mapping"),
        ({"budget": {"num_samples": 4}}, r"budget\.max_epochs is required"),
        (
            {"budget": {"num_samples": 4, "max_epochs": 2, "patience": 3}},
            r"budget: unknown key\(s\): patience",
        ),
        ({"budget": {"num_samples": 4, "max_epochs": 2, "grace_period": 3}}, r"grace_period must be <="),
        ({"budget": {"num_samples": -1, "max_epochs": 2}}, r"budget\.num_samples must be an integer >= 1"),
        (
            {"budget": {"num_samples": 4, "max_epochs": 2, "gpus_per_trial": 0}},
            r"gpus_per_trial must be a number in \(0, 1\]",
        ),
        (
            {"budget": {"num_samples": 4, "max_epochs": 2, "gpus_per_trial": 2}},
            r"gpus_per_trial must be a number in \(0, 1\]",
        ),
        ({"overrides": {"lookbak": 30}}, r"overrides: unknown config key\(s\): lookbak"),
        ({"base": "missing.yaml"}, r"config file not found"),
    ],
)
def test_invalid_space_is_a_clear_error(tmp_path, changes, message):
    with pytest.raises(CrpbotError, match=message):
        load_search_space(write_space(tmp_path, **changes))


def test_cli_reports_invalid_space_in_one_line(tmp_path, capsys):
    path = write_space(tmp_path, space={"lr": {"loguniform": [1e-2, 1e-3]}})
    assert main(["tune", "--coin", "BTC", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crpbot: error:") and "space.lr: bad range" in err and "\n" not in err


def test_cli_refuses_budget_overrides_on_resume(tmp_path, capsys):
    path = write_space(tmp_path)
    argv = [
        "tune",
        "--coin",
        "BTC",
        "--config",
        str(path),
        "--resume",
        "--epochs",
        "3",
        "--storage",
        str(tmp_path / "runs"),
    ]
    assert main(argv) == 2
    assert "resumed search keeps its budget" in capsys.readouterr().err


def test_a_repeated_key_in_a_space_is_an_error(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        f"base: {SMOKE_BASE}\nbudget: {{num_samples: 2, max_epochs: 1}}\n"
        "space:\n  lr: {loguniform: [1.0e-3, 1.0e-2]}\n  lr: {choice: [0.5]}\n"
    )
    with pytest.raises(CrpbotError, match=r"key 'lr' appears twice \(again on line 5\)"):
        load_search_space(path)


def test_bad_input_fails_before_ray_starts(tmp_path, monkeypatch, capsys):
    def ray_started(*args, **kwargs):
        pytest.fail("Ray started before the input was checked")

    monkeypatch.setattr("crpbot.search.tune.init_ray", ray_started)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not a parquet file PAR1")
    argv = ["tune", "--coin", "BTC", "--config", str(write_space(tmp_path)), "--input", str(bad)]
    assert main([*argv, "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crpbot: error:") and "bad.parquet" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "prog", "message"),
    [
        (["train", "--epochs", "abc"], "crpbot train", "argument --epochs: invalid int value: 'abc'"),
        (["tune", "--num-samples", "x"], "crpbot tune", "argument --num-samples: invalid int value"),
        (["registry", "push"], "crpbot registry push", "the following arguments are required: --bucket"),
        ([], "crpbot", "the following arguments are required: COMMAND"),
        (["bogus"], "crpbot", "invalid choice: 'bogus'"),
    ],
)
def test_argument_errors_are_one_line(argv, prog, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: ") and message in err
    assert err.endswith(f" (see {prog} --help)\n") and err.count("\n") == 1

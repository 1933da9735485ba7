"""``--set KEY=VALUE`` on the commands that read a training config, and issue 19's bad-input list
through it: each mistake is one ``crpbot: error:`` line, exit 2, and Ray is never imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from crpbot.config import CONFIG_DIR, load_config
from crpbot.errors import CrpbotError

GBDT = str(CONFIG_DIR / "gbdt.yaml")
SMOKE = str(CONFIG_DIR / "smoke.yaml")
# each case: a command line (train unless it starts with walkforward) and what its one line names
CASES = [
    (["--config", GBDT, "--set", "target=bogus"], "invalid config value target='bogus'"),
    (["--config", GBDT, "--set", "model=forest"], "invalid config value model='forest'"),
    (["--config", GBDT, "--set", "horizon=0"], "invalid config value horizon=0: must be >= 1"),
    (["--config", GBDT, "--set", "horizon=100000"], "exceed the longest gap-free run"),
    (["--config", GBDT, "--set", "timeframes=[2.5]"], "timeframes=[2.5]: expected a list of whole numbers"),
    (["--config", GBDT, "--set", "timeframes=[120]"], "timeframes=[120]: each must be <= lookback 60"),
    (
        ["--config", GBDT, "--set", "target=triple_barrier", "--set", "barrier_k=0"],
        "barrier_k=0.0: must be > 0",
    ),
    (["--config", SMOKE, "--set", "num_leaves=31"], "config key num_leaves is not a setting of model 'rnn'"),
    (
        ["--config", GBDT, "--set", "hidden_size=64"],
        "config key hidden_size is not a setting of model 'gbdt'",
    ),
    (["--config", GBDT, "--set", "horizon"], "--set 'horizon': expected KEY=VALUE"),
    (["--config", GBDT, "--set", "colour=red"], "unknown config key(s): colour"),
    (
        ["walkforward", "--config", GBDT, "--set", "horizon=15000", "--train-days", "8"],
        "--train-days 8 is 11520 bars, which leaves no train window",
    ),
]
PROBE = """
import contextlib, io, json, sys
from crpbot.cli import main
results = []
for args in json.loads(sys.argv[1]):
    if args[0] != "walkforward":
        args = ["train", *args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([args[0], "--coin", "BTC", *args[1:], "--out", "never-written"])
    results.append([code, err.getvalue()])
assert "ray" not in sys.modules, "ray was imported"
print(json.dumps(results))
"""


def test_issue_19_bad_input_is_one_line_before_ray(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([args for args, _ in CASES])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    for (args, message), (code, stderr) in zip(CASES, json.loads(run.stdout), strict=True):
        assert code == 2, (args, stderr)
        assert stderr.startswith("crpbot: error: ") and stderr.count("\n") == 1, (args, stderr)
        assert message in stderr, (args, stderr)
    assert not (tmp_path / "never-written").exists()


def test_settings_are_read_as_yaml_and_validated_like_the_file():
    from crpbot.cli.options import config_with_settings

    config = config_with_settings(
        load_config(GBDT), ["target=volatility", "horizon=60", "timeframes=[5, 15]"]
    )
    assert (config.target, config.horizon, config.timeframes) == ("volatility", 60, [5, 15])
    assert config_with_settings(config, []) is config
    with pytest.raises(CrpbotError, match="not YAML"):
        config_with_settings(config, ["timeframes=[5,"])

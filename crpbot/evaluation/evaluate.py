"""Score a model or ensemble on its test split, once, after everything else is fixed.

Order matters and is the point of this module: the validation split is predicted first
(the selective threshold and the trading threshold are chosen there), the logistic and GBDT
baselines are fitted on train (the GBDT early-stopped on train's tail), the best baseline is
chosen on validation, and only then is the model's test split predicted -- once -- and scored,
with its edge over that baseline. Nothing computed from test feeds back into any choice.

The test split is the one stored with the model (its ``split_times`` reproduced on the same
file, checked by fingerprint), or the whole of ``--input`` when given; an ``--input`` that
overlaps the model's train or validation period is refused, since that score would be a leak.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import (
    TRADES_FILE,
    BacktestResult,
    Costs,
    net_return_per_trade,
    run_backtest,
)
from crpbot.evaluation.baselines import BaselineScores, score_baselines
from crpbot.evaluation.gate import (
    GateThresholds,
    choose_selective_threshold,
    gate_record,
    selective_reading,
)
from crpbot.evaluation.metrics import (
    accuracy,
    calibration_in_the_large,
    classification_metrics,
    coverage_curve,
    edge_over_baseline,
    equal_mass_calibration_error,
    expected_calibration_error,
    subset_accuracy,
)
from crpbot.evaluation.report import summary_lines, write_report
from crpbot.model.predictions import Predictions
from crpbot.model.predictor import Predictor, load_predictor
from crpbot.registry.artifact import check_output_location, make_dirs, read_artifact_json, read_manifest

ECE_DEFINITION = (
    "ece: expected calibration error over 15 equal-width bins of [0, 1] on the "
    "confidence max(p, 1-p) of the predicted class: "
    "sum of bin share * |bin accuracy - bin mean confidence|; "
    "ece_equal_mass: the same sum over 15 equal-count bins of that confidence "
    "(rows ranked by confidence, ties in time order, rank r of n in bin floor(15r/n)), "
    "which still resolves confidences crowded into 0.50-0.53 where the equal-width bins "
    "put almost every row into one bin; "
    "calibration_in_the_large: mean P(up) - observed up rate (> 0: up predicted too often); "
    "the gate reads ece, ece_equal_mass or the larger of the two (gate.ece_kind)"
)
VALIDATION_NOTE = (
    "in-sample: the validation split was used for early stopping, model selection "
    "(search ranking), the temperature and (unless given) the trading threshold tau, "
    "so these numbers flatter the model; the test split is the honest estimate"
)
MINUTE_NS = 60 * 1_000_000_000
UNKNOWN_FAMILIARITY = "unknown: the artifact predates familiarity.json, so no window can be flagged"


@dataclass(frozen=True)
class EvaluationResult:
    out_dir: Path
    metrics: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.metrics["gate"]["passed"])


def evaluate_model(
    model_dir: str | Path,
    *,
    input_path: str | Path | None = None,
    context_inputs: dict[str, str | Path] | None = None,
    out_dir: str | Path | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
    trade_threshold: float | None = None,
    overwrite: bool = False,
    prepared: Any | None = None,
    log: Callable[[str], None] = print,
    coin: str | None = None,
    figures: bool = True,
) -> EvaluationResult:
    """Evaluate the artifact at ``model_dir`` and write predictions, metrics, report and plots to ``out_dir``.

    ``trade_threshold`` is the backtest's τ; by default the selective threshold chosen on
    validation, or 0.5 (trade every window) when none reaches ``min_accuracy`` there. ``costs``:
    the backtest's fills (default :class:`Costs`: 10 bps fee per side, entry one bar after the
    signal's); the net return per trade at τ, with its CI, is what the gate's net-PnL check reads.
    ``prepared``: the model's own ``PreparedData`` when the caller holds it already (a walk-forward
    fold), checked like a reload would be, so the file is not loaded and prepared a second time.
    ``context_inputs`` (coin -> file): a context model's context bars, when not the files it
    records (stored split) or the files beside ``input_path`` (see ``crpbot.data.cross_asset``).
    ``coin``: which coin of a global model to evaluate (the gate stays per coin); optional for
    a one-coin model. ``figures=False`` leaves out the PNG plots (report.md says so).
    """
    thresholds = thresholds if thresholds is not None else GateThresholds()
    costs = costs if costs is not None else Costs()
    if trade_threshold is not None and not 0.5 <= trade_threshold <= 1.0:
        raise CrpbotError(f"invalid trade threshold {trade_threshold}: must be in [0.5, 1]")
    model_dir = Path(model_dir)
    predictor = load_predictor(model_dir, coin)
    coin = predictor.coin
    out_dir = (
        Path(out_dir)
        if out_dir is not None
        else Path("reports") / "evaluate" / f"{coin}-{model_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if out_dir.exists() and not overwrite:
        raise CrpbotError(f"output directory already exists: {out_dir}")
    check_output_location(out_dir)

    if input_path is None:
        original = test_data = (
            stored_split_data(predictor, context_inputs)
            if prepared is None
            else _own_split_data(predictor, prepared)
        )
        test_source = f"stored test split of {predictor.config_json['input_path']}"
    else:
        test_data = _input_data(predictor, Path(input_path), context_inputs)
        test_source = f"all of {input_path}"
        try:  # only for the validation-chosen threshold and the logistic baseline
            original = stored_split_data(predictor)  # its own recorded context files
        except CrpbotError as exc:
            log(f"Warning: no validation/train data for the selective threshold and baselines: {exc}")
            original = None

    # 1. every choice on validation only
    target = predictor.target
    validation = predictor.predictions(original, "val") if original is not None else None
    tau, tau_source = trade_threshold, "given"
    if tau is None and target.directional:
        tau, tau_source = validation_threshold(validation, thresholds.min_accuracy)

    # 2. the baselines on the windows the model will be scored on; the logistic and GBDT ones are
    # fitted on train here (GBDT early-stopped on train's tail), and the best one chosen on val,
    # before the model predicts test (fit_logistic refuses the test split). The test rows are read
    # once (ties included), here: the baselines score the labelled ones, the model all of them.
    traded_rows = test_data.window_ends("test", predictor.lookback, labelled=False)
    scored_rows = traded_rows[~np.isnan(test_data.labels[traded_rows])]
    if len(scored_rows) == 0:
        raise CrpbotError("the test split holds no complete window to score")
    baselines = score_baselines(test_data, scored_rows, lookback=predictor.lookback, train_data=original)

    # 3. the test split, predicted once. Accuracy and calibration score the labelled windows;
    # the backtest trades every window, ties and other unlabelled rows included (a zero or small
    # move still pays the round trip).
    traded = predictor.predictions_at(test_data, "test", traded_rows)
    tie = np.isnan(traded.labels)
    test = traded.where(~tie)  # exactly the baselines' rows: both are the labelled traded_rows
    unscored = (
        f"whose {test_data.horizon}-minute move is exactly 0"
        if target.name == "direction"
        else f"without a {target.name} label"
    )
    log(
        f"Scoring {len(test):,} test windows of {coin} ({test_source}; {int(tie.sum()):,} more "
        f"{unscored} are {'traded, ' if target.directional else ''}not scored)"
    )

    metrics: dict[str, Any] = {
        "coin": coin,
        "model": str(model_dir),
        "kind": predictor.config_json["kind"],
        "members": len(predictor.models),
        "temperature": predictor.temperature,
        "test_source": test_source,
        "horizon_minutes": test_data.horizon,
        "target": target.to_dict(),
        "question": target.question(),
        "test_period": [_iso(test.timestamps[0]), _iso(test.timestamps[-1])],
        # flat outcomes (close[t+h] == close[t]) are neither up nor down, and other targets leave
        # some rows undefined (crpbot.data.targets): excluded from accuracy
        "test_ties": int(tie.sum()),
    }
    metrics.update(classification_metrics(test.labels, test.probs, horizon=test_data.horizon))
    metrics["ece_definition"] = ECE_DEFINITION
    metrics["baselines"] = baselines.accuracies
    metrics["edge_over_best_baseline"] = _edge(test, baselines, test_data.horizon)
    metrics["coverage_curve"] = coverage_curve(test.labels, test.probs)
    # where serving and the strategy abstain: windows outside what the model saw in training
    familiar = predictor.familiar_at(test_data.features, traded_rows)
    metrics["familiarity"] = _familiarity(predictor, familiar, tie, test, test_data.horizon)
    # a target that is not directional has nothing to trade: no backtest, no net return per
    # trade (report.NO_BACKTEST; the gate records that criterion as not applicable)
    trades = (
        run_backtest(
            traded.timestamps,
            traded.probs,
            traded.forward_returns,
            threshold=tau,
            horizon=test_data.horizon,
            costs=costs,
        )
        if target.directional
        else None
    )
    metrics["backtest"] = {**trades.summary, "threshold_source": tau_source} if trades is not None else None
    metrics["net_return_per_trade"] = (
        {
            **net_return_per_trade(trades.pnl),
            "threshold": tau,
            "threshold_source": tau_source,
            "cost_bps_per_side": costs.per_side_bps,
        }
        if trades is not None
        else None
    )
    metrics["gate"] = {
        **gate_record(metrics, thresholds),
        "selective": (
            selective_reading(validation, test, thresholds.min_accuracy)
            if validation is not None
            else {"threshold": None, "note": "no validation split available"}
        ),
    }
    if validation is not None:
        metrics["validation"] = {
            "n": len(validation),
            "accuracy": accuracy(validation.labels, validation.probs),
            "ece": expected_calibration_error(validation.labels, validation.probs),
            "ece_equal_mass": equal_mass_calibration_error(validation.labels, validation.probs),
            "calibration_in_the_large": calibration_in_the_large(validation.labels, validation.probs),
            "in_sample": True,
            "note": VALIDATION_NOTE,
        }
    metrics = _json_safe(metrics)

    history = read_artifact_json(model_dir, "history.json")
    _write_outputs(
        out_dir,
        overwrite,
        lambda tmp: _fill_output_dir(
            tmp,
            metrics,
            test,
            baselines.best_up,
            trades,
            history,
            None if familiar is None else familiar[~tie],
            figures,
        ),
    )
    for line in summary_lines(metrics):
        log(line)
    log(f"Evaluation written to {out_dir}")
    return EvaluationResult(out_dir=out_dir, metrics=metrics)


def validation_threshold(validation: Predictions | None, min_accuracy: float) -> tuple[float, str]:
    """The backtest's τ and where it came from: the selective threshold chosen on ``validation``,
    else 0.5 (trade every window). The freqtrade strategy trades at the same τ
    (``crpbot.integrations.freqtrade_strategy``)."""
    chosen = choose_selective_threshold(validation, min_accuracy) if validation is not None else None
    if chosen is not None:
        return chosen, "selective threshold chosen on val"
    return 0.5, "default 0.5 (no threshold reaches min_accuracy on val)"


def _edge(test: Predictions, baselines: BaselineScores, horizon: int) -> dict[str, Any]:
    """metrics.json's ``edge_over_best_baseline``: model accuracy minus the validation-chosen
    baseline's on the same test rows, with the paired CI; null numbers when there is no validation."""
    edge: dict[str, Any] = {
        "baseline": baselines.best,
        "edge": None,
        "ci_low": None,
        "ci_high": None,
        "n": len(test),
        "chosen_on": "val",
        "validation_accuracies": baselines.validation_accuracies,
    }
    if baselines.best_up is None:
        edge["note"] = "no validation split to choose the best baseline on"
        return edge
    edge.update(edge_over_baseline(test.labels, test.probs, baselines.best_up, horizon=horizon))
    return edge


def _familiarity(
    predictor: Predictor, familiar: np.ndarray | None, tie: np.ndarray, test: Predictions, horizon: int
) -> dict[str, Any]:
    """metrics.json's ``familiarity``: the share of test windows (``familiar``: every traded window's
    flag) outside what the model saw in training, and accuracy on either side with CIs. The threshold
    was chosen on validation when the model was trained; test only reads it."""
    if predictor.familiarity is None or familiar is None:
        return {"available": False, "note": UNKNOWN_FAMILIARITY}
    record = predictor.familiarity.to_dict()
    scored = familiar[~tie]
    return {
        "available": True,
        **{key: record[key] for key in ("method", "quantile", "threshold", "threshold_chosen_on")},
        "test_windows": len(familiar),
        "test_unfamiliar": int((~familiar).sum()),
        "test_share_unfamiliar": float((~familiar).mean()),
        "accuracy_familiar": subset_accuracy(test.labels, test.probs, scored, horizon=horizon),
        "accuracy_unfamiliar": subset_accuracy(test.labels, test.probs, ~scored, horizon=horizon),
    }


def stored_split_data(predictor: Predictor, context_inputs: dict[str, str | Path] | None = None) -> Any:
    """The model's own ``PreparedData`` with its stored splits and scaler, checked to be the same rows.

    The file is the artifact's ``input_path`` (the bundled sample when that path does not exist
    here, e.g. an artifact copied from another machine); its fingerprint must equal the one in
    the artifact's manifest, or the stored splits would not be the rows the model was split on.
    When the fallback is refused the error says both: the original is missing, the fallback differs.
    A context model's context files are the recorded ones (or ``context_inputs``), checked the same way.
    """
    from crpbot.data.bars import default_input, load_bars
    from crpbot.data.cross_asset import load_context, spec_from_record
    from crpbot.data.dataset import prepare_for_config
    from crpbot.data.scaler import Scaler

    if predictor.path is None:
        raise CrpbotError("stored_split_data needs a predictor loaded from an artifact directory")
    config_json = predictor.config_json
    fingerprint = _data_fingerprint(predictor)
    original = path = Path(config_json["input_path"])
    missing = ""
    if not path.is_file():
        path = default_input(predictor.coin)
        missing = f"the model's input {original} is missing here, and the bundled fallback "
        if not path.is_file():
            raise CrpbotError(f"{missing}{path} is missing too, so its stored splits cannot be reproduced")
    bars = load_bars(path)
    bars.coin = predictor.coin
    if bars.fingerprint != fingerprint:
        raise CrpbotError(
            f"{missing}{path} is not the data the model was trained on (fingerprint differs), "
            "so its stored splits cannot be reproduced"
        )
    record = config_json.get("context")
    context = load_context(
        predictor.coin,
        spec_from_record(record),
        config_json["input_path"],
        context_inputs,
        recorded=record["inputs"] if record else None,
    )
    return prepare_for_config(
        bars,
        predictor.train_config,
        scaler=Scaler.from_dict(predictor.scaler),
        split_times=config_json["split_times"],
        context=context,
    )


def _data_fingerprint(predictor: Predictor) -> str:
    """The fingerprint of the rows the model was split on: a global model records each coin's
    (its manifest's covers all its coins), a one-coin model's manifest holds it."""
    recorded = predictor.config_json.get("data_fingerprint")
    return recorded or read_manifest(predictor.path)["data_fingerprint"]


def _own_split_data(predictor: Predictor, data: Any) -> Any:
    """``data`` a caller already prepared (a walk-forward fold), accepted only if it is exactly what
    :func:`stored_split_data` would rebuild: same rows (fingerprint), splits, scaler and context files."""
    recorded = predictor.config_json.get("context", {}).get("inputs", {})
    same = (
        data.fingerprint == _data_fingerprint(predictor)
        and {coin: source["fingerprint"] for coin, source in getattr(data, "context", {}).items()}
        == {coin: source["fingerprint"] for coin, source in recorded.items()}
        and {name: list(times) for name, times in data.split_times().items()}
        == predictor.config_json["split_times"]
        and data.scaler.to_dict() == predictor.scaler
    )
    if not same:
        raise CrpbotError(
            "the prepared data given to evaluate is not the model's own data (fingerprint, split times, "
            "scaler or context files differ)"
        )
    return data


def inference_data(
    predictor: Predictor,
    bars: Any,
    input_path: Path,
    context_inputs: dict[str, str | Path] | None = None,
) -> Any:
    """``bars`` (of ``input_path``) prepared as ``predictor`` was trained: its own train-only scaler,
    its own context coins' bars (found beside ``input_path`` unless ``context_inputs`` names them),
    its horizon and target; every row is the test split."""
    from crpbot.data.cross_asset import load_context, spec_from_record
    from crpbot.data.dataset import prepare_inference
    from crpbot.data.scaler import Scaler

    spec = spec_from_record(predictor.config_json.get("context"))
    return prepare_inference(
        bars,
        scaler=Scaler.from_dict(predictor.scaler),
        horizon=predictor.train_config.horizon,
        context=load_context(predictor.coin, spec, input_path, context_inputs),
        target=predictor.target,
    )


def _input_data(
    predictor: Predictor, input_path: Path, context_inputs: dict[str, str | Path] | None = None
) -> Any:
    """All of ``input_path`` as the test split, refused when it overlaps the model's train/val period."""
    from crpbot.data.bars import load_bars

    config = predictor.train_config
    bars = load_bars(input_path)
    bars.coin = predictor.coin
    data = inference_data(predictor, bars, input_path, context_inputs)
    ends = data.window_ends("test", config.lookback)
    if len(ends) == 0:
        raise CrpbotError(
            f"{input_path.name}: no gap-free window of lookback {config.lookback} "
            f"+ horizon {config.horizon}; use more data"
        )
    seen_start = int(predictor.config_json["split_times"]["train"][0])
    seen_end = int(predictor.config_json["split_times"]["val"][1])
    window_first = data.timestamps[ends] - (config.lookback - 1) * MINUTE_NS
    window_last = data.timestamps[ends] + config.horizon * MINUTE_NS
    overlapping = int(np.sum((window_last >= seen_start) & (window_first <= seen_end)))
    if overlapping:
        raise CrpbotError(
            f"{input_path.name}: {overlapping:,} windows overlap the model's train/validation "
            f"period {_iso(seen_start)} .. {_iso(seen_end)}; evaluate on data it has not seen"
        )
    return data


def _iso(ns: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="m") + "Z"


def _json_safe(value: Any) -> Any:
    """NaN/inf become null and numpy scalars plain numbers, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _fill_output_dir(
    directory: Path,
    metrics: dict[str, Any],
    test: Predictions,
    baseline_up: np.ndarray | None,
    trades: BacktestResult | None,
    history: list[dict[str, Any]],
    familiar: np.ndarray | None = None,
    figures: bool = True,
) -> None:
    """predictions.parquet (with ``baseline_up``: the best baseline's direction per row, when one
    was chosen on validation; ``familiar``: the row's window lies inside what the model saw in
    training, when the artifact says), trades.parquet (the backtest's trades: entry time, side, net
    return), metrics.json, report.md and the plots."""
    import pandas as pd

    columns = {
        "timestamp": pd.to_datetime(test.timestamps, unit="ns", utc=True),
        "prob_up": test.probs.astype(np.float64),
        "label": test.labels.astype(np.int8),
    }
    if baseline_up is not None:
        columns["baseline_up"] = baseline_up.astype(np.int8)
    if familiar is not None:
        columns["familiar"] = familiar.astype(bool)
    frame = pd.DataFrame(columns)
    frame.to_parquet(directory / "predictions.parquet", index=False)
    if trades is not None:  # none for a target that is not directional
        pd.DataFrame(
            {
                "entry_time": pd.to_datetime(trades.entry_times, unit="ns", utc=True),
                "side": trades.sides.astype(np.int8),
                "net_return": trades.pnl.astype(np.float64),
            }
        ).to_parquet(directory / TRADES_FILE, index=False)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    write_report(directory, metrics, test, trades, history, figures=figures)


def _write_outputs(out_dir: Path, overwrite: bool, fill: Callable[[Path], None]) -> None:
    """Build the output directory beside ``out_dir``, then rename it into place (old one kept until then)."""
    make_dirs(out_dir.parent, purpose=out_dir)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        fill(tmp)
        if out_dir.exists():
            if not overwrite:
                raise CrpbotError(f"output directory already exists: {out_dir}")
            old = out_dir.parent / f".old-{out_dir.name}-{uuid.uuid4().hex[:12]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

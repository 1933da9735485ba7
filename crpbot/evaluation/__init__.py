"""Evaluation stage: metrics with CIs, calibration error, baselines, backtest, the gate, and the one
scoring of a model on its test split with its report."""

from crpbot import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "accuracy": "metrics",
        "mean_ci": "metrics",
        "mean_interval": "metrics",
        "paired_interval": "metrics",
        "expected_calibration_error": "metrics",
        "baseline_accuracies": "baselines",
        "run_backtest": "backtest",
        "Costs": "backtest",
        "GateThresholds": "gate",
        "coin_decision": "gate",
        "batch_decision": "gate",
        "evaluate_model": "evaluate",
        "stored_split_data": "evaluate",
    },
)

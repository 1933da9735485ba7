"""Data stage: bars -> validation -> causal features -> labels and purged splits -> train-only
scaler -> windows.

Nothing here knows about models; everything downstream reads a ``PreparedData``.
"""

from crpbot import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "COINS": "bars",
        "Bars": "bars",
        "normalize_coin": "bars",
        "default_input": "bars",
        "load_bars": "bars",
        "validate_bars": "bars",
        "find_input": "bars",
        "append_bars": "append",
        "FEATURE_NAMES": "features",
        "compute_features": "features",
        "feature_manifest": "features",
        "ContextSpec": "cross_asset",
        "load_context": "cross_asset",
        "PreparedData": "dataset",
        "prepare_data": "dataset",
        "load_prepared": "dataset",
        "Scaler": "scaler",
        "gather_windows": "windows",
        "window_view": "windows",
        "FoldSpec": "folds",
        "plan_folds": "folds",
    },
)

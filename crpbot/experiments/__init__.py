"""Experiments: questions asked of the data that never promote a model (walk-forward, its summary
and report, the global walk-forward), kept apart from the promotion pipeline."""

from crpbot import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "run_walkforward": "walkforward",
        "run_global_walkforward": "walkforward_global",
    },
)

"""Search stage: validated YAML search spaces and the Ray Tune + Optuna search over them."""

from crpbot import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "SearchSpace": "space",
        "load_search_space": "space",
        "run_search": "tune",
        "SearchResult": "tune",
    },
)

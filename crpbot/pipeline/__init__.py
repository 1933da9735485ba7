"""Pipeline stage: per coin, recipe -> validation check -> search -> ensemble -> one test evaluation
-> gate, then promotion of the batch."""

from crpbot import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "BUDGETS": "chain",
        "run_pipeline": "run",
        "run_coin_chain": "chain",
        "run_retrain": "retrain",
        "PipelineResult": "run_report",
        "summary_table": "run_report",
    },
)

"""What a parallel-vs-serial benchmark does before either timed run, so neither pays a first time.

The first run of a walk-forward or scan in a process pays imports the second does not: each Ray
worker's (torch, LightGBM, scikit-learn, crpbot's evaluation) and the driver's (SciPy's stats
and matplotlib, first used by the pooled summary and its plot). Timing the parallel run first
without this charges those seconds to it alone. ``free_cores`` says how much of the host's
cores the runs could get (a shared host's other jobs take some away).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor


def warm_workers(count: int) -> None:
    """Start one Ray worker per CPU with the fold's libraries imported."""
    import ray

    @ray.remote(num_cpus=1)
    def warm() -> None:
        import lightgbm  # noqa: F401  (the GBDT family's fits)
        import sklearn.ensemble  # noqa: F401  (the GBDT baseline's)

        import crpbot.evaluation.evaluate  # noqa: F401
        import crpbot.model.fit  # noqa: F401

        time.sleep(2)  # held long enough that the tasks land on different workers

    ray.get([warm.remote() for _ in range(count)])


def warm_driver() -> None:
    """Import what the driver's first pooled summary and plot import."""
    import matplotlib.pyplot  # noqa: F401
    import scipy.stats  # noqa: F401

    import crpbot.experiments.walkforward_report  # noqa: F401


def _spin(_: int) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


def free_cores(count: int) -> str:
    """``count`` busy processes timed against one: how many of ``count`` cores this host gives now."""
    with ProcessPoolExecutor(count) as pool:
        list(pool.map(_spin, range(count)))  # start the processes
        started = time.perf_counter()
        list(pool.map(_spin, [0]))
        one = time.perf_counter() - started
        started = time.perf_counter()
        list(pool.map(_spin, range(count)))
        many = time.perf_counter() - started
    return f"{count} busy processes ran at {count * one / many:.2f}x the rate of one (ideal {count}.00x)"

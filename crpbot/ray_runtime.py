"""Connecting to Ray: join a given cluster, or start one local instance.

Every command takes ``--address``. ``None`` starts a local instance sized to this
machine (the laptop default); ``auto``, ``host:port`` or ``ray://host:port`` joins
an existing cluster. Starting twice in one process is a no-op, so library calls
made from the CLI, the pipeline and the tests share one instance.
"""

from __future__ import annotations

import os

from crpbot.errors import CrpbotError

# Quiet defaults that matter for correctness as much as for noise: usage stats
# reporting needs the network, and Ray Train's print patch doubles worker output.
_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             object_store_memory: int | None = None) -> None:
    """Connect this process to Ray (idempotent)."""
    import ray

    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    try:
        if address is None:
            # "local" never attaches to a stale cluster named by RAY_ADDRESS or a leftover
            # /tmp/ray/ray_current_cluster file (which once made ray.init() block for minutes).
            ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
                     include_dashboard=True, logging_level="ERROR", log_to_driver=True)
        else:
            ray.init(address=address, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = "a local Ray instance" if address is None else f"Ray cluster at {address!r}"
        raise CrpbotError(f"could not connect to {where}: {str(exc).splitlines()[0]}") from exc


def cluster_gpus() -> float:
    """GPUs the connected cluster offers (0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))

"""Connecting to Ray: join a given cluster, or start one local instance.

Every command that uses Ray takes ``--address``. ``None`` starts a local instance sized to this
machine (the laptop default); ``auto``, ``host:port`` or ``ray://host:port`` joins
an existing cluster. Starting twice in one process is a no-op, so library calls
made from the CLI, the pipeline and the tests share one instance.
"""

from __future__ import annotations

import os
import time

from crpbot.errors import CrpbotError

# How long --gpu waits for an autoscaling cluster to bring GPU workers up from zero.
GPU_WAIT_SECONDS = float(os.environ.get("CRPBOT_GPU_WAIT_SECONDS", "900"))
_local_instance = False

# Quiet defaults that matter for correctness as much as for noise: usage stats
# reporting needs the network, Ray Train's print patch doubles worker output, and log
# de-duplication holds worker lines back and prints them after the results they led to.
_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_DEDUP_LOGS": "0",
}
# Applied when this module is imported, because Ray reads some of them (RAY_DEDUP_LOGS) when
# it is first imported; modules that use Ray import this one at their top. setdefault: the
# user's environment wins.
for _key, _value in _ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, object_store_memory: int | None = None
) -> None:
    """Connect this process to Ray (idempotent)."""
    import ray

    global _local_instance
    if ray.is_initialized():
        return
    try:
        if address is None:
            # "local" never attaches to a stale cluster named by RAY_ADDRESS or a leftover
            # /tmp/ray/ray_current_cluster file (which once made ray.init() block for minutes).
            ray.init(
                address="local",
                num_cpus=num_cpus,
                object_store_memory=object_store_memory,
                include_dashboard=True,
                logging_level="ERROR",
                log_to_driver=True,
            )
            _local_instance = True
        else:
            ray.init(address=address, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = "a local Ray instance" if address is None else f"Ray cluster at {address!r}"
        raise CrpbotError(f"could not connect to {where}: {str(exc).splitlines()[0]}") from exc


def quiet_worker_logs() -> None:
    """Keep a worker's output to the epoch lines.

    Ray Train and Tune log every report and checkpoint at INFO in the worker; one Ray Train V2
    logger is named by its file path, outside the ``ray`` hierarchy, so the root level decides.
    Called at the start of each worker, trial and ensemble-member function.
    """
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cluster_gpus() -> float:
    """GPUs the connected cluster offers now (0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def require_gpus(count: int, *, wait_seconds: float | None = None) -> None:
    """Make sure the cluster has ``count`` GPUs, asking the autoscaler for them when it has fewer.

    An autoscaling cluster (``cluster.yaml``) keeps its GPU workers at zero while idle, so
    "no GPU right now" is not an error there: request them and wait. A local instance has no
    autoscaler, so a missing GPU is an error at once.
    """
    have = cluster_gpus()
    if have >= count:
        return
    if _local_instance:
        raise CrpbotError(f"--gpu: this machine offers {have:g} GPU(s) to Ray, {count} needed")
    from ray.autoscaler.sdk import request_resources

    wait_seconds = GPU_WAIT_SECONDS if wait_seconds is None else wait_seconds
    print(
        f"--gpu: the cluster has {have:g} GPU(s); asking the autoscaler for {count} "
        f"and waiting up to {wait_seconds:.0f} s",
        flush=True,
    )
    request_resources(bundles=[{"GPU": 1}] * count)
    deadline = time.monotonic() + wait_seconds
    while (have := cluster_gpus()) < count:
        if time.monotonic() > deadline:
            raise CrpbotError(
                f"--gpu: the cluster still has {have:g} GPU(s) after {wait_seconds:.0f} s, "
                f"{count} needed; check the GPU worker types and max_workers in cluster.yaml"
            )
        time.sleep(5)

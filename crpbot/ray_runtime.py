"""Connecting to Ray: join a given cluster, or start one local instance.

Every command that uses Ray takes ``--address``. ``None`` starts a local instance sized to this
machine (the laptop default); ``auto``, ``host:port`` or ``ray://host:port`` joins
an existing cluster. Starting twice in one process is a no-op, so library calls
made from the CLI, the pipeline and the tests share one instance.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from crpbot.errors import CrpbotError

# How long --gpu waits for an autoscaling cluster to bring GPU workers up from zero.
GPU_WAIT_SECONDS = float(os.environ.get("CRPBOT_GPU_WAIT_SECONDS", "900"))

# Quiet defaults that matter for correctness as much as for noise: usage stats
# reporting needs the network, Ray Train's print patch doubles worker output, and log
# de-duplication holds worker lines back and prints them after the results they led to.
# Tune warns (eight times a search) that it saves the experiment's state more than once in 5 s,
# which a search of short trials keeping one checkpoint each does by design; 0 turns it off.
_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
# What a pipeline's chains run with on any cluster (a joined one does not inherit this process's
# environment): the warning above off, and Tune's "new output", which prints a configuration box
# and result paths even at verbose=0, replaced by the reporter that verbose=0 silences (the
# chains run their searches silent; the console reads their trial lines instead).
CHAIN_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
# Applied when this module is imported, because Ray reads some of them (RAY_DEDUP_LOGS) when
# it is first imported; modules that use Ray import this one at their top. setdefault: the
# user's environment wins.
for _key, _value in _ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


@dataclass(frozen=True)
class ClusterSettings:
    """Where a command's Ray work runs and what each piece claims, built once by the CLI.

    ``address``: the cluster to join (None: a local instance, :func:`init_ray`); ``gpu``: one GPU
    (or ``gpu_share`` of one) per worker, trial, ensemble member or fold; ``workers``: Ray Train
    workers of a pipeline/retrain recipe run; ``gpu_share``: with ``gpu``, the share of a GPU per
    walk-forward fold (the pipeline's ensemble members take their budget's share).
    """

    address: str | None = None
    gpu: bool = False
    workers: int = 1
    gpu_share: float = 1.0

    def __post_init__(self) -> None:
        workers, share = self.workers, self.gpu_share
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise CrpbotError(f"invalid number of workers {workers!r}: must be >= 1")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise CrpbotError(f"invalid GPU share {share!r}: must be in (0, 1]")


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, object_store_memory: int | None = None
) -> None:
    """Connect this process to Ray (idempotent)."""
    import ray

    if ray.is_initialized():
        return
    try:
        if address is None:
            # Ray Train's preemption watcher follows nodes being drained (spot instances on a
            # cluster); a local instance has none, and each watcher started logs an error-level
            # line from Ray's core about its restart arguments. Its documented switch, here only.
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
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
    "no GPU right now" is not an error there: request them and wait. A cluster without an
    autoscaler (a local instance, ``ray start`` nodes) will never get more: that is a one-line
    error at once, wherever this runs (the driver, or a pipeline's per-coin task).
    """
    have = cluster_gpus()
    if have >= count:
        return
    if not cluster_can_autoscale():
        raise CrpbotError(gpu_shortfall_error(count, have))
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


def gpu_shortfall_error(needed: int, have: float) -> str:
    """Why ``needed`` whole GPUs cannot be had on a cluster that offers ``have`` and cannot grow."""
    message = (
        f"--gpu: the cluster offers {have:g} GPU(s) to Ray and has no autoscaler to add more; {needed} needed"
    )
    if needed > 1 and have >= 1:
        # Two DDP ranks on one device: NCCL refuses it, and gloo would only trade the GPU's
        # all-reduce for host copies; one rank with a larger batch uses the GPU better.
        message += f" (one per training worker: use --workers {int(have)} or fewer)"
    return message


def cluster_can_autoscale() -> bool:
    """Whether an autoscaler can add nodes to the connected cluster.

    Ray's monitor reports the type of every node: on a cluster started from a config
    (``ray up cluster.yaml``, KubeRay) those are the config's names (``gpu_1x``); on a local
    instance or hand-started ``ray start`` nodes it runs a read-only provider that names each
    node ``node_<id>``, and there may be no report at all.
    """
    import json

    import ray
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    if raw:
        report = json.loads(raw).get("autoscaler_report") or {}
        types = list((report.get("node_type_mapping") or {}).values())
    else:  # autoscaler v2 reports through the GCS instead
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        types = [node.ray_node_type_name for node in status.active_nodes]
    return names_configured_node_types(types)


def names_configured_node_types(node_types: list[str]) -> bool:
    """True when a node type comes from a cluster config, not Ray's read-only ``node_<id>`` mirror."""
    return any(name and not name.startswith("node_") for name in node_types)

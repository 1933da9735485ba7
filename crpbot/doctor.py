"""``crpbot doctor``: is this machine (or cluster) able to run crpbot?

Checks, in order, and stops at the first failure with a one-line reason:
1. the packages crpbot imports, with their versions (torch with its CUDA and cuDNN builds); every
   missing one is named in that line (the offline bundle assumes the image has torch, numpy,
   pandas, pyarrow, scipy, scikit-learn, matplotlib, PyYAML and safetensors);
2. the GPUs torch sees;
3. Ray: a local instance starts (``address="local"``: never another instance that already runs
   on the host), or the cluster at ``--address`` is joined;
4. Ray's State API answers: Ray Train's clean-up of stopped trials needs it (``ray[default]``:
   the dashboard process), without it a search can hang;
5. one tiny remote task runs, on a GPU when torch sees one;
6. Ray is stopped (a local instance) or left (a cluster).
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import time
from collections.abc import Callable, Iterable

from crpbot import __version__
from crpbot.errors import CrpbotError
from crpbot.ray_runtime import init_ray

# import name -> why crpbot needs it (the message when it is missing)
REQUIRED = {
    "torch": "the model and the training loop",
    "numpy": "the data arrays",
    "pandas": "bars and result tables",
    "pyarrow": "Parquet and Ray's storage",
    "scipy": "the metrics' intervals and the temperature fit",
    "sklearn": "metrics and the logistic baseline",
    "lightgbm": "the gradient-boosting model family (model: gbdt)",
    "arch.bootstrap": "the scan's multiple-testing tests (SPA, StepM)",
    "matplotlib": "reports and search plots",
    "yaml": "configs",
    "safetensors": "model artifacts",
    "ray": "distributed training and search",
    "ray.train.torch": "Ray Train (pip extra ray[train])",
    "ray.tune": "Ray Tune (pip extra ray[tune])",
    "ray.tune.search.optuna": "the Optuna searcher of Ray Tune",
    "optuna": "the fallback search",
    "boto3": "S3 storage and the registry mirror",
    "rich": "the pipeline's progress view",
}
REPORTED = ("torch", "numpy", "pandas", "pyarrow", "sklearn", "ray", "optuna", "boto3")


def run_doctor(address: str | None = None, log: Callable[[str], None] = print) -> None:
    """Run every check; raise :class:`CrpbotError` naming the first that fails."""
    log(f"crpbot {__version__}, python {platform.python_version()} ({platform.machine()})")
    missing = missing_packages(REQUIRED)
    if missing:
        raise CrpbotError(f"doctor: cannot import {', '.join(missing)}")
    modules = {}
    for name, why in REQUIRED.items():
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as exc:  # installed, but broken
            raise CrpbotError(f"doctor: cannot import {name} ({why}): {exc}") from exc
    log("packages: " + ", ".join(f"{n} {getattr(modules[n], '__version__', '?')}" for n in REPORTED))

    torch = modules["torch"]
    cuda = torch.version.cuda or "none (CPU build)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    log(f"torch {torch.__version__}: CUDA build {cuda}, cuDNN {cudnn or 'n/a'}")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    log(f"GPUs seen by torch: {', '.join(gpus) if gpus else 'none'}")

    ray = modules["ray"]
    if ray.is_initialized():  # checking would mean shutting down someone else's connection
        raise CrpbotError("doctor: Ray is already initialised in this process; run crpbot doctor on its own")
    started = time.perf_counter()
    init_ray(address)
    try:
        resources = ray.cluster_resources()
        where = "local instance started" if address is None else f"joined cluster at {address}"
        log(
            f"Ray: {where} in {time.perf_counter() - started:.1f} s: {resources.get('CPU', 0):g} CPU(s), "
            f"{resources.get('GPU', 0):g} GPU(s)"
        )
        _check_state_api()
        log("Ray: State API answers (Ray Train can clean up stopped trials)")
        if gpus and resources.get("GPU", 0) < 1:
            raise CrpbotError(f"doctor: torch sees {len(gpus)} GPU(s) but Ray offers none to tasks")
        log(f"Ray: remote task ran {_remote_probe(ray, on_gpu=bool(gpus))}")
    finally:
        ray.shutdown()
    log("Ray: stopped" if address is None else "Ray: disconnected")
    log("doctor: OK")


def missing_packages(names: Iterable[str]) -> list[str]:
    """Those of ``names`` (keys of :data:`REQUIRED`) not installed here, each as "name (why crpbot
    needs it)": one line can then name every one, before anything starts."""

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            return False

    return [f"{name} ({REQUIRED[name]})" for name in names if not installed(name)]


def _check_state_api() -> None:
    from ray.util.state import list_nodes

    try:
        list_nodes(limit=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means the same: no State API
        raise CrpbotError(
            "doctor: Ray's State API does not answer (install ray[default]; the dashboard must run): "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc


def _remote_probe(ray, *, on_gpu: bool) -> str:
    """One tiny task: a matrix product on the device the task was given; where and how fast it ran."""

    def probe() -> str:
        import torch

        device = "cuda" if on_gpu else "cpu"
        x = torch.ones(64, 64, device=device)
        total = float((x @ x).sum())
        name = torch.cuda.get_device_name(0) if on_gpu else "CPU"
        return f"on {name} (node {ray.get_runtime_context().get_node_id()[:8]}, check sum {total:g})"

    task = ray.remote(num_gpus=1, num_cpus=0)(probe) if on_gpu else ray.remote(num_cpus=0)(probe)
    started = time.perf_counter()
    try:
        where = ray.get(task.remote(), timeout=120)
    except Exception as exc:  # noqa: BLE001 - a task that cannot run is the finding
        raise CrpbotError(f"doctor: a remote task did not run: {str(exc).strip().splitlines()[0]}") from exc
    return f"{where} in {time.perf_counter() - started:.1f} s"

"""The GPU path: bf16 autocast, the loop on the device, and Ray Train with ``--gpu``.

Skipped without CUDA. Ray is imported lazily: a GPU box without Ray still runs the first
two tests (``scripts/gpu_check.sh`` runs this file on a machine with torch but no Ray).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crpbot.config import TrainConfig
from crpbot.model.network import build_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# The recipe's architecture (tune_configs/default.yaml) on the 39 features, without dropout so
# that two runs in training mode (cuDNN's RNN backward needs it) see the same network.
DEFAULT = TrainConfig(dropout=0.0)
N_FEATURES = 39


def _held(required_resources: dict[str, float]) -> dict[str, float]:
    """An actor's or task's resources by their own names: inside a placement group (Ray Train's
    workers, Tune's trials) the State API reports ``GPU_group_<pg>`` and ``GPU_group_0_<pg>``."""
    from ray._private.utils import parse_pg_formatted_resources_to_original

    return parse_pg_formatted_resources_to_original(required_resources)


def _loss_and_grads(model: torch.nn.Module, windows: torch.Tensor, target: torch.Tensor, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        logits = model(windows)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
    loss.backward()
    return logits.float().detach(), {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def test_bf16_autocast_matches_fp32_forward_and_backward():
    torch.manual_seed(0)
    model = build_model(DEFAULT, N_FEATURES).cuda().train()
    windows = torch.randn(256, DEFAULT.lookback, N_FEATURES, device="cuda")
    target = (torch.rand(256, device="cuda") > 0.5).float()

    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # true fp32 LSTM kernels
        logits32, grads32 = _loss_and_grads(model, windows, target, bf16=False)
    logits16, grads16 = _loss_and_grads(model, windows, target, bf16=True)

    # The bf16 run must really be reduced precision, or this test compares fp32 with itself.
    assert not torch.equal(logits32, logits16)
    scale = logits32.abs().max().item()
    assert (logits16 - logits32).abs().max().item() <= 0.02 + 0.05 * scale
    # The whole gradient, not each tensor: small tensors (biases) are dominated by bf16 rounding
    # (per-tensor cosines down to ~0.5 on an H100) while the step holds: over seeds 0-2 the whole
    # gradient's cosine was 0.978-0.9996 and its norm ratio 0.93-0.996. A broken backward is ~0.
    g32 = torch.cat([g.flatten() for g in grads32.values()])
    g16 = torch.cat([grads16[name].flatten() for name in grads32])
    cosine = torch.nn.functional.cosine_similarity(g32, g16, dim=0).item()
    assert cosine > 0.95, f"bf16 gradient direction differs from fp32 (cosine {cosine:.4f})"
    assert abs(g16.norm().item() / g32.norm().item() - 1) < 0.15

    # And the fp32 CUDA path agrees with the CPU (catches device-specific kernels gone wrong).
    cpu_logits, _ = _loss_and_grads(model.cpu(), windows.cpu(), target.cpu(), bf16=False)
    assert torch.allclose(cpu_logits, logits32.cpu(), atol=1e-4, rtol=1e-4)


def test_fit_trains_on_the_device_with_features_resident(sample_path):
    from crpbot.data.dataset import load_prepared
    from crpbot.model.fit import fit

    config = TrainConfig(
        hidden_size=32,
        num_layers=2,
        head_hidden=16,
        batch_size=256,
        max_train_windows=4096,
        max_epochs=2,
        patience=2,
        lr=3e-3,
    )
    data = load_prepared("BTC", sample_path("BTC"), config)
    seen: list[dict] = []

    def reporter(metrics: dict, state: dict) -> None:
        # Between epochs nothing transient is alive: what stays allocated is the resident
        # features and labels plus the small model, so it must exceed the feature array.
        seen.append(
            {
                "allocated": torch.cuda.memory_allocated(),
                "devices": {t.device.type for t in state["model"].values()},
            }
        )

    result = fit(config, data, device="cuda", reporter=reporter, log=lambda _: None)

    assert [m["epoch"] for m in result.history] == [1, 2]
    assert all(entry["devices"] == {"cuda"} for entry in seen)
    assert all(entry["allocated"] >= data.features.nbytes + data.labels.nbytes for entry in seen)
    assert all(t.device.type == "cpu" for t in result.best_state.values())  # artifacts are written from CPU
    for epoch in result.history:
        assert 0.0 < epoch["train_loss"] < 2.0 and 0.0 < epoch["val_loss"] < 2.0
        # Direction at 15 minutes is close to a coin flip; far from it means a leak or a bug.
        assert 0.35 < epoch["val_acc"] < 0.65


@pytest.mark.ray
def test_ray_train_gpu_run_gives_its_worker_one_gpu(request, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed on this machine")
    request.getfixturevalue("ray_session")
    from ray.util.state import list_actors

    from crpbot.model.trainer import train

    before = {actor.actor_id for actor in list_actors(limit=10_000)}
    config = TrainConfig(
        hidden_size=16,
        num_layers=1,
        head_hidden=16,
        dropout=0.0,
        batch_size=256,
        max_train_windows=2048,
        max_epochs=1,
    )
    artifact = train(
        config,
        "BTC",
        num_workers=1,
        use_gpu=True,
        out_dir=tmp_path / "model",
        storage_path=tmp_path / "runs",
        run_name="gpu-check",
    )
    assert (artifact / "manifest.json").is_file()
    workers = [
        actor
        for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=10_000)
        if actor.actor_id not in before
    ]
    assert len(workers) == 1 and all(_held(actor.required_resources).get("GPU") == 1 for actor in workers)


@pytest.mark.ray
def test_tune_gpu_packs_four_trials_on_one_gpu(request, tmp_path):
    """Fractional GPUs: four search trials at 0.25 GPU each run on one device."""
    pytest.importorskip("ray", reason="Ray is not installed on this machine")
    request.getfixturevalue("ray_session")
    import yaml
    from ray.util.state import list_actors

    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(Path(__file__).resolve().parents[1] / "tune_configs" / "smoke.yaml"),
                "overrides": {"max_train_windows": 1024},
                "seed": 0,
                "budget": {
                    "num_samples": 4,
                    "max_epochs": 1,
                    "grace_period": 1,
                    "max_concurrent": 4,
                    "gpus_per_trial": 0.25,
                },
                "space": {"lr": {"loguniform": [1e-3, 1e-2]}},
            }
        )
    )
    before = {actor.actor_id for actor in list_actors(limit=10_000)}
    result = run_search(
        load_search_space(path),
        "BTC",
        storage=tmp_path / "runs",
        name="gpu-pack",
        use_gpu=True,
        progress=False,
        log=lambda _: None,
    )
    assert len(result.table) == 4 and (result.table["status"] != "error").all()
    trials = [
        actor
        for actor in list_actors(detail=True, limit=10_000)
        if actor.actor_id not in before and _held(actor.required_resources).get("GPU") == 0.25
    ]
    assert trials, "no trial actor held a quarter of a GPU"


@pytest.mark.ray
def test_ensemble_gpu_seeds_share_one_gpu(request, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed on this machine")
    request.getfixturevalue("ray_session")
    from ray.util.state import list_tasks

    from crpbot.model.ensemble import train_ensemble

    config = TrainConfig(
        hidden_size=16, num_layers=1, head_hidden=16, batch_size=256, max_train_windows=2048, max_epochs=1
    )
    artifact = train_ensemble(
        config, "BTC", seeds=2, out_dir=tmp_path / "ens", use_gpu=True, gpu_share=0.5, log=lambda _: None
    )
    assert (artifact / "calibration.json").is_file()
    members = list_tasks(filters=[("func_or_class_name", "=", "_train_member")], detail=True, limit=10_000)
    assert any(_held(task.required_resources).get("GPU") == 0.5 for task in members)


@pytest.mark.ray
def test_pipeline_gpu_runs_three_coins_side_by_side(request, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed on this machine")
    request.getfixturevalue("ray_session")
    import json
    from datetime import datetime

    from crpbot.evaluation.gate import GateThresholds
    from crpbot.pipeline.run import run_pipeline
    from crpbot.ray_runtime import ClusterSettings

    result = run_pipeline(
        ["BTC", "ETH", "SOL"],
        budget="smoke",
        cluster=ClusterSettings(gpu=True),
        run_dir=tmp_path / "run",
        registry_root=tmp_path / "models",
        thresholds=GateThresholds(min_accuracy=0.0, max_calibration_error=1.0, quorum=1, net_pnl="report"),
        log=lambda _: None,
    )
    assert [o.failed for o in result.outcomes] == [False] * 3 and result.promoted
    coins = json.loads((tmp_path / "run" / "pipeline.json").read_text())["coins"]
    spans = [
        (datetime.fromisoformat(c["started_at"]), datetime.fromisoformat(c["finished_at"])) for c in coins
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans), "the coins did not overlap"


@pytest.mark.ray
def test_a_gpu_scoring_claim_scores_on_the_gpu_as_the_cpu_does(request, train_tiny_artifact):
    """A chain's scoring with --gpu: a Ray task holding half a GPU, the windows on the device."""
    pytest.importorskip("ray", reason="Ray is not installed on this machine")
    request.getfixturevalue("ray_session")
    import numpy as np

    from crpbot.model.predictor import Predictor, load_predictor
    from crpbot.model.scoring import ScoringClaim, scoring_claim
    from tests.tiny import TINY_GRU

    class OnDevice(torch.nn.Module):  # local: sent to the task by value
        def forward(self, windows: torch.Tensor, coins: torch.Tensor | None = None) -> torch.Tensor:
            return windows.new_full((len(windows),), float(windows.is_cuda))

    path, data = train_tiny_artifact(TINY_GRU, "BTC")
    predictor = load_predictor(path)
    ends = np.asarray(data.window_ends("val", TINY_GRU.lookback), dtype=np.int64)
    on_cpu = predictor.raw_proba_at(data.features, ends, device="cpu")
    with scoring_claim(ScoringClaim(cpus=1, gpus=0.5)):
        on_gpu = predictor.raw_proba_at(data.features, ends)
        where = Predictor(
            [OnDevice()], logit_offsets=[0.0], config_json=predictor.config_json, scaler={}
        ).raw_proba_at(data.features, ends[:3])
    np.testing.assert_allclose(where, 1 / (1 + np.exp(-1.0)), rtol=1e-6)  # the windows were on CUDA
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)

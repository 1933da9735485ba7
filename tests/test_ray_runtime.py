"""``--gpu`` on a cluster that has no GPU and cannot add one: a one-line error at once, never a wait."""

from __future__ import annotations

import pytest

from crpbot.errors import CrpbotError
from crpbot.ray_runtime import gpu_shortfall_error, names_configured_node_types


def test_only_a_cluster_config_names_node_types() -> None:
    assert not names_configured_node_types([])  # no autoscaler report at all
    assert not names_configured_node_types(["node_19495cbd2537df74877ee27741615ff2499f61207fbf885896a04561"])
    assert names_configured_node_types(["ray.head.default", "gpu_1x"])  # ray up cluster.yaml


def test_two_training_workers_on_one_gpu_are_refused_with_the_way_out() -> None:
    assert gpu_shortfall_error(2, 1.0).endswith(
        "2 needed (one per training worker: use --workers 1 or fewer)"
    )
    assert "use --workers" not in gpu_shortfall_error(1, 0.0)


@pytest.mark.ray
def test_gpu_without_gpus_fails_within_seconds_in_the_driver_and_in_a_task(ray_session, tmp_path) -> None:
    """In a Ray worker too: a pipeline's per-coin chain runs in one, and once waited 15 minutes there."""
    from crpbot.pipeline.run import run_pipeline
    from crpbot.ray_runtime import ClusterSettings, cluster_can_autoscale, require_gpus

    assert not cluster_can_autoscale()
    with pytest.raises(CrpbotError, match=r"offers 0 GPU\(s\) to Ray and has no autoscaler"):
        run_pipeline(["BTC"], cluster=ClusterSettings(gpu=True), run_dir=tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run").exists()

    @ray_session.remote(num_cpus=0)
    def in_a_worker() -> str:
        try:
            require_gpus(1)
        except CrpbotError as exc:
            return str(exc)
        return "no error"

    # a wait for an autoscaler would last GPU_WAIT_SECONDS (900 s) and end in another message
    assert "has no autoscaler" in ray_session.get(in_a_worker.remote(), timeout=120)

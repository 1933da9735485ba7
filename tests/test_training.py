"""The one training loop, run directly (no Ray) on the bundled real data."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch

from crpbot.config import TrainConfig
from crpbot.data.dataset import PreparedData, load_prepared
from crpbot.data.scaler import Scaler
from crpbot.data.targets import Target
from crpbot.data.windows import gather_windows
from crpbot.errors import CrpbotError
from crpbot.model.fit import epoch_shard, fit, positive_weight
from crpbot.model.inference import load_model, predict_proba, save_model_artifact

TINY = TrainConfig(
    hidden_size=8,
    num_layers=1,
    dropout=0.3,
    head_hidden=8,
    lookback=30,
    max_train_windows=512,
    batch_size=128,
    lr=3e-3,
    max_epochs=4,
    patience=10,
    seed=3,
)
TIMING = ("epoch_seconds", "samples_per_second")


@pytest.fixture(scope="module")
def data(sample_path):
    return load_prepared("BTC", sample_path("BTC"), TINY)


def _quiet(_: str) -> None:
    pass


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_same_seed_same_history_other_seed_differs(data) -> None:
    first = fit(TINY, data, log=_quiet)
    second = fit(TINY, data, log=_quiet)
    assert _without_timing(first.history) == _without_timing(second.history)
    _assert_same_state(first.best_state, second.best_state)
    other = fit(TINY.replace(seed=4), data, log=_quiet)
    assert _without_timing(other.history) != _without_timing(first.history)


def test_history_holds_the_reported_metrics(data) -> None:
    lines: list[str] = []
    reported: list[dict] = []
    result = fit(
        TINY.replace(max_epochs=2),
        data,
        log=lines.append,
        reporter=lambda metrics, state: reported.append(metrics),
    )
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert reported == result.history
    assert set(reported[0]) == {
        "epoch",
        "train_loss",
        "val_loss",
        "val_acc",
        "lr",
        "epoch_seconds",
        "samples_per_second",
    }
    assert 0.0 <= reported[0]["val_acc"] <= 1.0
    assert reported[0]["lr"] == pytest.approx(3e-3)
    assert "parameters" in lines[0]
    assert lines[1].startswith("Epoch 1/2: Train Loss=") and ", LR=0.003000" in lines[1]


def test_progress_within_an_epoch_goes_to_its_own_sink(data) -> None:
    """A terminal gets samples/s and an ETA within long epochs; the log keeps one line per epoch."""
    lines: list[str] = []
    progress: list[str] = []
    config = TINY.replace(max_epochs=2, batch_size=64)
    fit(config, data, log=lines.append, progress=progress.append, progress_every=0.0)
    assert sum(line.startswith("Epoch ") for line in lines) == 2 and not any("ETA" in line for line in lines)
    steps = config.max_train_windows // config.batch_size
    assert len(progress) == 2 * steps  # every step, at progress_every=0
    assert "epoch 1: 64/512 windows (12%)" in progress[0] and "samples/s, ETA" in progress[0]
    assert "epoch 2: 512/512 windows (100%)" in progress[-1] and progress[-1].endswith("ETA 0 s")


def test_resumed_run_equals_uninterrupted_run(data) -> None:
    """Stop after epoch 2, resume from the (serialised, weights-only) checkpoint: same end state."""
    snapshots: dict[int, bytes] = {}

    def keep(metrics: dict, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        snapshots[metrics["epoch"]] = buffer.getvalue()

    full = fit(TINY, data, reporter=keep, log=_quiet)
    state = torch.load(io.BytesIO(snapshots[2]), weights_only=True)
    resumed = fit(TINY, data, resume=state, log=_quiet)
    assert _without_timing(resumed.history) == _without_timing(full.history)
    assert resumed.best_epoch == full.best_epoch
    _assert_same_state(resumed.best_state, full.best_state)


def test_early_stopping_on_a_plateau(data) -> None:
    # A learning rate this small cannot move the val loss by min_delta: a plateau from epoch 1.
    plateau = TINY.replace(lr=1e-8, eta_min=0.0, min_delta=0.01, patience=2, max_epochs=20)
    result = fit(plateau, data, log=_quiet)
    assert result.stopped_early
    assert result.best_epoch == 1
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


def test_epoch_shards_are_disjoint_equal_and_fresh_each_epoch() -> None:
    ends = np.arange(100, 1101, dtype=np.int64)  # 1001 windows
    config = TINY.replace(max_train_windows=501)
    shards = [epoch_shard(ends, config, epoch=1, rank=rank, world_size=2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 250  # 501 capped, trimmed to a multiple of 2
    assert not set(shards[0]) & set(shards[1])
    single = epoch_shard(ends, config, epoch=1, rank=0, world_size=1)
    assert len(single) == 501
    assert set(single[:500]) == set(shards[0]) | set(shards[1])
    assert not np.array_equal(single, epoch_shard(ends, config, epoch=2, rank=0, world_size=1))
    assert np.array_equal(single, epoch_shard(ends, config, epoch=1, rank=0, world_size=1))


def test_predict_proba_is_the_sigmoid_of_the_logits(data) -> None:
    result = fit(TINY.replace(max_epochs=1), data, log=_quiet)
    from crpbot.model.network import build_model

    model = build_model(TINY, data.features.shape[1])
    model.load_state_dict(result.best_state)
    ends, probs = predict_proba(model, data, "val", TINY.lookback, batch_size=1000)
    assert np.array_equal(ends, data.window_ends("val", TINY.lookback))
    assert probs.shape == ends.shape and ((probs > 0) & (probs < 1)).all()
    with torch.no_grad():
        logits = model.eval()(
            gather_windows(torch.from_numpy(data.features), torch.from_numpy(ends[:50]), TINY.lookback)
        )
    np.testing.assert_allclose(probs[:50], torch.sigmoid(logits).numpy(), rtol=1e-6)
    # with the prior correction: exactly sigmoid(z - log w)
    offset = math.log(positive_weight(data, TINY.lookback))
    assert abs(offset) > 1e-3
    _, corrected = predict_proba(model, data, "val", TINY.lookback, logit_offset=offset)
    np.testing.assert_allclose(corrected[:50], torch.sigmoid(logits - offset).numpy(), rtol=1e-5)


def _imbalanced_data(up_rate: float = 0.7, n: int = 6000, seed: int = 0) -> PreparedData:
    """Synthetic prepared data whose labels are pure noise with P(up) = ``up_rate``."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, 4)).astype(np.float32)
    labels = (rng.uniform(size=n) < up_rate).astype(np.float32)
    labels[-1] = np.nan  # the last row's label lies past the end
    purge = TINY.lookback + 1
    train_end, val_start, val_end = 4000, 4000 + purge, 5000
    return PreparedData(
        coin="SYN-USD",
        timestamps=np.arange(n, dtype=np.int64) * 60_000_000_000,
        features=features,
        labels=labels,
        forward_returns=np.where(labels == 1, 0.001, -0.001),
        segment_ids=np.zeros(n, dtype=np.int32),
        split_bounds={"train": (0, train_end), "val": (val_start, val_end), "test": (val_end + purge, n)},
        horizon=1,
        purge=purge,
        scaler=Scaler(mean_=np.zeros(4), scale_=np.ones(4)),
        feature_names=("a", "b", "c", "d"),
        fingerprint="0" * 64,
        target=Target(horizon=1),
    )


def test_prior_correction_undoes_the_pos_weight_shift(tmp_path) -> None:
    """70% up, features are noise: the weighted loss drives sigmoid(logits) to ~0.5; corrected is ~0.7."""
    data = _imbalanced_data()
    config = TINY.replace(max_epochs=3, max_train_windows=2048, dropout=0.0)
    train_ends = data.window_ends("train", config.lookback)
    up = data.labels[train_ends].mean()
    assert positive_weight(data, config.lookback) == pytest.approx((1 - up) / up)
    offset = math.log(positive_weight(data, config.lookback))
    result = fit(config, data, log=_quiet)
    model = load_model(
        save_model_artifact(
            tmp_path / "model",
            model_state=result.best_state,
            config=config,
            data=data,
            history=result.history,
            best_epoch=result.best_epoch,
            input_path="synthetic",
        )
    )[0]
    val_up = float(data.labels[data.window_ends("val", config.lookback)].mean())
    _, plain = predict_proba(model, data, "val", config.lookback)
    _, corrected = predict_proba(model, data, "val", config.lookback, logit_offset=offset)
    assert abs(plain.mean() - 0.5) < 0.05 and abs(plain.mean() - val_up) > 0.15  # the bias
    assert abs(corrected.mean() - val_up) < 0.05  # gone
    # fit's val accuracy calls "up" as the corrected probability does: ~always up here, so ~val_up
    val_labels = data.labels[data.window_ends("val", config.lookback)]
    best = result.history[result.best_epoch - 1]
    assert best["val_acc"] == pytest.approx(np.mean((corrected >= 0.5) == (val_labels == 1)), abs=1e-3)
    assert abs(best["val_acc"] - val_up) < 0.05


def test_artifact_round_trip(data, sample_path, tmp_path) -> None:
    result = fit(TINY.replace(max_epochs=1), data, log=_quiet)
    out = save_model_artifact(
        tmp_path / "model",
        model_state=result.best_state,
        config=TINY,
        data=data,
        history=result.history,
        best_epoch=result.best_epoch,
        input_path=sample_path("BTC"),
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "familiarity.json",
        "features.json",
        "history.json",
        "manifest.json",
        "model.safetensors",
        "scaler.json",
    ]
    model, config_json = load_model(out)
    assert config_json["kind"] == "model" and config_json["coin"] == "BTC-USD"
    assert config_json["train_config"] == TINY.to_dict()
    assert config_json["input_size"] == data.features.shape[1]
    assert config_json["best_epoch"] == 1
    assert config_json["param_count"] == sum(p.numel() for p in model.parameters())
    pos_weight = positive_weight(data, TINY.lookback)
    assert config_json["pos_weight"] == pytest.approx(pos_weight, rel=1e-12)
    assert config_json["logit_offset"] == pytest.approx(math.log(pos_weight), rel=1e-12)
    assert json.loads((out / "manifest.json").read_text())["data_fingerprint"] == data.fingerprint
    _assert_same_state(model.state_dict(), result.best_state)
    assert not model.training


def test_a_tampered_artifact_is_refused(data, sample_path, tmp_path) -> None:
    result = fit(TINY.replace(max_epochs=1), data, log=_quiet)
    out = save_model_artifact(
        tmp_path / "model",
        model_state=result.best_state,
        config=TINY,
        data=data,
        history=result.history,
        best_epoch=1,
        input_path=sample_path("BTC"),
    )
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CrpbotError, match="model.safetensors"):
        load_model(out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_epoch_runs(data) -> None:
    result = fit(TINY.replace(max_epochs=2, dropout=0.0), data, device="cuda", log=_quiet)
    assert all(np.isfinite(row["val_loss"]) for row in result.history)
    assert all(tensor.device.type == "cpu" for tensor in result.best_state.values())

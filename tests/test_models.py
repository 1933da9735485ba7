"""The recurrent classifier: shapes, logits out, parameter count, config wiring."""

from __future__ import annotations

import pytest
import torch

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.model.network import RecurrentClassifier, build_model, param_count


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_one_logit_per_window(cell: str, bidirectional: bool) -> None:
    model = RecurrentClassifier(
        5, cell=cell, hidden_size=8, num_layers=2, dropout=0.1, bidirectional=bidirectional, head_hidden=4
    )
    logits = model(torch.randn(7, 12, 5))
    assert logits.shape == (7,)
    assert logits.dtype == torch.float32


def test_output_is_a_logit_not_a_probability() -> None:
    model = RecurrentClassifier(3, hidden_size=4, num_layers=1, dropout=0.0, head_hidden=2).eval()
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(3.0)
    # A sigmoid inside the model would turn 3.0 into 0.95 (and a second one in the loss would follow).
    assert torch.equal(model(torch.randn(4, 6, 3)), torch.full((4,), 3.0))


def test_parameter_count_matches_the_architecture() -> None:
    model = RecurrentClassifier(
        3, cell="lstm", hidden_size=4, num_layers=1, dropout=0.0, bidirectional=False, head_hidden=2
    )
    lstm = 4 * (4 * (3 + 4) + 4 + 4)  # four gates: input + recurrent weights, two biases
    head = (4 * 2 + 2) + (2 * 1 + 1)
    assert param_count(model) == lstm + head


def test_whole_window_reaches_the_output() -> None:
    """Perturbing the first bar of the window changes the logit (the summary is not the last step only)."""
    torch.manual_seed(0)
    model = RecurrentClassifier(3, hidden_size=8, num_layers=1, dropout=0.0, head_hidden=4).eval()
    windows = torch.randn(2, 10, 3)
    changed = windows.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(windows), model(changed))


def test_skip_path_hands_the_last_bar_to_the_head() -> None:
    """With the encoder silenced (zero weights: its summary is 0 for any input), only the skip path
    can move the logit, and only through the last bar."""
    torch.manual_seed(0)
    windows = torch.randn(4, 10, 3)
    earlier, last = windows.clone(), windows.clone()
    earlier[:, 0] += 1.0
    last[:, -1] += 1.0
    for skip in (False, True):
        model = build_model(TrainConfig(hidden_size=4, num_layers=1, head_hidden=4, skip_last_bar=skip), 3)
        assert model.head[0].in_features == 8 + (3 if skip else 0)
        with torch.no_grad():
            for parameter in model.encoder.parameters():
                parameter.zero_()
            model.eval()
            assert torch.allclose(model(windows), model(earlier))
            assert torch.allclose(model(windows), model(last)) is not skip


def test_build_model_follows_the_config() -> None:
    config = TrainConfig(
        cell="gru", hidden_size=6, num_layers=2, dropout=0.2, bidirectional=False, head_hidden=5
    )
    model = build_model(config, input_size=9)
    assert isinstance(model.encoder, torch.nn.GRU)
    assert (model.encoder.input_size, model.encoder.hidden_size, model.encoder.num_layers) == (9, 6, 2)
    assert not model.encoder.bidirectional
    assert model.head[0].out_features == 5


def test_bad_architecture_is_a_clear_error() -> None:
    with pytest.raises(CrpbotError, match="cell"):
        RecurrentClassifier(3, cell="transformer")
    with pytest.raises(CrpbotError, match="input_size"):
        RecurrentClassifier(0)

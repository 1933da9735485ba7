"""The recurrent direction classifier: an LSTM or GRU encoder, a small MLP head, logits out.

Logits, not probabilities, because the loss (``BCEWithLogitsLoss``) applies the sigmoid
itself in a numerically stable way; a sigmoid inside the model would be applied twice.
Probabilities exist only at inference (``crpbot.model.inference.predict_proba``).

``skip_last_bar`` also hands the window's last bar to the head: one-line rules on the latest
bar (the 15-minute reversal) beat small recurrent models on unseen data, and the skip puts such
a rule one linear layer from the output instead of behind the recurrence.
"""

from __future__ import annotations

import torch
from torch import nn

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError


class RecurrentClassifier(nn.Module):
    """Windows ``[B, L, F]`` of standardised features -> one logit per window ``[B]``.

    A global model (``num_coins`` > 0, ``coin_embedding`` > 0) also takes each window's coin
    index and appends that coin's learned embedding to every bar of the window, so the
    encoder can treat coins differently where they behave differently.
    """

    def __init__(
        self,
        input_size: int,
        *,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 3,
        dropout: float = 0.35,
        bidirectional: bool = True,
        head_hidden: int = 64,
        skip_last_bar: bool = False,
        num_coins: int = 0,
        coin_embedding: int = 0,
    ) -> None:
        super().__init__()
        if input_size < 1:
            raise CrpbotError(f"model input_size must be >= 1, got {input_size}")
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if recurrent is None:
            raise CrpbotError(f"unknown model cell {cell!r}: expected lstm or gru")
        self.directions = 2 if bidirectional else 1
        self.skip_last_bar = skip_last_bar
        self.coin_embedding = (
            nn.Embedding(num_coins, coin_embedding) if num_coins > 0 and coin_embedding > 0 else None
        )
        if self.coin_embedding is not None:
            input_size += coin_embedding
        # nn.LSTM applies dropout between stacked layers only; with one layer it would only warn.
        self.encoder = recurrent(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.head = nn.Sequential(
            nn.Linear(self.directions * hidden_size + (input_size if skip_last_bar else 0), head_hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, 1),
        )

    def forward(self, windows: torch.Tensor, coin_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.coin_embedding is not None:
            if coin_ids is None:
                raise CrpbotError("this global model needs the coin of every window")
            coins = self.coin_embedding(coin_ids).to(windows.dtype)
            windows = torch.cat([windows, coins[:, None, :].expand(-1, windows.shape[1], -1)], dim=-1)
        _, final = self.encoder(windows)
        hidden = final[0] if isinstance(final, tuple) else final  # LSTM returns (h_n, c_n)
        # The last layer's final state of each direction: the backward direction's final state
        # has read the whole window (its last output step has read only one bar).
        summary = torch.cat(list(hidden[-self.directions :]), dim=-1)
        if self.skip_last_bar:  # the last bar's features straight to the head, past the recurrence
            summary = torch.cat([summary, windows[:, -1, :].to(summary.dtype)], dim=-1)
        return self.head(summary).squeeze(-1)


def build_model(config: TrainConfig, input_size: int) -> RecurrentClassifier:
    """The model a training config describes."""
    return RecurrentClassifier(
        input_size,
        cell=config.cell,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        bidirectional=config.bidirectional,
        head_hidden=config.head_hidden,
        skip_last_bar=config.skip_last_bar,
        num_coins=len(config.coins),
        coin_embedding=config.coin_embedding,
    )


def param_count(model: nn.Module) -> int:
    """Number of trainable parameters (printed at the start of training)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

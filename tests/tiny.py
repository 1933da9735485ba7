"""The smallest real model the tests train: a 1-layer GRU of 8 units, seconds on one CPU."""

from crpbot.config import TrainConfig

TINY_GRU = TrainConfig(
    cell="gru",
    hidden_size=8,
    num_layers=1,
    bidirectional=False,
    head_hidden=8,
    dropout=0.0,
    lookback=20,
    horizon=15,
    max_train_windows=512,
    batch_size=128,
    max_epochs=1,
    patience=1,
    t0=1,
    seed=0,
)

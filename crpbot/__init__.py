"""crpbot: Ray-distributed training, search, ensembling and gating of crypto direction models."""

__version__ = "0.1.0"

"""Integrations: crpbot meeting the tools its users already run (MLflow tracking, a freqtrade
strategy). The top of the layers: they may import any stage, and no stage imports them."""

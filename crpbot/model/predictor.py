"""One loader for every model artifact: a single network or a seed ensemble, behind one interface.

:func:`load_predictor` opens a verified single-model or ensemble artifact as a
:class:`Predictor` with the same ``predict_proba(data, split)``, so evaluation, the pipeline
and serving treat both alike. Each member's probabilities are prior-corrected with its stored
``logit_offset`` (the shift its weighted loss put on the logits; see ``crpbot.model.fit``),
then averaged, then divided by the ensemble's temperature (fitted on validation when the
ensemble was built).

A global model (one network for several coins) is opened for one of its coins
(``load_predictor(path, coin=...)``): the predictor then carries that coin's scaler, input
file and data fingerprint, and feeds the network that coin's index, so evaluation and serving
treat it like that coin's own model. A coin it was not trained on is refused.

Each predictor also says which windows are familiar (:meth:`Predictor.familiar_at`, aligned with
:meth:`Predictor.proba_at`): inside what the model saw in training, by the artifact's
familiarity.json (``crpbot.model.familiarity``). An artifact from before it has none: ``None``,
"unknown", never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crpbot.config import TrainConfig
from crpbot.data.targets import Target, target_from_record
from crpbot.errors import CrpbotError
from crpbot.model.familiarity import FAMILIARITY_FILE, Familiarity
from crpbot.model.predictions import Predictions

CALIBRATION_FILE = "calibration.json"


class Predictor:
    """Averaged, temperature-scaled P(up) of one or more models sharing one data recipe.

    ``logit_offsets`` holds one prior correction per model (its artifact's ``logit_offset``),
    subtracted from that model's logits before the sigmoid, the average and the temperature.
    """

    def __init__(
        self,
        models: Sequence[Any],
        *,
        logit_offsets: Sequence[float],
        config_json: dict[str, Any],
        scaler: dict[str, Any],
        temperature: float = 1.0,
        path: Path | None = None,
        coin_index: int | None = None,
        familiarity: Familiarity | None = None,
    ) -> None:
        if not models:
            raise CrpbotError("a predictor needs at least one model")
        if len(logit_offsets) != len(models):
            raise CrpbotError(
                f"a predictor needs one logit offset per model: {len(logit_offsets)} offsets "
                f"for {len(models)} models"
            )
        self.models = list(models)
        self.logit_offsets = [float(offset) for offset in logit_offsets]
        self.config_json = config_json
        self.scaler = scaler
        self.temperature = float(temperature)
        self.path = path
        self.coin_index = coin_index
        self.familiarity = familiarity  # None: the artifact predates familiarity.json

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config_json["train_config"], source="config.json")

    @property
    def target(self) -> Target:
        """What P(label = 1) means: the recorded target (defaults as trained), else the config's
        (an artifact from before targets existed: direction)."""
        recorded = self.config_json.get("target")
        return target_from_record(recorded) if recorded else Target.from_config(self.train_config)

    @property
    def lookback(self) -> int:
        return self.train_config.lookback

    @property
    def coin(self) -> str:
        return str(self.config_json.get("coin", ""))

    def check_inputs(self, data: Any) -> None:
        """Refuse data whose columns are not the ones the model was trained on (context coins included):
        a model fed other columns would still output numbers, just meaningless ones."""
        needed = list(self.config_json.get("context", {}).get("coins", []))
        given = list(getattr(data, "context", {}))
        if needed != given:
            raise CrpbotError(
                f"the model {self.path or ''} needs context bars of {', '.join(needed) or 'no coin'}, "
                f"its input has {', '.join(given) or 'none'}"
            )
        expected = self.config_json.get("feature_names")
        if expected is not None and list(data.feature_names) != list(expected):
            raise CrpbotError("the input's feature columns differ from the model's feature_names")

    def raw_proba(
        self, data: Any, split: str, device: str | None = None, *, labelled: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Window ends of ``split`` and the members' mean prior-corrected P(up), before the temperature."""
        self.check_inputs(data)
        ends = np.asarray(data.window_ends(split, self.lookback, labelled=labelled), dtype=np.int64)
        return ends, self.raw_proba_at(data.features, ends, device)

    def raw_proba_at(self, features: np.ndarray, ends: np.ndarray, device: str | None = None) -> np.ndarray:
        """The members' mean prior-corrected P(up) of the windows ending at rows ``ends`` of scaled
        ``features``: evaluation and live prediction both score through here, so they agree.
        ``device=None``: where ``crpbot.model.scoring`` places it (a chain's claim, or this process's
        own CPUs and GPU)."""
        from crpbot.model.scoring import mean_proba

        return mean_proba(
            self.models,
            self.logit_offsets,
            features,
            ends,
            self.lookback,
            coin_index=self.coin_index,
            device=device,
        )

    def familiar_at(self, features: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
        """Per window ending at rows ``ends`` of scaled ``features``: True when it lies inside what
        the model saw in training (its last row within the validation-chosen distance), aligned with
        :meth:`proba_at`; ``None`` (unknown) for an artifact without familiarity.json. Reads only
        rows ``ends``, whose features are computed from bars up to each end."""
        if self.familiarity is None:
            return None
        return self.familiarity.familiar(np.asarray(features)[np.asarray(ends, dtype=np.int64)])

    def proba_at(self, features: np.ndarray, ends: np.ndarray, device: str | None = None) -> np.ndarray:
        """Calibrated P(up) of the windows ending at rows ``ends`` of scaled ``features``."""
        from crpbot.model.calibration import apply_temperature

        return apply_temperature(self.raw_proba_at(features, ends, device), self.temperature)

    def predict_proba(
        self, data: Any, split: str, device: str | None = None, *, labelled: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Window ends of ``split`` and calibrated P(up)."""
        from crpbot.model.calibration import apply_temperature

        ends, probs = self.raw_proba(data, split, device, labelled=labelled)
        return ends, apply_temperature(probs, self.temperature)

    def predictions(
        self, data: Any, split: str, device: str | None = None, *, labelled: bool = True
    ) -> Predictions:
        """``predict_proba`` packed with the split's name, timestamps, labels (NaN on ties) and returns."""
        ends = np.asarray(data.window_ends(split, self.lookback, labelled=labelled), dtype=np.int64)
        return self.predictions_at(data, split, ends, device)

    def predictions_at(self, data: Any, split: str, ends: np.ndarray, device: str = "cpu") -> Predictions:
        """:meth:`predictions` of the windows ending at rows ``ends`` of ``split``, rows the caller read
        (evaluation reads its test rows once, for the baselines and the model alike)."""
        self.check_inputs(data)
        ends = np.asarray(ends, dtype=np.int64)
        probs = self.proba_at(data.features, ends, device)
        return Predictions(
            split=split,
            timestamps=np.asarray(data.timestamps[ends], dtype=np.int64),
            probs=probs,
            labels=np.asarray(data.labels[ends], dtype=np.float64),
            forward_returns=np.asarray(data.forward_returns[ends], dtype=np.float64),
        )


def load_predictor(path: str | Path, coin: str | None = None) -> Predictor:
    """A verified model or ensemble artifact as a :class:`Predictor`.

    ``coin`` is required for a global model (the coin to score, one it was trained on); for a
    one-coin model it is optional and must be the model's coin.
    """
    from crpbot.model.inference import load_model
    from crpbot.registry.artifact import read_artifact_json, verify_artifact

    path = Path(path)
    verify_artifact(path)
    config_json = read_artifact_json(path, "config.json")
    kind = config_json.get("kind") if isinstance(config_json, dict) else None
    scaler = read_artifact_json(path, "scaler.json")
    familiarity = read_artifact_json(path, FAMILIARITY_FILE) if (path / FAMILIARITY_FILE).is_file() else None
    temperature = 1.0
    if (path / CALIBRATION_FILE).is_file():
        temperature = float(read_artifact_json(path, CALIBRATION_FILE)["temperature"])
    if kind == "model":
        config_json, scaler, coin_index = _for_coin(config_json, scaler, coin, path)
        model, _ = load_model(path)
        fitted = _familiarity_of(familiarity, config_json, path)
        return Predictor(
            [model],
            logit_offsets=[stored_logit_offset(config_json, path)],
            config_json=config_json,
            scaler=scaler,
            temperature=temperature,
            path=path,
            coin_index=coin_index,
            familiarity=fitted,
        )
    if kind == "ensemble":
        members = config_json.get("members")
        if not isinstance(members, list) or not members:
            raise CrpbotError(f"ensemble artifact {path}: config.json lists no members")
        config_json, scaler, coin_index = _for_coin(config_json, scaler, coin, path)
        fitted = _familiarity_of(familiarity, config_json, path)
        loaded = [load_model(path / member) for member in members]
        offsets = [
            stored_logit_offset(member_json, path / member)
            for member, (_, member_json) in zip(members, loaded, strict=True)
        ]
        return Predictor(
            [model for model, _ in loaded],
            logit_offsets=offsets,
            config_json=config_json,
            scaler=scaler,
            temperature=temperature,
            path=path,
            coin_index=coin_index,
            familiarity=fitted,
        )
    raise CrpbotError(f"artifact {path}: config.json kind {kind!r} is neither 'model' nor 'ensemble'")


def _for_coin(
    config_json: dict[str, Any], scaler: dict[str, Any], coin: str | None, path: Path
) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """config.json and scaler of ``coin`` (and its index) for a global model; a one-coin model checked."""
    from crpbot.data.bars import normalize_coin

    coins = config_json.get("coins")
    if coins is None:
        if coin is not None and config_json.get("coin") not in (None, normalize_coin(coin)):
            raise CrpbotError(
                f"model {path} was trained for {config_json.get('coin')}, not {normalize_coin(coin)}"
            )
        return config_json, scaler, None
    if coin is None:
        raise CrpbotError(f"model {path} is a global model of {', '.join(coins)}: name the coin to score")
    coin = normalize_coin(coin)
    if coin not in coins:
        raise CrpbotError(f"model {path} was not trained on {coin}: it covers {', '.join(coins)}")
    bound = {
        **config_json,
        "coin": coin,
        "input_path": config_json["input_paths"][coin],
        "data_fingerprint": config_json["data_fingerprints"][coin],
    }
    return bound, scaler["coins"][coin], coins.index(coin)


def _familiarity_of(record: Any, config_json: dict[str, Any], path: Path) -> Familiarity | None:
    """The artifact's familiarity (a global model's: the bound coin's), checked to fit its features;
    ``None`` when the artifact has no familiarity.json."""
    if record is None:
        return None
    if isinstance(record, dict) and "coins" in record:
        record = record["coins"].get(config_json["coin"]) if isinstance(record["coins"], dict) else None
    fitted = Familiarity.from_dict(record)
    if len(fitted.location) != int(config_json["input_size"]):
        raise CrpbotError(
            f"artifact {path}: familiarity.json covers {len(fitted.location)} features, "
            f"the model {config_json['input_size']}"
        )
    return fitted


def stored_logit_offset(config_json: dict[str, Any], path: str | Path) -> float:
    """A model artifact's ``logit_offset`` (log of its loss's pos_weight); missing is an error, not 0.

    Every model artifact written by ``save_model_artifact`` has it; one without it would give
    silently shifted probabilities.
    """
    offset = config_json.get("logit_offset")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not np.isfinite(offset):
        found = "has none" if offset is None else f"has {offset!r}"
        raise CrpbotError(
            f"model artifact {path}: config.json needs a finite logit_offset "
            f"(log of the loss's pos_weight), {found}; re-save it with this version"
        )
    return float(offset)

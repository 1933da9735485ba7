"""Model stage: the network and the GBDT family (``fit_model`` dispatches), the one ``fit`` loop,
Ray Train around it, seed ensembles and their temperature, and one :class:`Predictor` for every
saved model."""

from crpbot import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "RecurrentClassifier": "network",
        "build_model": "network",
        "fit": "fit",
        "FitResult": "fit",
        "fit_model": "family",
        "predict_proba": "inference",
        "save_model_artifact": "inference",
        "load_model": "inference",
        "train": "trainer",
        "train_ensemble": "ensemble",
        "build_ensemble": "ensemble",
        "TemperatureScaler": "calibration",
        "Predictor": "predictor",
        "load_predictor": "predictor",
        "Predictions": "predictions",
        "LiveModel": "serving",
        "guard_selection": "predictions",
    },
)

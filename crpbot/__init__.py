"""crpbot: Ray-distributed training, search, ensembling and gating of crypto direction models.

One subpackage per stage, imported only downward (``make lint`` enforces it)::

    cli -> pipeline -> search | evaluation -> model -> registry -> data | doctor
        -> config | ray_runtime -> errors
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A package's public API as ``{name: module}``, imported on first use (PEP 562).

    Why lazy: a stage's modules pull in torch, Ray or pandas, and ``crpbot --help`` or a
    registry listing should not pay for them; ``from crpbot.data import load_bars`` still works.
    Returns ``(__getattr__, __all__)`` for the package to assign.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__, sorted(exports)

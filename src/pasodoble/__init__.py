"""PasoDoble: dual-play reinforcement learning of LLMs (Proposer vs Solver, both trained with GRPO).

The public Python API is what ``__all__`` lists (docs/python-api.md)::

    import pasodoble as pd

    cfg = pd.load_config("configs/toy.yaml", overrides=["run.max_steps=2"])
    result = pd.train(cfg)

The names load on first use (PEP 562), so ``import pasodoble`` imports neither torch nor transformers.
``pd.train`` and ``pd.export`` are functions; the modules of the same names are
``pasodoble.train`` and ``pasodoble.export`` in ``sys.modules`` (``from pasodoble.train import Trainer``
reaches them; ``import pasodoble.train as m`` gives the function, as ``pd.train`` does).
"""

from __future__ import annotations

import importlib
import sys
import types

TYPE_CHECKING = False  # typing itself is not imported (it is most of this module's import time)

__version__ = "0.2.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Config": "pasodoble.config",
    "ConfigError": "pasodoble.errors",
    "PasoDobleError": "pasodoble.errors",
    "EvalResult": "pasodoble.api",
    "ExportResult": "pasodoble.api",
    "TrainResult": "pasodoble.api",
    "UserError": "pasodoble.errors",
    "Verdict": "pasodoble.verify",
    "evaluate": "pasodoble.api",
    "export": "pasodoble.api",
    "grade": "pasodoble.api",
    "load_config": "pasodoble.api",
    "resume": "pasodoble.api",
    "train": "pasodoble.api",
    "validate": "pasodoble.api",
}

__all__ = [
    "Config",
    "ConfigError",
    "EvalResult",
    "ExportResult",
    "PasoDobleError",
    "TrainResult",
    "UserError",
    "Verdict",
    "evaluate",
    "export",
    "grade",
    "load_config",
    "resume",
    "train",
    "validate",
]

if TYPE_CHECKING:
    from typing import Any

    from pasodoble.api import (
        EvalResult,
        ExportResult,
        TrainResult,
        evaluate,
        export,
        grade,
        load_config,
        resume,
        train,
        validate,
    )
    from pasodoble.config import Config, ConfigError
    from pasodoble.errors import UserError
    from pasodoble.verify import Verdict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pasodoble' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps the API's ``train`` and ``export`` functions when their namesake modules are imported:
    Python's import system binds a submodule as an attribute of its package (``import pasodoble.train``
    would replace ``pd.train`` with the module); the modules stay reachable in ``sys.modules``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

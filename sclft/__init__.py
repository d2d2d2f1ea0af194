"""sclft: neural-collapse-guided transfer learning (linear probe, Layer FT, SCL-FT, full FT).

The public names load on first use (PEP 562), so ``import sclft`` and the CLI's ``--help`` import no torch.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "nc": None, "wrap": "model", "TransferModel": "model", "probe": "probe", "ProbeResult": "probe",
    "train": "train", "load": "run_folder", "TrainConfig": "config", "Backbone": "backbones",
    "create_backbone": "backbones", "list_backbones": "backbones", "list_strategies": "strategies",
    "WeightsUnavailableError": "_hub", "rank": "rank",
}
# functions named like their modules: importing the module must not replace the function on the package
_SHADOWING = {"probe", "train", "rank"}

__all__ = [
    "nc", "wrap", "probe", "ProbeResult", "train", "load", "TrainConfig", "TransferModel", "Backbone",
    "create_backbone", "list_backbones", "list_strategies", "WeightsUnavailableError", "rank", "__version__",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name] or name}", __name__)
    value = module if _EXPORTS[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # the import system binds ``sclft.train`` (the module) on the package when it is first imported;
        # the package's ``train`` is the function
        if name in _SHADOWING and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

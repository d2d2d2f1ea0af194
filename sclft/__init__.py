"""sclft: neural-collapse-guided transfer learning (linear probe, Layer FT, SCL-FT, full FT).

The public names load on first use (PEP 562), so ``import sclft`` and the CLI's ``--help`` import no torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "nc": None, "wrap": "model", "TransferModel": "model", "probe": "probing", "ProbeResult": "probing",
    "train": "training", "load": "run_folder", "TrainConfig": "config", "Backbone": "backbones",
    "create_backbone": "backbones", "list_backbones": "backbones", "list_strategies": "strategies",
    "WeightsUnavailableError": "_hub", "rank": "ranking",
}
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


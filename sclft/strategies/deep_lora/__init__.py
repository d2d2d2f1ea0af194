"""Deep LoRA: compressed deep factorised updates (config: :class:`DeepLoRAConfig`; layer: ``DeepLoRALayer``)."""

import importlib

from .config import DEFAULT_TARGETS, DeepLoRAConfig  # noqa: F401  (torch-free)


def __getattr__(name: str):
    """The model side (``model.py``, ``layer.py``; imports torch) loads on first access."""
    for module in (".model", ".layer"):
        mod = importlib.import_module(module, __name__)
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

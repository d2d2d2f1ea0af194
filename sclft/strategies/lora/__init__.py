"""LoRA through Hugging Face peft: adapters in the chosen blocks, saved as a peft adapter beside our model."""

import importlib

from .config import DEFAULT_TARGETS, LoRAConfig  # noqa: F401  (torch-free)


def __getattr__(name: str):
    """The model side (``model.py``: ``LoRA``, ``save_adapter``, ``load_adapter``; imports torch) loads on first access."""
    model = importlib.import_module(".model", __name__)
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

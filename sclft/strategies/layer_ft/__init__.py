"""Layer FT: fine-tune one block (and the head); prefix and suffix stay frozen."""

import importlib

from .config import LayerFTConfig  # noqa: F401  (torch-free)


def __getattr__(name: str):
    """The model side (``model.py``, imports torch) loads on first access."""
    model = importlib.import_module(".model", __name__)
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

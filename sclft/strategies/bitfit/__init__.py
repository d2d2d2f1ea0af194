"""BitFit: train only the backbone's bias terms (optionally norm scales) and the head."""

import importlib

from .config import BitFitConfig  # noqa: F401  (torch-free)


def __getattr__(name: str):
    """The model side (``model.py``, imports torch) loads on first access."""
    model = importlib.import_module(".model", __name__)
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

"""BitFit: train only the backbone's bias terms (optionally norm scales) and the head."""

from .._registry import lazy_model_side
from .config import BitFitConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__)

"""Layer FT: fine-tune one block (and the head); prefix and suffix stay frozen."""

from .._registry import lazy_model_side
from .config import LayerFTConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__)

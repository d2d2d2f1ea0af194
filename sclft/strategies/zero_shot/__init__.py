"""CLIP zero-shot: the head is built from text prompts of the class names; nothing trains."""

from .._registry import lazy_model_side
from .config import ZeroShotConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__)

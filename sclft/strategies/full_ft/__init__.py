"""Full fine-tuning: every backbone parameter and the head train."""

from .._registry import lazy_model_side
from .config import FullFTConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__)

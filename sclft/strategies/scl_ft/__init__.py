"""SCL-FT: Layer FT plus a parameter-free skip from the tuned block to the penultimate feature."""

from .._registry import lazy_model_side
from .config import SCLFTConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__)

"""Linear probe: frozen backbone → penultimate feature → new linear head."""

from .._registry import lazy_model_side
from .config import LinearProbeConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__)

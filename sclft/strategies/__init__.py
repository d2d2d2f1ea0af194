"""Transfer strategies, one module each, registered by name."""

from . import full_ft, layer_ft, linear_probe, scl_ft, zero_shot  # noqa: F401  (register)
from ._registry import get_strategy, list_strategies, register_strategy
from .base import BlockStrategy, Strategy

__all__ = ["Strategy", "BlockStrategy", "get_strategy", "list_strategies", "register_strategy"]

"""Transfer strategies, one package each: ``<name>/config.py`` (options and description, no torch) and
``<name>/model.py`` (the model side, imported on first :func:`get_strategy`).

Importing this package imports no torch. Bench tables order the methods by ``_registry.TABLE_ORDER``.
"""

from . import bitfit, deep_lora, full_ft, layer_ft, linear_probe, lora, scl_ft, zero_shot  # noqa: F401  (register the configs)
from ._registry import (
    collect_strategy_options,
    default_block_strategy,
    get_strategy,
    get_strategy_config,
    list_strategies,
    option_owners,
    register_strategy,
    strategy_config,
    strategy_rank,
)
from .config import CACHE_SCOPES, StrategyConfig

__all__ = [
    "Strategy", "BlockStrategy", "StrategyConfig", "CACHE_SCOPES", "get_strategy", "get_strategy_config",
    "list_strategies", "register_strategy", "strategy_config", "strategy_rank", "default_block_strategy",
    "option_owners", "collect_strategy_options",
]


def __getattr__(name: str):
    if name in ("Strategy", "BlockStrategy"):  # the model-side base classes import torch
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Strategy registry: name → config class (torch-free); the model class is imported on first use."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from .config import CACHE_SCOPES, StrategyConfig

_CONFIGS: dict[str, type[StrategyConfig]] = {}
_MODELS: dict[str, type] = {}
# the order of methods in bench tables (declared: not the order in which the packages happen to be imported);
# a strategy not listed follows them, in registration order
TABLE_ORDER = ("linear_probe", "zero_shot", "layer_ft", "scl_ft", "bitfit", "lora", "deep_lora", "full_ft")
DEFAULT_BLOCK_STRATEGY = "scl_ft"  # tunes the block when a run's own strategy tunes none (selection's trial rule)


def register_strategy(config_cls: type[StrategyConfig]) -> type[StrategyConfig]:
    """Class decorator for a :class:`StrategyConfig` dataclass (put it above ``@dataclass``)."""
    if not (isinstance(config_cls, type) and issubclass(config_cls, StrategyConfig)
            and dataclasses.is_dataclass(config_cls)):
        raise TypeError(f"register_strategy takes a StrategyConfig dataclass, got {config_cls!r}")
    name = config_cls.name
    if not name or name in _CONFIGS:
        raise UsageError(f"strategy name {name!r} is empty or already registered")
    if not config_cls.model_class:
        raise UsageError(f"strategy {name!r}: model_class must name its Strategy class as 'module:Class'")
    if config_cls.cache_scope not in CACHE_SCOPES:
        raise UsageError(f"strategy {name!r}: cache_scope must be one of {', '.join(CACHE_SCOPES)}")
    _CONFIGS[name] = config_cls
    return config_cls


def list_strategies() -> list[str]:
    return sorted(_CONFIGS)


def strategy_rank(name: str) -> int:
    """Position of a strategy in bench tables: :data:`TABLE_ORDER`, then the others in registration order;
    unknown names last."""
    order = [*TABLE_ORDER, *(n for n in _CONFIGS if n not in TABLE_ORDER)]
    return order.index(name) if name in order else len(order)


def get_strategy_config(name: str) -> type[StrategyConfig]:
    if name not in _CONFIGS:
        raise UsageError(f"unknown strategy {name!r}; valid strategies: {', '.join(list_strategies())}")
    return _CONFIGS[name]


def get_strategy(name: str) -> type:
    """The model-side :class:`~sclft.strategies.base.Strategy` class (imports torch on first call)."""
    config_cls = get_strategy_config(name)
    if name not in _MODELS:
        ref = config_cls.model_class
        module_name, _, attr = ref.partition(":")
        package = config_cls.__module__.rpartition(".")[0]
        cls = getattr(importlib.import_module(module_name, package if module_name.startswith(".") else None), attr)
        if getattr(cls, "config_class", None) is not config_cls:
            raise TypeError(f"{ref} (strategy {name!r}) must set config_class = {config_cls.__name__}")
        _MODELS[name] = cls
    return _MODELS[name]


def strategy_config(strategy: str | StrategyConfig, **options: Any) -> StrategyConfig:
    """A validated config from a name and keyword options, or a config instance (then no options)."""
    if isinstance(strategy, StrategyConfig):
        if options:
            raise UsageError(f"pass options inside the {type(strategy).__name__} or as keywords with a strategy "
                             f"name, not both (got {', '.join(sorted(options))})")
        return strategy.validate()
    cls = get_strategy_config(strategy)
    owners = option_owners()
    foreign = sorted(k for k in options if k not in cls.option_names() and k in owners)
    if foreign:
        k = foreign[0]
        raise UsageError(f"option {k!r} belongs to strategy {', '.join(c.name for c in owners[k])}, not to "
                         f"{strategy!r} (its options: {', '.join(cls.option_names()) or 'none'})")
    return cls.from_options(options)


def default_block_strategy() -> type[StrategyConfig]:
    """The block strategy used where a block must be tuned but the run's strategy tunes none."""
    return get_strategy_config(DEFAULT_BLOCK_STRATEGY)


def option_owners() -> dict[str, list[type[StrategyConfig]]]:
    """Every option name of every registered strategy → the config classes that have it (in table order)."""
    owners: dict[str, list[type[StrategyConfig]]] = {}
    for cls in sorted(_CONFIGS.values(), key=lambda c: strategy_rank(c.name)):
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append(cls)
    return owners


def collect_strategy_options(values: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Move top-level option keys (``fuse: concat`` in YAML or a bench variant) into ``strategy_options``,
    over the options in ``base`` (those of a config being overridden).

    Which strategy they belong to is checked later, against the chosen strategy's config.
    """
    values = dict(values)
    options = dict(values.get("strategy_options") or {})
    for key in [k for k in values if k in option_owners()]:
        if key in options and options[key] != values[key]:
            raise UsageError(f"option {key!r} given twice: {key}: {values[key]!r} and "
                             f"strategy_options.{key}: {options[key]!r}")
        options[key] = values.pop(key)
    if options or "strategy_options" in values:
        values["strategy_options"] = {**(base or {}), **options}
    return values


def lazy_model_side(package: str, *modules: str):
    """A module ``__getattr__`` for a strategy package: its model side (``model.py`` and ``modules``, which
    import torch) loads on first access of a name, so importing the package (its config) stays torch-free."""

    def __getattr__(name: str):
        for module in (".model", *modules):
            found = importlib.import_module(module, package)
            if hasattr(found, name):
                return getattr(found, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

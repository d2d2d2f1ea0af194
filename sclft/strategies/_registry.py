"""Strategy registry (name → class)."""

from __future__ import annotations

from .base import Strategy

_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if not cls.name or cls.name in _STRATEGIES:
        raise ValueError(f"strategy name {cls.name!r} is empty or already registered")
    _STRATEGIES[cls.name] = cls
    return cls


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_strategy(name: str) -> type[Strategy]:
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(list_strategies())}")
    return _STRATEGIES[name]

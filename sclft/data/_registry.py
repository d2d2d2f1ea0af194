"""Dataset registry: ``@register_dataset(name)`` maps a name (or a ``prefix:`` family) to a loader.

A loader returns the *base* splits of a dataset (train / test / official val) as a
:class:`~sclft.data.base.DatasetSplits`; subsetting (``train_per_class``, ``val_fraction``) is
applied uniformly afterwards by :func:`sclft.data.load_dataset`.

* plain loaders:  ``loader(data_dir: str | None) -> DatasetSplits``
* prefix loaders: ``loader(argument: str, data_dir: str | None) -> DatasetSplits``; registered with
  ``prefix=True`` and addressed as ``"<name>:<argument>"`` (e.g. ``imagefolder:/data/x``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..errors import UsageError

__all__ = ["register_dataset", "list_datasets", "list_prefixes", "resolve"]

F = TypeVar("F", bound=Callable)
_LOADERS: dict[str, Callable] = {}
_PREFIXES: dict[str, tuple[Callable, str]] = {}


def register_dataset(name: str, *, prefix: bool = False, usage: str = "") -> Callable[[F], F]:
    """Decorator registering ``fn`` under ``name``; ``prefix=True`` for ``name:ARG`` families."""

    def deco(fn: F) -> F:
        table = _PREFIXES if prefix else _LOADERS
        if name in _LOADERS or name in _PREFIXES:
            raise UsageError(f"dataset {name!r} is already registered")
        table[name] = (fn, usage or f"{name}:ARG") if prefix else fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names, sorted (prefix families are listed by :func:`list_prefixes`)."""
    return sorted(_LOADERS)


def list_prefixes() -> list[str]:
    """Usage strings of the registered prefix families, e.g. ``'imagefolder:PATH'``."""
    return sorted(usage for _, usage in _PREFIXES.values())


def resolve(name: str) -> Callable[[str | None], object]:
    """Return ``loader(data_dir)`` for ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if name in _LOADERS:
        return _LOADERS[name]
    head, sep, arg = name.partition(":")
    if sep and head in _PREFIXES and arg:
        fn = _PREFIXES[head][0]
        return lambda data_dir: fn(arg, data_dir)
    valid = ", ".join(list_datasets() + list_prefixes())
    raise UsageError(f"unknown dataset {name!r}; valid names: {valid}")

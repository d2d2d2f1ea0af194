"""The config side of a strategy: a torch-free dataclass of its options plus what it is.

Each strategy ``<name>`` is a package ``sclft/strategies/<name>/`` with ``config.py`` (a
:class:`StrategyConfig` subclass, registered with :func:`~sclft.strategies.register_strategy`) and
``model.py`` (a :class:`~sclft.strategies.base.Strategy` subclass, imported on first use). The fields
of the config are the strategy's options (``sclft.wrap(..., fuse="concat")``, ``--fuse concat``,
``strategy_options: {fuse: concat}`` in YAML); its ``ClassVar``s describe the strategy to the trainer,
the cache, the CLI and the bench without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import UsageError

CACHE_SCOPES = ("features", "prefix", "none")


class OptionSet:
    """A dataclass of named options built from a mapping (strategy configs, ``SelectionConfig``)."""

    OPTIONS_OF: ClassVar[str] = "options"  # what the mapping is, for the error of one that is not a mapping

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def unknown_options(cls, unknown: list[str]) -> str:
        return f"unknown options: {', '.join(unknown)}; valid: {', '.join(cls.option_names())}"

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None):
        """Build from a mapping of option names to values; unknown names raise ``UsageError``."""
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise UsageError(f"{cls.OPTIONS_OF} must be a mapping of option names to values, got {options!r}")
        unknown = sorted(map(str, set(options) - set(cls.option_names())))
        if unknown:
            raise UsageError(cls.unknown_options(unknown))
        return cls(**options)


@dataclass
class StrategyConfig(OptionSet):
    """Base class of strategy configs. Options are dataclass fields with a default and
    ``metadata={"help": ..., "choices": (...)}`` (``choices`` optional, checked by :meth:`validate`)."""

    name: ClassVar[str] = ""  # registry name: sclft.wrap(strategy=name), --strategy name
    display_name: ClassVar[str] = ""  # method name in bench tables, e.g. "SCL FT"
    description: ClassVar[str] = ""  # one line for `sclft list strategies`
    model_class: ClassVar[str] = ""  # "module:Class" of the model side; ".model:X" is relative to this package
    uses_layer: ClassVar[bool] = False  # needs a block name (layer=..., --layer, or "auto" selection)
    trains: ClassVar[str] = "the head"  # what trains, in words
    # what the cacheable frozen part of the forward pass covers: "features" (the whole backbone up to its
    # penultimate feature), "prefix" (the backbone up to the chosen block) or "none" (nothing is frozen)
    cache_scope: ClassVar[str] = "features"
    cost: ClassVar[float] = 0.0  # share of a full forward + backward the trained part costs (bench --dry-run)
    # the run's optimisation defaults for this strategy: TrainConfig fields (lr, weight_decay, schedule,
    # warmup_epochs) used when the user sets none (TrainConfig.resolve_defaults); flags and YAML override them
    train_defaults: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> StrategyConfig:
        """Check option values; raises ``ValueError`` naming the option and its valid values."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):  # nan / inf pass every bound check
                raise UsageError(f"{self.name}: {f.name} must be a finite number, got {value!r}")
            if choices is not None and value not in choices and not (value is None and f.default is None):
                raise UsageError(f"{self.name}: unknown {f.name} {value!r}; valid: {', '.join(map(str, choices))}")
        return self

    def options(self) -> dict[str, Any]:
        """The options as a JSON-friendly dict (saved as ``strategy_options`` in ``config.json``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def frozen_scope(self) -> str:
        """``cache_scope`` of this config; options may change it (``lora`` with a start block: ``"prefix"``)."""
        return self.cache_scope

    def start_block(self, layer: str | None) -> str | None:
        """The first block that trains with gradients, given the run's ``layer`` (``None``: the strategy
        does not start at a block, e.g. the head only or the whole network). Feeds ``bench --dry-run``."""
        return layer if self.uses_layer else None

    def for_data(self, data: str) -> StrategyConfig:
        """This config for a run on dataset ``data`` (the trainer calls it; e.g. zero_shot's prompt set)."""
        return self

    @classmethod
    def unknown_options(cls, unknown: list[str]) -> str:
        valid = ", ".join(cls.option_names()) or "none (it takes no options)"
        return f"strategy {cls.name!r} has no option {', '.join(unknown)}; valid options: {valid}"

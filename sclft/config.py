"""``TrainConfig``: every field of a run, its types and checks (no torch: the CLI builds its flags from it).

>>> from sclft.config import TrainConfig
>>> cfg = TrainConfig(backbone="efficientnet_lite0", data="digits", strategy="scl_ft", epochs=3).validate()
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from .strategies import collect_strategy_options, get_strategy_config, list_strategies, strategy_config

log = logging.getLogger("sclft.config")

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("no", "bf16", "fp16")
CACHE_MODES = ("auto", "memory", "disk", "off")
SCHEDULES = ("cosine", "constant")
# optimisation fields left unset (None) take the strategy's ``train_defaults``, else these (see resolve_defaults)
OPTIM_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1.0}


class ConfigError(ValueError):
    """A TrainConfig field has a bad value; ``key`` names the field (the CLI says where it came from)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass
class TrainConfig:
    """Everything a run needs; the CLI flags and ``sclft/configs/*.yaml`` map onto these fields."""

    backbone: str = "efficientnet_lite0"
    data: str = "digits"
    strategy: str = "scl_ft"
    layer: str = "auto"  # a block name, or "auto" (chosen by NC1, see sclft.selection)
    layer_rule: str = "auto"
    max_params: float | None = 8.0  # --layer auto: only blocks training at most this % of the parameters (selection)
    epochs: int = 10
    lr: float | None = None  # None (also weight_decay, schedule, warmup_epochs): see resolve_defaults
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float | None = None
    momentum: float = 0.9
    schedule: str | None = None  # "cosine" (to 0) or "constant", after the linear warm-up
    warmup_epochs: float | None = None
    label_smoothing: float = 0.0
    grad_accum: int = 1
    precision: str = "no"
    image_size: int | None = None
    augment: bool = False
    train_per_class: int | None = None
    val_fraction: float = 0.0
    seed: int = 0
    data_dir: str | None = None
    pretrained: bool = True
    checkpoint: str | None = None
    strategy_options: dict = field(default_factory=dict)  # the chosen strategy's options, e.g. {"fuse": "concat"}
    cache: str = "auto"
    cache_dir: str | None = None
    num_workers: int = 0
    eval_every: int = 1  # evaluate on val/test every N epochs (0: only at the end)
    channels_last: bool = False
    compile: bool = False
    tensorboard: bool = False
    out: str = "runs/sclft"
    resume: bool = False
    overwrite: bool = False  # replace a finished run (or another run's checkpoints) in ``out``
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        """Check every field's type and value (no file or network access); returns ``self``.

        Options of another strategy (``fuse`` with ``layer_ft``, a block name with ``linear_probe``) are
        logged here; the CLI, which knows what was given explicitly, makes them an error.
        """
        kinds = _field_kinds(type(self))
        for name, (kind, optional) in kinds.items():
            value = getattr(self, name)
            if not (value is None and optional) and not _is_kind(value, kind):
                raise ConfigError(name, f"{name} must be {_KIND_WORDS[kind]}, got {value!r}")
        from .selection import list_rules

        try:
            get_strategy_config(self.strategy)
        except ValueError as e:
            raise ConfigError("strategy", str(e)) from None
        self.resolve_defaults()
        rules = ("auto", *list_rules())
        infinite = [n for n, (k, _) in kinds.items() if k is float and not math.isfinite(getattr(self, n))]
        checks = [
            (infinite[0] if infinite else "", not infinite,
             ", ".join(f"{n}={getattr(self, n)}" for n in infinite) + ": must be a finite number"),
            ("epochs", self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            ("lr", self.lr > 0, f"lr must be > 0, got {self.lr}"),
            ("batch_size", self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            ("grad_accum", self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            ("weight_decay", self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            ("momentum", 0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}"),
            ("momentum", self.optimizer != "sgd" or self.momentum > 0, "momentum must be > 0 for sgd (Nesterov)"),
            ("warmup_epochs", self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            ("num_workers", self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            ("schedule", self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            ("precision", self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            ("cache", self.cache in CACHE_MODES, f"cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}"),
            ("layer_rule", self.layer_rule in rules, f"layer_rule must be one of {', '.join(rules)}, got {self.layer_rule!r}"),
            ("val_fraction", 0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            ("train_per_class", self.train_per_class is None or self.train_per_class >= 1,
             f"train_per_class must be >= 1, got {self.train_per_class}"),
            ("image_size", self.image_size is None or self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            ("max_params", self.max_params is None or self.max_params > 0,
             f"max_params must be > 0 (a percent of the parameters), got {self.max_params}"),
            ("eval_every", self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
        ]
        for key, ok, message in checks:
            if not ok:
                raise ConfigError(key, message)
        try:
            _check_extra(self.extra)
        except ValueError as e:
            raise ConfigError("extra", str(e)) from None
        try:
            strategy_config(self.strategy, **self.strategy_options)
        except ValueError as e:
            raise ConfigError("strategy_options", str(e)) from None
        foreign = [f"{n}={getattr(self, n)!r}" for n in self.foreign_options(self.strategy)
                   if n != "layer_rule" and getattr(self, n) != _default(n)]
        if foreign:
            log.warning("strategy %r does not use %s (ignored)", self.strategy, ", ".join(foreign))
        return self

    def resolve_defaults(self) -> TrainConfig:
        """Fill the optimisation fields left at None (:data:`OPTIM_DEFAULTS`' keys) with the strategy's
        ``train_defaults`` (e.g. Deep LoRA: no weight decay, a constant schedule), else the global default; the
        values a run used are then in ``train_config.json``. Given values (flags, YAML) are kept."""
        own = get_strategy_config(self.strategy).train_defaults
        for name, default in OPTIM_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, own.get(name, default))
        return self

    @classmethod
    def foreign_options(cls, strategy: str) -> dict[str, list[str]]:
        """Fields that only other strategies use → the strategies that do (``layer`` and ``layer_rule`` for a
        strategy that tunes no block). Options of the strategies themselves live in ``strategy_options``."""
        if get_strategy_config(strategy).uses_layer:
            return {}
        owners = [s for s in list_strategies() if get_strategy_config(s).uses_layer]
        return {"layer": owners, "layer_rule": owners}

    def check_backbone(self, backbone) -> None:
        """What needs the built backbone, checked before any heavy step: the block name, the selection
        candidates and the strategy's own checks (options, e.g. zero_shot needs a CLIP text tower)."""
        from .selection import selection_options
        from .strategies import get_strategy

        config = strategy_config(self.strategy, **self.strategy_options).for_data(self.data)
        if not config.uses_layer:
            get_strategy(config.name)(backbone, None, config)
            return
        if self.layer == "auto":
            for name in selection_options(self).get("candidates") or []:
                backbone.check_block(name)
        get_strategy(config.name)(backbone, backbone.check_block(self.layer) if self.layer != "auto"
                                  else backbone.blocks[0], config)

    @classmethod
    def coerce(cls, values: dict[str, Any], source: str = "config") -> dict[str, Any]:
        """Values (e.g. from YAML) converted through the field types as the CLI flags are: ``"1e-3"`` → 0.001
        for a float, ``2.7`` or ``"two"`` for an int is an error naming ``source`` and the key."""
        kinds = _field_kinds(cls)
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise ValueError(f"{source}: unknown config keys: {', '.join(map(str, unknown))}; "
                             f"valid keys: {', '.join(sorted(kinds))}")
        return {k: _coerce(v, *kinds[k], f"{source}: {k}") for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """From a mapping of field names; top-level strategy options (``fuse: concat``) go to ``strategy_options``."""
        return cls(**cls.coerce(collect_strategy_options(values), source))


# keys of TrainConfig.extra; "selection" holds sclft.selection.DEFAULT_OPTIONS overrides
EXTRA_KEYS = ("selection",)
_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}


def _default(name: str) -> Any:
    f = TrainConfig.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _field_kinds(cls) -> dict[str, tuple[type, bool]]:
    """Field name → (type, optional) from the annotations (``int | None`` → (int, True))."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kinds[name] = (args[0] if args else hint, type(None) in typing.get_args(hint))
    return kinds


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _coerce(value: Any, kind: type, optional: bool, where: str) -> Any:
    """One value through the type its CLI flag has (argparse ``type=int`` / ``float``)."""
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where} must be {_KIND_WORDS.get(kind, kind.__name__)}, got null")
    if kind is str and isinstance(value, bool):
        raise ValueError(f"{where} must be a string, got {value!r}: YAML reads an unquoted yes/no/on/off/true/false "
                         f"as a boolean; quote it, e.g. '{'no' if value is False else 'yes'}'")
    if kind in (int, float, str) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        if kind is int and isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise ValueError(f"{where} must be an integer, got {value!r}")
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{where} must be {_KIND_WORDS[kind]}, got {value!r}") from None
    if not _is_kind(value, kind):
        raise ValueError(f"{where} must be {_KIND_WORDS.get(kind, kind.__name__)}, got {value!r}")
    return value


def _check_extra(extra: dict) -> None:
    """``extra`` holds only :data:`EXTRA_KEYS`; its ``selection`` options are known and well-typed."""
    from .selection import DEFAULT_OPTIONS, PROFILE_PICKS

    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise ValueError(f"unknown extra keys: {', '.join(map(str, unknown))}; valid: {', '.join(EXTRA_KEYS)}")
    sel = extra.get("selection") or {}
    if not isinstance(sel, dict):
        raise ValueError(f"extra.selection must be a mapping of selection options, got {sel!r}")
    unknown = sorted(set(sel) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown selection options: {', '.join(map(str, unknown))}; valid: {', '.join(DEFAULT_OPTIONS)}")
    count = lambda v: _is_kind(v, int) and v >= 1  # noqa: E731
    rules = {
        "candidates": (lambda v: v is None or (isinstance(v, list) and all(isinstance(n, str) for n in v)),
                       "a list of block names"),
        "profile_per_class": (count, "an integer >= 1"),
        "profile_jackknife": (lambda v: _is_kind(v, int) and v >= 2, "an integer >= 2 (jackknife groups)"),
        "trial_per_class": (lambda v: _is_kind(v, int) and v >= 2, "an integer >= 2"),
        "trial_epochs": (count, "an integer >= 1"),
        "trial_holdout": (lambda v: _is_kind(v, float) and 0 < v < 1, "a number in (0, 1)"),
        "profile_pick": (lambda v: v is None or v in PROFILE_PICKS, f"one of {', '.join(PROFILE_PICKS)}"),
    }
    for key, value in sel.items():
        ok, what = rules.get(key, (lambda v: True, ""))
        if not ok(value):
            raise ValueError(f"extra.selection.{key} must be {what}, got {value!r}")

"""The configuration layer (no torch): :class:`TrainConfig`, every field of a run with its types and checks (the
CLI builds its flags from it); :class:`SelectionConfig`, the options of ``--layer auto``; and
:func:`layered_config`, how defaults, a YAML file, its ``per_strategy`` section and explicit values combine.

>>> from sclft.config import TrainConfig
>>> cfg = TrainConfig(backbone="efficientnet_lite0", data="digits", strategy="scl_ft", epochs=3).validate()
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import UsageError
from .picks import DEFAULT_FIXED_PICK, DEFAULT_PROFILE_PICK, FIXED_PICKS, PROFILE_PICKS, list_rules
from .resources import read_yaml
from .strategies import collect_strategy_options, get_strategy_config, list_strategies, strategy_config
from .strategies.config import OptionSet

log = logging.getLogger("sclft.config")

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("no", "bf16", "fp16")
CACHE_MODES = ("auto", "memory", "disk", "off")
SCHEDULES = ("cosine", "constant")
# --report-to name -> (the package Accelerate's tracker needs, the sclft extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
# optimisation fields left unset (None) take the strategy's ``train_defaults``, else these (see resolve_defaults)
OPTIM_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1.0}
# percent of the model's parameters a block strategy may tune under --layer auto. 10: every block of the lecture's
# ViT-B/32 and CLIP ViT-B/32 qualifies (each trains 8.07-8.2 % with a 10-100 class head; under the former 8 none did
# and every run fell back with a warning), while ResNet-50's candidates and EfficientNet-Lite0's on 10 classes
# (digits) stay those of 8 (their next blocks: 19 %, 14.5 %), so those default picks do not change. Lite0 gains
# blocks.5.0 from 47 classes up (8.3 %), blocks.4.1-4.2 at 100 (8.5 %). `sclft probe --rank` prints each share.
DEFAULT_MAX_PARAMS = 10.0


class ConfigError(UsageError):
    """A TrainConfig field has a bad value; ``key`` names the field (the CLI says where it came from)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


# the properties every TrainConfig field declares in its ``metadata`` (test_config checks that each does):
# help: the `sclft train` flag's help text; hashed: part of a bench run's id (sclft.bench.plan.UNHASHED_FIELDS are
# those that are not); location: where a machine keeps something, matched across machines (bench.layout);
# resume_may_differ: may change on --resume without changing the trained weights (train.checkpoint);
# in_command: appears in the model card's reproduce command (card.NOT_IN_COMMAND are those that do not)
FIELD_PROPERTIES = ("help", "hashed", "location", "resume_may_differ", "in_command")


def _field(default: Any = dataclasses.MISSING, *, help: str, hashed: bool = True, location: bool = False,
           resume_may_differ: bool = False, in_command: bool = True, **kw) -> Any:
    """A TrainConfig field with its :data:`FIELD_PROPERTIES`; the defaults fit a field that changes the result."""
    return field(default=default, **kw, metadata={"help": help, "hashed": hashed, "location": location,
                                                  "resume_may_differ": resume_may_differ, "in_command": in_command})


# a field that only says how a run is carried out (where, how fast, what is shown): not hashed, may change on
# resume, not in the reproduce command
_HOW = {"hashed": False, "resume_may_differ": True, "in_command": False}


@dataclass
class TrainConfig:
    """Everything a run needs; the CLI flags and ``sclft/configs/*.yaml`` map onto these fields. Each field declares
    its help text and properties (:data:`FIELD_PROPERTIES`); :func:`fields_where` derives the sets of them."""

    backbone: str = _field("efficientnet_lite0", help="backbone name (sclft list backbones), timm:<name> or "
                                                      "open_clip:<arch>/<tag>")
    data: str = _field("digits", help="dataset name (sclft list datasets), imagefolder:PATH or hf:<repo_id>")
    strategy: str = _field("scl_ft", help="transfer strategy (sclft list strategies); its options are the flags "
                                          "under 'strategy options'")
    layer: str = _field("auto", help="block to tune, or 'auto' to choose it by NC1 on the training data")
    layer_rule: str = _field("auto", help="rule for --layer auto: auto | profile | fixed | trial | tuned, or "
                                          "RULE:PICK as the results tables write it (profile:logme, fixed:middle)")
    max_params: float | None = _field(DEFAULT_MAX_PARAMS, help="--layer auto: choose only among blocks training at "
                                                               "most this percent of the parameters")
    epochs: int = _field(10, help="training epochs")
    lr: float | None = _field(None, help="peak learning rate (after warm-up; then --schedule)")
    batch_size: int = _field(64, help="images per step")
    optimizer: str = _field("adamw", help="adamw | sgd")
    weight_decay: float | None = _field(None, help="weight decay (not applied to norms and biases)")
    momentum: float = _field(0.9, help="SGD momentum (Nesterov; --optimizer sgd)")
    schedule: str | None = _field(None, help="learning rate after the warm-up: cosine (decay to 0) | constant")
    warmup_epochs: float | None = _field(None, help="linear warm-up length in epochs")
    label_smoothing: float = _field(0.0, help="label smoothing of the cross-entropy")
    grad_accum: int = _field(1, help="gradient accumulation steps")
    precision: str = _field("no", help=f"mixed precision: {' | '.join(PRECISIONS)}")
    image_size: int | None = _field(None, help="input size in pixels (default: the backbone's)")
    augment: bool = _field(False, help="standard random train augmentation (disables the frozen-prefix cache)")
    train_per_class: int | None = _field(None, help="balanced, seeded subset of N training images per class "
                                                    "(default: all)")
    val_fraction: float = _field(0.0, help="hold out this fraction of train as a validation split")
    seed: int = _field(0, help="random seed")
    data_dir: str | None = _field(None, help="local copy of the dataset (no download)", location=True,
                                  resume_may_differ=True)
    pretrained: bool = _field(True, help="load pretrained weights (--no-pretrained: random init)")
    checkpoint: str | None = _field(None, help="local weights file for the backbone (instead of downloading)")
    strategy_options: dict = _field(help="the chosen strategy's options, e.g. {'fuse': 'concat'} (flags of their "
                                         "own)", in_command=False, default_factory=dict)
    cache: str = _field("auto", help="frozen-prefix activation cache: auto | memory | disk | off", in_command=False)
    cache_dir: str | None = _field(None, help="directory for disk caches (default: ~/.cache/sclft/features)", **_HOW)
    num_workers: int = _field(0, help="data-loading worker processes", **_HOW)
    eval_every: int = _field(1, help="evaluate on val/test every N epochs (0: only at the end)",
                             resume_may_differ=True, in_command=False)
    channels_last: bool = _field(False, help="channels_last memory format for conv backbones")
    compile: bool = _field(False, help="torch.compile the model")
    tensorboard: bool = _field(False, help="log metrics to TensorBoard under --out (same as --report-to tensorboard)",
                               **_HOW)
    report_to: str | None = _field(None, help="experiment trackers, comma-separated: tensorboard (OUT/sclft), wandb "
                                              "(OUT/wandb; WANDB_MODE=offline works without an account); a tracker "
                                              "whose package is missing is an error", **_HOW)
    out: str = _field("runs/sclft", help="output directory: the run folder (results, weights, model card, "
                                         "checkpoints)", **_HOW)
    resume: bool = _field(False, help="continue an interrupted run from --out/checkpoint (refused if a "
                                      "result-changing option differs)", **_HOW)
    overwrite: bool = _field(False, help="replace a finished run or another run's checkpoints in --out", **_HOW)
    progress: bool = _field(True, help="progress bars", **_HOW)
    extra: dict = _field(help="{'selection': SelectionConfig options} (YAML; see TrainConfig.selection)",
                         in_command=False, default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.layer_rule, str) and ":" in self.layer_rule:  # RULE:PICK, as the results tables write it
            self.layer_rule, self.extra = split_rule_pick(self.layer_rule, self.extra)

    @property
    def selection(self) -> SelectionConfig:
        """The ``--layer auto`` options, typed: ``extra["selection"]`` over :class:`SelectionConfig`'s defaults.
        (``extra`` stays the stored form, so YAML files, ``config.json`` and bench run ids keep their shape.)"""
        return SelectionConfig.from_options((self.extra or {}).get("selection"))

    def trackers(self) -> list[str]:
        """``report_to`` as a list (``"none"``: no tracker), with ``tensorboard`` added by its alias flag."""
        names = [s.strip() for s in (self.report_to or "").split(",") if s.strip() and s.strip() != "none"]
        return list(dict.fromkeys(names + (["tensorboard"] if self.tensorboard else [])))

    def validate(self) -> TrainConfig:
        """Check every field's type and value (no file or network access); returns ``self``.

        Options of another strategy (``fuse`` with ``layer_ft``, a block name with ``linear_probe``) are
        logged here; the CLI, which knows what was given explicitly, makes them an error.
        """
        kinds = _field_kinds(type(self))
        for name, (kind, optional) in kinds.items():
            value = getattr(self, name)
            if not (value is None and optional) and not _is_kind(value, kind):
                raise ConfigError(name, f"{name} must be {_KIND_WORDS[kind]}, got {value!r}")
        try:
            get_strategy_config(self.strategy)
        except ValueError as e:
            raise ConfigError("strategy", str(e)) from None
        self.resolve_defaults()
        rules = ("auto", *list_rules())
        infinite = [n for n, (k, _) in kinds.items()
                    if k is float and getattr(self, n) is not None and not math.isfinite(getattr(self, n))]
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
            ("schedule", self.schedule in SCHEDULES, _one_of("schedule", SCHEDULES, self.schedule)),
            ("optimizer", self.optimizer in OPTIMIZERS, _one_of("optimizer", OPTIMIZERS, self.optimizer)),
            ("precision", self.precision in PRECISIONS, _one_of("precision", PRECISIONS, self.precision)),
            ("cache", self.cache in CACHE_MODES, _one_of("cache", CACHE_MODES, self.cache)),
            ("layer_rule", self.layer_rule in rules, _one_of("layer_rule", rules, self.layer_rule)
             + f", or RULE:PICK ({', '.join(f'{r}:…' for r in RULE_PICKS)}; e.g. profile:logme)"),
            ("val_fraction", 0.0 <= self.val_fraction < 1.0,
             f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            ("train_per_class", self.train_per_class is None or self.train_per_class >= 1,
             f"train_per_class must be >= 1, got {self.train_per_class}"),
            ("image_size", self.image_size is None or self.image_size >= 8,
             f"image_size must be >= 8, got {self.image_size}"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            ("max_params", self.max_params is None or self.max_params > 0,
             f"max_params must be > 0 (a percent of the parameters), got {self.max_params}"),
            ("eval_every", self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
        ]
        for name in self.trackers():
            if name not in TRACKERS:
                raise ConfigError("report_to", _one_of("report_to", (*TRACKERS, "none"), name))
            module, extra = TRACKERS[name]
            if importlib.util.find_spec(module) is None:  # Accelerate would skip it with a debug message
                raise ConfigError("report_to", f"report_to {name}: the {module!r} package is not installed, so "
                                  f"nothing would be logged; pip install 'sclft[{extra}]' (or {module})")
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
        from .strategies import get_strategy  # the model side: torch

        config = strategy_config(self.strategy, **self.strategy_options).for_data(self.data)
        if not config.uses_layer:
            get_strategy(config.name)(backbone, None, config)
            return
        if self.layer == "auto":
            for name in self.selection.candidates or []:
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
            raise UsageError(f"{source}: unknown config keys: {', '.join(map(str, unknown))}; "
                             f"valid keys: {', '.join(sorted(kinds))}")
        return {k: _coerce(v, *kinds[k], f"{source}: {k}") for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """From a mapping of field names; top-level strategy options (``fuse: concat``) go to ``strategy_options``."""
        return cls(**cls.coerce(collect_strategy_options(values), source))


# RULE:PICK spellings of ``layer_rule`` (as the results tables name a rule): rule -> (its selection option, picks)
RULE_PICKS = {"profile": ("profile_pick", PROFILE_PICKS), "fixed": ("fixed_pick", FIXED_PICKS)}


def split_rule_pick(spelling: str, extra: Any) -> tuple[str, Any]:
    """``layer_rule: profile:logme`` → rule ``profile`` and ``extra.selection.profile_pick: logme`` (one config,
    however spelled: the same bench run id). A pick also given in ``extra`` must agree."""
    rule, _, pick = spelling.partition(":")
    if rule not in RULE_PICKS:
        raise ConfigError("layer_rule", f"layer_rule {spelling!r}: only {' and '.join(RULE_PICKS)} take a pick "
                                        f"(e.g. profile:{DEFAULT_PROFILE_PICK}, fixed:{DEFAULT_FIXED_PICK})")
    key, valid = RULE_PICKS[rule]
    if pick not in valid:
        raise ConfigError("layer_rule", f"layer_rule {spelling!r}: unknown {rule} pick {pick!r}; valid: "
                                        f"{', '.join(f'{rule}:{p}' for p in valid)}")
    if not isinstance(extra, Mapping) or not isinstance(extra.get("selection", {}), Mapping):
        return rule, extra  # validate() names what is wrong with extra
    selection = dict(extra.get("selection") or {})
    if selection.get(key) not in (None, pick):
        raise ConfigError("layer_rule", f"layer_rule {spelling!r} and extra.selection.{key} {selection[key]!r} "
                                        "disagree; give the pick once")
    return rule, {**extra, "selection": {**selection, key: pick}}


# keys of TrainConfig.extra; "selection" holds SelectionConfig options
EXTRA_KEYS = ("selection",)
_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}


def fields_where(prop: str, value: bool = True) -> tuple[str, ...]:
    """TrainConfig field names whose ``metadata[prop]`` is ``value``, in field order (e.g. the unhashed fields:
    ``fields_where("hashed", False)``)."""
    if prop not in FIELD_PROPERTIES[1:]:
        raise KeyError(f"{prop!r}: not a field property; valid: {', '.join(FIELD_PROPERTIES[1:])}")
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata[prop] is value)


def _default(name: str) -> Any:
    f = TrainConfig.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(type, optional) of an annotation: ``int | None`` → (int, True), ``str`` → (str, False)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), type(None) in typing.get_args(hint)


def _field_kinds(cls) -> dict[str, tuple[type, bool]]:
    """Field name → (type, optional) from the annotations."""
    return {name: unwrap_optional(hint) for name, hint in typing.get_type_hints(cls).items()}


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
        raise UsageError(f"{where} must be {_KIND_WORDS.get(kind, kind.__name__)}, got null")
    if kind is str and isinstance(value, bool):
        raise UsageError(f"{where} must be a string, got {value!r}: YAML reads an unquoted yes/no/on/off/true/false "
                         f"as a boolean; quote it, e.g. '{'no' if value is False else 'yes'}'")
    if kind in (int, float, str) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        if kind is int and isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise UsageError(f"{where} must be an integer, got {value!r}")
        try:
            return kind(value)
        except ValueError:
            raise UsageError(f"{where} must be {_KIND_WORDS[kind]}, got {value!r}") from None
    if not _is_kind(value, kind):
        raise UsageError(f"{where} must be {_KIND_WORDS.get(kind, kind.__name__)}, got {value!r}")
    return value


def _one_of(name: str, valid, value: Any) -> str:
    return f"{name} must be one of {', '.join(valid)}, got {value!r}"


def _check_extra(extra: dict) -> None:
    """``extra`` holds only :data:`EXTRA_KEYS`; its ``selection`` options make a valid :class:`SelectionConfig`."""
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise UsageError(f"unknown extra keys: {', '.join(map(str, unknown))}; valid: {', '.join(EXTRA_KEYS)}")
    SelectionConfig.from_options(extra.get("selection"))


@dataclass
class SelectionConfig(OptionSet):
    """Options of the layer-selection rules (``--layer auto``, :mod:`sclft.selection`), checked on construction.

    Given as ``extra: {selection: {...}}`` in YAML and ``config.json``; ``TrainConfig.selection`` builds it.
    Pick names are those of :mod:`sclft.picks` (torch-free), so a typo fails before any data or weights load.
    """

    OPTIONS_OF: ClassVar[str] = "extra.selection"

    candidates: list[str] | None = None  # block names; None: every block but the last (selection.candidate_blocks)
    profile_per_class: int = 100  # samples per class probed by `profile`
    profile_pick: str | None = None  # a PROFILE_PICKS name; None: picks.DEFAULT_PROFILE_PICK
    profile_jackknife: int = 10  # groups of the jackknife standard error of each block's NC1 (pick `one_se`)
    fixed_pick: str = DEFAULT_FIXED_PICK  # a FIXED_PICKS name (rule `fixed`)
    trial_per_class: int = 50  # training samples per class used by `trial` (fit + held-out)
    trial_holdout: float = 0.3  # fraction of them held out for the NC1 read-out
    trial_epochs: int = 3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> SelectionConfig:
        """Raises ``ValueError`` naming ``extra.selection.<option>``, the value and what is valid."""
        def integer(low: int) -> tuple[Callable[[Any], bool], str]:
            return (lambda v: _is_kind(v, int) and v >= low), f"an integer >= {low}"

        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "candidates": (lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) > 0
                                                   and all(isinstance(n, str) and n for n in v)),
                           "a non-empty list of block names (or null: every block but the last)"),
            "profile_per_class": integer(1),
            "profile_pick": (lambda v: v is None or v in PROFILE_PICKS, f"one of {', '.join(PROFILE_PICKS)}"),
            "profile_jackknife": (lambda v: _is_kind(v, int) and v >= 2, "an integer >= 2 (jackknife groups)"),
            "fixed_pick": (lambda v: v in FIXED_PICKS, f"one of {', '.join(FIXED_PICKS)}"),
            "trial_per_class": integer(2),
            "trial_epochs": integer(1),
            "trial_holdout": (lambda v: _is_kind(v, float) and 0 < v < 1, "a number in (0, 1)"),
        }
        for f in dataclasses.fields(self):
            ok, what = checks[f.name]
            value = getattr(self, f.name)
            try:
                good = ok(value)
            except TypeError:  # e.g. an unhashable value tested against the pick names
                good = False
            if not good:
                raise UsageError(f"extra.selection.{f.name} must be {what}, got {value!r}")
        if self.candidates is not None:
            self.candidates = list(self.candidates)
        return self

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def unknown_options(cls, unknown: list[str]) -> str:
        return f"unknown selection options: {', '.join(unknown)}; valid: {', '.join(cls.option_names())}"


# ------------------------------------------------------------------------------------------ layering
def flag_name(key: str) -> str:
    """The command-line flag of a TrainConfig field or strategy option (``weight_decay`` → ``--weight-decay``)."""
    return "--" + key.replace("_", "-")


def load_yaml_config(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The mapping in a YAML config file (a path, or NAME of a packaged config: ``sclft list configs``) and
    the file it came from."""
    values, p = read_yaml("configs", path)
    if values is None:
        return {}, p
    if not isinstance(values, dict):
        raise UsageError(f"{p}: expected a mapping of TrainConfig fields (key: value lines), got a "
                         f"{type(values).__name__}")
    return values, p


def _per_strategy(section: Any, source: str) -> dict[str, dict[str, Any]]:
    """The ``per_strategy`` section: strategy name → TrainConfig fields (each coerced and checked)."""
    if section is None:
        return {}
    example = "per_strategy: {linear_probe: {lr: 0.01}}"
    if not isinstance(section, dict):
        raise UsageError(f"{source}: per_strategy must be a mapping of strategy name to fields, e.g. {example}; "
                         f"got a {type(section).__name__}")
    out = {}
    for name, values in section.items():
        where = f"{source}: per_strategy.{name}"
        if name not in list_strategies():
            raise UsageError(f"{where}: unknown strategy {name!r}; valid strategies: {', '.join(list_strategies())}")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise UsageError(f"{where} must be a mapping of TrainConfig fields, e.g. {example}; got {values!r}")
        if "strategy" in values:
            raise UsageError(f"{where}: 'strategy' cannot be set inside per_strategy")
        out[name] = TrainConfig.coerce(collect_strategy_options(values), where)
    return out


def _check_foreign(strategy: str, given: Mapping[str, Any], name_of: Callable[[str], str]) -> None:
    """An explicitly given field that only other strategies use is an error (its default value is not)."""
    for option, owners in TrainConfig.foreign_options(strategy).items():
        if option in given and given[option] != _default(option):
            raise UsageError(f"{name_of(option)} {given[option]} is an option of {' and '.join(owners)}; "
                             f"strategy {strategy!r} does not use it")


def _check_options(strategy: str, options: Mapping[str, Any], name_of: Callable[[str], str]) -> None:
    """Each strategy option is one of ``strategy``'s and valid; the error names where it came from."""
    for k, v in options.items():
        try:
            strategy_config(strategy, **{k: v})
        except ValueError as e:
            raise UsageError(f"{name_of(k)}: {e}") from None


def layered_config(config: str | Path | None = None, flags: Mapping[str, Any] | None = None,
                   options: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults < YAML file ``config`` (its ``per_strategy`` section for the chosen strategy) < ``flags``.

    ``flags``: TrainConfig fields given explicitly (the command line's); ``options``: strategy options given
    explicitly. YAML values go through the field types as the flags do. The top level of a YAML file is shared
    by all strategies, so its TrainConfig fields that only other strategies use (``layer`` for linear_probe)
    are dropped; a strategy option of another strategy (``r: 4`` with linear_probe) is an error there, as is
    any such option or field given explicitly or in the strategy's own ``per_strategy`` section. Errors name
    the file and key or the flag; the result is validated.
    """
    flags, options = dict(flags or {}), dict(options or {})
    values: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    source = "config"
    if config:
        raw, path = load_yaml_config(config)
        source = str(path)
        sections = _per_strategy(raw.pop("per_strategy", None), source)
        values = TrainConfig.coerce(collect_strategy_options(raw), source)
    strategy = flags.get("strategy", values.get("strategy", TrainConfig.strategy))
    try:
        get_strategy_config(strategy)
    except ValueError as e:
        raise UsageError(f"{flag_name('strategy') if 'strategy' in flags else f'{source}: strategy'}: {e}") from None
    section = sections.get(strategy, {})
    in_section = lambda o: f"{source}: per_strategy.{strategy}.{o}"  # noqa: E731
    _check_foreign(strategy, flags, flag_name)
    _check_foreign(strategy, section, in_section)
    foreign = TrainConfig.foreign_options(strategy)
    values = {k: v for k, v in values.items() if k not in foreign}
    shared = values.pop("strategy_options", {})  # the top level: only the chosen strategy's options
    _check_options(strategy, shared, lambda o: f"{source}: {o}")
    origin = {**{k: f"{source}: {k}" for k in values}, **{k: in_section(k) for k in section},
              **{k: flag_name(k) for k in flags}}
    values.update({k: v for k, v in section.items() if k != "strategy_options"})
    values.update(flags)
    _check_options(strategy, section.get("strategy_options", {}), in_section)
    _check_options(strategy, options, flag_name)
    values["strategy_options"] = {**shared, **section.get("strategy_options", {}), **options}
    try:
        return TrainConfig.from_dict(values).validate()
    except ConfigError as e:  # say where the bad value came from
        raise UsageError(f"{origin[e.key]}: {e}" if e.key in origin else str(e)) from None

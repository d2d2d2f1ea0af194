"""Accelerate training loop: AMP, gradient accumulation, per-epoch eval, atomic checkpoints, resume.

>>> from sclft.train import TrainConfig, train
>>> metrics = train(TrainConfig(backbone="efficientnet_lite0", data="digits", epochs=3, out="runs/demo"))

``accelerate launch -m sclft.cli train ...`` runs the same code on several GPUs (and, on a machine
without GPUs, ``accelerate launch --multi_gpu --num_processes N`` or ``torchrun --nproc_per_node N`` runs
N CPU processes over gloo; ``accelerate launch --cpu`` always starts one process). The learning-rate
schedule is laid out in epochs, so N processes follow the 1-process schedule.

Run folder (``--out``): ``metrics.json``, ``model.safetensors`` (trained tensors only), ``config.json``
(what :func:`load` needs to rebuild the frozen weights, with their digests), ``train_config.json`` and
``checkpoint/``: ``epoch-E/`` holds Accelerate's training state (``accelerate/``: optimizer, scheduler,
GradScaler, every process's RNG), the trained tensors, the sampler state and ``training_state.json``
(epoch, history, elapsed seconds, layer selection, the config it was trained with); ``latest.json`` names
the newest complete one. ``.sclft.lock`` names the one process that writes the folder. A folder that
holds a finished run or another run's checkpoints is only replaced with ``overwrite=True``, and
``resume=True`` refuses a config that differs in anything that changes the result.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import inspect
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import time
from contextlib import contextmanager, nullcontext
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from . import nc
from .backbones import create_backbone
from .cache import build_cache, hash_tensors, frozen_cache_key
from .data import DatasetSplits, TransformedDataset, build_transforms, load_dataset
from .io import atomic_path, atomic_write_json
from .model import TransferModel
from .strategies import collect_strategy_options, get_strategy_config, list_strategies, strategy_config

log = logging.getLogger("sclft.train")

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".sclft.lock"
TRAINING_STATE = "training_state.json"
STATE_FORMAT = 2  # bump when the checkpoint layout changes (older checkpoints are refused, not misread)
_CHECKPOINT_NAME = re.compile(r"epoch-\d{4,}")
# TrainConfig fields that may differ between a run and its --resume: they do not change the trained weights.
# (``cache`` may switch between memory / disk / auto, not to or from "off": that changes float rounding.)
RESUME_MAY_DIFFER = ("out", "resume", "overwrite", "progress", "num_workers", "tensorboard", "eval_every",
                     "cache_dir", "data_dir")
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("no", "bf16", "fp16")
CACHE_MODES = ("auto", "memory", "disk", "off")


class NonFiniteLossError(RuntimeError):
    """The loss (or a trained parameter) became NaN/inf; the last good checkpoint of this run is kept."""


class RunFolderError(ValueError):
    """The ``--out`` folder cannot be used as asked: in use, holds another run, or its run files are damaged."""


class ConfigError(ValueError):
    """A TrainConfig field has a bad value; ``key`` names the field (the CLI says where it came from)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass
class TrainConfig:
    """Everything a run needs; the CLI flags and ``configs/*.yaml`` map onto these fields."""

    backbone: str = "efficientnet_lite0"
    data: str = "digits"
    strategy: str = "scl_ft"
    layer: str = "auto"  # a block name, or "auto" (chosen by NC1, see sclft.selection)
    layer_rule: str = "auto"
    max_params: float | None = 8.0  # --layer auto: only blocks training at most this % of the parameters (selection)
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
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
        "trial_per_class": (lambda v: _is_kind(v, int) and v >= 2, "an integer >= 2"),
        "trial_epochs": (count, "an integer >= 1"),
        "trial_holdout": (lambda v: _is_kind(v, float) and 0 < v < 1, "a number in (0, 1)"),
        "profile_pick": (lambda v: v is None or v in PROFILE_PICKS, f"one of {', '.join(PROFILE_PICKS)}"),
    }
    for key, value in sel.items():
        ok, what = rules.get(key, (lambda v: True, ""))
        if not ok(value):
            raise ValueError(f"extra.selection.{key} must be {what}, got {value!r}")


def check_out_dir(path: str | Path, flag: str = "--out") -> None:
    """Fail before any work when ``path`` cannot become a writable folder (e.g. it lies under a file)."""
    p = Path(path)
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {path}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {probe} is not writable")


# ------------------------------------------------------------------------------------------ pieces
def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only: norms, biases and other 1-d parameters are not decayed (timm's
    ``param_groups_weight_decay``; frozen parameters are left out)."""
    from timm.optim import param_groups_weight_decay

    groups = [g for g in param_groups_weight_decay(model, cfg.weight_decay) if g["params"]]
    scales = model.strategy.lr_scales() if hasattr(model, "strategy") else {}
    if scales:  # parameters the strategy trains at another step (Deep LoRA's outer factors at γ·lr): own groups
        split = [{**g, "params": [p for p in g["params"] if scales.get(id(p), 1.0) == s], "lr": cfg.lr * s}
                 for g in groups for s in sorted({scales.get(id(p), 1.0) for p in g["params"]})]
        groups = [g for g in split if g["params"]]
    if not groups:
        return None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def trainable_state(model: TransferModel) -> dict[str, torch.Tensor]:
    """Trainable parameters, the head, and the buffers of trained modules (e.g. the tuned block's BN stats)."""
    trained_modules = model.strategy.trainable_backbone_modules(model.backbone)
    trained_ids = {id(t) for m in trained_modules for t in [*m.parameters(), *m.buffers()]}
    state = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if name.startswith("head.") or (isinstance(t, torch.nn.Parameter) and t.requires_grad) or id(t) in trained_ids:
            state[name] = t.detach().cpu().contiguous()
    return state


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def frozen_digest(model: TransferModel) -> str:
    """sha256 of every tensor of ``model`` that is *not* stored in ``model.safetensors`` (the frozen weights)."""
    trained = set(trainable_state(model))
    return hash_tensors(((n, t) for n, t in model.state_dict().items() if n not in trained), hashlib.sha256())


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _accelerate_state_hooks(accelerator) -> None:
    """Accelerate's ``save_state``/``load_state`` handle optimizer, scheduler, GradScaler and per-process RNG;
    the model's tensors are ours (only the trained ones, see :func:`trainable_state`), so it skips the model."""
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())


def save_checkpoint(accelerator, out: Path, model: TransferModel, epoch: int, sampler_gen: torch.Generator,
                    state: dict) -> Path:
    """Write ``checkpoint/epoch-E`` fully (every process writes its part), then atomically point
    ``checkpoint/latest.json`` at it and remove older checkpoints. Called by every process."""
    root = out / CHECKPOINT_DIR
    target = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.partial"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "accelerate"))
    accelerator.wait_for_everyone()
    if main:
        save_file(trainable_state(model), str(tmp / "model.safetensors"))
        save_file({"sampler": sampler_gen.get_state()}, str(tmp / "sampler.safetensors"))
        atomic_write_json(tmp / TRAINING_STATE, {"format": STATE_FORMAT, "epoch": epoch, **state})
        atomic_write_json(tmp / "config.json", model.config())
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        atomic_write_json(root / "latest.json", {"epoch": epoch, "path": target.name})
        for old in root.glob("epoch-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint ``checkpoint/latest.json`` names; None when there is no pointer. A pointer that is not
    JSON, has no ``path``, points outside ``checkpoint/`` or names a missing or incomplete checkpoint is a
    :class:`RunFolderError` (nothing is deleted)."""
    root = Path(out) / CHECKPOINT_DIR
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    try:
        info = json.loads(pointer.read_text())
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{pointer} is not readable JSON ({e}); the run folder is damaged") from None
    name = info.get("path") if isinstance(info, dict) else None
    if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name):
        raise RunFolderError(f"{pointer}: \"path\" must name a checkpoint folder inside {root} such as "
                             f"\"epoch-0003\", got {name!r}; nothing was deleted")
    path = root / name
    missing = [f for f in ("model.safetensors", TRAINING_STATE, "sampler.safetensors", "accelerate")
               if not (path / f).exists()]
    if missing:
        raise RunFolderError(f"{pointer} names {path}, which is missing or incomplete (no {', '.join(missing)}); "
                             "nothing was deleted: restore it, or start over with --overwrite")
    return path


def read_training_state(path: Path) -> dict:
    """``path/training_state.json``, checked: a clear error naming the file instead of a KeyError later."""
    file = path / TRAINING_STATE
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{file} is not readable JSON ({e})") from None
    need = {"format": int, "epoch": int, "history": list, "config": dict, "seconds": (int, float)}
    bad = [k for k, kind in need.items() if not isinstance(state, dict) or not isinstance(state.get(k), kind)]
    if bad:
        raise RunFolderError(f"{file} is not a training state of this sclft version (missing or invalid: "
                             f"{', '.join(bad)}); it cannot be resumed: train into a new --out or pass --overwrite")
    if state["format"] != STATE_FORMAT:
        raise RunFolderError(f"{file} has checkpoint format {state['format']}, this sclft writes {STATE_FORMAT}; "
                             "it cannot be resumed exactly")
    return state


def load_model_state(model: TransferModel, path: Path) -> None:
    file = path / "model.safetensors"
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise RunFolderError(f"{file} is not a readable safetensors file ({e}); the run folder is damaged") from None
    unexpected = [k for k in state if k not in model.state_dict()]
    if unexpected:
        raise ValueError(f"checkpoint {path} does not fit this model (unexpected keys: {unexpected[:3]} ...)")
    model.load_state_dict(state, strict=False)


def _resume_view(config: dict) -> dict:
    """The config fields that decide the trained weights (see RESUME_MAY_DIFFER)."""
    view = {k: v for k, v in config.items() if k not in RESUME_MAY_DIFFER}
    if "cache" in view:
        view["cache"] = "off" if view["cache"] == "off" else "on"
    return view


def check_resume(path: Path, cfg: TrainConfig, num_processes: int) -> dict:
    """The training state at ``path`` if ``cfg`` (and the process count) continue the same run, else a
    ValueError naming every field that differs, with the checkpoint's value and the new one."""
    state = read_training_state(path)
    old = {**state["config"], "num_processes": state.get("num_processes")}
    new = {**_resume_view(dataclasses.asdict(cfg)), "num_processes": num_processes}
    diffs = [f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
             if json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True)]
    if diffs:
        raise ValueError(f"--resume: {path} was trained with a different configuration, so continuing would "
                         "not give the run it started; differing: " + "; ".join(diffs)
                         + f". Use the original values, or train into a new --out. (May differ: "
                         f"{', '.join(RESUME_MAY_DIFFER)}.)")
    return state


# ------------------------------------------------------------------------------------------ run folder
def _lock_holder(file: Path) -> dict | None:
    try:
        holder = json.loads(file.read_text() or "null")
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


@contextmanager
def run_lock(out: Path):
    """One writer per ``out``: an exclusive ``flock`` on ``out/.sclft.lock``, whose content names the holder
    (pid, host, start time). The OS drops the lock when its process dies, so a lock file left by a dead
    process is taken over (with a warning); a live holder is a :class:`RunFolderError` that names it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create the output folder --out {out}: {e.strerror or e}") from None
    file = out / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    while True:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = _lock_holder(file) or {}
            raise RunFolderError(
                f"{out} is in use by another sclft run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"started {holder.get('started', '?')}; lock file {file}): one --out has one writer at a time. "
                "Wait for it, or choose another --out") from None
        try:
            same = os.stat(file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was replaced by a finishing holder between open and flock: try again
    stale = _lock_holder(file)
    if stale:
        log.warning("%s: taking over the lock of pid %s on %s (started %s), which is no longer running",
                    out, stale.get("pid"), stale.get("host"), stale.get("started"))
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(me) + "\n").encode())
    try:
        yield me
    finally:
        try:
            file.unlink()
        finally:
            os.close(fd)


def run_files(out: Path) -> list[str]:
    """What in ``out`` belongs to a finished run or to another run's checkpoints."""
    names = [METRICS_FILE, "model.safetensors", "config.json", "train_config.json", f"{CHECKPOINT_DIR}/latest.json"]
    return [n for n in names if (out / n).exists()]


def _prepare_out(out: Path, cfg: TrainConfig, accelerator) -> tuple[Path, dict] | None:
    """Check ``out`` against ``resume``/``overwrite``; returns the checkpoint to resume and its state."""
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if cfg.resume:
        path = latest_checkpoint(out)
        if path is None:
            raise RunFolderError(f"--resume: there is no checkpoint to resume in {out / CHECKPOINT_DIR} (no "
                                 "latest.json); run without --resume to start the run")
        return path, check_resume(path, cfg, accelerator.num_processes)
    found = run_files(out)
    if found and not cfg.overwrite:
        raise RunFolderError(f"{out} already holds a run ({', '.join(found)}); pass --overwrite to replace it, "
                             "--resume to continue it, or choose another --out")
    if found and accelerator.is_main_process:
        for name in [METRICS_FILE, "model.safetensors", "config.json", "train_config.json"]:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        log.warning("--overwrite: removed the previous run in %s (%s)", out, ", ".join(found))
    return None


def _cpu_processes() -> bool:
    """Several processes (torchrun / accelerate launch --multi_gpu) on a machine without GPUs: Accelerate
    makes them one gloo group only when told ``cpu=True``; otherwise each would run the whole job alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


# ------------------------------------------------------------------------------------------ data
def _loader(dataset: Dataset, batch_size: int, *, shuffle_gen: torch.Generator | None, num_workers: int,
            pin: bool) -> DataLoader:
    sampler = RandomSampler(dataset, generator=shuffle_gen) if shuffle_gen is not None else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      pin_memory=pin, drop_last=False)


@dataclass
class PreparedData:
    train: Dataset
    evals: dict[str, Dataset]  # split name -> dataset (test, val, train-eval)
    cached: bool


def prepare_datasets(model: TransferModel, splits: DatasetSplits, cfg: TrainConfig, device) -> PreparedData:
    """Transformed splits; with a deterministic transform and a frozen prefix, cached activations instead."""
    train_tf, eval_tf = build_transforms(model.backbone.data_config, cfg.image_size, cfg.augment)
    named = {"test": splits.test, **({"val": splits.val} if splits.val is not None else {})}
    use_cache = cfg.cache != "off" and model.strategy.has_frozen_prefix and not cfg.augment
    if not use_cache:
        evals = {k: TransformedDataset(v, eval_tf) for k, v in named.items()}
        evals["train"] = TransformedDataset(splits.train, eval_tf)
        return PreparedData(TransformedDataset(splits.train, train_tf), evals, False)
    storage = "auto" if cfg.cache == "auto" else cfg.cache
    cached = {}
    for split, base in {"train": splits.train, **named}.items():
        key = frozen_cache_key(model, splits.fingerprint(split), eval_tf)
        cached[split] = build_cache(model, TransformedDataset(base, eval_tf), key, device=device,
                                    batch_size=max(cfg.batch_size, 64), num_workers=cfg.num_workers,
                                    storage=storage, cache_dir=cfg.cache_dir, progress=cfg.progress)
    return PreparedData(cached["train"], {k: cached[k] for k in ["test", *(["val"] if "val" in cached else []), "train"]},
                        True)


# ------------------------------------------------------------------------------------------ eval
@torch.no_grad()
def evaluate(model, loader: Iterable, from_frozen: bool, accelerator, num_classes: int,
             with_nc1: bool = False) -> dict[str, float]:
    """Accuracy (and NC1 of the head-input features) over ``loader``."""
    model.eval()
    correct, count, feats, labels = 0, 0, [], []
    unwrapped = accelerator.unwrap_model(model)
    for x, y in loader:
        with accelerator.autocast():
            f = unwrapped.features_from_frozen(x) if from_frozen else unwrapped.forward_features(x)
            logits = unwrapped.head(f)
        pred, y = accelerator.gather_for_metrics((logits.argmax(1), y))
        correct += int((pred == y).sum())
        count += int(y.numel())
        if with_nc1:
            feats.append(accelerator.gather_for_metrics(f.float()).cpu())
            labels.append(y.cpu())
    out = {"accuracy": correct / max(count, 1)}
    if with_nc1:
        out["nc1"] = nc.nc1(torch.cat(feats), torch.cat(labels), num_classes)
    return out


# ------------------------------------------------------------------------------------------ main
def train(cfg: TrainConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Train one model; returns (and writes ``out/metrics.json``) the run's metrics."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cfg = cfg or TrainConfig()
    cfg = dataclasses.replace(cfg, **collect_strategy_options(overrides, cfg.strategy_options)).validate()
    out = Path(cfg.out)
    check_out_dir(out)
    AcceleratorState._reset_state()  # several runs in one process may use different precisions
    accelerator = Accelerator(
        cpu=_cpu_processes(),
        mixed_precision=cfg.precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard" if cfg.tensorboard else None,
        project_dir=str(out),
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if cfg.compile else "no",
    )
    if cfg.precision == "fp16" and accelerator.scaler is None:
        log.warning("--precision fp16 on %s: Accelerate has no fp16 autocast/GradScaler there, so this runs in "
                    "float32 (use bf16 for mixed precision on CPU)", accelerator.device)
    _accelerate_state_hooks(accelerator)
    with run_lock(out) if accelerator.is_main_process else nullcontext():
        resume = _prepare_out(out, cfg, accelerator)
        accelerator.wait_for_everyone()
        return _train(cfg, out, accelerator, resume)


def _train(cfg: TrainConfig, out: Path, accelerator, resume: tuple[Path, dict] | None) -> dict[str, Any]:
    from accelerate.utils import set_seed

    say = accelerator.print
    resume_from, resumed = resume or (None, {})
    start_time = time.time() - float(resumed.get("seconds", 0.0))  # seconds count the whole run
    set_seed(cfg.seed)
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class,
                          val_fraction=cfg.val_fraction, seed=cfg.seed)
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.checkpoint, cfg.seed, cfg.image_size)
    cfg.check_backbone(backbone)  # block names, selection candidates, strategy options: before any heavy step
    selection = resumed.get("layer_selection")
    layer = resumed.get("layer") or cfg.layer
    config = strategy_config(cfg.strategy, **cfg.strategy_options).for_data(cfg.data)
    if config.uses_layer and layer == "auto":
        from .selection import select_layer

        selection = select_layer(backbone, splits, cfg, device=accelerator.device)
        layer = selection["layer"]
        say(f"layer auto ({selection['rule']}): {layer}")
    set_seed(cfg.seed)
    model = TransferModel(backbone, config, splits.num_classes, layer if layer != "auto" else None,
                          class_names=splits.class_names)
    build = {"pretrained": cfg.pretrained, "seed": cfg.seed, "checkpoint": cfg.checkpoint,
             "checkpoint_sha256": file_digest(cfg.checkpoint) if cfg.checkpoint else None,
             "frozen_sha256": frozen_digest(model)}
    model.to(accelerator.device)
    if cfg.channels_last and backbone.layout == "conv":
        model.to(memory_format=torch.channels_last)
    data = prepare_datasets(model, splits, cfg, accelerator.device)
    if data.cached:
        say(f"frozen-prefix cache: {data.train.storage}, {data.train.nbytes / 2**20:.1f} MiB for the train split")
    summary = model.parameter_summary()
    say(f"{cfg.backbone} / {cfg.strategy}" + (f" @ {layer}" if model.layer else "")
        + f": {summary['trainable']:,} of {summary['total']:,} parameters train ({summary['percent']:.2f}%)")

    sampler_gen = torch.Generator().manual_seed(cfg.seed)
    pin = accelerator.device.type == "cuda"
    train_loader = _loader(data.train, cfg.batch_size, shuffle_gen=sampler_gen, num_workers=cfg.num_workers, pin=pin)
    eval_loaders = {k: _loader(v, max(cfg.batch_size, 64), shuffle_gen=None, num_workers=cfg.num_workers, pin=pin)
                    for k, v in data.evals.items()}
    optimizer = build_optimizer(model, cfg)
    model, train_loader = accelerator.prepare(model, train_loader)
    # after prepare: the batches of *this* process, so N processes follow the 1-process schedule in epochs
    epochs = cfg.epochs if optimizer else 0  # nothing trains (zero_shot): the run is one evaluation
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = (torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, int(round(cfg.warmup_epochs * steps_per_epoch))))
        if optimizer else None)
    if optimizer:
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}

    start_epoch, history = 0, []
    final: dict[str, dict[str, float]] = {}  # split -> final evaluation
    last_good = None  # the newest checkpoint of this run (resumed or written here)
    if resume_from is not None:
        load_model_state(accelerator.unwrap_model(model), resume_from)
        accelerator.load_state(str(resume_from / "accelerate"))
        sampler_gen.set_state(_load_tensors(resume_from / "sampler.safetensors")["sampler"])
        start_epoch, history, last_good = int(resumed["epoch"]), list(resumed["history"]), resume_from
        say(f"resumed from {resume_from} (epoch {start_epoch} of {cfg.epochs} done)")
    if cfg.tensorboard:
        accelerator.init_trackers("sclft", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                   if isinstance(v, (int, float, str, bool))})

    for epoch in range(start_epoch, epochs):
        model.train()
        seen, loss_sum, tic = 0, 0.0, time.time()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and
                   accelerator.is_local_main_process), leave=False)
        for x, y in bar:
            if optimizer is None:
                break
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    logits = model(x, from_frozen=data.cached)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss became {loss.item()} at epoch {epoch + 1}; stopping. Try a lower --lr or "
                        f"--precision no. Last good checkpoint: {last_good or 'none yet'}"
                    )
                accelerator.backward(loss)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / max(time.time() - tic, 1e-9):.0f}")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                  "lr": scheduler.get_last_lr()[0] if scheduler else 0.0}
        last = epoch + 1 == cfg.epochs
        due = cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or last)
        for split in [s for s in ("val", "test") if s in eval_loaders and due]:
            result = evaluate(model, eval_loaders[split], data.cached, accelerator, splits.num_classes,
                              with_nc1=last)
            record[f"{split}_accuracy"] = result["accuracy"]
            if last:
                final[split] = result  # reused for metrics.json: the final model is not evaluated twice
        history.append(record)
        accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
        say(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        broken = _non_finite(trainable_state(accelerator.unwrap_model(model)))
        if broken:  # a finite loss can precede non-finite weights: never checkpoint them
            raise NonFiniteLossError(
                f"trained parameters became non-finite in epoch {epoch + 1} ({', '.join(broken[:3])}); stopping. "
                f"Try a lower --lr or --precision no. Last good checkpoint: {last_good or 'none yet'}")
        last_good = save_checkpoint(accelerator, out, accelerator.unwrap_model(model), epoch + 1, sampler_gen, {
            "history": history, "seconds": time.time() - start_time, "layer": layer,
            "layer_selection": selection, "num_processes": accelerator.num_processes,
            "config": _resume_view(dataclasses.asdict(cfg))})

    for split in eval_loaders:
        if split not in final:
            final[split] = evaluate(model, eval_loaders[split], data.cached, accelerator, splits.num_classes,
                                    with_nc1=True)
    if not history:  # no training epochs: one record of the evaluation
        history.append({"epoch": 0, **{f"{k}_accuracy": final[k]["accuracy"] for k in ("val", "test") if k in final}})
    final_test, final_train = final["test"], final["train"]
    unwrapped = accelerator.unwrap_model(model)
    metrics = {
        "backbone": cfg.backbone,
        "dataset": cfg.data,
        "strategy": cfg.strategy,
        "layer": unwrapped.layer,
        "num_classes": splits.num_classes,
        "test_accuracy": final_test["accuracy"],
        "train_accuracy": final_train["accuracy"],
        "nc1_train": final_train["nc1"],
        "nc1_test": final_test["nc1"],
        "trainable_params": summary["trainable"],
        "total_params": summary["total"],
        "trainable_percent": summary["percent"],
        "epochs": epochs,
        "seconds": time.time() - start_time,
        "seed": cfg.seed,
        "train_per_class": cfg.train_per_class,
        "image_size": cfg.image_size or backbone.data_config["input_size"][-1],
        "cached": data.cached,
        "skipped_images": len(splits.skipped),
        "num_processes": accelerator.num_processes,
        "history": history,
    }
    if "val" in eval_loaders:
        metrics["val_accuracy"] = final["val"]["accuracy"]
    if selection is not None:
        metrics["layer_selection"] = selection
    if accelerator.is_main_process:
        save_model(unwrapped, out, build)
        atomic_write_json(out / "train_config.json", dataclasses.asdict(cfg))
        atomic_write_json(out / METRICS_FILE, metrics)
    accelerator.end_training()
    if splits.skipped:
        say(f"note: {len(splits.skipped)} unreadable image(s) were skipped (see the log for their paths)")
    return metrics


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise RunFolderError(f"{file} is not a readable safetensors file ({e}); the run folder is damaged") from None


# ------------------------------------------------------------------------------------------ save / load
def build_backbone(name: str, pretrained: bool, checkpoint: str | None, seed: int, image_size: int | None = None):
    """Backbone built for ``image_size`` whose random initialisation (``pretrained=False``) is a function
    of ``seed``, so that :func:`load` rebuilds the same frozen weights a run trained with."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_backbone(name, pretrained=pretrained, checkpoint=checkpoint, image_size=image_size)


def save_model(model: TransferModel, out: str | Path, build: dict | None = None) -> Path:
    """``model.safetensors`` (trained parameters + head + trained buffers) and ``config.json``: the model's
    config plus ``build`` (pretrained, seed, checkpoint and its sha256, the frozen weights' sha256), what
    :func:`load` needs to rebuild the same frozen weights."""
    out = Path(out)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(trainable_state(model), str(tmp))
    model.strategy.export(model.backbone, out)  # e.g. lora: a peft adapter beside model.safetensors
    atomic_write_json(out / "config.json", {**model.config(), **(build or {})})
    return out


def load(path: str | Path, pretrained: bool | None = None, checkpoint: str | None = None) -> TransferModel:
    """Rebuild a trained model from a run directory (``config.json`` + ``model.safetensors``).

    Only what was trained is stored there; the frozen backbone weights come from the same source as
    in training (read from ``train_config.json`` unless ``pretrained`` / ``checkpoint`` are given).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a trained sclft model: no config.json (expected a `sclft train --out` "
                                "directory)")
    cfg = json.loads((path / "config.json").read_text())
    run = json.loads((path / "train_config.json").read_text()) if (path / "train_config.json").is_file() else {}
    build = {k: cfg.get(k, run.get(k, default)) for k, default in
             {"pretrained": True, "seed": 0, "checkpoint": None}.items()}  # config.json first (older runs: train_config)
    pretrained = build["pretrained"] if pretrained is None else pretrained
    checkpoint = checkpoint or build["checkpoint"]
    if checkpoint and cfg.get("checkpoint_sha256") and Path(checkpoint).is_file() \
            and file_digest(checkpoint) != cfg["checkpoint_sha256"]:
        raise ValueError(f"cannot rebuild {path} as trained: the backbone weights file {checkpoint} changed since "
                         f"training (sha256 {cfg['checkpoint_sha256'][:12]}... expected); pass checkpoint= the "
                         "original file")
    backbone = build_backbone(cfg["backbone"], pretrained, checkpoint, build["seed"], cfg.get("image_size"))
    model = TransferModel(backbone,
                          cfg["strategy"], cfg["num_classes"], cfg["layer"], cfg.get("class_names"),
                          **{k: v for k, v in (cfg.get("strategy_options") or {}).items() if v is not None})
    if cfg.get("frozen_sha256") and frozen_digest(model) != cfg["frozen_sha256"]:
        raise ValueError(f"cannot rebuild {path} as trained: the frozen {cfg['backbone']} weights built from "
                         f"pretrained={pretrained}, checkpoint={checkpoint}, seed={build['seed']} differ from the "
                         "ones it was trained on (config.json frozen_sha256)")
    load_model_state(model, path)  # names a damaged file
    _check_complete(model, path)
    return model.eval()


def _check_complete(model: TransferModel, path: Path) -> None:
    """Every tensor the run trained must be in ``model.safetensors`` (else it would stay random)."""
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    missing = sorted(set(trainable_state(model)) - stored)
    if missing:
        raise ValueError(f"{path / 'model.safetensors'} is incomplete: missing trained tensors "
                         f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} ({len(missing)} in all)")

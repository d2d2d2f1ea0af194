"""Save and load a trained model: ``model.safetensors`` holds only what trained, ``config.json`` how to
rebuild the rest (backbone source, seed, digests of the frozen weights and of a checkpoint file).

>>> model = sclft.load("runs/demo")        # a `sclft train --out runs/demo` folder
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._hub import WeightsUnavailableError
from .backbones import create_backbone
from .cache import hash_tensors
from .io import atomic_path, atomic_write_json, read_json_object
from .model import TransferModel


class RunFolderError(ValueError):
    """The ``--out`` folder cannot be used as asked: in use, holds another run, or its run files are damaged."""


SHA256 = re.compile(r"[0-9a-f]{64}")
_MISSING = object()


def check_fields(file: Path, data: dict, spec: dict[str, tuple[Any, Callable[[Any], bool] | None, str]]) -> None:
    """Check ``data`` (the JSON object of ``file``) against ``spec``: key -> (types, test or None, what is
    valid); the first bad field is a :class:`RunFolderError` naming the file, the field, its value and what is
    valid (``bool`` is never an ``int`` here)."""
    for key, (kinds, test, valid) in spec.items():
        value = data.get(key, _MISSING)
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        ok = value is not _MISSING and isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if ok and test is not None and value is not None:
            try:
                ok = bool(test(value))
            except (TypeError, ValueError, KeyError, AttributeError):
                ok = False
        if not ok:
            got = "missing" if value is _MISSING else f"{json.dumps(value, default=str)[:80]}"
            raise RunFolderError(f"{file}: field {key!r} is {got}; valid: {valid}")


def trainable_state(model: TransferModel) -> dict[str, torch.Tensor]:
    """Trainable parameters, the head, and the buffers of trained modules (e.g. the tuned block's BN stats)."""
    trained_modules = model.strategy.trainable_backbone_modules(model.backbone)
    trained_ids = {id(t) for m in trained_modules for t in [*m.parameters(), *m.buffers()]}
    state = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if name.startswith("head.") or (isinstance(t, torch.nn.Parameter) and t.requires_grad) or id(t) in trained_ids:
            state[name] = t.detach().cpu().contiguous()
    return state


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


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise RunFolderError(f"{file} is not a readable safetensors file ({e}); the run folder is damaged") from None


EXPORTS_KEY = "exported_files"  # config.json: files beside model.safetensors written by Strategy.export


def build_backbone(name: str, pretrained: bool, checkpoint: str | None, seed: int, image_size: int | None = None):
    """Backbone built for ``image_size`` whose random initialisation (``pretrained=False``) is a function
    of ``seed``, so that :func:`load` rebuilds the same frozen weights a run trained with."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_backbone(name, pretrained=pretrained, checkpoint=checkpoint, image_size=image_size)


def save_model(model: TransferModel, out: str | Path, build: dict | None = None) -> Path:
    """``model.safetensors`` (trained parameters + head + trained buffers) and ``config.json``: the model's
    config plus ``build`` (pretrained, seed, checkpoint and its sha256, the frozen weights' sha256), what
    :func:`load` needs to rebuild the same frozen weights, and the names of the files the strategy's
    ``export`` wrote (:data:`EXPORTS_KEY`), so that ``--overwrite`` can remove them with the run."""
    out = Path(out)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(trainable_state(model), str(tmp))
    exported = model.strategy.export(model.backbone, out)  # e.g. lora: a peft adapter beside model.safetensors
    atomic_write_json(out / "config.json", {**model.config(), **(build or {}), EXPORTS_KEY: list(exported)})
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
    cfg = read_json_object(path / "config.json", RunFolderError)
    run = read_json_object(path / "train_config.json", RunFolderError) if (path / "train_config.json").is_file() else {}
    build = {k: cfg.get(k, run.get(k, default)) for k, default in
             {"pretrained": True, "seed": 0, "checkpoint": None}.items()}  # config.json first (older runs: train_config)
    pretrained = build["pretrained"] if pretrained is None else pretrained
    if checkpoint:  # given by the caller: trusted, but it must be the file the run trained with
        if cfg.get("checkpoint_sha256") and Path(checkpoint).is_file() \
                and file_digest(checkpoint) != cfg["checkpoint_sha256"]:
            raise ValueError(f"cannot rebuild {path} as trained: the backbone weights file {checkpoint} changed since "
                             f"training (sha256 {cfg['checkpoint_sha256'][:12]}... expected); pass checkpoint= the "
                             "original file")
    elif build["checkpoint"]:
        checkpoint = _recorded_checkpoint(path, build["checkpoint"], cfg.get("checkpoint_sha256"))
        try:  # a weights file named by the run: a file that does not load is the run folder's fault
            backbone = build_backbone(cfg["backbone"], pretrained, checkpoint, build["seed"], cfg.get("image_size"))
        except WeightsUnavailableError as e:
            raise RunFolderError(f"{path / 'config.json'}: field 'checkpoint' names {checkpoint}, which does not "
                                 f"load as {cfg['backbone']} weights: {str(e).splitlines()[0]}") from None
    else:
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


def _recorded_checkpoint(run: Path, checkpoint, digest) -> str:
    """The backbone weights file a run's ``config.json`` names, followed only when it lies inside the run folder
    or its content has the sha256 the run recorded (``checkpoint_sha256``): a run folder is untrusted input."""
    file = run / "config.json"
    if not isinstance(checkpoint, str):
        raise RunFolderError(f"{file}: field 'checkpoint' is {checkpoint!r}; valid: a path or null")
    target = Path(checkpoint).expanduser()
    if not target.is_file():
        raise RunFolderError(f"{file}: field 'checkpoint' names {checkpoint}, which is not a file; pass "
                             "checkpoint= (CLI: the original weights file) to rebuild the model")
    if target.resolve().is_relative_to(run.resolve()):
        return str(target)
    if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
        raise RunFolderError(f"{file}: field 'checkpoint' names {checkpoint}, outside the run folder, and no valid "
                             "checkpoint_sha256 vouches for it; it is not opened. Pass checkpoint= explicitly if you "
                             "trust that file")
    if file_digest(target) != digest:
        raise RunFolderError(f"{file}: field 'checkpoint' names {checkpoint}, outside the run folder, whose sha256 is "
                             f"not the checkpoint_sha256 recorded ({digest[:12]}...): it changed since training or is "
                             "another file; it is not opened. Pass checkpoint= the original weights file")
    return str(target)


def _check_complete(model: TransferModel, path: Path) -> None:
    """Every tensor the run trained must be in ``model.safetensors`` (else it would stay random)."""
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    missing = sorted(set(trainable_state(model)) - stored)
    if missing:
        raise ValueError(f"{path / 'model.safetensors'} is incomplete: missing trained tensors "
                         f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} ({len(missing)} in all)")

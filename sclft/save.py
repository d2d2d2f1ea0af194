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
from .card import base_model_id
from .io import _json_default, atomic_path, atomic_write_json, read_json_object
from .model import TransferModel
from .strategies import list_strategies


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


def _trained(model: TransferModel):
    """``(name, tensor)`` of what ``model.safetensors`` stores: trainable parameters, the head, and the buffers
    of trained modules (e.g. the tuned block's BN stats)."""
    trained_modules = model.strategy.trainable_backbone_modules(model.backbone)
    trained_ids = {id(t) for m in trained_modules for t in [*m.parameters(), *m.buffers()]}
    for name, t in model.state_dict(keep_vars=True).items():
        if name.startswith("head.") or (isinstance(t, torch.nn.Parameter) and t.requires_grad) or id(t) in trained_ids:
            yield name, t


def trainable_state(model: TransferModel) -> dict[str, torch.Tensor]:
    """What ``model.safetensors`` stores (see :func:`_trained`), detached on the CPU."""
    return {name: t.detach().cpu().contiguous() for name, t in _trained(model)}


def frozen_digest(model: TransferModel) -> str:
    """sha256 of every tensor of ``model`` that is *not* stored in ``model.safetensors`` (the frozen weights)."""
    trained = {name for name, _ in _trained(model)}
    return hash_tensors(((n, t) for n, t in model.state_dict().items() if n not in trained), hashlib.sha256())


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _some(names: list[str], n: int) -> str:
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def load_model_state(model: TransferModel, path: Path, described_by: str = "this model") -> None:
    """Load ``path/model.safetensors`` into ``model``: exactly the tensors ``model`` trains, each of its shape,
    else a :class:`RunFolderError` naming the file, the tensors and ``described_by`` (what the model was built
    from), instead of a size-mismatch traceback or a model that is silently another one."""
    file = path / "model.safetensors"
    state = _load_tensors(file)
    expected = {name: tuple(t.shape) for name, t in _trained(model)}
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    wrong = [f"{k} {list(state[k].shape)} (needs {list(expected[k])})" for k in state
             if k in expected and tuple(state[k].shape) != expected[k]]
    problems = []
    if wrong:
        problems.append(f"tensors of another shape: {', '.join(wrong[:3])}")
    if unexpected:
        problems.append(f"tensors it does not train: {_some(unexpected, 3)}")
    if missing:
        problems.append(f"missing trained tensors {_some(missing, 8)} ({len(missing)} in all)")
    if problems:
        raise RunFolderError(f"{file} does not fit {described_by}: " + "; ".join(problems))
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


MANIFEST = "manifest.json"  # written last by `sclft train`: the sha256 of every file of the finished run
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a plain file name (no folder, no "..")


def save_model(model: TransferModel, out: str | Path, build: dict | None = None) -> Path:
    """``model.safetensors`` (trained parameters + head + trained buffers) and ``config.json``: the model's
    config plus ``build`` (pretrained, seed, checkpoint and its sha256, the frozen weights' sha256), what
    :func:`load` needs to rebuild the same frozen weights, the names of the files the strategy's ``export``
    wrote (:data:`EXPORTS_KEY`), so that ``--overwrite`` can remove them with the run, and the sha256 of
    ``model.safetensors`` with every other field (:data:`MODEL_DIGEST`: these weights and this config belong
    together)."""
    out = Path(out)
    weights = trainable_state(model)
    with atomic_path(out / "model.safetensors", sum(t.numel() * t.element_size() for t in weights.values())) as tmp:
        save_file(weights, str(tmp))
    build = build or {}
    base = base_model_id(model, build.get("pretrained", True), build.get("checkpoint"))
    # e.g. lora: a peft adapter (with the head) beside model.safetensors
    exported = model.strategy.export(model.backbone, out, head=model.head, base_model=base)
    config = {**model.config(), **build, EXPORTS_KEY: list(exported)}
    config = json.loads(json.dumps(config, default=_json_default))  # as it reads back
    atomic_write_json(out / "config.json", {**config, MODEL_DIGEST: model_digest(out / "model.safetensors", config)})
    return out


MODEL_DIGEST = "model_sha256"


def model_digest(weights: Path, config: dict, weights_sha256: str | None = None) -> str:
    """sha256 of ``model.safetensors`` together with every other field of its ``config.json``: these weights,
    described this way. Any edit of either (strategy, layer, num_classes, options ...) changes it."""
    h = hashlib.sha256((weights_sha256 or file_digest(weights)).encode())
    h.update(json.dumps({k: v for k, v in config.items() if k != MODEL_DIGEST}, sort_keys=True).encode())
    return h.hexdigest()


def write_manifest(out: Path, names: list[str]) -> Path:
    """``out/manifest.json``: the sha256 of each of ``names`` (files of ``out``); written last."""
    return atomic_write_json(out / MANIFEST, {"format": 1, "files": {n: file_digest(out / n) for n in names}})


def check_manifest(path: Path) -> dict[str, str]:
    """Every file ``path/manifest.json`` lists that is present must have the sha256 recorded there, so an edit
    of a run file after the run finished (history, metrics, config) is refused as an edit. A folder without a
    manifest (an older run, or only ``config.json`` + ``model.safetensors`` copied) passes. Returns the digests
    it computed (file name -> sha256)."""
    file = path / MANIFEST
    if not file.is_file():
        return {}
    manifest = read_json_object(file, RunFolderError)
    check_fields(file, manifest, {"format": (int, lambda v: v == 1, "1"),
                                  "files": (dict, lambda v: all(isinstance(d, str) and SHA256.fullmatch(d) and
                                                                _NAME.fullmatch(n) for n, d in v.items()),
                                            "an object: plain file name -> sha256")})
    found = {n: file_digest(path / n) for n in manifest["files"] if (path / n).is_file()}
    for name, digest in manifest["files"].items():
        if name in found and found[name] != digest:
            raise RunFolderError(f"{path / name} was changed after the run finished: its sha256 is not the one "
                                 f"{file} recorded; the run's results and weights cannot be trusted as written "
                                 "(restore the file, or train again)")
    return found


def _config_schema(num_classes) -> dict:
    sha = (str, lambda v: SHA256.fullmatch(v), "a sha256 (64 hex digits)")
    return {
        "backbone": (str, lambda v: v, "a backbone name (sclft list backbones)"),
        "image_size": ((int, type(None)), lambda v: v > 0, "a positive integer or null"),
        "strategy": (str, lambda v: v in list_strategies(), f"one of {', '.join(list_strategies())}"),
        "layer": ((str, type(None)), None, "a block name or null"),
        "num_classes": (int, lambda v: v >= 2, "an integer >= 2"),
        "class_names": ((list, type(None)), lambda v: len(v) == num_classes and all(isinstance(n, str) for n in v),
                        f"null or a list of {num_classes} names (num_classes)"),
        "strategy_options": (dict, None, "an object of the strategy's options"),
        "pretrained": (bool, None, "true or false"),
        "seed": (int, None, "an integer"),
        "checkpoint": ((str, type(None)), None, "a weights file or null"),
        "checkpoint_sha256": ((str, type(None)), sha[1], "null or a sha256 (64 hex digits)"),
        "frozen_sha256": ((str, type(None)), sha[1], "null or a sha256 (64 hex digits)"),
        MODEL_DIGEST: sha,
        EXPORTS_KEY: (list, lambda v: all(isinstance(n, str) and _NAME.fullmatch(n) for n in v),
                      "a list of plain file names"),
    }


_OPTIONAL = ("pretrained", "seed", "checkpoint", "checkpoint_sha256", "frozen_sha256", MODEL_DIGEST, EXPORTS_KEY,
             "image_size", "class_names")  # not written by older sclft versions


def read_config(path: Path) -> dict:
    """``path/config.json``, every field checked against its schema (naming the file and field)."""
    file = path / "config.json"
    cfg = read_json_object(file, RunFolderError)
    spec = _config_schema(cfg.get("num_classes"))
    check_fields(file, cfg, {k: v for k, v in spec.items() if k not in _OPTIONAL or k in cfg})
    return cfg


def load(path: str | Path, pretrained: bool | None = None, checkpoint: str | None = None) -> TransferModel:
    """Rebuild a trained model from a run directory (``config.json`` + ``model.safetensors``).

    Only what was trained is stored there; the frozen backbone weights come from the same source as
    in training (read from ``train_config.json`` unless ``pretrained`` / ``checkpoint`` are given).
    A run folder is untrusted input: the files ``manifest.json`` lists must be unchanged, every field of
    ``config.json`` is checked, ``model.safetensors`` and ``config.json`` must be the pair the run wrote
    (:data:`MODEL_DIGEST`), and ``model.safetensors`` must hold exactly the tensors that model trains, of their
    shapes.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a trained sclft model: no config.json (expected a `sclft train --out` "
                                "directory)")
    digests = check_manifest(path)
    cfg = read_config(path)
    if not (path / "model.safetensors").is_file():
        raise RunFolderError(f"{path} has no model.safetensors: the run did not finish, or the file was removed")
    weights = path / "model.safetensors"
    if MODEL_DIGEST in cfg and model_digest(weights, cfg, digests.get(weights.name)) != cfg[MODEL_DIGEST]:
        raise RunFolderError(f"{path / 'model.safetensors'} and {path / 'config.json'} do not belong together "
                             f"({MODEL_DIGEST} differs): the weights of another run, or either file was edited after "
                             "training")
    run = read_json_object(path / "train_config.json", RunFolderError) if (path / "train_config.json").is_file() else {}
    for key in ("backbone", "strategy"):
        if key in run and run[key] != cfg[key]:
            raise RunFolderError(f"{path / 'config.json'} and {path / 'train_config.json'} disagree on {key!r} "
                                 f"({cfg[key]!r} / {run[key]!r}): one of them was edited or comes from another run")
    # config.json first (older runs: train_config)
    defaults = {"pretrained": True, "seed": 0, "checkpoint": None}
    build = {k: cfg.get(k, run.get(k, default)) for k, default in defaults.items()}
    if not (isinstance(build["pretrained"], bool) and isinstance(build["seed"], int)):
        raise RunFolderError(f"{path / 'train_config.json'}: fields 'pretrained' / 'seed' must be a boolean / an "
                             f"integer, got {build['pretrained']!r} / {build['seed']!r}")
    pretrained = build["pretrained"] if pretrained is None else pretrained
    from_run = not checkpoint and bool(build["checkpoint"])  # a weights file named by the run folder
    if checkpoint:  # given by the caller: trusted, but it must be the file the run trained with
        if cfg.get("checkpoint_sha256") and Path(checkpoint).is_file() \
                and file_digest(checkpoint) != cfg["checkpoint_sha256"]:
            raise ValueError(f"cannot rebuild {path} as trained: the backbone weights file {checkpoint} changed since "
                             f"training (sha256 {cfg['checkpoint_sha256'][:12]}... expected); pass checkpoint= the "
                             "original file")
    elif from_run:
        checkpoint = _recorded_checkpoint(path, build["checkpoint"], cfg.get("checkpoint_sha256"))
    fields = (f"backbone {cfg['backbone']!r}, strategy {cfg['strategy']!r}, layer {cfg['layer']!r}, num_classes "
              f"{cfg['num_classes']}, strategy_options {json.dumps(cfg['strategy_options'])}")
    try:
        backbone = build_backbone(cfg["backbone"], pretrained, checkpoint, build["seed"], cfg.get("image_size"))
        model = TransferModel(backbone,
                              cfg["strategy"], cfg["num_classes"], cfg["layer"], cfg.get("class_names"),
                              **{k: v for k, v in cfg["strategy_options"].items() if v is not None})
    except WeightsUnavailableError as e:
        if not from_run:
            raise
        raise RunFolderError(f"{path / 'config.json'}: field 'checkpoint' names {checkpoint}, which does not "
                             f"load as {cfg['backbone']} weights: {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError, KeyError) as e:  # e.g. an unknown backbone, layer or strategy option
        raise RunFolderError(f"{path / 'config.json'}: the model it describes ({fields}) cannot be built: "
                             f"{e}") from None
    # the tensors present must be the ones this model trains
    load_model_state(model, path, f"the model {path / 'config.json'} describes ({fields})")
    if cfg.get("frozen_sha256") and frozen_digest(model) != cfg["frozen_sha256"]:
        raise ValueError(f"cannot rebuild {path} as trained: the frozen {cfg['backbone']} weights built from "
                         f"pretrained={pretrained}, checkpoint={checkpoint}, seed={build['seed']} differ from the "
                         "ones it was trained on (config.json frozen_sha256)")
    return model.eval()


def _recorded_checkpoint(run: Path, checkpoint, digest) -> str:
    """The backbone weights file a run's ``config.json`` names, followed only when it lies inside the run folder
    (relative paths are read from the run folder): a run folder is untrusted input, and its files never lead
    outside it. A file outside is not even opened, whatever ``checkpoint_sha256`` says; the caller passes it
    (``load(RUN, checkpoint=FILE)``, CLI ``--backbone-weights FILE``), and it is checked against that digest."""
    file = run / "config.json"
    if not isinstance(checkpoint, str):
        raise RunFolderError(f"{file}: field 'checkpoint' is {checkpoint!r}; valid: a path or null")
    given = Path(checkpoint).expanduser()
    target = given if given.is_absolute() else run / given
    if not target.resolve().is_relative_to(run.resolve()):
        raise RunFolderError(f"{file}: field 'checkpoint' names {checkpoint}, outside the run folder; a run folder's "
                             "files never lead outside it, so it is not opened. Pass the backbone weights the run "
                             f"trained with yourself if you trust the file: CLI --backbone-weights {checkpoint}, "
                             f"Python load(RUN, checkpoint={checkpoint!r}) (checked against checkpoint_sha256)")
    if not target.is_file():
        raise RunFolderError(f"{file}: field 'checkpoint' names {checkpoint}, which is not a file in the run folder; "
                             "pass the original weights file (CLI --backbone-weights FILE, Python checkpoint=FILE)")
    if isinstance(digest, str) and SHA256.fullmatch(digest) and file_digest(target) != digest:
        raise RunFolderError(f"{file}: field 'checkpoint' names {checkpoint}, whose sha256 is not the "
                             f"checkpoint_sha256 recorded ({digest[:12]}...): it changed since training or is another "
                             "file. Pass the original weights file (CLI --backbone-weights FILE)")
    return str(target)

"""The model of a run folder: ``model.safetensors`` holds only what trained, ``config.json`` how to rebuild the
rest (backbone source, seed, digests of the frozen weights and of a checkpoint file); :func:`load` rebuilds it.

>>> model = sclft.load("runs/demo")        # a `sclft train --out runs/demo` folder
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._hub import WeightsUnavailableError
from ..backbones import create_backbone
from ..cache import hash_tensors
from ..card import base_model_id
from ..errors import MissingFileError, UsageError
from ..io import as_json, atomic_path, atomic_write_json
from ..model import TransferModel
from .files import (
    CONFIG_FILE,
    EXPORTS_KEY,
    MODEL_DIGEST,
    SHA256,
    TRAIN_CONFIG_FILE,
    WEIGHTS_FILE,
    RunFolderError,
    check_manifest,
    file_digest,
    read_config,
    read_train_config,
)


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


def _some(names: list[str], n: int) -> str:
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def load_model_state(model: TransferModel, path: Path, described_by: str = "this model") -> None:
    """Load ``path/model.safetensors`` into ``model``: exactly the tensors ``model`` trains, each of its shape,
    else a :class:`RunFolderError` naming the file, the tensors and ``described_by`` (what the model was built
    from), instead of a size-mismatch traceback or a model that is silently another one."""
    file = path / WEIGHTS_FILE
    state = load_tensors(file)
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


def load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file of a run folder (a damaged file is a :class:`RunFolderError`)."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise RunFolderError(f"{file} is not a readable safetensors file ({e}); the run folder is damaged") from None


def build_backbone(name: str, pretrained: bool, checkpoint: str | None, seed: int, image_size: int | None = None):
    """Backbone built for ``image_size`` whose random initialisation (``pretrained=False``) is a function
    of ``seed``, so that :func:`load` rebuilds the same frozen weights a run trained with."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_backbone(name, pretrained=pretrained, checkpoint=checkpoint, image_size=image_size)


def save_model(model: TransferModel, out: str | Path, build: dict | None = None) -> Path:
    """``model.safetensors`` (trained parameters + head + trained buffers) and ``config.json``: the model's
    config plus ``build`` (pretrained, seed, checkpoint and its sha256, the frozen weights' sha256), what
    :func:`load` needs to rebuild the same frozen weights, the names of the files the strategy's ``export``
    wrote (:data:`EXPORTS_KEY`), so that ``--overwrite`` can remove them with the run, and the sha256 of
    ``model.safetensors`` with every other field (:data:`MODEL_DIGEST`: these weights and this config belong
    together)."""
    out = Path(out)
    weights = trainable_state(model)
    with atomic_path(out / WEIGHTS_FILE, sum(t.numel() * t.element_size() for t in weights.values())) as tmp:
        save_file(weights, str(tmp))
    build = build or {}
    base = base_model_id(model, build.get("pretrained", True), build.get("checkpoint"))
    # e.g. lora: a peft adapter (with the head) beside model.safetensors
    exported = model.strategy.export(model.backbone, out, head=model.head, base_model=base)
    config = {**model.config(), **build, EXPORTS_KEY: list(exported)}
    config = as_json(config)  # as it reads back
    atomic_write_json(out / CONFIG_FILE, {**config, MODEL_DIGEST: model_digest(out / WEIGHTS_FILE, config)})
    return out


def model_digest(weights: Path, config: dict, weights_sha256: str | None = None) -> str:
    """sha256 of ``model.safetensors`` together with every other field of its ``config.json``: these weights,
    described this way. Any edit of either (strategy, layer, num_classes, options ...) changes it."""
    h = hashlib.sha256((weights_sha256 or file_digest(weights)).encode())
    h.update(json.dumps({k: v for k, v in config.items() if k != MODEL_DIGEST}, sort_keys=True).encode())
    return h.hexdigest()


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
    config_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.is_file():
        raise MissingFileError(f"{path} is not a trained sclft model: no {CONFIG_FILE} (expected a `sclft train "
                                "--out` directory)")
    digests = check_manifest(path)
    cfg = read_config(path)
    if not weights.is_file():
        raise RunFolderError(f"{path} has no {WEIGHTS_FILE}: the run did not finish, or the file was removed")
    if MODEL_DIGEST in cfg and model_digest(weights, cfg, digests.get(weights.name)) != cfg[MODEL_DIGEST]:
        raise RunFolderError(f"{weights} and {config_file} do not belong together ({MODEL_DIGEST} differs): the "
                             "weights of another run, or either file was edited after training")
    run = read_train_config(path)
    for key in ("backbone", "strategy"):
        if key in run and run[key] != cfg[key]:
            raise RunFolderError(f"{config_file} and {path / TRAIN_CONFIG_FILE} disagree on {key!r} "
                                 f"({cfg[key]!r} / {run[key]!r}): one of them was edited or comes from another run")
    # config.json first (older runs: train_config)
    defaults = {"pretrained": True, "seed": 0, "checkpoint": None}
    build = {k: cfg.get(k, run.get(k, default)) for k, default in defaults.items()}
    pretrained = build["pretrained"] if pretrained is None else pretrained
    from_run = not checkpoint and bool(build["checkpoint"])  # a weights file named by the run folder
    if checkpoint:  # given by the caller: trusted, but it must be the file the run trained with
        if cfg.get("checkpoint_sha256") and Path(checkpoint).is_file() \
                and file_digest(checkpoint) != cfg["checkpoint_sha256"]:
            raise UsageError(f"cannot rebuild {path} as trained: the backbone weights file {checkpoint} changed since "
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
        raise RunFolderError(f"{config_file}: field 'checkpoint' names {checkpoint}, which does not "
                             f"load as {cfg['backbone']} weights: {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError, KeyError) as e:  # e.g. an unknown backbone, layer or strategy option
        raise RunFolderError(f"{config_file}: the model it describes ({fields}) cannot be built: {e}") from None
    # the tensors present must be the ones this model trains
    load_model_state(model, path, f"the model {config_file} describes ({fields})")
    if cfg.get("frozen_sha256") and frozen_digest(model) != cfg["frozen_sha256"]:
        raise UsageError(f"cannot rebuild {path} as trained: the frozen {cfg['backbone']} weights built from "
                         f"pretrained={pretrained}, checkpoint={checkpoint}, seed={build['seed']} differ from the "
                         f"ones it was trained on ({CONFIG_FILE} frozen_sha256)")
    return model.eval()


def _recorded_checkpoint(run: Path, checkpoint, digest) -> str:
    """The backbone weights file a run's ``config.json`` names, followed only when it lies inside the run folder
    (relative paths are read from the run folder): a run folder is untrusted input, and its files never lead
    outside it. A file outside is not even opened, whatever ``checkpoint_sha256`` says; the caller passes it
    (``load(RUN, checkpoint=FILE)``, CLI ``--backbone-weights FILE``), and it is checked against that digest."""
    file = run / CONFIG_FILE
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

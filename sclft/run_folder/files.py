"""The files of a run folder: their names, their schemas, and reading them checked (digests, fields).

``manifest.json`` is written last by ``sclft train`` and records the sha256 of every run file; a file it lists
that was changed afterwards is refused as an edit, wherever it is read (``load``, eval, predict, export, the
model card, the bench runner and reports). The model card (``README.md``) is not listed: a user may edit it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io import atomic_write_json, read_json, read_json_object
from ..strategies import list_strategies

CONFIG_FILE = "config.json"  # how to rebuild the model: model config + build (weights source, seed, digests)
TRAIN_CONFIG_FILE = "train_config.json"  # the TrainConfig the run was trained with
METRICS_FILE = "metrics.json"  # the run's results; its presence (with the manifest) marks a finished run
WEIGHTS_FILE = "model.safetensors"  # the trained tensors only
MANIFEST_FILE = "manifest.json"  # written last: the sha256 of every run file
CARD_FILE = "README.md"  # the Hugging Face model card (not in the manifest: a user may edit it)
CHECKPOINT_DIR = "checkpoint"  # resume state: epoch-E/ folders (sclft.training.checkpoint) and the pointer
CHECKPOINT_POINTER = "latest.json"  # CHECKPOINT_DIR/latest.json: the newest complete checkpoint and its digests
LOCK_FILE = ".sclft.lock"  # names the one process writing the folder
RUN_FILES = (METRICS_FILE, WEIGHTS_FILE, CONFIG_FILE, TRAIN_CONFIG_FILE, MANIFEST_FILE)
RESULT_FILES = (METRICS_FILE, CONFIG_FILE, TRAIN_CONFIG_FILE)  # what reports read (the weights are not hashed)
CARD_MARK = "library_name: sclft"  # in the front matter of every card sclft writes

EXPORTS_KEY = "exported_files"  # config.json: files beside model.safetensors written by Strategy.export
MODEL_DIGEST = "model_sha256"  # config.json: sha256 of model.safetensors with every other field of config.json


class RunFolderError(UsageError):
    """The ``--out`` folder cannot be used as asked: in use, holds another run, or its run files are damaged."""


SHA256 = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a plain file name (no folder, no "..")
_MISSING = object()
Spec = dict[str, tuple[Any, Callable[[Any], bool] | None, str]]


def check_fields(file: Path, data: dict, spec: Spec) -> None:
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


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ manifest
def write_manifest(out: Path, names: Iterable[str]) -> Path:
    """``out/manifest.json``: the sha256 of each of ``names`` (files of ``out``); written last."""
    return atomic_write_json(out / MANIFEST_FILE, {"format": 1, "files": {n: file_digest(out / n) for n in names}})


def check_manifest(path: Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """Every file ``path/manifest.json`` lists that is present (of ``names``, when given: e.g. the result files
    alone, without hashing the weights) must have the sha256 recorded there, so an edit of a run file after the
    run finished (history, metrics, config) is refused as an edit; a run file that is present must be listed.
    A folder without a manifest (an older run, or only ``config.json`` + ``model.safetensors`` copied) passes.
    Returns the digests it computed (file name -> sha256)."""
    file = path / MANIFEST_FILE
    if not file.is_file():
        return {}
    manifest = read_json_object(file, RunFolderError)
    check_fields(file, manifest, {"format": (int, lambda v: v == 1, "1"),
                                  "files": (dict, lambda v: all(isinstance(d, str) and SHA256.fullmatch(d) and
                                                                NAME.fullmatch(n) for n, d in v.items()),
                                            "an object: plain file name -> sha256")})
    listed: dict[str, str] = manifest["files"]
    wanted = set(listed) | set(RUN_FILES) if names is None else set(names)
    unlisted = [n for n in RUN_FILES if n != MANIFEST_FILE and n in wanted and n not in listed
                and (path / n).is_file()]
    if unlisted:
        raise RunFolderError(f"{file} does not list {', '.join(unlisted)}, which sclft train records there: the "
                             "manifest was edited or comes from another run; the run's files cannot be trusted as "
                             "written (restore the manifest, or train again)")
    found = {n: file_digest(path / n) for n in listed if n in wanted and (path / n).is_file()}
    for name, digest in listed.items():
        if name in found and found[name] != digest:
            raise RunFolderError(f"{path / name} was changed after the run finished: its sha256 is not the one "
                                 f"{file} recorded; the run's results and weights cannot be trusted as written "
                                 "(restore the file, or train again)")
    return found


# ------------------------------------------------------------------------------------------------ schemas
def _config_schema(num_classes) -> Spec:
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
        EXPORTS_KEY: (list, lambda v: all(isinstance(n, str) and NAME.fullmatch(n) for n in v),
                      "a list of plain file names"),
    }


_CONFIG_OPTIONAL = ("pretrained", "seed", "checkpoint", "checkpoint_sha256", "frozen_sha256", MODEL_DIGEST,
                    EXPORTS_KEY, "image_size", "class_names")  # not written by older sclft versions

# train_config.json: the fields a reader uses, checked when present (the rest is TrainConfig's business)
TRAIN_CONFIG_SCHEMA: Spec = {
    "backbone": (str, lambda v: v, "a backbone name"),
    "strategy": (str, lambda v: v, "a strategy name"),
    "data": (str, None, "a dataset name"),
    "data_dir": ((str, type(None)), None, "a folder or null"),
    "image_size": ((int, type(None)), lambda v: v > 0, "a positive integer or null"),
    "pretrained": (bool, None, "true or false"),
    "seed": (int, None, "an integer"),
    "checkpoint": ((str, type(None)), None, "a weights file or null"),
    "train_per_class": ((int, type(None)), lambda v: v > 0, "a positive integer or null"),
    "val_fraction": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "batch_size": (int, lambda v: v > 0, "a positive integer"),
    "strategy_options": ((dict, type(None)), None, "an object of the strategy's options"),
    "extra": ((dict, type(None)), None, "an object"),
}

_NUMBER = (int, float)
_FRACTION = (_NUMBER, lambda v: 0 <= v <= 1, "a number in [0, 1]")
# metrics.json: every field a reader uses, checked when present; test_accuracy is required
METRICS_SCHEMA: Spec = {
    "backbone": (str, None, "a backbone name"),
    "dataset": (str, None, "a dataset name"),
    "strategy": (str, None, "a strategy name"),
    "layer": ((str, type(None)), None, "a block name or null"),
    "num_classes": (int, lambda v: v >= 2, "an integer >= 2"),
    "test_accuracy": _FRACTION,
    "train_accuracy": _FRACTION,
    "val_accuracy": _FRACTION,
    "nc1_train": (_NUMBER, None, "a number"),
    "nc1_test": (_NUMBER, None, "a number"),
    "trainable_params": (int, lambda v: v >= 0, "an integer >= 0"),
    "total_params": (int, lambda v: v >= 0, "an integer >= 0"),
    "trainable_percent": (_NUMBER, lambda v: 0 <= v <= 100, "a number in [0, 100]"),
    "epochs": (int, lambda v: v >= 0, "an integer >= 0"),
    "seconds": (_NUMBER, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "seed": (int, None, "an integer"),
    "image_size": ((int, type(None)), lambda v: v > 0, "a positive integer or null"),
    "history": (list, lambda v: all(isinstance(h, dict) for h in v), "a list of per-epoch records"),
    "layer_selection": ((dict, type(None)), None, "an object or null"),
}
_METRICS_REQUIRED = ("test_accuracy",)


def _checked(file: Path, spec: Spec, required: Iterable[str] = ()) -> dict:
    data = read_json_object(file, RunFolderError)
    check_fields(file, data, {k: v for k, v in spec.items() if k in data or k in required})
    return data


def read_config(path: Path) -> dict:
    """``path/config.json``, every field checked against its schema (naming the file and field)."""
    file = path / CONFIG_FILE
    cfg = read_json_object(file, RunFolderError)
    spec = _config_schema(cfg.get("num_classes"))
    check_fields(file, cfg, {k: v for k, v in spec.items() if k not in _CONFIG_OPTIONAL or k in cfg})
    return cfg


def read_train_config(path: Path) -> dict:
    """``path/train_config.json`` (``{}`` when absent: a folder of only the model's files), the fields readers
    use checked (:data:`TRAIN_CONFIG_SCHEMA`)."""
    file = path / TRAIN_CONFIG_FILE
    return _checked(file, TRAIN_CONFIG_SCHEMA) if file.is_file() else {}


def read_metrics(path: Path) -> dict:
    """``path/metrics.json``, its fields checked (:data:`METRICS_SCHEMA`)."""
    return _checked(path / METRICS_FILE, METRICS_SCHEMA, _METRICS_REQUIRED)


def exported_files(path: Path) -> list[str]:
    """The files a finished run's strategy exported beside its model (``config.json`` lists them; plain
    names only, so a damaged list cannot reach outside ``path``; an unreadable config lists none)."""
    try:
        names = read_json_object(path / CONFIG_FILE, RunFolderError).get(EXPORTS_KEY) or []
    except RunFolderError:
        return []
    return [n for n in names if isinstance(n, str) and NAME.fullmatch(n) and n not in RUN_FILES]


def is_sclft_card(file: Path) -> bool:
    """Whether ``file`` is a model card sclft wrote (else: the user's own ``README.md``, never replaced)."""
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            return CARD_MARK in f.read(2000)
    except OSError:
        return False


def has_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds resume state (``checkpoint/latest.json``)."""
    return (Path(path) / CHECKPOINT_DIR / CHECKPOINT_POINTER).is_file()


# ------------------------------------------------------------------------------------------ finished runs
def check_run(path: str | Path, flag: str = "--checkpoint") -> Path:
    """``path`` as a finished ``sclft train --out`` folder, else a :class:`UsageError` that says what it is instead:
    missing, a file, an unfinished run (checkpoints but no ``metrics.json`` yet), or not a sclft run."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a run folder" if path.exists() else "no such run folder"
        raise UsageError(f"{flag} {path}: {what} (expected the --out folder of a finished `sclft train`)")
    config = path / CONFIG_FILE
    if not config.is_file():
        if has_checkpoint(path):
            raise UsageError(f"{flag} {path}: an unfinished sclft run (checkpoints, no model yet); finish it with "
                             "`sclft train ... --resume` first")
        raise UsageError(f"{flag} {path}: not a sclft run folder (no {CONFIG_FILE}; expected the --out folder of a "
                         "finished `sclft train`)")
    try:
        cfg = read_json(config)
    except ValueError as e:  # names the file and the fault: unreadable, not UTF-8, not JSON
        raise UsageError(f"{flag} {path}: {e}; the run folder is damaged") from None
    if not isinstance(cfg, dict) or not {"backbone", "strategy", "num_classes"} <= set(cfg):
        keys = ", ".join(sorted(cfg)[:6]) if isinstance(cfg, dict) else type(cfg).__name__
        raise UsageError(f"{flag} {path}: not a sclft run folder ({config} lacks backbone / strategy / num_classes; "
                         f"it has {keys}): another tool's model folder?")
    if not (path / METRICS_FILE).is_file():
        raise UsageError(f"{flag} {path}: an unfinished sclft run (no {METRICS_FILE}: training did not finish); "
                         "finish it with `sclft train ... --resume` first")
    return path


def unfinished_reason(path: Path) -> str | None:
    """Why the results in ``path`` are not those of a finished run (None: they are). Finished: ``metrics.json``
    and the ``manifest.json`` written after it; or a *record* of a run, its JSON files kept without weights or
    manifest (as a committed ``runs.tar.gz`` holds them). A folder with the weights but no manifest did not
    finish (interrupted after ``metrics.json``) or lost its manifest: its numbers cannot be checked."""
    if not (path / METRICS_FILE).is_file():
        return f"no {METRICS_FILE}"
    if (path / WEIGHTS_FILE).is_file() and not (path / MANIFEST_FILE).is_file():
        return (f"{WEIGHTS_FILE} but no {MANIFEST_FILE}, which sclft train writes last: it did not finish, or its "
                "manifest was deleted, so its numbers cannot be checked")
    return None


def is_finished(path: Path) -> bool:
    """Whether ``path`` holds the results of a finished run (see :func:`unfinished_reason`)."""
    return unfinished_reason(Path(path)) is None


@dataclass(frozen=True)
class RunRecord:
    """The result files of one run, read checked: ``metrics`` (``metrics.json``), ``train_config``
    (``train_config.json``, ``{}`` when absent), ``config`` (``config.json``, ``{}`` when absent); ``verified``:
    a manifest vouched for them (False for a record kept without its manifest)."""

    path: Path
    metrics: dict[str, Any]
    train_config: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    verified: bool = False


def read_run(path: str | Path, with_config: bool = False, finished: bool = True) -> RunRecord:
    """The results of the finished run in ``path`` (:func:`unfinished_reason`; ``finished=False``: of the run
    being written, before its manifest), each result file checked against ``manifest.json`` (the weights are
    not hashed here: :func:`~sclft.run_folder.load` does) and against its schema (``config.json`` read only
    ``with_config``); a changed, unlisted or malformed file is a :class:`RunFolderError` naming it."""
    path = Path(path)
    reason = unfinished_reason(path) if finished else None
    if reason is not None:
        raise RunFolderError(f"{path} is not a finished sclft run: {reason}")
    digests = check_manifest(path, RESULT_FILES)
    config = read_config(path) if with_config and (path / CONFIG_FILE).is_file() else {}
    return RunRecord(path, read_metrics(path), read_train_config(path), config, verified=bool(digests))

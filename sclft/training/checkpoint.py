"""Checkpoints of a run, ``checkpoint/epoch-E/``, and ``checkpoint/latest.json``; the resume check.

Nothing is pickled (a run folder is untrusted input): tensors are safetensors, everything else JSON.

* ``model.safetensors`` — the trained tensors; ``sampler.safetensors`` — the shuffling generator;
* ``optimizer.safetensors`` — the optimizer's state tensors, named ``"<param index>.<key>"``;
* ``rng_<process>.safetensors`` — each process's RNG (torch CPU and CUDA state bytes, numpy's and python's
  ``random`` state), as Accelerate's ``random_states_<process>.pkl``;
* ``training_state.json`` — format, epoch, history, seconds, layer and selection, process count, the config,
  and the JSON part of the training objects: optimizer param groups (hyper-parameters) and non-tensor state,
  the lr schedule, the GradScaler, Accelerate's step counter;
* ``config.json`` — the model's config.

``latest.json`` names the newest complete checkpoint and the sha256 of each of its files; resume verifies
every digest and every field before it uses anything, so an edited or damaged file is refused, naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import TrainConfig, fields_where
from ..errors import UsageError
from ..io import DiskFullError, atomic_write_json, plain_mode, read_json_object, space_for
from ..model import TransferModel
from ..run_folder import (
    CHECKPOINT_DIR,
    CHECKPOINT_POINTER,
    CONFIG_FILE,
    SHA256,
    WEIGHTS_FILE,
    RunFolderError,
    check_fields,
    file_digest,
    load_tensors,
    trainable_state,
)

TRAINING_STATE = "training_state.json"
STATE_FORMAT = 3  # bump when the checkpoint layout changes (older checkpoints are refused, not misread)
_CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})")
_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
REQUIRED_FILES = (WEIGHTS_FILE, "sampler.safetensors", "optimizer.safetensors", TRAINING_STATE, CONFIG_FILE)
# TrainConfig fields that may differ between a run and its --resume: they do not change the trained weights.
# (``cache`` may switch between memory / disk / auto, not to or from "off": that changes float rounding.)
RESUME_MAY_DIFFER = fields_where("resume_may_differ")  # declared by each TrainConfig field


def _rng_file(process_index: int) -> str:
    return f"rng_{process_index}.safetensors"


# ------------------------------------------------------------------------------------------ training objects
def _optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` split into its tensors (safetensors) and the JSON rest."""
    sd = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, values in sd["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": plain}


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _like(saved, now):
    """``saved`` (from JSON) in the type of the current value ``now``; None when it is of another kind."""
    if isinstance(now, tuple):
        ok = isinstance(saved, list) and len(saved) == len(now) and all(_like(s, n) is not None or s is n is None
                                                                         for s, n in zip(saved, now))
        return tuple(saved) if ok else None
    if isinstance(now, bool) or now is None or isinstance(now, str):
        return saved if type(saved) is type(now) else None
    if isinstance(now, (int, float)):
        return saved if isinstance(saved, (int, float)) and not isinstance(saved, bool) else None
    return saved if saved == now else None  # lists (params, param_names): must be the same


def _load_optimizer(optimizer, info, tensors: dict[str, torch.Tensor], state_file: Path, tensor_file: Path) -> None:
    """Check the saved optimizer state against ``optimizer`` (groups, hyper-parameter types, parameter indices
    and shapes) and load it; anything that does not fit names the file and field."""
    current = optimizer.state_dict()
    groups = info.get("param_groups") if isinstance(info, dict) else None
    if not isinstance(groups, list) or len(groups) != len(current["param_groups"]):
        raise RunFolderError(f"{state_file}: optimizer.param_groups must be a list of {len(current['param_groups'])} "
                             f"parameter groups (this model's), got {str(groups)[:80]}")
    fixed = []
    for i, (saved, now) in enumerate(zip(groups, current["param_groups"])):
        if not isinstance(saved, dict) or set(saved) != set(now):
            raise RunFolderError(f"{state_file}: optimizer.param_groups[{i}] must have the keys "
                                 f"{sorted(now)}, got {sorted(saved) if isinstance(saved, dict) else saved!r}")
        group = {}
        for key, value in now.items():
            group[key] = _like(saved[key], value)
            if group[key] is None and value is not None:
                raise RunFolderError(f"{state_file}: optimizer.param_groups[{i}].{key} is {saved[key]!r}, which "
                                     f"does not fit this optimizer (like {value!r})")
        fixed.append(group)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    plain = info.get("state")
    if not isinstance(plain, dict):
        raise RunFolderError(f"{state_file}: optimizer.state must be an object, got {plain!r}")
    for where, items in [(tensor_file, tensors.items()),
                         (state_file, [(f"{i}.{k}", v) for i, kv in plain.items()
                                       for k, v in (kv.items() if isinstance(kv, dict) else [("", kv)])])]:
        for name, value in items:
            index, _, key = name.partition(".")
            if not (index.isdigit() and int(index) < len(params) and key):
                raise RunFolderError(f"{where}: optimizer state {name!r} names no parameter of this model (it has "
                                     f"{len(params)} trained parameters, state keys \"<index>.<name>\")")
            param = params[int(index)]
            if isinstance(value, torch.Tensor):
                if value.dim() and tuple(value.shape) != tuple(param.shape):
                    raise RunFolderError(f"{where}: optimizer state {name!r} has shape {list(value.shape)}, "
                                         f"its parameter {list(param.shape)}")
            elif not _plain(value):
                raise RunFolderError(f"{where}: optimizer.state.{name} is {value!r}; expected a number")
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": fixed})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's RNG: torch CPU / CUDA state bytes and numpy's keys as tensors, the rest as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    tensors["python"] = torch.tensor(internal, dtype=torch.int64)
    return tensors, {"numpy": json.dumps([kind, int(pos), int(has_gauss), float(gauss)]),
                     "python": json.dumps([version, gauss_next])}


def _set_rng_state(file: Path) -> None:
    tensors = load_tensors(file)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        kind, pos, has_gauss, gauss = json.loads(meta["numpy"])
        version, gauss_next = json.loads(meta["python"])
        torch_state = tensors["torch"]
        if torch_state.dtype != torch.uint8 or torch_state.shape != torch.get_rng_state().shape:
            raise UsageError(f"torch state of shape {list(torch_state.shape)} {torch_state.dtype}")
        numpy_keys = tensors["numpy"].numpy()
        if numpy_keys.shape != (624,) or numpy_keys.min() < 0 or numpy_keys.max() >= 2**32:
            raise UsageError("numpy keys must be 624 integers in [0, 2**32)")
        np_state = (kind, numpy_keys.astype(np.uint32), int(pos), int(has_gauss), float(gauss))
        py_state = (int(version), tuple(int(v) for v in tensors["python"].tolist()),
                    None if gauss_next is None else float(gauss_next))
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                if f"cuda.{i}" in tensors:
                    torch.cuda.set_rng_state(tensors[f"cuda.{i}"], i)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RunFolderError(f"{file} is not an RNG state this sclft wrote ({type(e).__name__}: {e})") from None


def _training_objects(accelerator, optimizer, scheduler) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, info = _optimizer_state(optimizer) if optimizer is not None else ({}, None)
    scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
    return tensors, {"optimizer": info, "scheduler": scheduler.state_dict() if scheduler is not None else None,
                     "scaler": scaler, "accelerator_step": int(accelerator.step)}


def restore_training_state(accelerator, path: Path, state: dict, optimizer, scheduler,
                           sampler_gen: torch.Generator) -> None:
    """Load what :func:`save_checkpoint` wrote beside the model (optimizer, schedule, GradScaler, Accelerate's
    step counter, the sampler's generator, this process's RNG), each checked against the object it goes into.
    Called by every process."""
    file = path / TRAINING_STATE
    sampler = load_tensors(path / "sampler.safetensors")
    now = sampler_gen.get_state()
    if set(sampler) != {"sampler"} or sampler["sampler"].dtype != now.dtype or sampler["sampler"].shape != now.shape:
        raise RunFolderError(f"{path / 'sampler.safetensors'} must hold one tensor \"sampler\" ({now.dtype}, shape "
                             f"{list(now.shape)}): a torch.Generator state; got {sorted(sampler)}")
    if optimizer is not None:
        _load_optimizer(optimizer, state["optimizer"], load_tensors(path / "optimizer.safetensors"), file,
                        path / "optimizer.safetensors")
    if scheduler is not None:
        sched = state.get("scheduler")
        if not isinstance(sched, dict) or set(sched) != set(scheduler.state_dict()) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sched.values()):
            raise RunFolderError(f"{file}: scheduler must be {scheduler.state_dict()} with integers >= 0 "
                                 f"(this run's schedule), got {sched!r}")
        if sched["total_steps"] != scheduler.total_steps or sched["warmup_steps"] != scheduler.warmup_steps:
            raise RunFolderError(f"{file}: scheduler total_steps / warmup_steps {sched['total_steps']} / "
                                 f"{sched['warmup_steps']} are not this run's {scheduler.total_steps} / "
                                 f"{scheduler.warmup_steps}")
        scheduler.load_state_dict(sched)
    scaler = state.get("scaler")
    if accelerator.scaler is not None:
        want = accelerator.scaler.state_dict()
        if not isinstance(scaler, dict) or set(scaler) != set(want) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scaler.values()):
            raise RunFolderError(f"{file}: scaler must be a GradScaler state with the keys {sorted(want)} (finite "
                                 f"numbers), got {scaler!r}")
        accelerator.scaler.load_state_dict(scaler)
    accelerator.step = state["accelerator_step"]
    sampler_gen.set_state(sampler["sampler"])
    _set_rng_state(path / _rng_file(accelerator.process_index))


# ------------------------------------------------------------------------------------------ writing
def _save_tensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    save_file(tensors, str(path), metadata=metadata)
    plain_mode(path)  # save_file creates 0600


def save_checkpoint(accelerator, out: Path, model: TransferModel, epoch: int, sampler_gen: torch.Generator,
                    state: dict, optimizer=None, scheduler=None) -> Path:
    """Write ``checkpoint/epoch-E`` fully (every process writes its RNG state), then atomically point
    ``checkpoint/latest.json`` at it (with the sha256 of every file) and remove older checkpoints. Called by
    every process."""
    root = out / CHECKPOINT_DIR
    target = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.partial"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rng, rng_meta = _rng_state()
    if main:
        tensors, objects = _training_objects(accelerator, optimizer, scheduler)
        weights = trainable_state(model)
    needed = _nbytes(rng) + (_nbytes(tensors) + _nbytes(weights) if main else 0)  # about the whole checkpoint
    try:
        with space_for(tmp, needed):
            _save_tensors(rng, tmp / _rng_file(accelerator.process_index), metadata=rng_meta)
        accelerator.wait_for_everyone()
        if main:
            with space_for(tmp, needed):
                _save_tensors(tensors, tmp / "optimizer.safetensors")
                _save_tensors(weights, tmp / WEIGHTS_FILE)
                _save_tensors({"sampler": sampler_gen.get_state()}, tmp / "sampler.safetensors")
            atomic_write_json(tmp / TRAINING_STATE, {"format": STATE_FORMAT, "epoch": epoch, **state, **objects})
            atomic_write_json(tmp / CONFIG_FILE, model.config())
            files = {p.name: file_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            atomic_write_json(root / CHECKPOINT_POINTER, {"format": STATE_FORMAT, "epoch": epoch, "path": target.name,
                                                     "files": files})
            for old in root.glob("epoch-*"):
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
    except DiskFullError:
        shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoint stays the latest
        raise
    accelerator.wait_for_everyone()
    return target


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


# ------------------------------------------------------------------------------------------ reading
def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint ``checkpoint/latest.json`` names, with every file it lists verified against its sha256;
    None when there is no pointer. A pointer that is not JSON, lacks a field, points outside ``checkpoint/``,
    or names a missing, incomplete or edited checkpoint is a :class:`RunFolderError` (nothing is deleted)."""
    root = Path(out) / CHECKPOINT_DIR
    pointer = root / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    info = read_json_object(pointer, RunFolderError)
    name = info.get("path")
    match = _CHECKPOINT_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise RunFolderError(f"{pointer}: \"path\" must name a checkpoint folder inside {root} such as "
                             f"\"epoch-0003\", got {name!r}; nothing was deleted")
    if info.get("format") != STATE_FORMAT:
        raise RunFolderError(f"{pointer}: checkpoint format {info.get('format')!r}, this sclft writes "
                             f"{STATE_FORMAT} (older checkpoints held pickled Accelerate state, which is never "
                             "loaded); it cannot be resumed: start over with --overwrite; nothing was deleted")
    check_fields(pointer, info, {"epoch": (int, lambda v: v == int(match.group(1)), f"the epoch of {name}"),
                                 "files": (dict, None, "an object: file name -> sha256")})
    path = root / name
    files = info["files"]
    bad = [f for f, digest in files.items() if not (isinstance(f, str) and _FILE_NAME.fullmatch(f) and f[0] != "."
                                                    and isinstance(digest, str) and SHA256.fullmatch(digest))]
    missing = [f for f in REQUIRED_FILES if f not in files]
    if bad or missing:
        raise RunFolderError(f"{pointer}: \"files\" must list the sha256 of every file of the checkpoint "
                             f"({', '.join(REQUIRED_FILES)}, rng_N.safetensors); "
                             + (f"bad entries: {', '.join(map(repr, bad[:3]))}" if bad else
                                f"missing: {', '.join(missing)}") + "; nothing was deleted")
    absent = [f for f in files if not (path / f).is_file()]
    if absent:
        raise RunFolderError(f"{pointer} names {path}, which is missing or incomplete (no {', '.join(absent)}); "
                             "nothing was deleted: restore it, or start over with --overwrite")
    for f, digest in files.items():
        if file_digest(path / f) != digest:
            raise RunFolderError(f"{path / f} does not match the sha256 that {pointer} recorded for it: the file was "
                                 "edited or damaged after it was written, so the run cannot be resumed as trained; "
                                 "nothing was deleted: restore it, or start over with --overwrite")
    return path


def _history_ok(history: list, epoch: int) -> bool:
    return len(history) == epoch and all(
        isinstance(h, dict) and h.get("epoch") == i + 1 and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for k, v in h.items()) for i, h in enumerate(history))


def read_training_state(path: Path) -> dict:
    """``path/training_state.json``, checked field by field against its schema and against the checkpoint it
    belongs to (epoch = the folder's, one history record per epoch, one RNG file per process)."""
    file = path / TRAINING_STATE
    state = read_json_object(file, RunFolderError)
    if state.get("format") != STATE_FORMAT:
        raise RunFolderError(f"{file} has checkpoint format {state.get('format')!r}, this sclft writes "
                             f"{STATE_FORMAT}; it cannot be resumed exactly: train into a new --out or pass "
                             "--overwrite")
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    epoch = int(match.group(1)) if match else None
    check_fields(file, state, {
        "epoch": (int, lambda v: v == epoch, f"{epoch}, the epoch of its folder {path.name}"),
        "history": (list, lambda v: _history_ok(v, state["epoch"]),
                    "one record per epoch done, {\"epoch\": 1, ...}, {\"epoch\": 2, ...}, ... with finite numbers"),
        "seconds": ((int, float), lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
        "config": (dict, None, "the run's config"),
        "layer": ((str, type(None)), None, "a block name or null"),
        "layer_selection": ((dict, type(None)), None, "an object or null"),
        "num_processes": (int, lambda v: v >= 1 and all((path / _rng_file(i)).is_file() for i in range(v)),
                          "the process count, with one rng_N.safetensors per process"),
        "optimizer": ((dict, type(None)), None, "the optimizer's param groups and state, or null"),
        "scheduler": ((dict, type(None)), None, "the lr schedule's state, or null"),
        "scaler": ((dict, type(None)), None, "the GradScaler's state, or null"),
        "accelerator_step": (int, lambda v: v >= 0, "an integer >= 0"),
    })
    return state


def resume_view(config: dict) -> dict:
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
    new = {**resume_view(dataclasses.asdict(cfg)), "num_processes": num_processes}
    diffs = [f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
             if json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True)]
    if diffs:
        raise UsageError(f"--resume: {path} was trained with a different configuration, so continuing would "
                         "not give the run it started; differing: " + "; ".join(diffs)
                         + f". Use the original values, or train into a new --out. (May differ: "
                         f"{', '.join(RESUME_MAY_DIFFER)}.)")
    if state["epoch"] > cfg.epochs:
        raise RunFolderError(f"{path / TRAINING_STATE}: epoch {state['epoch']} is beyond the run's epochs "
                             f"{cfg.epochs}; the file is damaged")
    return state

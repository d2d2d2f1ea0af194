"""Checkpoints of a run: ``checkpoint/epoch-E/`` (Accelerate's training state, the trained tensors, the
sampler state, ``training_state.json``) and ``checkpoint/latest.json``; the resume check."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import TrainConfig
from ..io import atomic_write_json
from ..model import TransferModel
from ..save import RunFolderError, trainable_state

CHECKPOINT_DIR = "checkpoint"
TRAINING_STATE = "training_state.json"
STATE_FORMAT = 2  # bump when the checkpoint layout changes (older checkpoints are refused, not misread)
_CHECKPOINT_NAME = re.compile(r"epoch-\d{4,}")
# TrainConfig fields that may differ between a run and its --resume: they do not change the trained weights.
# (``cache`` may switch between memory / disk / auto, not to or from "off": that changes float rounding.)
RESUME_MAY_DIFFER = ("out", "resume", "overwrite", "progress", "num_workers", "tensorboard", "eval_every",
                     "cache_dir", "data_dir")


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

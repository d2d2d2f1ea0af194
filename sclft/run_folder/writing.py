"""Writing a run folder: one writer at a time (a lock file), the finished run's files written atomically with
``manifest.json`` last, and ``--overwrite`` swapping a finished new run in for the old one."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .files import (
    CARD_FILE,
    CHECKPOINT_DIR,
    CHECKPOINT_POINTER,
    LOCK_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    RUN_FILES,
    TRAIN_CONFIG_FILE,
    RunFolderError,
    exported_files,
    is_sclft_card,
    write_manifest,
)
from .weights import save_model

log = logging.getLogger("sclft.train")

STAGING = ".sclft-overwrite"  # --overwrite: the new run is written here, beside the old one, and swapped in
_REPLACED = ".sclft-replaced"  # --overwrite: the old run's files, until the new ones are in place


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
    """What in ``out`` belongs to a finished run (with the files its strategy exported, e.g. lora's peft
    adapter) or to another run's checkpoints."""
    names = [*RUN_FILES, *exported_files(out), f"{CHECKPOINT_DIR}/{CHECKPOINT_POINTER}"]
    return [n for n in names if (out / n).exists()]


def write_run(out: Path, model, build: dict[str, Any], train_config: dict[str, Any], metrics: dict[str, Any],
              card: Callable[[Path, Any], Path | None] | None = None) -> Path:
    """The files of a finished run, each written atomically: ``model.safetensors`` and ``config.json``
    (:func:`~sclft.run_folder.weights.save_model`), ``train_config.json``, ``metrics.json``, the model card
    (``card(out, model)``, e.g. :func:`sclft.card.write_model_card`) and last ``manifest.json``, the sha256 of
    every run file: a folder with a manifest holds a complete run (a manifest of an earlier run of ``out``, e.g.
    one continued by ``--resume``, goes first: it no longer describes the files)."""
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    save_model(model, out, build)
    atomic_write_json(out / TRAIN_CONFIG_FILE, train_config)
    atomic_write_json(out / METRICS_FILE, metrics)
    if card is not None:
        card(out, model)
    return write_manifest(out, [n for n in run_files(out) if "/" not in n and n != MANIFEST_FILE])


def replace_run(out: Path, staging: Path) -> None:
    """Swap the finished run in ``staging`` in for the run in ``out`` (its files and checkpoints). Only files
    sclft wrote are replaced: a ``README.md`` of the user's own stays (the new run's card is dropped), and a
    new run file whose name a file of the user's already holds in ``out`` is refused before anything moves."""
    previous = list(dict.fromkeys(n.split("/")[0] for n in run_files(out)))
    if (out / CHECKPOINT_DIR).exists() and CHECKPOINT_DIR not in previous:
        previous.append(CHECKPOINT_DIR)
    card = out / CARD_FILE
    if (staging / CARD_FILE).exists() and card.exists():
        if is_sclft_card(card):
            previous.append(CARD_FILE)
        else:
            (staging / CARD_FILE).unlink()
            log.warning("%s exists and is not a sclft model card: left as it is (no model card written)", card)
    foreign = sorted(p.name for p in staging.iterdir() if (out / p.name).exists() and p.name not in previous)
    if foreign:
        raise RunFolderError(f"--overwrite: the new run writes {', '.join(foreign)}, and {out} holds file(s) of "
                             "those names that are not files of the previous run (yours?): nothing was replaced. "
                             "Move them, or choose another --out")
    old = out / _REPLACED
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    for name in previous:
        os.replace(out / name, old / name)
    for p in sorted(staging.iterdir()):
        os.replace(p, out / p.name)
    staging.rmdir()
    shutil.rmtree(old, ignore_errors=True)
    log.warning("--overwrite: replaced the previous run in %s (%s)", out, ", ".join(previous))

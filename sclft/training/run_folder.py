"""The ``--out`` folder: one writer at a time (a lock file), and what ``resume`` / ``overwrite`` allow."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..config import TrainConfig
from ..save import EXPORTS_KEY, MANIFEST, RunFolderError
from .checkpoint import CHECKPOINT_DIR, check_resume, latest_checkpoint

log = logging.getLogger("sclft.train")

METRICS_FILE = "metrics.json"
LOCK_FILE = ".sclft.lock"


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


RUN_FILES = (METRICS_FILE, "model.safetensors", "config.json", "train_config.json", MANIFEST)


def _exported_files(out: Path) -> list[str]:
    """The files a finished run's strategy exported beside its model (``config.json`` lists them; plain
    names only, so a damaged list cannot reach outside ``out``)."""
    try:
        names = json.loads((out / "config.json").read_text()).get(EXPORTS_KEY) or []
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and n and Path(n).name == n and n not in RUN_FILES]


def run_files(out: Path) -> list[str]:
    """What in ``out`` belongs to a finished run (with the files its strategy exported, e.g. lora's peft
    adapter) or to another run's checkpoints."""
    names = [*RUN_FILES, *_exported_files(out), f"{CHECKPOINT_DIR}/latest.json"]
    return [n for n in names if (out / n).exists()]


STAGING = ".sclft-overwrite"  # --overwrite: the new run is written here, beside the old one, and swapped in


def _prepare_out(out: Path, cfg: TrainConfig, accelerator) -> tuple[tuple[Path, dict] | None, Path]:
    """Check ``out`` against ``resume``/``overwrite``; returns the checkpoint to resume (and its state) and the
    folder to write the run into: ``out``, or for ``--overwrite`` of an existing run a staging folder inside it
    (the old run stays intact until :func:`replace_run` swaps the finished new one in)."""
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if cfg.resume:
        path = latest_checkpoint(out)
        if path is None:
            raise RunFolderError(f"--resume: there is no checkpoint to resume in {out / CHECKPOINT_DIR} (no "
                                 "latest.json); run without --resume to start the run")
        return (path, check_resume(path, cfg, accelerator.num_processes)), out
    found = run_files(out)
    if found and not cfg.overwrite:
        raise RunFolderError(f"{out} already holds a run ({', '.join(found)}); pass --overwrite to replace it, "
                             "--resume to continue it, or choose another --out")
    if not found:
        return None, out
    staging = out / STAGING
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # left by an overwrite that did not finish
        staging.mkdir()
    return None, staging


def replace_run(out: Path, staging: Path) -> None:
    """Swap the finished run in ``staging`` in for the run in ``out`` (its files and checkpoints)."""
    old = out / ".sclft-replaced"
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    previous = list(dict.fromkeys(n.split("/")[0] for n in run_files(out)))
    if (out / CHECKPOINT_DIR).exists() and CHECKPOINT_DIR not in previous:
        previous.append(CHECKPOINT_DIR)
    for name in previous:
        os.replace(out / name, old / name)
    for p in sorted(staging.iterdir()):
        os.replace(p, out / p.name)
    staging.rmdir()
    shutil.rmtree(old, ignore_errors=True)
    log.warning("--overwrite: replaced the previous run in %s (%s)", out, ", ".join(previous))

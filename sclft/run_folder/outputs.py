"""Where a command may write its output: never a device or special file, never inside a sclft run or bench
folder (its files are the run's own), an existing file only with ``--overwrite`` (issue 35)."""

from __future__ import annotations

import os
from pathlib import Path

from ..io import OutputPathError, check_out_dir, special_kind
from .files import CHECKPOINT_DIR, CHECKPOINT_POINTER, CONFIG_FILE, LOCK_FILE, MANIFEST_FILE, METRICS_FILE, WEIGHTS_FILE

# what makes a folder a sclft run folder (``sclft train --out``: a lock, checkpoints, or config.json beside metrics /
# manifest / a model) or a bench folder (``sclft bench --out``: bench.json beside experiments/); a safetensors export
# folder (config.json, model.safetensors and preprocessor_config.json: timm's Hub layout) is not a run
_RUN_MARKERS = (LOCK_FILE, f"{CHECKPOINT_DIR}/{CHECKPOINT_POINTER}")
_RUN_PAIRS = ((CONFIG_FILE, METRICS_FILE), (CONFIG_FILE, MANIFEST_FILE), ("bench.json", "experiments"))
_EXPORT_MARKER = "preprocessor_config.json"


def _is_sclft_folder(folder: Path) -> bool:
    if any((folder / m).exists() for m in _RUN_MARKERS) or \
            any(all((folder / n).exists() for n in pair) for pair in _RUN_PAIRS):
        return True
    return all((folder / n).exists() for n in (CONFIG_FILE, WEIGHTS_FILE)) and \
        not (folder / _EXPORT_MARKER).exists()  # a run's model files copied on their own (load() takes them)


def sclft_folder(path: str | os.PathLike) -> Path | None:
    """The sclft run or bench folder that holds ``path`` (it or its nearest such ancestor), or None."""
    return next((folder for folder in [Path(path), *Path(path).parents] if _is_sclft_folder(folder)), None)


def _refuse_run_folder(path: str | os.PathLike, folder: Path, flag: str) -> None:
    run = sclft_folder(os.path.realpath(folder))
    if run is not None:
        raise OutputPathError(f"{flag} {path}: inside the sclft run folder {run}, whose files belong to that run and "
                              "are never replaced or added to by other commands; write elsewhere")


def check_out_file(path: str | os.PathLike, flag: str = "--out", overwrite: bool = False) -> Path:
    """Check an output file before any work: ``path`` (symbolic links followed) must not be a device, FIFO,
    socket or folder, must not lie inside a sclft run or bench folder (its files are the run's own: eval,
    predict and reports would refuse or misread the run), and may exist only with ``overwrite``; its folder
    must be one that can be created and written. Else an :class:`OutputPathError` naming the path."""
    given = Path(path).expanduser()
    kind = special_kind(given)
    if kind is not None:
        raise OutputPathError(f"{flag} {path}: {os.path.realpath(given)} is {kind}; sclft writes only regular files "
                              "(give the path of a file)")
    _refuse_run_folder(path, given.parent, flag)
    if given.exists() and not overwrite:
        raise OutputPathError(f"{flag} {path}: the file exists; pass --overwrite to replace it, or choose another path")
    check_out_dir(given.parent, flag)
    return given


def check_out_folder(path: str | os.PathLike, names: tuple[str, ...] = (), flag: str = "--out") -> Path:
    """Check an output folder of a command that writes fixed file names into it (``probe``, ``rank``, ``dln``)
    before any work: a folder that can be created and written, not a sclft run or bench folder nor inside one,
    and none of ``names`` there a device, FIFO, socket or folder (those files, the command's own outputs, are
    rewritten by a rerun). Else an :class:`OutputPathError` (or ``ValueError``) naming the path."""
    folder = Path(path).expanduser()
    _refuse_run_folder(path, folder, flag)
    check_out_dir(folder, flag)
    for name in names:
        kind = special_kind(folder / name)
        if kind is not None:
            raise OutputPathError(f"{flag} {path}: {folder / name} is {kind}; sclft writes only regular files")
    return folder

"""The run folder of ``sclft train --out``: the one owner of its format. Every reader and writer goes through
here (train, resume, eval, predict, export, :func:`load`, the model card, the bench runner and reports).

==========================  ===================================================================================
``model.safetensors``       the trained tensors only (:func:`save_model`)
``config.json``             how to rebuild the model: its config, the frozen weights' source, seed and digests
``train_config.json``       the ``TrainConfig`` of the run
``metrics.json``            the results (test accuracy, NC1, history …)
``README.md``               the model card (not in the manifest: a user may edit it; never replaces theirs)
``manifest.json``           written last: the sha256 of every file above but the card
``checkpoint/``             resume state (:mod:`sclft.training.checkpoint` writes and checks what is inside)
``.sclft.lock``             names the one process writing the folder
==========================  ===================================================================================

:func:`read_run` reads a finished run's results checked against the manifest and their schemas; :func:`load`
rebuilds the model (every file checked); :func:`check_run` says whether a folder is a finished run;
:func:`write_run` writes one, manifest last; :func:`replace_run` swaps an ``--overwrite`` run in.

The names, the checked readers (:mod:`.files`) and the output-path check (:mod:`.outputs`: never a device, never
inside a run or bench folder) import no torch (``sclft --help`` names files through them); the model's and the
writer's functions load on first use (PEP 562).
"""

from __future__ import annotations

import importlib

from .files import (
    CARD_FILE,
    CHECKPOINT_DIR,
    CHECKPOINT_POINTER,
    CONFIG_FILE,
    EXPORTS_KEY,
    LOCK_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_DIGEST,
    RUN_FILES,
    SHA256,
    TRAIN_CONFIG_FILE,
    WEIGHTS_FILE,
    RunFolderError,
    RunRecord,
    check_fields,
    check_manifest,
    check_run,
    file_digest,
    has_checkpoint,
    is_finished,
    is_sclft_card,
    read_config,
    read_metrics,
    read_run,
    read_train_config,
    unfinished_reason,
    write_manifest,
)
from .outputs import check_out_file, check_out_folder, sclft_folder

# the names of every file sclft writes into a run folder: nowhere else in sclft as literals (tests/test_run_folder.py)
FILE_NAMES = (*RUN_FILES, CARD_FILE, CHECKPOINT_POINTER, LOCK_FILE)

__all__ = [
    "CARD_FILE", "CHECKPOINT_DIR", "CHECKPOINT_POINTER", "CONFIG_FILE", "EXPORTS_KEY", "FILE_NAMES", "LOCK_FILE",
    "MANIFEST_FILE", "METRICS_FILE", "MODEL_DIGEST", "RUN_FILES", "SHA256", "STAGING", "TRAIN_CONFIG_FILE",
    "WEIGHTS_FILE", "RunFolderError", "RunRecord", "build_backbone", "check_fields", "check_manifest", "check_out_file",
    "check_out_folder", "check_run", "sclft_folder",
    "file_digest", "frozen_digest", "has_checkpoint", "is_finished", "is_sclft_card", "load", "load_model_state",
    "load_tensors", "model_digest", "read_config", "read_metrics", "read_run", "read_train_config", "replace_run",
    "run_files", "run_lock", "save_model", "trainable_state", "unfinished_reason", "write_manifest", "write_run",
]

_LAZY = {**dict.fromkeys(("build_backbone", "frozen_digest", "load", "load_model_state", "load_tensors", "model_digest",
                          "save_model", "trainable_state"), "weights"),
         **dict.fromkeys(("STAGING", "replace_run", "run_files", "run_lock", "write_run"), "writing")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

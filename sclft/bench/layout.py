"""The bench folder on disk: where a run, its failure and a rule's evidence live, one writer per folder,
and finding the finished runs of a suite across several (merged) bench folders.

::

    OUT/experiments/<run-id>/   one training run (sclft train's run folder) + fingerprint.json; error.log if it failed
    OUT/selection/<…>.json      one layer rule applied to one selection cell and seed
    OUT/bench.json              command, hardware and sessions;   OUT/.sclft.lock  while a writer holds OUT

:func:`find_runs` matches each run of a suite to a finished folder: the folder of its exact id, else one of
the same config trained under other library versions (its id differs only in the hash; the data may have been
read from another ``data_dir``); with
``strict_versions`` such a run is refused. Every run not found gets a reason. A run counts once finished as
:func:`sclft.run_folder.is_finished` says (its manifest written, or a record kept without weights); every copy of
it in the folders is kept in :attr:`Found.copies`, so a report can refuse copies that disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import versions as version_info
from ..config import fields_where
from ..io import read_json  # re-exported: the bench's readers import it from here
from ..run_folder import METRICS_FILE, RunFolderError, read_train_config, run_lock, unfinished_reason
from ..run_folder import is_finished as finished_run
from .plan import Run, config_fingerprint, split_id

RUNS_SUBDIR = "experiments"  # OUT/experiments/<run-id>/: one training run each
FAILURE_FILE = "error.log"  # a failed run's traceback, in its run folder (the run is retried next time)
FINGERPRINT_FILE = "fingerprint.json"  # what the run id hashes (config and library versions), written on success
SELECTION_SUBDIR = "selection"
BENCH_FILE = "bench.json"

# hashed into run ids, but only say where a machine keeps its data: runs matched across machines may differ in them
LOCATION_FIELDS = fields_where("location")

Roots = Path | str | Sequence[Path | str]


def roots(out: Roots) -> list[Path]:
    """Bench folders, first = the one reports are written to."""
    return [Path(p) for p in out] if isinstance(out, (list, tuple)) else [Path(out)]


def run_dir(out: Path | str, rid: str) -> Path:
    return Path(out) / RUNS_SUBDIR / rid


def is_finished(out: Path | str, rid: str) -> bool:
    return finished_run(run_dir(out, rid))


def selection_file(cell: str, seed: int, rule: str) -> str:
    """Path of one rule's evidence, relative to the bench folder."""
    safe = hashlib.sha1(f"{cell}|s{seed}".encode()).hexdigest()[:10]
    backbone, dataset = cell.split("|")[:2]
    return f"{SELECTION_SUBDIR}/{backbone}-{dataset}-s{seed}-{rule}-{safe}.json"


def find(out: Roots, relative: str) -> Path | None:
    """``relative`` under the first bench folder that has it (``--report`` merges several folders)."""
    return next((root / relative for root in roots(out) if (root / relative).exists()), None)


def bench_lock(out: Path | str):
    """One writer per bench folder (``sclft train``'s run lock on ``OUT/.sclft.lock``): a second ``sclft bench``
    into the same ``--out`` is refused with a message naming the holder. Runs inside take their own lock."""
    return run_lock(Path(out))


@dataclass
class Found:
    path: Path  # the run folder
    versions: dict[str, Any] | None  # library versions it was trained with (None: not recorded)
    exact: bool  # the folder of the run's own id (same versions as installed)
    copies: list[Path] = field(default_factory=list)  # every finished folder of that name in the bench folders


@dataclass
class Coverage:
    """Which runs of a suite were found where, under which library versions, and why the others are missing."""

    found: dict[str, Found] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # run id → reason

    def version_sets(self) -> list[tuple[dict[str, Any] | None, list[str]]]:
        """Distinct library-version sets among the found runs (None = not recorded), with their run ids."""
        sets: list[tuple[dict[str, Any] | None, list[str]]] = []
        for rid, f in self.found.items():
            for versions, ids in sets:
                if versions == f.versions:
                    ids.append(rid)
                    break
            else:
                sets.append((f.versions, [rid]))
        return sets


def _differences(versions: dict[str, Any] | None, installed: dict[str, Any]) -> str:
    if versions is None:
        return "library versions not recorded"
    diff = [f"{k} {versions.get(k)} (installed {installed.get(k)})" for k in sorted({*versions, *installed})
            if versions.get(k) != installed.get(k)]
    return ", ".join(diff) or "the same library versions"


def describe_versions(versions: dict[str, Any] | None, installed: dict[str, Any]) -> str:
    if versions is None:
        return "versions not recorded (runs from before sclft recorded them)"
    if versions == installed:
        return "the installed versions"
    return _differences(versions, installed)


def find_runs(out: Roots, runs: Iterable[Run], strict_versions: bool = False) -> Coverage:
    """Each run's finished folder in the first bench folder that has it: its own id, else (unless
    ``strict_versions``) a folder of the same config under other library versions."""
    installed = version_info.library_versions()
    folders = [root / RUNS_SUBDIR for root in roots(out)]
    by_name: dict[str, list[Path]] = {}
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if finished_run(p) and p.name.count("-") >= 1:
                    by_name.setdefault(split_id(p.name)[0], []).append(p)
    coverage = Coverage()
    for r in runs:
        copies = [f / r.id for f in folders if finished_run(f / r.id)]
        if copies:
            coverage.found[r.id] = Found(copies[0], installed, True, copies)
            continue
        other = _same_config(r, by_name.get(split_id(r.id)[0], []))
        if other is not None and not strict_versions:
            name = other[0].name
            coverage.found[r.id] = Found(*other, False, [f / name for f in folders if finished_run(f / name)])
            continue
        if other is not None:
            reason = (f"version mismatch refused by --strict-versions: the same config, {other[0].name}, was trained "
                      f"with {_differences(other[1], installed)}")
        elif failed := next((f for f in folders if (f / r.id / FAILURE_FILE).is_file()), None):
            reason = f"failed (traceback in {failed.parent.name}/{RUNS_SUBDIR}/{r.id}/{FAILURE_FILE})"
        elif damaged := next((f / r.id for f in folders if (f / r.id / METRICS_FILE).is_file()), None):
            reason = f"unfinished or damaged ({damaged.parent.parent.name}/{RUNS_SUBDIR}/{r.id}: " \
                     f"{unfinished_reason(damaged)})"
        elif any((f / r.id).is_dir() for f in folders):
            reason = f"unfinished (interrupted or still running: no {METRICS_FILE})"
        else:
            reason = "never trained"
        coverage.missing[r.id] = reason
    return coverage


def _matched(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config_fingerprint(config).items() if k not in LOCATION_FIELDS}


def _same_config(run: Run, candidates: list[Path]) -> tuple[Path, dict[str, Any] | None] | None:
    """The first candidate folder whose ``train_config.json`` trains ``run``'s config (other versions)."""
    want = _matched(run.config)
    for path in candidates:
        try:
            if _matched(read_train_config(path)) != want:
                continue
        except (RunFolderError, ValueError, TypeError, KeyError):
            continue  # a folder whose config this version cannot read is not this run
        recorded = read_json(path / FINGERPRINT_FILE) if (path / FINGERPRINT_FILE).is_file() else {}
        versions = recorded.get("versions") if isinstance(recorded, dict) else None
        return path, versions if isinstance(versions, dict) else None
    return None

"""Launchers of a suite on a distributed engine (``sclft bench --launcher ray|slurm``).

The in-process runner (:func:`sclft.bench.run_suite`) walks the runs in order; a launcher hands the same
runs to an engine instead: :mod:`.ray` makes each training run, probe and rule application a Ray task
(logical resources, Ray's retries), :mod:`.slurm` submits ``--shard I/N`` jobs as a submitit job array and
merges their folders. Run ids, run folders and reports are those of the in-process runner.

The engines are optional dependencies (``pip install 'sclft[ray]'`` / ``'sclft[slurm]'``), imported only
by the launcher that needs them (:func:`require`).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import UsageError
from ...progress import progress_bar

LAUNCHERS = ("local", "ray", "slurm")
EXTRAS = {"ray": "ray", "submitit": "slurm"}  # import name -> the sclft extra that installs it


class MissingEngineError(UsageError):
    """The launcher's engine is not installed (a usage error: exit 2, with the install command)."""


def require(module: str):
    """Import an optional engine, or raise :class:`MissingEngineError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module]
        raise MissingEngineError(f"--launcher {extra} needs {module}, which is not installed: "
                                 f"pip install 'sclft[{extra}]'") from None


@dataclass
class Deadline:
    """``--deadline SECONDS`` (``None``: none), counted from construction."""

    seconds: float | None
    start: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        if self.seconds is not None and not self.seconds > 0:
            raise UsageError(f"--deadline must be a positive number of seconds, got {self.seconds}")

    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.monotonic() - self.start)

    def passed(self) -> bool:
        left = self.left()
        return left is not None and left <= 0


class Progress:
    """One tqdm bar over a launcher's tasks: done / running / failed / left, with tqdm's ETA."""

    def __init__(self, total: int, skipped: int = 0, desc: str = "bench"):
        self.bar = progress_bar(total=total, desc=desc, unit="task", leave=True, dynamic_ncols=True)
        self.done, self.failed, self.running, self.total, self.skipped = 0, 0, 0, total, skipped
        self.update(0)

    def update(self, finished: int = 0, failed: int = 0, running: int | None = None) -> None:
        self.done += finished
        self.failed += failed
        if running is not None:
            self.running = running
        left = self.total - self.done - self.failed
        self.bar.set_postfix_str(f"done {self.done}, running {self.running}, failed {self.failed}, left {left}"
                                 + (f" ({self.skipped} finished before)" if self.skipped else ""), refresh=False)
        self.bar.update(finished + failed)

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def summary(suite, runs: int, skipped: int, trained: int, failed: list[str], seconds: float,
            **extra: Any) -> dict[str, Any]:
    """The session summary a launcher returns (the in-process runner's keys, plus the launcher's)."""
    return {"suite": suite.name, "runs": runs, "skipped": skipped, "trained": trained, "failed": failed,
            "seconds": seconds, **extra}

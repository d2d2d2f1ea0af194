"""The units a launcher schedules: one training run, one probe, one rule application, and the reports.

Each does what the in-process runner does for that unit (same folders, same files) but raises on failure,
so the engine can retry it; the traceback of the last attempt is left in the run's ``error.log``.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...io import read_json
from ..layout import FAILURE_FILE, selection_file
from ..layout import is_finished as _is_finished
from ..layout import run_dir as _run_dir
from ..plan import RuleTask, Run, expand_suite, probe_runs, rule_tasks, shard
from ..reports import NothingToReport, build_reports
from ..runner import execute_rule, preflight, probe_run, record_session, train_run
from ..suite import Suite


def run_dir(out: Path, run: Run) -> Path:
    return _run_dir(out, run.id)


def is_finished(out: Path, run: Run) -> bool:
    return _is_finished(out, run.id)


def failure_file(out: Path, task: Task) -> Path:
    """Where a failed task's traceback goes: its run's ``error.log``; a rule's next to its evidence file."""
    if task.run is not None:
        return run_dir(out, task.run) / FAILURE_FILE
    return Path(out) / f"{task.id.removesuffix('.json')}.{FAILURE_FILE}"


def record_failure(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def probe(run: Run, out: Path) -> str:
    """Layer-wise NC1 of a finished run (``nc1_layers.csv``), unless it is there."""
    path = run_dir(out, run) / "nc1_layers.csv"
    return str(path if path.is_file() else probe_run(run_dir(out, run), run.config.get("checkpoint")))


def apply_rule(suite: Suite, runs: list[Run], out: Path, key: str, seed: int, rule: str) -> dict[str, Any]:
    """One selection rule on one sweep cell and seed → ``out/selection/…json`` (:func:`~..runner.execute_rule`)."""
    result = read_json(execute_rule(suite, RuleTask(key, seed, rule), out, say=lambda _: None, runs=runs))
    return {"layer": result["layer"], "seconds": result["seconds"]}


@dataclass
class Task:
    """One schedulable unit: a training run, the probe of a finished run, or one rule on one cell and seed."""

    id: str  # the run id, "<run id>/probe", or the rule's evidence file (relative to the bench folder)
    kind: str  # "train" | "probe" | "rule"
    run: Run | None = None
    rule: tuple[str, int, str] | None = None  # (cell, seed, rule)
    after: str | None = None  # the id of the task whose result this one needs (a probe: its training run)


def plan(suite: Suite, out: Path, shard_spec: str | None = None) -> tuple[list[Run], list[Run], list[Task]]:
    """(the suite's runs, this shard's runs, the tasks still to do): what ``run_suite`` would do, as units."""
    suite_runs = expand_suite(suite)
    runs = shard(suite_runs, shard_spec)
    probed = probe_runs(suite_runs)
    tasks: list[Task] = []
    for run in runs:
        done = is_finished(out, run)
        if not done:
            tasks.append(Task(run.id, "train", run))
        if run.id in probed and not (run_dir(out, run) / "nc1_layers.csv").is_file():
            tasks.append(Task(f"{run.id}/probe", "probe", run, after=None if done else run.id))
    for key, seed, rule in shard(rule_tasks(suite, suite_runs), shard_spec):
        path = selection_file(key, seed, rule)
        if not (Path(out) / path).is_file():
            tasks.append(Task(path, "rule", rule=(key, seed, rule)))
    return suite_runs, runs, tasks


def execute(task: Task, suite: Suite, suite_runs: list[Run], out: Path) -> dict[str, Any]:
    """Do one task (raises on failure); returns what it did, with its start/end time and process."""
    start = time.time()
    if task.kind == "train":
        metrics = train_run(task.run, out)
        result = {"test_accuracy": metrics["test_accuracy"], "nc1_train": metrics["nc1_train"],
                  "run_seconds": metrics["seconds"]}
    elif task.kind == "probe":
        result = {"file": probe(task.run, out)}
    else:
        result = apply_rule(suite, suite_runs, out, *task.rule)
    return {"id": task.id, "kind": task.kind, **result, "start": start, "end": time.time(), "pid": os.getpid(),
            "host": socket.gethostname()}


def check_inputs(tasks: list[Task]) -> None:
    """Fail before any training when a dataset or backbone the runs need is missing (on the driver)."""
    preflight([t.run for t in tasks if t.kind == "train"])


def finish(suite: Suite, out: Path, session: dict[str, Any], sources: list[Path] = ()) -> None:
    """Add the session to ``bench.json`` and build the reports from the folder and ``sources`` (on the driver)."""
    record_session(out, suite, session)
    try:
        build_reports(suite, out, sources)
    except NothingToReport:
        pass  # nothing finished (every run failed, or the deadline came first): the launcher says so

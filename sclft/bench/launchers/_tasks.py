"""The units a launcher schedules: one training run, one probe, one rule application, and the reports.

Each does what the in-process runner does for that unit (same folders, same files) but raises on failure,
so the engine can retry it; the traceback of the last attempt is left in the run's ``error.log``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...io import atomic_write_json
from ..runner import FAILURE_FILE, _probe_runs, _rule_tasks, _selection_file, environment, preflight, probe_run
from ..suite import RUNS_SUBDIR, Run, _selection_cells, expand_suite, selection_budget, shard


def run_dir(out: Path, run: Run) -> Path:
    return Path(out) / RUNS_SUBDIR / run.id


def is_finished(out: Path, run: Run) -> bool:
    from ...train import METRICS_FILE

    return (run_dir(out, run) / METRICS_FILE).is_file()


def failure_file(out: Path, task: Task) -> Path:
    """Where a failed task's traceback goes: its run's ``error.log``; a rule's next to its evidence file."""
    if task.run is not None:
        return run_dir(out, task.run) / FAILURE_FILE
    return Path(out) / f"{task.id.removesuffix('.json')}.{FAILURE_FILE}"


def record_failure(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def train_run(run: Run, out: Path) -> dict[str, Any]:
    """Train ``run`` into ``out/experiments/<id>`` (continuing its own checkpoint when one is there)."""
    from ...train import TrainConfig, train

    folder = run_dir(out, run)
    cache_dir = run.config.get("cache_dir") or str(Path(out) / "cache")
    resume = (folder / "checkpoint" / "latest.json").is_file()
    try:
        metrics = train(TrainConfig.from_dict({**run.config, "out": str(folder), "cache_dir": cache_dir,
                                               "resume": resume, "overwrite": not resume}))
    except Exception:
        record_failure(folder / FAILURE_FILE, traceback.format_exc())
        raise
    (folder / FAILURE_FILE).unlink(missing_ok=True)  # an earlier attempt's
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)  # resume state; the final model stays
    return metrics


def probe(run: Run, out: Path) -> str:
    """Layer-wise NC1 of a finished run (``nc1_layers.csv``), unless it is there."""
    path = run_dir(out, run) / "nc1_layers.csv"
    return str(path if path.is_file() else probe_run(run_dir(out, run)))


def apply_rule(suite: dict[str, Any], runs: list[Run], out: Path, key: str, seed: int, rule: str) -> dict[str, Any]:
    """One selection rule on one sweep cell and seed → ``out/selection/…json`` (what ``run_rules`` writes)."""
    from ...backbones import create_backbone
    from ...config import TrainConfig
    from ...data import load_dataset
    from ...selection import select_layer
    from ..runner import _device

    group = suite.get("groups", {}).get("selection", {})
    budget = selection_budget(suite, group)
    cell = [r for r in _selection_cells(suite, runs)[key] if r.seed == seed]
    config = {**cell[0].config, "layer": "auto", "layer_rule": rule,
              "max_params": budget if budget is not None else 100.0}
    extra = dict(config.get("extra") or {})
    extra["selection"] = {**extra.get("selection", {}), **group.get("options", {}),
                          "candidates": [r.config["layer"] for r in cell]}
    cfg = TrainConfig.from_dict({**config, "extra": extra})
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class,
                          val_fraction=cfg.val_fraction, seed=cfg.seed)
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint)
    result = select_layer(backbone, splits, cfg, device=_device())
    atomic_write_json(Path(out) / _selection_file(key, seed, rule), {"cell": key, "seed": seed, **result})
    return {"layer": result["layer"], "seconds": result["seconds"]}


@dataclass
class Task:
    """One schedulable unit: a training run, the probe of a finished run, or one rule on one cell and seed."""

    id: str  # the run id, "<run id>/probe", or the rule's evidence file (relative to the bench folder)
    kind: str  # "train" | "probe" | "rule"
    run: Run | None = None
    rule: tuple[str, int, str] | None = None  # (cell, seed, rule)
    after: str | None = None  # the id of the task whose result this one needs (a probe: its training run)


def plan(suite: dict[str, Any], out: Path, shard_spec: str | None = None) -> tuple[list[Run], list[Run], list[Task]]:
    """(the suite's runs, this shard's runs, the tasks still to do): what ``run_suite`` would do, as units."""
    suite_runs = expand_suite(suite)
    runs = shard(suite_runs, shard_spec)
    probed = _probe_runs(runs)
    tasks: list[Task] = []
    for run in runs:
        done = is_finished(out, run)
        if not done:
            tasks.append(Task(run.id, "train", run))
        if run.id in probed and not (run_dir(out, run) / "nc1_layers.csv").is_file():
            tasks.append(Task(f"{run.id}/probe", "probe", run, after=None if done else run.id))
    for key, seed, rule in shard(_rule_tasks(suite, suite_runs), shard_spec):
        path = _selection_file(key, seed, rule)
        if not (Path(out) / path).is_file():
            tasks.append(Task(path, "rule", rule=(key, seed, rule)))
    return suite_runs, runs, tasks


def execute(task: Task, suite: dict[str, Any], suite_runs: list[Run], out: Path) -> dict[str, Any]:
    """Do one task (raises on failure); returns what it did, with its start/end time and process."""
    import os
    import socket

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


def finish(suite: dict[str, Any], out: Path, session: dict[str, Any], sources: list[Path] = ()) -> None:
    """Add the session to ``bench.json`` and build the reports from the folder and ``sources`` (on the driver)."""
    from ..reports import build_reports

    out = Path(out)
    path = out / "bench.json"
    history = json.loads(path.read_text()).get("sessions", []) if path.is_file() else []
    atomic_write_json(path, {**environment(), "suite": suite["name"], "command": " ".join(sys.argv),
                             "sessions": [*history, session]})
    build_reports(suite, out, sources)

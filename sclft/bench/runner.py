"""Executing a suite's work: one training run or one rule application at a time, into a bench folder.

The API a launcher builds on (``run_suite`` is the in-process one; Ray / Slurm launchers call the same):

* :func:`execute_run` ``(suite, run_id, out)`` — trains one run of :func:`~sclft.bench.plan.expand_suite` into
  ``out/experiments/<run_id>``: skipped when it finished (:func:`sclft.run_folder.is_finished`; its results,
  read checked against its manifest, are returned), an interrupted run resumes, a
  failure writes ``error.log`` there and returns ``status="failed"`` (it does not raise), a success drops
  the resume state, writes ``fingerprint.json`` and probes the runs the NC1 plot needs. Safe to call from
  several processes on one folder for *different* runs (each run folder has ``sclft train``'s lock).
* :func:`train_run` ``(run, out)`` — the training step of ``execute_run`` alone; raises on failure (for an
  engine's retries), leaving the traceback in ``error.log``.
* :func:`execute_rule` ``(suite, task, out)`` — one :class:`~sclft.bench.plan.RuleTask` into ``out/selection/``
  (needs no finished run; skipped when its file exists).
* :func:`record_session` — appends a session summary to ``out/bench.json``.

Whoever writes a whole bench folder holds :func:`~sclft.bench.layout.bench_lock` (``sclft bench`` does, around
training and the reports); :func:`run_suite` does not take it, so a caller can hold it across both. Reports
are built by :func:`sclft.bench.reports.build_reports`, never here.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import versions as version_info
from ..backbones import create_backbone
from ..config import TrainConfig
from ..data import TransformedDataset, build_transforms, load_dataset
from ..devices import resolve_device
from ..errors import UsageError
from ..io import atomic_write_json
from ..probing import probe
from ..run_folder import CHECKPOINT_DIR, RunFolderError, has_checkpoint, load, read_run
from ..selection import select_layer
from ..training import train
from .layout import BENCH_FILE, FAILURE_FILE, FINGERPRINT_FILE, is_finished, read_json, run_dir, selection_file
from .plan import RuleTask, Run, expand_suite, probe_runs, rule_tasks, run_fingerprint, selection_cells, shard
from .suite import Suite


@dataclass
class RunResult:
    id: str
    status: str  # "done" (finished before), "trained", "failed"
    metrics: dict[str, Any] | None = None
    error: str | None = None  # "ExceptionType: message" of a failed run


def probe_run(folder: Path, checkpoint: str | None = None) -> Path:
    """Layer-wise NC1 of a trained run on its training data → ``folder/nc1_layers.csv`` (``checkpoint``: the
    backbone weights file of the suite's config, which the run folder names but :func:`load` never follows
    outside the folder)."""
    cfg = read_run(folder).train_config
    model = load(folder, checkpoint=checkpoint)
    splits = load_dataset(cfg["data"], cfg.get("data_dir"), train_per_class=cfg.get("train_per_class"),
                          val_fraction=cfg.get("val_fraction", 0.0), seed=cfg["seed"])
    _, eval_tf = build_transforms(model.backbone.data_config, cfg.get("image_size"))
    result = probe(model, TransformedDataset(splits.train, eval_tf), batch_size=max(cfg.get("batch_size", 64), 64),
                   device=resolve_device(), progress=False, num_classes=splits.num_classes)
    return result.to_csv(folder / "nc1_layers.csv")


def _find_run(suite: Suite, run: Run | str, runs: list[Run] | None) -> tuple[Run, list[Run]]:
    runs = expand_suite(suite) if runs is None else runs
    if isinstance(run, Run):
        return run, runs
    match = next((r for r in runs if r.id == run), None)
    if match is None:
        raise UsageError(f"suite {suite.name!r} has no run {run!r} (with the installed library versions)")
    return match, runs


def train_run(run: Run, out: str | Path) -> dict[str, Any]:
    """Train ``run`` into ``out/experiments/<id>`` (continuing its own interrupted checkpoint) and return its
    metrics; on failure the traceback goes to its ``error.log`` and the exception propagates (a launcher's
    engine retries it). A success drops the resume state and records ``fingerprint.json``."""
    folder = run_dir(out, run.id)
    cache_dir = run.config.get("cache_dir") or str(Path(out) / "cache")
    # this run's own folder without metrics.json: an interrupted run continues, other leftovers go
    resume = has_checkpoint(folder)
    try:
        metrics = train(TrainConfig.from_dict({**run.config, "out": str(folder), "cache_dir": cache_dir,
                                               "resume": resume, "overwrite": not resume}))
    except Exception:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FAILURE_FILE).write_text(traceback.format_exc())
        raise
    (folder / FAILURE_FILE).unlink(missing_ok=True)  # an earlier attempt's
    atomic_write_json(folder / FINGERPRINT_FILE, {"id": run.id, **run_fingerprint(run.config)})
    shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)  # resume state; the final model stays
    return metrics


def execute_run(suite: Suite, run: Run | str, out: str | Path, say: Callable[[str], None] = print,
                runs: list[Run] | None = None) -> RunResult:
    """Train one run (a :class:`Run` or its id) into ``out/experiments/<id>`` unless it finished before, then
    probe it if the NC1 plot needs it; a failure is returned (``status="failed"``), not raised.
    ``runs``: the suite's expanded runs, when the caller has them (saves expanding the suite again)."""
    out = Path(out)
    run, runs = _find_run(suite, run, runs)
    folder = run_dir(out, run.id)
    if is_finished(out, run.id):
        try:
            result = RunResult(run.id, "done", read_run(folder).metrics)  # checked against its manifest
        except RunFolderError as exc:  # e.g. an edited metrics.json: reported, never trained over
            say(f"  FAILED ({exc})")
            return RunResult(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
    else:
        try:
            metrics = train_run(run, out)
        except Exception as exc:  # noqa: BLE001 — one broken run must not cost the rest of the suite (or of a shard)
            say(f"  FAILED ({type(exc).__name__}: {exc}); traceback in {folder / FAILURE_FILE}")
            return RunResult(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        say(f"  test accuracy {metrics['test_accuracy']:.4f}, NC1 {metrics['nc1_train']:.4g}, "
            f"{metrics['seconds']:.0f} s")
        result = RunResult(run.id, "trained", metrics)
    if run.id in probe_runs(runs) and not (folder / "nc1_layers.csv").is_file():
        probe_run(folder, run.config.get("checkpoint"))
    return result


def _rule_failure_file(out: str | Path, task: RuleTask) -> Path:
    """A failed rule's traceback, next to its evidence file (where the launchers put it too)."""
    return Path(out) / f"{selection_file(*task).removesuffix('.json')}.{FAILURE_FILE}"


def execute_rule(suite: Suite, task: RuleTask, out: str | Path, say: Callable[[str], None] = print,
                 runs: list[Run] | None = None) -> Path:
    """Apply one layer rule to one selection cell and seed → ``out/selection/<…>.json`` (skipped when it exists)."""
    path = Path(out) / selection_file(*task)
    if path.is_file():
        return path
    group = suite.group("selection")
    budget = suite.budget(group)
    cell = [r for r in selection_cells(expand_suite(suite) if runs is None else runs)[task.cell] if r.seed == task.seed]
    config = {**cell[0].config, "layer": "auto", "layer_rule": task.rule,
              "max_params": budget if budget is not None else 100.0}
    extra = dict(config.get("extra") or {})
    extra["selection"] = {**extra.get("selection", {}), **group.options,
                          "candidates": [r.config["layer"] for r in cell]}
    cfg = TrainConfig.from_dict({**config, "extra": extra})
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class,
                          val_fraction=cfg.val_fraction, seed=cfg.seed)
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint)
    result = select_layer(backbone, splits, cfg, device=resolve_device())
    atomic_write_json(path, {"cell": task.cell, "seed": task.seed, **result})
    _rule_failure_file(out, task).unlink(missing_ok=True)  # an earlier attempt's
    say(f"selection {task.cell} s{task.seed} {task.rule}: {result['layer']} ({result['seconds']:.1f} s)")
    return path


def preflight(runs: list[Run]) -> None:
    """Load each dataset and backbone the runs need once, so a missing one fails before any training
    (raises :class:`DatasetUnavailableError` / ``WeightsUnavailableError`` with the fix)."""
    for ref, data_dir in dict.fromkeys((r.config["data"], r.config.get("data_dir")) for r in runs):
        load_dataset(ref, data_dir)
    for name, pretrained, checkpoint in dict.fromkeys(
            (r.config["backbone"], r.config.get("pretrained", True), r.config.get("checkpoint")) for r in runs):
        create_backbone(name, pretrained=pretrained, checkpoint=checkpoint)


def run_suite(suite: Suite, out: str | Path, say: Callable[[str], None] = print,
              shard_spec: str | None = None) -> dict[str, Any]:
    """Train every missing run (of shard ``I/N`` when given) and apply the selection rules (the same share),
    in this process; records the session in ``bench.json`` and returns its summary. Builds no report."""
    out = Path(out)
    suite_runs = expand_suite(suite)
    runs = shard(suite_runs, shard_spec)
    preflight([r for r in runs if not is_finished(out, r.id)])
    counts = {"done": 0, "trained": 0}
    failed: list[str] = []
    tic = time.time()
    for i, run in enumerate(runs, 1):
        if not is_finished(out, run.id):
            say(f"[{i}/{len(runs)}] {run.id}")
        result = execute_run(suite, run, out, say, suite_runs)
        if result.status == "failed":
            failed.append(run.id)
        else:
            counts[result.status] += 1
    for task in shard(rule_tasks(suite, suite_runs), shard_spec):
        try:
            execute_rule(suite, task, out, say, suite_runs)
        except Exception as exc:  # noqa: BLE001 — as a failed run: the other rules and the session record go on
            log_file = _rule_failure_file(out, task)
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text(traceback.format_exc())
            say(f"  FAILED rule {task.rule} on {task.cell} s{task.seed} ({type(exc).__name__}: {exc}); "
                f"traceback in {log_file}")
            failed.append(selection_file(*task))
    summary = {"suite": suite.name, "runs": len(runs), "skipped": counts["done"], "trained": counts["trained"],
               "failed": failed, "seconds": time.time() - tic, **({"shard": shard_spec} if shard_spec else {})}
    record_session(out, suite, summary)
    return summary


def record_session(out: str | Path, suite: Suite, summary: dict[str, Any]) -> Path:
    """Append one session's summary to ``out/bench.json`` (with the command and this machine)."""
    path = Path(out) / BENCH_FILE
    history = read_json(path).get("sessions", []) if path.is_file() else []
    return atomic_write_json(path, {**environment(), "suite": suite.name, "command": " ".join(sys.argv),
                                    "sessions": [*history, summary]})


def environment() -> dict[str, Any]:
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
            "torch": torch.__version__, "libraries": version_info.library_versions(), "platform": platform.platform(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}

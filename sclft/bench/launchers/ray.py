"""``sclft bench --launcher ray``: every training run, probe and rule application of a suite is a Ray task.

Each task asks for logical resources (``num_gpus=--gpus-per-run``, ``num_cpus=--cpus-per-run``): fractional GPUs
pack several small runs onto one device, Ray's scheduler places them, and Ray retries a task whose worker died
or that raised (``max_retries=--retries``, ``retry_exceptions=True``). A task that still fails leaves its
traceback in the run's ``error.log`` and the others go on. A probe waits for its training run (its argument is
that task's result). With no ``--address`` a local Ray instance is started; ``auto`` or ``ray://HOST:PORT`` joins
a cluster, whose nodes must see ``--out`` (a shared filesystem). The reports are built once, on the driver.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ..suite import Suite
from . import Deadline, Progress, require, summary
from ._tasks import Task, check_inputs, execute, failure_file, finish, plan, record_failure


def _task(task: Task, suite: Suite, suite_runs, out: str, threads: int, tracker, *after) -> dict[str, Any]:
    """The body of every Ray task (``after``: results it waited for; a failed one raises before this runs)."""
    import torch  # in the Ray worker that runs the task

    torch.set_num_threads(threads)
    tracker.put(("start", task.id, time.time()))
    return execute(task, suite, suite_runs, Path(out))


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``ray://HOST:PORT``), or start a local instance; True when this
    call started Ray (the caller shuts it down). An already initialised Ray (e.g. by a script) is used as is."""
    ray = require("ray")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


def run_ray(suite: Suite, out: str | Path, *, address: str | None = None, gpus_per_run: float | None = None,
            cpus_per_run: float = 1.0, retries: int = 2, deadline: float | None = None) -> dict[str, Any]:
    """Run the suite's missing tasks on Ray, then build the reports; returns the session summary
    (``stopped: "deadline"`` when the deadline cancelled unfinished tasks). Ctrl-C cancels the outstanding
    tasks and re-raises; finished runs stay, and the same call resumes."""
    limit = Deadline(deadline)
    if cpus_per_run <= 0 or (gpus_per_run is not None and gpus_per_run < 0) or retries < 0:
        raise UsageError(f"--cpus-per-run must be > 0, --gpus-per-run >= 0 and --retries >= 0; got {cpus_per_run}, "
                         f"{gpus_per_run}, {retries}")
    ray = require("ray")
    from ray.util.queue import Queue  # optional dependency (sclft[ray])

    out = Path(out)
    suite_runs, runs, tasks = plan(suite, out)
    check_inputs(tasks)
    skipped = len(runs) - sum(t.kind == "train" for t in tasks)

    started_ray = connect(address)
    tic = time.time()
    try:
        if gpus_per_run is None:  # one GPU per run where the cluster has GPUs
            gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        remote = ray.remote(_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries,
                                           retry_exceptions=True)
        tracker = Queue(actor_options={"num_cpus": 0})
        shared = ray.put(suite), ray.put(suite_runs)
        refs: dict[Any, Task] = {}
        by_id: dict[str, Any] = {}
        for t in tasks:  # in plan order: a probe after its training run
            deps = [by_id[t.after]] if t.after else []
            ref = remote.remote(t, *shared, str(out), max(1, int(cpus_per_run)), tracker, *deps)
            refs[ref], by_id[t.id] = t, ref
        result = _wait(ray, refs, tracker, out, limit, skipped)
    finally:
        if started_ray:
            ray.shutdown()
    trained = sum(1 for r in result["results"] if r["kind"] == "train")
    session = summary(suite, len(runs), skipped, trained,
                      result["failed"], time.time() - tic, launcher="ray",
                      resources={"gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run, "retries": retries},
                      tasks=result["results"], **({"stopped": "deadline", "unfinished": result["cancelled"]}
                                                  if result["cancelled"] else {}))
    finish(suite, out, session)
    return session


def _wait(ray, refs: dict[Any, Task], tracker, out: Path, limit: Deadline, skipped: int) -> dict[str, Any]:
    """Collect the tasks as they finish, with the progress bar; cancel what is left at the deadline or Ctrl-C."""
    from ray.exceptions import RayError, RayTaskError  # optional dependency (sclft[ray])

    bar = Progress(len(refs), skipped)
    pending, started = dict(refs), set()
    results, failed, cancelled = [], [], []
    try:
        while pending:
            left = limit.left()
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0 if left is None else max(0.0, min(1.0, left)))
            started.update(item[1] for item in tracker.get_nowait_batch(tracker.qsize()))
            finished = failures = 0
            for ref in ready:
                task = pending.pop(ref)
                try:
                    results.append(ray.get(ref))
                    finished += 1
                    bar.write(f"done {task.id}")
                except RayError as exc:  # the last attempt's traceback is in error.log (or the crash, here)
                    failures += 1
                    failed.append(task.id)
                    path = failure_file(out, task)
                    if not isinstance(exc, RayTaskError) or not path.is_file():  # a crash, or a probe or rule
                        record_failure(path, f"{type(exc).__name__}: {exc}\n")
                    bar.write(f"FAILED {task.id} ({type(exc).__name__}); see {path}")
            running = len({t.id for t in pending.values()} & started)
            bar.update(finished, failures, running)
            if pending and limit.passed():
                cancelled = [t.id for t in pending.values()]
                bar.write(f"deadline {limit.seconds:g} s reached: cancelling {len(cancelled)} unfinished task(s)")
                _cancel(ray, pending)
                break
    except KeyboardInterrupt:
        bar.write(f"interrupted: cancelling {len(pending)} unfinished task(s); finished runs are kept")
        _cancel(ray, pending)
        raise
    finally:
        bar.close()
    return {"results": results, "failed": failed, "cancelled": cancelled}


def _cancel(ray, pending: dict[Any, Task]) -> None:
    for ref in pending:
        ray.cancel(ref, force=True)

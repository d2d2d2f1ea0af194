"""``sclft bench --launcher ray``: every training run, probe and rule application of a suite is a Ray task.

Each task asks for logical resources (``num_gpus=--gpus-per-run``, ``num_cpus=--cpus-per-run``): fractional GPUs
pack several small runs onto one device, Ray's scheduler places them, and Ray retries a task whose worker died
or that raised (``max_retries=--retries``, ``retry_exceptions=True``). A task that still fails leaves its
traceback in the run's ``error.log`` and the others go on. A probe waits for its training run (its argument is
that task's result). With no ``--address`` a new local Ray instance is started for the bench and stopped after it
(``ray.init(address="local")`` in its own temporary folder: ``RAY_ADDRESS`` and a cluster already running on the
machine are left alone); ``--address auto`` joins the running cluster (``RAY_ADDRESS``, else the one ``ray start``
recorded), ``HOST:PORT`` or ``ray://HOST:PORT`` a given one, whose nodes must see ``--out`` (a shared filesystem).
The reports are built once, on the driver.

The progress bar's bookkeeping (which tasks started) goes through a small queue actor, restarted by Ray if its
process dies; it is never a single point of failure: a task that cannot reach it runs anyway, and a driver that
loses it stops counting running tasks and collects the results as before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    _tell(tracker, ("start", task.id, time.time()))
    return {**execute(task, suite, suite_runs, Path(out)), "torch_threads": threads}


def _tell(tracker, item) -> None:
    """Best-effort bookkeeping: a progress actor that is gone (killed, its node lost) never fails a task."""
    try:
        tracker.put(item, timeout=10)
    except Exception:  # noqa: BLE001 -- ActorDiedError, ray.util.queue.Full ...: it only feeds the progress bar
        pass


@contextmanager
def connect(address: str | None, num_cpus: int | None = None) -> Iterator[bool]:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or start a new local instance
    in a temporary folder of its own, never joining another (``address="local"``: ``RAY_ADDRESS`` and the cluster
    ``ray start`` recorded are ignored); yields True when it started Ray, and then shuts it down and removes the
    folder. An already initialised Ray (e.g. by a script) is used as is and left running."""
    ray = require("ray")
    if ray.is_initialized():
        yield False
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        temp = None
    else:
        temp = tempfile.mkdtemp(prefix="sclft-ray-")  # short: Ray's socket paths live under it
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 _temp_dir=temp)
    try:
        yield True
    finally:
        ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


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

    tic = time.time()
    with connect(address):
        if gpus_per_run is None:  # one GPU per run where the cluster has GPUs
            gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        remote = ray.remote(_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries,
                                           retry_exceptions=True)
        tracker = Queue(actor_options={"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1})
        shared = ray.put(suite), ray.put(suite_runs)
        refs: dict[Any, Task] = {}
        by_id: dict[str, Any] = {}
        for t in tasks:  # in plan order: a probe after its training run
            deps = [by_id[t.after]] if t.after else []
            ref = remote.remote(t, *shared, str(out), max(1, int(cpus_per_run)), tracker, *deps)
            refs[ref], by_id[t.id] = t, ref
        result = _wait(ray, refs, tracker, out, limit, skipped)
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
            if tracker is not None:
                try:
                    started.update(item[1] for item in tracker.get_nowait_batch(tracker.qsize()))
                except RayError as exc:  # the progress actor is gone for good: count no running tasks from now
                    tracker = None
                    started.clear()
                    bar.write(f"progress actor lost ({type(exc).__name__}); running tasks are no longer counted, "
                              "results are collected as before")
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
                _cancel(ray, pending, refs)
                break
    except KeyboardInterrupt:
        bar.write(f"interrupted: cancelling {len(pending)} unfinished task(s); finished runs are kept")
        _cancel(ray, pending, refs)
        raise
    finally:
        bar.close()
    return {"results": results, "failed": failed, "cancelled": cancelled}


def _cancel(ray, pending: dict[Any, Task], refs: dict[Any, Task]) -> None:
    """Cancel the unfinished tasks. A task still waiting for an unfinished one (a probe for its training run) is
    not cancelled itself: cancelling the run fails it. (Cancelling both at once can abort the driver process, with
    no Python error, in Ray's reference counting: ``Check failed: submitted_task_ref_count``, seen with Ray 2.60; the
    race of ray-project/ray#55131, a cancel and an inlined dependency both releasing the task's references.)"""
    by_id = {task.id: ref for ref, task in refs.items()}
    for ref, task in pending.items():
        if not (task.after and by_id.get(task.after) in pending):
            ray.cancel(ref, force=True)

"""``sclft bench --launcher slurm``: the suite as a submitit job array of ``--shard I/N`` jobs, then merged.

Job ``I`` runs the in-process runner on shard ``I/N`` into ``OUT/shards/shard_I`` (all shards share the
frozen-prefix cache ``OUT/cache`` unless ``--cache-dir`` says otherwise); when the array has finished, the
reports of every shard are built into ``OUT`` (what ``--report OUT/shards/shard_*`` does). submitit keeps its
job files in ``OUT/slurm``. ``--slurm-cluster local`` / ``debug`` runs the array on this machine.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ...errors import UnavailableError, UsageError
from ..runner import run_suite
from ..suite import Suite
from . import Deadline, require, summary
from ._tasks import finish

SHARDS_SUBDIR = "shards"


def _shard_job(suite: Suite, out: str, spec: str) -> dict[str, Any]:
    """One job of the array: shard ``spec`` of the suite into ``out`` (the in-process runner)."""
    return run_suite(suite, out, shard_spec=spec)


def shard_folders(out: Path, shards: int) -> list[Path]:
    return [Path(out) / SHARDS_SUBDIR / f"shard_{i}" for i in range(1, shards + 1)]


def run_slurm(suite: Suite, out: str | Path, *, shards: int = 4, partition: str | None = None,
              gpus_per_job: int = 1, array_parallelism: int | None = None, timeout_min: int = 24 * 60,
              wait: bool = True, cluster: str = "slurm", deadline: float | None = None,
              merge_command: str = "") -> dict[str, Any]:
    """Submit the array; with ``wait``, wait for it (cancelling unfinished jobs at the deadline) and build the
    merged reports in ``out``. Returns the session summary (``jobs``, ``job_ids``, ``merge_command`` with no wait)."""
    limit = Deadline(deadline)
    if shards < 1 or gpus_per_job < 0 or timeout_min < 1 or (array_parallelism is not None and array_parallelism < 1):
        raise UsageError(f"--shards, --timeout-min and --array-parallelism must be >= 1 and --gpus-per-job >= 0; "
                         f"got {shards}, {timeout_min}, {array_parallelism}, {gpus_per_job}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UnavailableError("--launcher slurm: sbatch is not on PATH (no Slurm here); submit from a Slurm login "
                               "node, or --slurm-cluster local to run the array on this machine")
    submitit = require("submitit")
    out = Path(out).absolute()
    suite = suite.with_defaults(cache_dir=suite.defaults.get("cache_dir") or str(out / "cache"))
    folders = shard_folders(out, shards)
    executor = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster=cluster)
    executor.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus_per_job, name=f"sclft-{suite.name}",
                               slurm_array_parallelism=array_parallelism or shards,
                               **({"slurm_partition": partition} if partition else {}))
    tic = time.time()
    jobs = executor.map_array(_shard_job, [suite] * shards, [str(f) for f in folders],
                              [f"{i}/{shards}" for i in range(1, shards + 1)])
    ids = [str(j.job_id) for j in jobs]
    if not wait:
        return {"suite": suite.name, "launcher": "slurm", "jobs": len(jobs), "job_ids": ids,
                "merge_command": merge_command}
    stopped = []
    try:
        while not all(j.done() for j in jobs):
            if limit.passed():
                stopped = [i for i, j in zip(ids, jobs) if not j.done()]
                for j in jobs:
                    if not j.done():
                        j.cancel(check=False)
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        for j in jobs:
            j.cancel(check=False)
        raise
    sessions, crashed = [], []
    for job_id, job in zip(ids, jobs):
        if job_id in stopped:
            continue
        try:
            sessions.append(job.result())
        except Exception as exc:  # noqa: BLE001 — a job that died (time limit, node failure) costs only its shard
            crashed.append(f"job {job_id}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1]}")
    session = summary(suite, sum(s["runs"] for s in sessions), sum(s["skipped"] for s in sessions),
                      sum(s["trained"] for s in sessions), [f for s in sessions for f in s["failed"]] + crashed,
                      time.time() - tic, launcher="slurm", shards=shards, job_ids=ids,
                      **({"stopped": "deadline", "unfinished": stopped} if stopped else {}))
    finish(suite, out, session, sources=[f for f in folders if f.is_dir()])
    return session

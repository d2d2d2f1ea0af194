"""The launcher flags of ``sclft bench`` and their dispatch."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ...config import flag_name
from ...errors import EXIT_FAILED, Interrupted, UsageError
from ..suite import Suite
from . import LAUNCHERS

# flag (argparse dest) -> the launchers that use it: given with another launcher, it is an error, not ignored
LAUNCHER_FLAGS = {"deadline": ("ray", "slurm"), "address": ("ray",), "gpus_per_run": ("ray",),
                  "cpus_per_run": ("ray",), "retries": ("ray",), "shards": ("slurm",), "slurm_partition": ("slurm",),
                  "gpus_per_job": ("slurm",), "array_parallelism": ("slurm",), "timeout_min": ("slurm",),
                  "no_wait": ("slurm",), "slurm_cluster": ("slurm",)}


def check_launcher_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A launcher flag given with a launcher that does not use it (``--address`` without ``--launcher ray``,
    ``--gpus-per-run`` with the in-process runner) is bad input, not silently unused."""
    for dest, owners in LAUNCHER_FLAGS.items():
        if args.launcher not in owners and getattr(args, dest) != parser.get_default(dest):
            flag = flag_name(dest)
            raise UsageError(f"{flag} is an option of --launcher {' and '.join(owners)}; --launcher {args.launcher} "
                             f"does not use it (drop it, or add --launcher {owners[0]})")


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("launchers (--launcher ray | slurm)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: this process, run after run (default); ray: every run, probe and rule a Ray task "
                        "(pip install 'sclft[ray]'); slurm: a submitit job array of --shard I/N jobs, merged "
                        "(pip install 'sclft[slurm]')")
    g.add_argument("--deadline", type=float, metavar="SECONDS", default=None,
                   help="ray/slurm: stop unfinished runs after SECONDS (finished ones count and the reports are "
                        "built; the same command resumes)")
    g.add_argument("--address", default=None, help="ray: cluster to join (auto, HOST:PORT, ray://HOST:PORT; --out must "
                                                   "be on a filesystem every node sees); default: start a new local "
                                                   "Ray instance of its own for the bench (never joins another)")
    g.add_argument("--gpus-per-run", type=float, metavar="F", default=None,
                   help="ray: logical GPUs per task (0.1 packs ten runs on a GPU; default 1 if the cluster has GPUs)")
    g.add_argument("--cpus-per-run", type=float, metavar="N", default=1.0,
                   help="ray: logical CPUs per task (also its torch threads; default 1)")
    g.add_argument("--retries", type=int, metavar="K", default=2,
                   help="ray: retries of a task that raised or whose worker died (default 2)")
    g.add_argument("--shards", type=int, metavar="N", default=4, help="slurm: jobs in the array (default 4)")
    g.add_argument("--slurm-partition", default=None, help="slurm: partition")
    g.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per job (default 1)")
    g.add_argument("--array-parallelism", type=int, default=None, help="slurm: jobs of the array running at once")
    g.add_argument("--timeout-min", type=int, default=24 * 60, help="slurm: time limit of each job (default 1440)")
    g.add_argument("--no-wait", action="store_true",
                   help="slurm: submit and print the merge command instead of waiting for the jobs")
    g.add_argument("--slurm-cluster", choices=("slurm", "local", "debug"), default="slurm",
                   help="slurm: submitit executor; local/debug run the array on this machine (tests)")


def launch(args: argparse.Namespace, suite: Suite, out: Path) -> int:
    """Run the suite with ``--launcher ray|slurm``; the exit code (1: failed or unfinished runs; Ctrl-C raises
    :class:`~sclft.errors.Interrupted`)."""
    if args.shard:
        raise UsageError(f"--shard is one job of an array; --launcher {args.launcher} runs the whole suite "
                         "(--launcher slurm makes the array itself: --shards N)")
    try:
        if args.launcher == "ray":
            from .ray import run_ray  # only the chosen launcher (optional dependency)

            session = run_ray(suite, out, address=args.address, gpus_per_run=args.gpus_per_run,
                              cpus_per_run=args.cpus_per_run, retries=args.retries, deadline=args.deadline)
        else:
            from .slurm import run_slurm, shard_folders  # only the chosen launcher (optional dependency)

            merge = ["sclft", "bench", "--suite", args.suite, "--out", str(out),
                     *[f for d in args.dataset or [] for f in ("--dataset", d)],
                     "--report", *map(str, shard_folders(out.absolute(), args.shards))]
            session = run_slurm(suite, out, shards=args.shards, partition=args.slurm_partition,
                                gpus_per_job=args.gpus_per_job, array_parallelism=args.array_parallelism,
                                timeout_min=args.timeout_min, wait=not args.no_wait, cluster=args.slurm_cluster,
                                deadline=args.deadline, merge_command=shlex.join(merge))
            if args.no_wait:
                print(f"submitted {session['jobs']} jobs ({', '.join(session['job_ids'])}); when they finish, merge "
                      f"them with:\n  {session['merge_command']}")
                return 0
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the unfinished tasks were cancelled and every finished run in {out} is "
                          "kept: rerun the same command to resume") from None
    print(f"{session['runs']} runs ({session['skipped']} already done, {session['trained']} trained) in "
          f"{session['seconds']:.0f} s; reports in {out}")
    code = 0
    if session.get("stopped") == "deadline":
        print(f"sclft bench: deadline of {args.deadline:g} s reached: {len(session['unfinished'])} unfinished task(s) "
              "stopped; the reports hold the finished runs; rerun the same command to resume", file=sys.stderr)
        code = EXIT_FAILED
    if session["failed"]:
        print(f"sclft bench: {len(session['failed'])} task(s) failed (see error.log in each; rerun the same command "
              f"to retry them): {', '.join(session['failed'])}", file=sys.stderr)
        code = EXIT_FAILED
    return code

"""``sclft bench``: the sub-command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EXIT_FAILED, UsageError
from .calibration import calibrate
from .cost import dry_run
from .launchers.cli import add_launcher_arguments, check_launcher_flags
from .layout import bench_lock
from .reports import NothingToReport, build_reports
from .runner import run_suite
from .suite import load_suite


def _check_usage(args: argparse.Namespace) -> None:
    reporting = args.report is not None or args.report_only
    if args.dry_run and reporting:
        raise UsageError("--dry-run lists the runs a suite would train and their cost; --report/--report-only "
                         "build the reports from finished runs and train nothing: give one of them")
    if args.suite is None and not args.calibrate:
        raise UsageError("--suite is required (a name from `sclft list suites`, or a YAML path)")
    if args.out is None and not (args.dry_run or args.calibrate):
        raise UsageError("--out is required (the bench folder), except with --dry-run or --calibrate")
    if args.strict_versions and not reporting:
        raise UsageError("--strict-versions applies to --report/--report-only (training always uses the "
                         "installed versions: a run of other versions is a new run)")


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _check_usage(args)
    check_launcher_flags(args, parser)
    suite = load_suite(args.suite or "paper").with_datasets(args.dataset or [])
    if args.cache_dir:
        suite = suite.with_defaults(cache_dir=args.cache_dir)
    out = Path(args.out) if args.out else None
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    if args.calibrate:
        calibrate(suite, args.cache_dir)
        if not args.dry_run:
            return 0
    if args.dry_run:
        dry_run(suite, out, shard_spec=args.shard, cache_dir=args.cache_dir)
        return 0
    with bench_lock(out):  # one writer per bench folder (a launcher's workers write only their runs' folders)
        if args.launcher != "local" and not (args.report is not None or args.report_only):
            from .launchers.cli import launch  # the engines are optional dependencies

            return launch(args, suite, out)
        if args.report is not None or args.report_only:
            for path in build_reports(suite, out, args.report or [], args.strict_versions, say=say):
                print(path)
            return 0
        summary = run_suite(suite, out, shard_spec=args.shard)
        try:
            build_reports(suite, out, say=say)
        except NothingToReport:
            pass  # every run failed: said below
    print(f"{summary['runs']} runs ({summary['skipped']} already done, {summary['trained']} trained) "
          f"in {summary['seconds']:.0f} s; reports in {out}")
    if summary["failed"]:
        print(f"sclft bench: {len(summary['failed'])} run(s) failed (see error.log in each; rerun the same "
              f"command to retry them): {', '.join(summary['failed'])}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="run a benchmark suite and build its tables and plots",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=None, help="suite name (sclft list suites) or a YAML path "
                                                      "(--calibrate: default paper)")
    parser.add_argument("--out", default=None, help="output directory (experiments/, table.md, plots …); "
                                                    "not needed by --dry-run and --calibrate")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs and their estimated cost, each marked measured (--calibrate) or assumed "
                             "(the suite's images/s); run nothing")
    parser.add_argument("--calibrate", action="store_true",
                        help="time a few training steps per (backbone, strategy cost class, image size, precision) "
                             "of the suite on this machine's device; stored in calibration.json in the cache folder "
                             "(--cache-dir, else ~/.cache/sclft/features) for --dry-run")
    parser.add_argument("--report-only", action="store_true", help="rebuild the reports from finished runs")
    parser.add_argument("--report", nargs="*", metavar="DIR|JSON", default=None,
                        help="rebuild the reports in --out from the finished runs in --out and in each DIR "
                             "(e.g. the --out folders of the shards), plus the cells of each earlier "
                             "selection.json given, rescored with this version's layer rules; trains nothing")
    parser.add_argument("--strict-versions", action="store_true",
                        help="with --report: count only runs trained with the installed library versions (by "
                             "default a run of the same config under other versions counts, and the report says "
                             "which versions it mixes)")
    parser.add_argument("--shard", metavar="I/N", default=None,
                        help="run only every N-th run starting at the I-th (1-based; deterministic), and the same "
                             "share of the selection rules: one job of an N-job array")
    parser.add_argument("--dataset", action="append", metavar="NAME",
                        help="add a dataset (e.g. imagefolder:PATH) to the suite; repeatable")
    parser.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="frozen-prefix activation cache for every run (default: OUT/cache); shard jobs on one "
                             "machine can share one (concurrent writers are safe); does not change run ids")

    add_launcher_arguments(parser)
    parser.set_defaults(func=lambda args: _main(args, parser))
    return parser

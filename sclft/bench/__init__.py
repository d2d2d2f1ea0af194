"""Benchmark suites (``sclft bench --suite NAME --out DIR``): YAML grids of training runs → paper tables and plots.

A suite (``sclft/configs/bench/NAME.yaml``) names ``backbones``, ``datasets``, run ``defaults`` (TrainConfig
fields) and ``groups``; each group is a grid (backbones × datasets × strategies × seeds × train sizes ×
variants × layers) whose runs feed one report (``table``, ``data_size``, ``selection``, ``ablation``).

The package by job (imports point down this list; nothing imports ``cli``):

* :mod:`.suite`   — the schema: :func:`load_suite` → a validated, typed :class:`Suite` (bad files: :class:`SuiteError`);
* :mod:`.plan`    — :func:`expand_suite` → ``list[Run]`` with stable ids, :func:`rule_tasks`, :func:`shard`;
* :mod:`.layout`  — the bench folder: run folders, ``error.log``, rule evidence, :func:`bench_lock`, and
  :func:`find_runs` across merged folders and library versions;
* :mod:`.runner`  — :func:`execute_run` / :func:`execute_rule` (one unit of work, by id), :func:`run_suite`;
* :mod:`.scoring` — table rows, data-size curves, ablation rows, layer-rule regret (pure functions);
* :mod:`.render`  — Markdown / CSV / plots;  :mod:`.reports` — :func:`build_reports`, once, from finished runs;
* :mod:`.cost`    — ``--dry-run`` estimates;  :mod:`.cli` — the sub-command.

A launcher (in-process, Ray, Slurm) does: ``runs = expand_suite(suite)``; for each ``run.id`` (anywhere,
any order, in parallel) ``execute_run(suite, run.id, out)``; for each ``task in rule_tasks(suite, runs)``
``execute_rule(suite, task, out)``; then, on one machine, ``build_reports(suite, out, [other folders])``;
the whole time holding ``bench_lock(out)`` on the driver. See docs/bench.md.
"""

from .cli import add_parser
from .cost import dry_run, estimate_seconds
from .layout import Coverage, bench_lock, find_runs
from .plan import RuleTask, Run, expand_suite, rule_tasks, run_fingerprint, shard
from .reports import NothingToReport, build_reports
from .runner import RunResult, execute_rule, execute_run, run_suite
from .suite import Suite, SuiteError, find_suite, load_suite

__all__ = ["load_suite", "find_suite", "Suite", "SuiteError", "expand_suite", "Run", "RuleTask", "rule_tasks",
           "run_fingerprint", "shard", "execute_run", "execute_rule", "RunResult", "run_suite", "bench_lock",
           "find_runs", "Coverage", "build_reports", "NothingToReport", "add_parser", "dry_run", "estimate_seconds"]

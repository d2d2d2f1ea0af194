"""Benchmark suites (``sclft bench --suite NAME --out DIR``): YAML grids of training runs → paper tables and plots.

A suite (``sclft/configs/bench/NAME.yaml``) names ``backbones``, ``datasets``, run ``defaults`` (TrainConfig
fields) and ``groups``; each group is a grid (backbones × datasets × strategies × seeds × train sizes ×
variants × layers) whose runs feed one report:

* ``table``     → ``table.md`` / ``table.csv`` (paper layout) and ``nc1_layers.png`` (first seed);
* ``data_size`` → ``data_size.png`` / ``data_size.md``;
* ``selection`` → ``selection.md``: an exhaustive block sweep and the picks of each layer rule;
* ``ablation``  → ``ablation.md`` (e.g. SCL-FT ``fuse`` / ``match`` variants).

Every run trains with :func:`sclft.train.train` into ``DIR/experiments/<run-id>``; the id is readable and ends
in a hash of the run's full config and library versions (:func:`sclft.bench.suite.run_fingerprint`), so a run whose ``metrics.json`` exists is skipped (resume) and a
changed config is a new run. See docs/bench.md.
"""

from .cli import add_parser
from .cost import dry_run, estimate_seconds
from .reports import build_reports
from .runner import run_suite
from .suite import Run, add_datasets, expand_suite, find_suite, load_suite, shard

__all__ = ["load_suite", "expand_suite", "run_suite", "build_reports", "add_parser", "find_suite", "Run", "dry_run",
           "estimate_seconds", "shard", "add_datasets"]

"""What a suite costs before it runs (``sclft bench --dry-run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..strategies import collect_strategy_options, strategy_config
from .suite import RUNS_SUBDIR, Run, _blocks_of, _entries, _label, _selection_cells, expand_suite, shard


def estimate_seconds(run: Run, suite: dict[str, Any]) -> float:
    """Rough cost from the suite's dataset sizes and the backbone's images/s (``--dry-run``).

    A swept block's trained tail is taken as the share of blocks from it to the end; evaluation on the
    test split counts once per ``eval_every`` epochs (once for ``eval_every: 0``).
    """
    b = next(e for e in _entries(suite["backbones"]) if _label(e) == run.backbone)
    d = next(e for e in _entries(suite["datasets"]) if _label(e) == run.dataset)
    k = d.get("num_classes", 10)
    n_train = min(d.get("train_size", 10_000), k * (run.train_per_class or 10**9))
    n_test = k * d["test_per_class"] if d.get("test_per_class") else d.get("test_size", 10_000)
    epochs, every = run.config.get("epochs", 10), run.config.get("eval_every", 1)
    options = collect_strategy_options(run.config).get("strategy_options") or {}
    strategy = strategy_config(run.strategy, **options)
    tail, cached = strategy.cost, strategy.frozen_scope() != "none"
    start = strategy.start_block(run.config.get("layer"))
    blocks = _blocks_of(b["name"])
    if start in blocks:  # the trained tail: the start block and the ones after it ("auto": the class's cost)
        tail = (len(blocks) - blocks.index(start)) / len(blocks)
    evals = max(1, epochs // every) if every else 1
    images = epochs * 3 * tail * n_train + (evals * n_test + n_train) * (tail if cached else 1.0)
    images += (n_train + n_test) if cached else 0
    return images / float(b.get("images_per_second", suite.get("images_per_second", 500)))


def dry_run(suite: dict[str, Any], out: Path, say: Callable[[str], None] = print, shard_spec: str | None = None) -> float:
    from ..train import METRICS_FILE

    all_runs = expand_suite(suite)
    runs = shard(all_runs, shard_spec)
    total = 0.0
    say(f"{'run':<80} {'groups':<22} {'est. min':>9}")
    for r in runs:
        seconds = estimate_seconds(r, suite)
        done = (out / RUNS_SUBDIR / r.id / METRICS_FILE).is_file()
        total += 0.0 if done else seconds
        say(f"{r.id:<80} {','.join(sorted(r.groups)):<22} {'done' if done else f'{seconds / 60:9.1f}':>9}")
    for key, cell in _selection_cells(suite, runs).items():
        cost = [estimate_seconds(r, suite) for r in cell]
        say(f"selection cell {key.rstrip('|')}: {len(cell)} runs ({len({r.config['layer'] for r in cell})} blocks × "
            f"{len({r.seed for r in cell})} seeds), est. {sum(cost) / 60:.1f} min, one run {np.mean(cost):.0f} s")
    unit = suite.get("cost_unit", "device")
    say(f"{len(runs)} runs{f' (shard {shard_spec} of {len(all_runs)})' if shard_spec else ''}; estimated "
        f"{total / 3600:.2f} {unit}-hours still to run (from images/s in {Path(suite.get('_file', suite['name'])).name}; "
        f"selection rules add one probe (profile) or one short fine-tune per candidate block (trial) per cell "
        f"and seed)")
    return total

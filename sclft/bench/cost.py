"""What a suite costs before it runs (``sclft bench --dry-run``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..strategies import collect_strategy_options, strategy_config
from .layout import is_finished
from .plan import Run, blocks_of, expand_suite, selection_cells, shard
from .suite import Suite


def estimate_seconds(run: Run, suite: Suite) -> float:
    """Rough cost from the suite's dataset sizes and the backbone's images/s (``--dry-run``).

    A swept block's trained tail is taken as the share of blocks from it to the end; evaluation on the
    test split counts once per ``eval_every`` epochs (once for ``eval_every: 0``).
    """
    b, d = suite.backbone(run.backbone), suite.dataset(run.dataset)
    k = d.num_classes or 10
    n_train = min(d.train_size or 10_000, k * (run.train_per_class or 10**9))
    n_test = k * d.test_per_class if d.test_per_class else (d.test_size or 10_000)
    epochs, every = run.config.get("epochs", 10), run.config.get("eval_every", 1)
    options = collect_strategy_options(run.config).get("strategy_options") or {}
    strategy = strategy_config(run.strategy, **options)
    tail, cached = strategy.cost, strategy.frozen_scope() != "none"
    start = strategy.start_block(run.config.get("layer"))
    blocks = blocks_of(b.name)
    if start in blocks:  # the trained tail: the start block and the ones after it ("auto": the class's cost)
        tail = (len(blocks) - blocks.index(start)) / len(blocks)
    evals = max(1, epochs // every) if every else 1
    images = epochs * 3 * tail * n_train + (evals * n_test + n_train) * (tail if cached else 1.0)
    images += (n_train + n_test) if cached else 0
    return images / float(b.images_per_second or suite.images_per_second)


def dry_run(suite: Suite, out: Path, say: Callable[[str], None] = print, shard_spec: str | None = None) -> float:
    all_runs = expand_suite(suite)
    runs = shard(all_runs, shard_spec)
    total = 0.0
    say(f"{'run':<80} {'groups':<22} {'est. min':>9}")
    for r in runs:
        seconds = estimate_seconds(r, suite)
        done = is_finished(out, r.id)
        total += 0.0 if done else seconds
        say(f"{r.id:<80} {','.join(sorted(r.groups)):<22} {'done' if done else f'{seconds / 60:9.1f}':>9}")
    for key, cell in selection_cells(runs).items():
        cost = [estimate_seconds(r, suite) for r in cell]
        say(f"selection cell {key.rstrip('|')}: {len(cell)} runs ({len({r.config['layer'] for r in cell})} blocks × "
            f"{len({r.seed for r in cell})} seeds), est. {sum(cost) / 60:.1f} min, one run {np.mean(cost):.0f} s")
    unit = suite.cost_unit
    say(f"{len(runs)} runs{f' (shard {shard_spec} of {len(all_runs)})' if shard_spec else ''}; estimated "
        f"{total / 3600:.2f} {unit}-hours still to run (from images/s in {Path(suite.file or suite.name).name}; "
        f"selection rules add one probe (profile) or one short fine-tune per candidate block (trial) per cell "
        f"and seed)")
    return total

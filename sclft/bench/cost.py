"""What a suite costs before it runs (``sclft bench --dry-run``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .calibration import calibration_path, cost_class, device_name, load_calibration, run_key
from .layout import is_finished
from .plan import Run, blocks_of, expand_suite, selection_cells, shard
from .suite import Suite


def run_sizes(run: Run, suite: Suite) -> tuple[int, int, int, int]:
    """(training images, test images, epochs, evaluations) of a run."""
    d = suite.dataset(run.dataset)
    k = d.num_classes or 10
    n_train = min(d.train_size or 10_000, k * (run.train_per_class or 10**9))
    n_test = k * d.test_per_class if d.test_per_class else (d.test_size or 10_000)
    epochs, every = run.config.get("epochs", 10), run.config.get("eval_every", 1)
    return n_train, n_test, epochs, max(1, epochs // every) if every else 1


def trained_share(run: Run, strategy) -> float:
    """The trained share of the network: from the start block to the end ("auto": the class's cost)."""
    start = strategy.start_block(run.config.get("layer"))
    blocks = blocks_of(run.config["backbone"])
    return (len(blocks) - blocks.index(start)) / len(blocks) if start in blocks else strategy.cost


def estimate_seconds(run: Run, suite: Suite, calibration: dict[str, dict] | None = None,
                     device: str = "cpu") -> tuple[float, str]:
    """(seconds, "measured" | "assumed"): from ``device``'s ``--calibrate`` record for the run's backbone, cost
    class, image size and precision when ``calibration`` has one, else from the suite's ``images_per_second``.

    Assumed: every image counts as one forward pass at ``images_per_second``, a training step as three over
    the trained tail. Measured: training images at the class's measured training rate (scaled by the tail share
    where the run's start block differs from the one measured), evaluations and the caching pass at the measured
    inference rate. Test evaluation counts once per ``eval_every`` epochs (once for ``eval_every: 0``).
    """
    n_train, n_test, epochs, evals = run_sizes(run, suite)
    klass, strategy = cost_class(run)
    tail, cached = trained_share(run, strategy), klass != "none"
    record = calibration.get(run_key(run, device)) if calibration else None
    if record is not None:
        train = record["train_images_per_second"] * (record["tail"] / tail if klass == "prefix" and tail else 1.0)
        forward = record["forward_images_per_second"]
        seconds = epochs * n_train / train + (evals * n_test + n_train) * (tail if cached else 1.0) / forward
        return seconds + ((n_train + n_test) / forward if cached else 0.0), "measured"
    images = epochs * 3 * tail * n_train + (evals * n_test + n_train) * (tail if cached else 1.0)
    images += (n_train + n_test) if cached else 0
    return images / float(suite.backbone(run.backbone).images_per_second or suite.images_per_second), "assumed"


def suite_cost(suite: Suite, cache_dir: str | Path | None = None) -> tuple[int, float, str]:
    """(runs, estimated seconds of all of them, basis) of a suite, as ``--dry-run`` totals them (measured where
    this machine's calibration has a record, else assumed from the suite's images/s)."""
    calibration = load_calibration(cache_dir)
    device = device_name() if calibration else "cpu"
    runs = expand_suite(suite)
    estimates = [estimate_seconds(r, suite, calibration, device) for r in runs]
    bases = {b for _, b in estimates}
    return len(runs), sum(s for s, _ in estimates), "measured" if bases == {"measured"} else (
        "partly measured" if "measured" in bases else "assumed")


def dry_run(suite: Suite, out: Path | None, say: Callable[[str], None] = print, shard_spec: str | None = None,
            cache_dir: str | Path | None = None) -> float:
    """List the runs (of shard ``I/N``) with their estimated minutes, each marked measured or assumed; the
    total of those not finished in ``out`` (``None``: none are). Returns the total in seconds."""
    calibration = load_calibration(cache_dir)
    device = device_name() if calibration else "cpu"
    all_runs = expand_suite(suite)
    runs = shard(all_runs, shard_spec)
    total, bases = 0.0, {"measured": 0, "assumed": 0}
    say(f"{'run':<80} {'groups':<22} {'est. min':>9} basis")
    for r in runs:
        seconds, basis = estimate_seconds(r, suite, calibration, device)
        bases[basis] += 1
        done = out is not None and is_finished(out, r.id)
        total += 0.0 if done else seconds
        say(f"{r.id:<80} {','.join(sorted(r.groups)):<22} {'done' if done else f'{seconds / 60:9.1f}':>9} {basis}")
    for key, cell in selection_cells(runs).items():
        cost = [estimate_seconds(r, suite, calibration, device)[0] for r in cell]
        say(f"selection cell {key.rstrip('|')}: {len(cell)} runs ({len({r.config['layer'] for r in cell})} blocks × "
            f"{len({r.seed for r in cell})} seeds), est. {sum(cost) / 60:.1f} min, one run {np.mean(cost):.0f} s")
    basis = (f"{bases['measured']} estimates measured on {device} ({calibration_path(cache_dir)}), "
             f"{bases['assumed']} assumed from images/s in {Path(suite.file or suite.name).name}")
    say(f"{len(runs)} runs{f' (shard {shard_spec} of {len(all_runs)})' if shard_spec else ''}; estimated "
        f"{total / 3600:.2f} {suite.cost_unit}-hours still to run ({basis}; selection rules add one probe (profile) "
        f"or one short fine-tune per candidate block (trial) per cell and seed)")
    return total

"""Building a suite's reports once, from finished runs: :func:`build_reports` reads one bench folder or several
(the shards of a job array, merged), scores (:mod:`~sclft.bench.scoring`) and renders (:mod:`~sclft.bench.render`)
every report into the first folder. It trains nothing and never runs inside :func:`~sclft.bench.runner.run_suite`.

Runs are matched across folders by :func:`~sclft.bench.layout.find_runs`: a run trained under other library
versions (same config, another id hash) counts unless ``strict_versions``; when the runs mix version sets or
some are missing, every Markdown report ends with a note and ``runs.md`` lists the version sets and each
missing run with its reason (never trained, failed, unfinished, version mismatch refused); the same when every
run was trained under other library versions than the installed ones.

Each run's results are read through the run-folder owner (:func:`sclft.run_folder.read_run`): a result file
changed after the run finished (its sha256 no longer the one ``manifest.json`` recorded) is refused with an
error naming it, a run whose weights lost their manifest counts as unfinished (a missing run, with its reason),
and a run found in several folders with different results is refused naming both copies: the report never
picks one silently. Records kept without weights or manifest (a committed ``runs.tar.gz``) are read as they
are; ``say`` is told how many such unverified runs a report uses.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import versions as version_info
from ..errors import UsageError
from ..io import atomic_write_json, atomic_write_text
from ..run_folder import MANIFEST_FILE, METRICS_FILE, RunFolderError, read_run
from .layout import Coverage, describe_versions, find, find_runs, read_json, selection_file
from .plan import RuleTask, Run, expand_suite, probe_runs
from .render import (
    ablation_report,
    markdown,
    paired_report,
    plot_data_size,
    plot_nc1_layers,
    plot_selection,
    render_data_size,
    render_table,
    selection_report,
)
from .scoring import (
    ablation_rows,
    data_size_rows,
    paired_rows,
    rescore_selection,
    selection_cells_data,
    summarize_rules,
    table_rows,
)
from .suite import Suite

COVERAGE_FILE = "runs.md"  # written when runs are missing or mix library versions


class NothingToReport(UsageError):
    """No finished run of the suite (and no stored selection cell) in any of the folders."""


def _stored_cells(path: Path) -> list[dict[str, Any]]:
    keys = {"cell", "seeds", "blocks", "accuracy", "best", "params_percent", "run_seconds", "rules"}
    try:
        cells = read_json(path)
    except ValueError as e:
        raise UsageError(f"--report {path}: not a selection.json ({e})") from None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and keys <= set(c) for c in cells):
        raise UsageError(f"--report {path}: not a selection.json (the list of selection cells `sclft bench` "
                         f"writes, each with {', '.join(sorted(keys))}); a bench folder is passed as a folder")
    return cells


def _nc1_panels(runs: list[Run], coverage: Coverage) -> dict[tuple[str, str], list[tuple[str, list[dict]]]]:
    panels: dict[tuple[str, str], list[tuple[str, list[dict]]]] = {}
    probed = probe_runs(runs)
    for r in runs:
        found = coverage.found.get(r.id)
        if r.id in probed and found is not None and (found.path / "nc1_layers.csv").is_file():
            with open(found.path / "nc1_layers.csv") as fh:
                panels.setdefault((r.backbone, r.dataset), []).append((r.strategy, list(csv.DictReader(fh))))
    return panels


def coverage_text(suite: Suite, coverage: Coverage, folders: list[Path]) -> tuple[str, str]:
    """(One-line note for every report, the ``runs.md`` text); both empty when every run was found under one
    set of library versions."""
    sets = coverage.version_sets()
    installed = version_info.library_versions()
    other = len(sets) == 1 and sets[0][0] != installed  # every run of other (or unrecorded) versions
    if not coverage.missing and len(sets) <= 1 and not other:
        return "", ""
    found = len(coverage.found)
    total = found + len(coverage.missing)
    note = f"Runs: {found} of {total} found"
    note += f" ({len(coverage.missing)} missing)" if coverage.missing else ""
    if len(sets) > 1:
        varying = sorted({k for v, _ in sets if v for k in v if any((w or {}).get(k) != v[k] for w, _ in sets)})
        labels = [("not recorded" if v is None else ", ".join(f"{k} {v.get(k)}" for k in varying)) for v, _ in sets]
        note += f", mixing {len(sets)} sets of library versions ({'; '.join(labels)})"
    elif other:
        note += f", all trained with {describe_versions(sets[0][0], installed)}"
    note += f"; see {COVERAGE_FILE}."
    lines = [f"# Runs of the {suite.name} suite\n", f"{found} of {total} runs found in "
             f"{', '.join(p.name or str(p) for p in folders)}.\n", "## Library versions\n"]
    lines += [f"* {len(ids)} run(s): {describe_versions(v, installed)}" for v, ids in sets] or ["* no run found"]
    if coverage.missing:
        lines += [f"\n## Missing runs ({len(coverage.missing)})\n",
                  markdown(["run", "reason"], [[rid, reason] for rid, reason in coverage.missing.items()])]
    return note, "\n".join(lines) + "\n"


def read_metrics(coverage: Coverage) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(run id -> ``metrics.json`` of each found run, the ids of those no manifest vouches for), each copy read
    through :func:`~sclft.run_folder.read_run`. A changed file is a :class:`RunFolderError` naming it; so are two
    copies of one run (the same id in several folders) whose results differ, naming both."""
    metrics: dict[str, dict[str, Any]] = {}
    unverified: list[str] = []
    for rid, found in coverage.found.items():
        first, *others = [read_run(p) for p in (found.copies or [found.path])]
        for other in others:
            if other.metrics != first.metrics:
                a, b = first.metrics, other.metrics
                keys = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
                shown = "; ".join(f"{k}: {json.dumps(a.get(k))[:40]} / {json.dumps(b.get(k))[:40]}" for k in keys[:4])
                raise RunFolderError(
                    f"--report: {first.path / METRICS_FILE} and {other.path / METRICS_FILE} hold run {found.path.name} "
                    f"with different results ({shown}{' ...' if len(keys) > 4 else ''}): the report would use only "
                    "one of them. Give only the folder whose run you mean, or remove the other copy")
        metrics[rid] = first.metrics
        if not first.verified:
            unverified.append(rid)
    return metrics, unverified


def build_reports(suite: Suite, out: str | Path, sources: Iterable[str | Path] = (), strict_versions: bool = False,
                  say: Callable[[str], None] | None = None) -> list[Path]:
    """(Re)build every report in ``out`` from the finished runs under ``out`` and ``sources`` (other bench
    folders, e.g. the shards of a job array; the first folder holding a run wins); returns the written paths.
    A ``selection.json`` among ``sources`` adds its cells (those not found among the runs), rescored with
    this version's rules (:func:`~sclft.bench.scoring.rescore_selection`). ``say`` gets the coverage note.
    Raises :class:`NothingToReport` when no folder holds a finished run of the suite (nor a stored cell)."""
    out = Path(out)
    sources = [Path(p) for p in sources]
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        raise UsageError(f"--report: no such bench folder or selection.json: {', '.join(missing)}")
    stored = [c for p in sources if p.is_file() for c in _stored_cells(p)]  # earlier selection.json files
    roots = [out, *(p for p in sources if not p.is_file())]
    runs = expand_suite(suite)
    coverage = find_runs(roots, runs, strict_versions)
    given = {c["cell"] for c in stored}  # a stored cell stands in for its sweep runs
    for r in runs:
        if r.groups == {"selection"} and r.cell in given:
            coverage.missing.pop(r.id, None)
    if not coverage.found and not stored:
        reasons = sorted(set(coverage.missing.values()))
        raise NothingToReport(
            f"no finished run of suite {suite.name!r} in {', '.join(map(str, roots))} ({len(runs)} runs expected, "
            f"e.g. experiments/{runs[0].id}; {'; '.join(reasons[:3])}): nothing to report. Train them with "
            f"`sclft bench --suite {suite.file or suite.name} --out DIR`, or give the folders that hold them")
    metrics, unverified = read_metrics(coverage)
    note, listing = coverage_text(suite, coverage, roots)
    tail = f"\n{note}\n" if note else ""
    written: list[Path] = []
    rows = table_rows(runs, metrics)
    if rows:
        md, text = render_table(rows)
        written += [atomic_write_text(out / "table.md", f"# {suite.name} suite\n\n" + md + tail),
                    atomic_write_text(out / "table.csv", text)]
    written += [p for p in [plot_nc1_layers(_nc1_panels(runs, coverage), out / "nc1_layers.png")] if p]
    sizes = data_size_rows(runs, metrics)
    if sizes:
        written += [p for p in [plot_data_size(sizes, out / "data_size.png"),
                                atomic_write_text(out / "data_size.md", render_data_size(sizes) + tail)] if p]

    def evidence(task: RuleTask) -> dict[str, Any] | None:
        path = find(roots, selection_file(*task))
        return read_json(path) if path is not None else None

    group = suite.group("selection")
    cells = selection_cells_data(group.rules if group else (), runs, metrics, evidence)
    done = {c["cell"] for c in cells}
    cells += [c for c in rescore_selection(stored) if c["cell"] not in done]
    summary: dict[str, Any] = {}
    if cells:
        written += [atomic_write_text(out / "selection.md", "# Layer selection\n\n" + selection_report(cells) + tail),
                    atomic_write_json(out / "selection.json", cells)]
        written += [p for p in [plot_selection(cells, out / "selection.png")] if p]
        summary["rules"] = summarize_rules(cells)
    ablation = suite.group("ablation")
    if any("ablation" in r.groups for r in runs):
        text = "# Ablation\n\n" + ablation_report(ablation_rows(runs, metrics)) + tail
        written.append(atomic_write_text(out / "ablation.md", text))
        if len(ablation.strategies) > 1:  # the first strategy is the baseline the others are paired with by seed
            paired = paired_rows(runs, metrics, ablation.strategies[0], ablation.tune)
            if paired["cells"] or paired["incomplete"]:
                text = "# Paired comparison\n\n" + paired_report(paired) + tail
                written.append(atomic_write_text(out / "paired.md", text))
                summary["paired"] = paired
    if summary:
        written.append(atomic_write_json(out / "summary.json", {"suite": suite.name, **summary}))
    if say and unverified:
        say(f"note: {len(unverified)} of {len(metrics)} runs have no {MANIFEST_FILE} (records kept without their "
            f"weights, e.g. {unverified[0]}): their {METRICS_FILE} cannot be checked against the run's digests")
    if listing:
        written.append(atomic_write_text(out / COVERAGE_FILE, listing))
        if say:
            say(note)
    else:
        (out / COVERAGE_FILE).unlink(missing_ok=True)  # an earlier, now stale listing
    return written

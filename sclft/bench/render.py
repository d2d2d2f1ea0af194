"""Rendering of the reports: Markdown and CSV text and matplotlib figures from the rows of
:mod:`sclft.bench.scoring`. Text functions return strings; plot functions write one PNG and return its path."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write
from ..plotting import log_axis, subplots
from ..selection import DEFAULT_PROFILE_PICK, DEFAULT_RULE
from ..strategies import get_strategy_config, strategy_rank
from .scoring import mean_std, method_name, method_order, spearman, summarize_rules

TABLE_FIELDS = ["backbone", "dataset", "method", "strategy", "seeds", "train_per_class", "accuracy_mean",
                "accuracy_std", "nc1_mean", "nc1_std", "train_accuracy_mean", "params_percent", "trainable_params",
                "layers"]


def pm(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def render_table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(Markdown, CSV) of the paper table: a column per backbone/dataset (and training-set size, where a
    suite has several); blocks accuracy, NC1, % params."""
    cols = list(dict.fromkeys((r["backbone"], r["dataset"], r["train_per_class"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in sorted(rows, key=lambda r: strategy_rank(r["strategy"]))))
    index = {(r["backbone"], r["dataset"], r["train_per_class"], r["method"]): r for r in rows}
    sized = len({n for _, _, n in cols}) > 1
    blocks = [("Transfer accuracy (%, test)", lambda r: pm(r["acc"], 100.0)),
              ("NC1 of the penultimate feature (train data)", lambda r: pm(r["nc1"], 1.0, 3)),
              ("Parameters fine-tuned (%)", lambda r: f"{r['params_percent']:.2f}")]
    header = ["Method", *[f"{b} / {d}" + (f" · {n or 'all'}/class" if sized else "") for b, d, n in cols]]
    parts = ["Mean ± std over seeds; NC1 = tr(Σ_W Σ_B⁺) of the head-input feature on the training data."]
    for title, fmt in blocks:
        body = [[m, *[fmt(index[(*c, m)]) if (*c, m) in index else "–" for c in cols]] for m in methods]
        parts += [f"\n### {title}\n", markdown(header, body)]
    picked = [f"{r['backbone']} / {r['dataset']}" + (f" · {r['train_per_class'] or 'all'}/class" if sized else "")
              + f" {r['method']}: {r['layers']}" for r in rows if get_strategy_config(r["strategy"]).uses_layer]
    if picked:
        parts += ["\nTuned blocks: " + "; ".join(picked) + "."]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return "\n".join(parts) + "\n", buf.getvalue()


def render_data_size(rows: list[dict[str, Any]]) -> str:
    sizes = sorted({r["train_per_class"] for r in rows})
    parts = ["Test accuracy (%) and generalisation gap (train − test accuracy, points) vs training examples "
             "per class."]
    for cell in dict.fromkeys((r["backbone"], r["dataset"]) for r in rows):
        here = {(r["strategy"], r["train_per_class"]): r for r in rows if (r["backbone"], r["dataset"]) == cell}
        strategies = method_order(s for s, _ in here)
        for title, key in (("test accuracy", "test"), ("train − test gap", "gap")):
            body = [[method_name(s), *[pm(here[(s, n)][key], 100.0, 1) if (s, n) in here else "–"
                                       for n in sizes]] for s in strategies]
            parts += [f"\n### {' / '.join(cell)}: {title}\n", markdown(["Method", *[f"n={n}" for n in sizes]], body)]
    return "\n".join(parts) + "\n"


def ablation_report(sections: list[tuple[tuple, list[dict[str, Any]]]]) -> str:
    """The ablation group's variants: one table per backbone / dataset / training-set size, a row per
    (strategy, variant), aggregated over seeds (:func:`sclft.bench.scoring.ablation_rows`)."""
    parts = ["Variants: strategy options and run fields (mean ± std over seeds)."]
    for (backbone, dataset, size), rows in sections:
        body = [[f"{method_name(r['strategy'])} {r['variant'] or '(defaults)'}", str(r["seeds"]), pm(r["acc"], 100.0),
                 pm(r["nc1"], 1.0, 3), f"{r['params_percent']:.2f}", r["layers"] or "–"] for r in rows]
        parts += [f"\n### {backbone} / {dataset} · {size or 'all'}/class\n",
                  markdown(["variant", "seeds", "test acc (%)", "NC1 (train)", "% params", "blocks"], body)]
    return "\n".join(parts) + "\n"


def selection_report(cells: list[dict[str, Any]]) -> str:
    """Markdown: per cell the accuracy of every block (mean ± std over seeds) and each rule's pick,
    regret, parameter share and cost; then the summary over cells."""
    parts = ["Exhaustive sweep of the candidate blocks (SCL-FT unless the cell says otherwise); accuracy = test "
             "accuracy, mean ± std over seeds. regret = best block's mean − the picked block's mean (points; a "
             "rule applied per seed scores the mean over its per-seed picks). `oracle` = the sweep itself, "
             "`fixed:*` = data-free baselines over the candidates, `profile:*` = pick functions of one probe of "
             "the pretrained NC1 curve, `trial` = short fine-tune of every candidate (lowest held-out NC1; "
             "`trial:heldout_acc` its held-out accuracy). cost = rule seconds, and % of one sweep run of the cell."]
    for c in cells:
        picked = {b: [n for n, r in c["rules"].items() if b in r["picks"] and n != "oracle"] for b in c["blocks"]}
        body = [[b, f"{c['params_percent'][b]:.2f}", f"{c['nc1_profile'].get(b, float('nan')):.3g}",
                 pm(c["accuracy"][b], 100.0), f"{c['nc1_after'][b]:.3g}", f"{c['run_seconds'][b]:.0f}",
                 ", ".join(picked[b]) + (" **best**" if b == c["best"] else "")] for b in c["blocks"]]
        header = ["block", "% params", "pretrained NC1", "test acc (%)", "NC1 after FT (train)", "run (s)",
                  "picked by"]
        title = c["cell"].replace("|", " · ").rstrip(" ·")  # noqa: B005 — drops the separators of empty parts
        parts += [f"\n## {title} (seeds {', '.join(map(str, c['seeds']))})\n",
                  markdown(header, body), ""]
        rows = [[n, " ".join(dict.fromkeys(r["picks"])), "–" if r["regret"] is None else f"{r['regret']:.2f}",
                 "–" if r["params_percent"] is None else f"{r['params_percent']:.2f}", f"{r['seconds']:.1f}",
                 f"{r['cost_percent']:.1f}"] for n, r in c["rules"].items()]
        parts += [markdown(["rule", "pick", "regret (points)", "% params", "cost (s)", "cost (% of a run)"], rows)]
        accs = [float(np.mean(c["accuracy"][b])) for b in c["blocks"]]
        corr = [f"NC1 after FT {spearman([c['nc1_after'][b] for b in c['blocks']], accs):+.2f}"]
        if all(b in c["nc1_profile"] for b in c["blocks"]):
            corr.append(f"pretrained NC1 {spearman([c['nc1_profile'][b] for b in c['blocks']], accs):+.2f}")
        parts += ["\nSpearman correlation with mean test accuracy across blocks (negative = lower NC1, higher "
                  "accuracy): " + ", ".join(corr) + "."]
    summary = summarize_rules(cells)
    if summary:
        auto = f"{DEFAULT_RULE}:{DEFAULT_PROFILE_PICK}"
        body = [[n + (" (`--layer auto`)" if n == auto else ""), f"{v['mean_regret']:.2f}", f"{v['max_regret']:.2f}",
                 f"{v['mean_percent']:.2f}", f"{v['seconds']:.1f}", f"{v['cost_percent']:.1f}", str(v["cells"])]
                for n, v in summary.items()]
        parts += ["\n## Summary over cells\n", markdown(["rule", "mean regret", "max regret", "mean % params",
                                                          "cost (s)", "cost (% of a run)", "cells"], body)]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ plots
def _figure(n: int, columns: int = 4):
    """``n`` panels in rows of at most ``columns``; the unused panels of the last row are hidden."""
    cols, rows = min(n, columns), -(-n // columns)
    fig, axes = subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90, bbox_inches="tight"))  # + figure legends
    return path


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (7, 2)), (0, (3, 1, 1, 1)))


def method_styles(strategies) -> dict[str, dict[str, Any]]:
    """Line style per method of a figure, in table order: its own colour, marker and dash pattern, and the
    earlier ones wider with bigger hollow markers, so lines that coincide (layers a method leaves as they
    were) stay visible under the ones drawn after them."""
    styles = {}
    for i, strategy in enumerate(method_order(strategies)):
        k = i % len(_MARKERS)
        styles[strategy] = {"color": f"C{i % 10}", "marker": _MARKERS[k], "linestyle": _LINESTYLES[k],
                            "lw": max(2.6 - 0.5 * k, 1.0), "ms": max(8.0 - 1.6 * k, 3.0), "mfc": "none", "mew": 1.3,
                            "label": method_name(strategy)}
    return styles


def plot_nc1_layers(panels: dict[tuple[str, str], list[tuple[str, list[dict[str, str]]]]], path: Path) -> Path | None:
    """Layer-wise NC1 (log) after each strategy: ``panels[(backbone, dataset)]`` = [(strategy, rows of its
    ``nc1_layers.csv``)], one panel each, one line per strategy (:func:`method_style`)."""
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    styles = method_styles(strategy for lines in panels.values() for strategy, _ in lines)
    for ax, ((backbone, dataset), lines) in zip(axes, panels.items()):
        names: list[str] = []
        for strategy, rows in sorted(lines, key=lambda line: strategy_rank(line[0])):
            names = [row["layer"] for row in rows]
            ax.plot(range(len(rows)), [float(row["nc1"]) for row in rows], **styles[strategy])
        log_axis(ax, "y")
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("NC1 (train data)")
        ax.set_title(f"{backbone} / {dataset}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title="lines coincide on layers left as pretrained", title_fontsize=7)
    return _save(fig, path)


def plot_data_size(rows: list[dict[str, Any]], path: Path) -> Path | None:
    cells = list(dict.fromkeys((r["backbone"], r["dataset"]) for r in rows))
    if not cells:
        return None
    fig, axes = _figure(len(cells))
    styles = method_styles(r["strategy"] for r in rows)
    for ax, cell in zip(axes, cells):
        here = [r for r in rows if (r["backbone"], r["dataset"]) == cell]
        for strategy in method_order(r["strategy"] for r in here):
            pts = [r for r in here if r["strategy"] == strategy]
            stats = [mean_std(r["test"]) for r in pts]
            style = {**styles[strategy], "mfc": None, "ms": 5}  # filled: error bars cross hollow markers
            ax.errorbar([r["train_per_class"] for r in pts], [100 * m for m, _ in stats],
                        yerr=[100 * s for _, s in stats], capsize=3, **style)
        sizes = sorted({r["train_per_class"] for r in here})
        log_axis(ax, "x")
        ax.set_xticks(sizes, [str(n) for n in sizes])  # the sizes trained, as ticks
        ax.xaxis.set_minor_formatter("")
        ax.set_xlabel("training examples per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(" / ".join(cell))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_selection(cells: list[dict[str, Any]], path: Path) -> Path | None:
    """Per cell: test accuracy (mean ± std over seeds) and NC1 (pretrained; after fine-tuning) vs block depth."""
    if not cells:
        return None
    fig, axes = _figure(len(cells))
    for ax, c in zip(axes, cells):
        x = range(len(c["blocks"]))
        stats = [mean_std(c["accuracy"][b]) for b in c["blocks"]]
        ax.errorbar(x, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                    color="C0", label="test accuracy")
        ax.set_ylabel("test accuracy (%)", color="C0")
        ax.set_xticks(list(x), c["blocks"], rotation=70, ha="right", fontsize=7)
        ax.set_title(" · ".join(p for p in c["cell"].split("|") if p), fontsize=9)
        ax.grid(True, alpha=0.3)
        twin = ax.twinx()
        if all(b in c["nc1_profile"] for b in c["blocks"]):
            twin.plot(x, [c["nc1_profile"][b] for b in c["blocks"]], "s--", color="C1", ms=3, label="NC1 pretrained")
        twin.plot(x, [c["nc1_after"][b] for b in c["blocks"]], "^:", color="C2", ms=3, label="NC1 after FT")
        log_axis(twin, "y")
        twin.set_ylabel("NC1 (train data)")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    # one legend for every panel (same three lines), above them: in a panel it hid points
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncols=len(handles), fontsize=10, frameon=False)
    return _save(fig, path)


def _tuned_part(variant: str, tune: list[str]) -> str:
    """The ``tune`` fields of a variant label (``lr=0.001,r=8`` → ``lr=0.001``)."""
    return ",".join(p for p in variant.split(",") if p.partition("=")[0] in tune)


def paired_report(data: dict[str, Any]) -> str:
    """Markdown of :func:`sclft.bench.scoring.paired_rows`: per cell a row per variant (both methods' accuracy,
    trainable %, s/epoch, the paired difference and its verdict), the rank-range comparison, then the claims."""
    base = method_name(data["baseline"])
    parts = [f"Paired by seed against {base} (same training subset and batch order per seed). Δ = method − {base} "
             "(points), mean ± sd over seeds; t = mean / (sd/√n); verdict at two-sided 5 % (Student t, n − 1 d.f.): "
             "holds / fails / undecided. s/epoch = run seconds / epochs (model build and final evaluation "
             "included). rank range = max − min accuracy over the variants, per seed."]
    tuned = next((c["tuned"] for c in data["cells"] if c.get("tuned")), [])
    if tuned:
        parts.append(f"\nEach method at its own {', '.join(tuned)}, chosen per cell and variant on the mean "
                     "validation accuracy over the seeds (ties: the first in the suite's order); \"chosen\" gives it "
                     "and that mean (every candidate's mean is in summary.json). Test accuracy is read only at the "
                     "chosen values.")
    for c in data["cells"]:
        name = method_name(c["method"])
        body = []
        for v in c["variants"]:
            b, m, d = v["methods"][c["baseline"]], v["methods"][c["method"]], v["accuracy"]
            body.append([v["variant"] or "(defaults)", str(d["n"]), pm(b["accuracy"], 100.0), pm(m["accuracy"], 100.0),
                         f"{100 * d['mean']:+.2f} ± {100 * d['sd']:.2f}", f"{d['t']:.2f}", d["verdict"],
                         f"{b['params_percent']:.2f} / {m['params_percent']:.2f}",
                         f"{b['seconds_per_epoch']:.1f} / {m['seconds_per_epoch']:.1f}"])
            if c.get("tuned"):
                body[-1].insert(1, " / ".join(f"{_tuned_part(x['chosen']['variant'], c['tuned'])} "
                                              f"(val {100 * x['chosen']['val_accuracy']:.1f} %)" for x in (b, m)))
        title = f"{c['backbone']} / {c['dataset']} · {c['train_per_class'] or 'all'}/class: {name} vs {base}"
        head = ["variant", "seeds", f"{base} acc (%)", f"{name} acc (%)", "Δ (points)", "t", "better?",
                "% params (base / method)", "s/epoch (base / method)"]
        if c.get("tuned"):
            head.insert(1, "chosen (base / method)")
        parts += [f"\n### {title}\n", markdown(head, body)]
        if "rank_range" in c:
            rr = c["rank_range"]
            parts.append(f"\nrank range: {base} {pm(rr[c['baseline']], 100.0)}, {name} {pm(rr[c['method']], 100.0)} "
                         f"points; {base} − {name} = {100 * rr['mean']:+.2f} ± {100 * rr['sd']:.2f}, "
                         f"t = {rr['t']:.2f}: less rank-sensitive? **{rr['verdict']}**")
    if data.get("incomplete"):
        parts.append("\n### Cells not compared (runs missing: the choice would be among partial candidates)\n")
        parts.append(markdown(["cell", "runs missing"], [
            [f"{c['backbone']} / {c['dataset']} · {c['train_per_class'] or 'all'}/class",
             f"{c['missing']} of {c['runs']}"] for c in data["incomplete"]]))
    parts.append("\n### Claims over the cells\n")
    parts.append(markdown(["claim", "per cell", "overall"],
                          [[k, ", ".join(v["cells"]), f"**{v['overall']}**"] for k, v in data["claims"].items()]))
    return "\n".join(parts) + "\n"

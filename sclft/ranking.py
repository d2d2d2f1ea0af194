"""Which backbone to start from: score candidate pretrained backbones on the downstream training data.

:func:`rank` builds every candidate first (so a bad name or unreachable weights fail before any probe), then
runs one probe pass per candidate over the same class-balanced subset of the training split and reads the
penultimate feature's NC1 and separation ratio (:mod:`sclft.nc`), LogME and NCTI (:mod:`sclft.transfer_scores`;
NCTI is normalised across the candidates, so it ranks *this* set), the probe's seconds and the parameter count.

A candidate is ``NAME`` or ``NAME@SIZE`` (a registry name, ``timm:<name>`` or ``open_clip:<arch>/<tag>``;
``SIZE`` the input side in pixels). ``image_sizes`` gives every ``NAME`` without ``@`` one candidate per size,
so ``rank(["efficientnet_lite0"], "digits", image_sizes=[32, 64])`` compares two resolutions of one backbone.
``controls=True`` adds a random-weight twin of each candidate (same architecture and size): negative controls
that every score should rank below the pretrained networks.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .data import DatasetSplits, LabelSubset, TransformedDataset, build_transforms, load_dataset, targets_of
from .data.subsets import few_shot_indices
from .errors import UsageError
from .io import atomic_write, atomic_write_json, atomic_write_text
from .plotting import log_axis, subplots
from .probing import PENULTIMATE, probe
from .run_folder import build_backbone
from .transfer_scores import ncti_from_rows

# score -> True if higher is better (the table is sorted by `by`, best first)
SCORES = {"nc1": False, "separation": False, "logme": True, "ncti": True}
DEFAULT_BY = "nc1"
PRETRAINED_COLOR, CONTROL_COLOR = "C0", "C3"  # the bars of rank.png
FIELDS = ("rank", "candidate", "backbone", "image_size", "pretrained", "nc1", "separation", "logme", "ncti",
          "ncti_seli", "ncti_ncc", "ncti_vc", "probe_seconds", "params")


@dataclass(frozen=True)
class Candidate:
    """One backbone at one input size, pretrained or a random-weight control."""

    backbone: str
    image_size: int | None = None  # None: the backbone's default
    pretrained: bool = True

    @property
    def label(self) -> str:
        size = f"@{self.image_size}" if self.image_size else ""
        return f"{self.backbone}{size}" + ("" if self.pretrained else " (random)")


def parse_candidates(specs: Sequence[str], image_sizes: Sequence[int] | None = None, controls: bool = False
                     ) -> list[Candidate]:
    """``NAME`` / ``NAME@SIZE`` strings → candidates (``NAME`` once per ``image_sizes`` entry, or at its default
    size); ``controls`` appends a random-weight twin of each. Malformed sizes and duplicates are errors."""
    if not specs:
        raise UsageError("rank needs at least one backbone (--backbones A B ...)")
    sizes: list[int | None] = list(image_sizes) if image_sizes else [None]
    for s in sizes:
        if s is not None and (not isinstance(s, int) or s < 8):
            raise UsageError(f"--image-size {s!r}: an input side in pixels (>= 8) is needed")
    out: list[Candidate] = []
    for spec in specs:
        name, at, size = str(spec).rpartition("@") if "@" in str(spec) else (str(spec), "", "")
        if at:
            if not size.isdigit() or int(size) < 8 or not name:
                raise UsageError(f"--backbones {spec!r}: expected NAME or NAME@SIZE with SIZE an input side in "
                                 "pixels (>= 8), e.g. efficientnet_lite0@64")
            out.append(Candidate(name, int(size)))
        else:
            out.extend(Candidate(name, s) for s in sizes)
    seen: set[Candidate] = set()
    for c in out:
        if c in seen:
            raise UsageError(f"--backbones: {c.label} is given twice")
        seen.add(c)
    return out + ([Candidate(c.backbone, c.image_size, pretrained=False) for c in out] if controls else [])


@dataclass
class RankResult:
    """One row per candidate (:data:`FIELDS`), best first by ``by``."""

    rows: list[dict] = field(default_factory=list)
    data: str = ""
    by: str = DEFAULT_BY
    num_samples: int = 0
    num_classes: int = 0

    def table(self) -> str:
        head = (f"{'rank':>4}  {'candidate':<34}{'NC1':>10}{'sep. D':>10}{'LogME':>10}{'NCTI':>8}{'probe s':>9}"
                f"{'params':>12}")
        lines = [head] + [f"{r['rank']:>4}  {r['candidate']:<34}{r['nc1']:>10.4g}{r['separation']:>10.4g}"
                          f"{r['logme']:>10.4g}{_fmt(r['ncti'], '8.3f')}{r['probe_seconds']:>9.1f}{r['params']:>12,}"
                          for r in self.rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_csv(self, path: str | Path) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in self.rows)
        return atomic_write_text(path, buf.getvalue())

    def to_json(self, path: str | Path) -> Path:
        rows = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
                for r in self.rows]  # JSON has no NaN (NCTI of a single candidate)
        return atomic_write_json(path, {"data": self.data, "by": self.by, "num_samples": self.num_samples,
                                        "num_classes": self.num_classes, "rows": rows})

    def plot(self, path: str | Path) -> Path:
        """Write :meth:`figure` as a PNG."""
        fig = self.figure()
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100, bbox_inches="tight"))
        return Path(path)

    def figure(self):
        """One panel per score (and the probe seconds): a bar per candidate, in table order (best at the top);
        random-weight controls in their own colour, named by a legend below the panels."""
        panels = [("nc1", "NC1 (log; lower first)"), ("separation", "separation D (lower first)"),
                  ("logme", "LogME (higher first)"), ("ncti", "NCTI (higher first)"), ("probe_seconds", "probe s")]
        fig, axes = subplots(1, len(panels), figsize=(3.2 * len(panels), 0.9 + 0.32 * len(self.rows)),
                             sharey=True, squeeze=False)
        labels = [r["candidate"] for r in self.rows][::-1]
        colors = [PRETRAINED_COLOR if r["pretrained"] else CONTROL_COLOR for r in self.rows][::-1]
        for ax, (key, title) in zip(axes[0], panels):
            values = [r[key] if isinstance(r[key], (int, float)) and math.isfinite(r[key]) else 0.0
                      for r in self.rows][::-1]
            ax.barh(range(len(labels)), values, color=colors)
            if key == "nc1" and all(v > 0 for v in values):
                log_axis(ax, "x")
                ax.set_xlim(min(values) / 1.5, max(values) * 1.5)  # bars start at 0: no automatic log limits
            ax.set_title(title, fontsize=9)
            ax.grid(True, axis="x", which="both", alpha=0.3)
        axes[0][0].set_yticks(range(len(labels)), labels, fontsize=7)
        fig.suptitle(f"{self.data}: {len(self.rows)} candidates, N={self.num_samples}, sorted by {self.by}",
                     fontsize=10)
        fig.tight_layout()
        if CONTROL_COLOR in colors:  # colour says pretrained or control: name both, below the panels
            from matplotlib.patches import Patch  # matplotlib loads only when a figure is drawn

            fig.legend(handles=[Patch(color=PRETRAINED_COLOR, label="pretrained weights"),
                                Patch(color=CONTROL_COLOR, label="random weights (control)")],
                       loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=2, fontsize=8, frameon=False)
        return fig


def _fmt(value, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{value:>{spec}}" if isinstance(value, float) and math.isfinite(value) else f"{'–':>{width}}"


def _sort_key(by: str):
    sign = -1.0 if SCORES[by] else 1.0
    return lambda r: (not math.isfinite(r[by]), sign * r[by] if math.isfinite(r[by]) else 0.0)


def build_candidates(candidates: Sequence[Candidate], checkpoint: str | None = None, seed: int = 0) -> list:
    """Every candidate's :class:`sclft.Backbone` (weights loaded): a bad name raises ``ValueError``, weights that
    cannot be reached :class:`sclft.WeightsUnavailableError`, before any probe. A random-weight control is the
    network ``sclft train --no-pretrained --seed SEED`` starts from."""
    if checkpoint and len({c.backbone for c in candidates if c.pretrained}) > 1:
        raise UsageError(f"--checkpoint {checkpoint}: one weights file cannot serve several backbones "
                         f"({', '.join(sorted({c.backbone for c in candidates}))})")
    return [build_backbone(c.backbone, c.pretrained, checkpoint if c.pretrained else None, seed, c.image_size)
            for c in candidates]


def rank(backbones: Sequence[str | Candidate], data, *, image_sizes: Sequence[int] | None = None,
         train_per_class: int = 100, seed: int = 0, by: str = DEFAULT_BY, controls: bool = False,
         data_dir: str | None = None, batch_size: int = 64, device: str | None = None, progress: bool = False,
         checkpoint: str | None = None) -> RankResult:
    """Score candidate backbones on ``data`` (a dataset name or loaded :class:`sclft.data.DatasetSplits`): one
    probe pass each over ``train_per_class`` training images per class (balanced, seeded; the same images for
    every candidate, each with its own eval transform at its size). Returns the rows best first by ``by``
    (``nc1`` | ``separation`` | ``logme`` | ``ncti``). See the module doc for ``backbones`` and ``controls``."""
    if by not in SCORES:
        raise UsageError(f"unknown score {by!r} to rank by; valid: {', '.join(SCORES)}")
    if train_per_class < 2:  # before any backbone is built
        raise UsageError(f"train_per_class must be at least 2 (NC1 needs a within-class spread), got {train_per_class}")
    cands = [b if isinstance(b, Candidate) else None for b in backbones]
    if all(c is not None for c in cands):
        cands = list(cands) + ([Candidate(c.backbone, c.image_size, False) for c in cands] if controls else [])
    else:
        cands = parse_candidates([str(b) for b in backbones], image_sizes, controls)
    models = build_candidates(cands, checkpoint, seed)
    if isinstance(data, DatasetSplits):
        keep = few_shot_indices(targets_of(data.train), train_per_class, seed, data.class_names)
        splits = dataclasses.replace(data, train=LabelSubset(data.train, keep))
    else:
        splits = load_dataset(data, data_dir, train_per_class=train_per_class, seed=seed)
    rows = []
    for cand, backbone in zip(cands, models):
        _, eval_tf = build_transforms(backbone.data_config, cand.image_size)
        tic = time.perf_counter()
        res = probe(backbone, TransformedDataset(splits.train, eval_tf), [], num_classes=splits.num_classes,
                    batch_size=batch_size, device=device, progress=progress, scores=True)
        seconds = time.perf_counter() - tic
        backbone.cpu()  # probe() moved it to the device: one candidate there at a time
        pen = res[PENULTIMATE]
        rows.append({"candidate": cand.label, "backbone": cand.backbone,
                     "image_size": int(backbone.data_config["input_size"][-1]), "pretrained": cand.pretrained,
                     **{k: float(pen[k]) for k in ("nc1", "separation", "logme", "ncti_seli", "ncti_ncc", "ncti_vc")},
                     "probe_seconds": seconds, "params": sum(p.numel() for p in backbone.parameters())})
        num_samples = res.num_samples
    combined = ncti_from_rows({r["candidate"]: r for r in rows})
    for r in rows:
        r["ncti"] = combined[r["candidate"]]
    rows.sort(key=_sort_key(by))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return RankResult(rows=[{k: r[k] for k in FIELDS} for r in rows], data=splits.name, by=by,
                      num_samples=num_samples, num_classes=splits.num_classes)


def transfer_correlation(scores: Mapping[str, float], accuracy: Mapping[str, float], higher_is_better: bool = True
                         ) -> dict[str, float | str]:
    """How well ``scores`` (candidate → score) order ``accuracy`` (candidate → transfer accuracy, same keys):
    Kendall's τ-b (``scipy.stats.kendalltau``), the weighted τ NCTI reports (``scipy.stats.weightedtau`` of
    accuracy and score, hyperbolic weights emphasising the top), the top-scored candidate and its regret (best
    accuracy − its accuracy, in the units of ``accuracy``; ties in score: the first listed)."""
    from scipy.stats import kendalltau, weightedtau  # scipy loads only to score a ranking (slow import)

    names = list(accuracy)
    if set(scores) != set(names) or len(names) < 2:
        raise UsageError(f"scores and accuracies must cover the same two or more candidates; got {sorted(scores)} "
                         f"and {sorted(names)}")
    sign = 1.0 if higher_is_better else -1.0
    s = [sign * scores[n] for n in names]
    a = [accuracy[n] for n in names]
    top = max(names, key=lambda n: sign * scores[n])
    return {"kendall_tau": float(kendalltau(s, a).statistic), "weighted_tau": float(weightedtau(a, s).statistic),
            "top": top, "regret": max(a) - accuracy[top]}


def misordered_controls(scores: Mapping[str, float], pretrained: Sequence[str], controls: Sequence[str],
                        higher_is_better: bool = True) -> int:
    """Pairs (pretrained p, control c) that ``scores`` orders wrongly (c scored at least as well as p)."""
    sign = 1.0 if higher_is_better else -1.0
    return sum(sign * scores[c] >= sign * scores[p] for p in pretrained for c in controls)

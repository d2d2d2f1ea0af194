"""Layer-wise NC probe: one inference pass gathers every block's pooled features; NC1 per layer.

How the work is planned (all frozen work under ``torch.no_grad``; the model is moved to the device
outside any grad mode: a move or lazily created buffer under ``inference_mode`` would leave inference
tensors in the model, which a later ``requires_grad_(True)`` refuses):

* **one pass, in memory** (the default whenever the pooled features of all layers fit the memory
  budget): one forward pass per batch through :meth:`Backbone.forward_all` keeps every requested
  block's pooled output; NC1 then runs on those arrays (docs/design.md §1, low-rank formula).
* **streaming** (pooled features too large to hold, e.g. ``pooling="flatten"`` on early conv maps,
  where D reaches 10⁵–10⁶): the features are never stored. Each group of layers whose O(K·D)
  accumulators fit the budget costs two passes over the data (class sums, then projections onto
  the ≤K directions of the class means, :class:`sclft.nc.NCAccumulator`); no N×D or D×D array exists.
* ``one_pass=False`` recomputes the prefix for every layer (``forward_prefix`` → ``forward_block``):
  the naive way, kept for comparison and testing; it gives the same numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import nc
from .backbones import Backbone, create_backbone
from .cache import available_memory
from .data import TransformedDataset, build_transforms, load_dataset
from .devices import resolve_device
from .io import atomic_write, atomic_write_text
from .model import TransferModel
from .plotting import log_axis, subplots
from .progress import progress_bar
from .transfer_scores import LAYER_SCORES, layer_scores

CSV_FIELDS = ("layer", "nc1", "separation", "dim")


@dataclass
class ProbeResult:
    """Per-layer NC1 / separation, in network order (last row: the penultimate / head-input feature)."""

    rows: list[dict] = field(default_factory=list)
    backbone: str = ""
    num_samples: int = 0
    num_classes: int = 0
    passes: int = 1  # forward passes over the data that the probe made

    def __getitem__(self, layer: str) -> dict:
        for r in self.rows:
            if r["layer"] == layer:
                return r
        raise KeyError(layer)

    @property
    def layers(self) -> list[str]:
        return [r["layer"] for r in self.rows]

    def nc1(self) -> dict[str, float]:
        return {r["layer"]: r["nc1"] for r in self.rows}

    @property
    def fields(self) -> tuple[str, ...]:
        """:data:`CSV_FIELDS`, plus ``nc1_se`` when the probe estimated it (``jackknife=G``) and the
        transferability scores when it computed them (``scores=True``)."""
        extra = ("nc1_se", *LAYER_SCORES)
        return CSV_FIELDS + tuple(k for k in extra if self.rows and k in self.rows[0])

    def to_csv(self, path: str | Path) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in self.fields} for r in self.rows)
        return atomic_write_text(path, buf.getvalue())

    def table(self) -> str:
        se = "nc1_se" in self.fields
        lines = [f"{'layer':<28}{'NC1':>14}" + (f"{'± SE':>12}" if se else "") + f"{'separation':>14}{'dim':>8}"]
        lines += [f"{r['layer']:<28}{r['nc1']:>14.4g}" + (f"{r['nc1_se']:>12.3g}" if se else "")
                  + f"{r['separation']:>14.4g}{r['dim']:>8d}" for r in self.rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        fig, ax = subplots(figsize=(max(6, 0.35 * len(self.rows)), 4))
        ax.plot(range(len(self.rows)), [r["nc1"] for r in self.rows], marker="o")
        log_axis(ax, "y")
        ax.set_xticks(range(len(self.rows)), self.layers, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("NC1 = tr(Σ_W Σ_B⁺)")
        ax.set_title(title or f"Layer-wise NC1 — {self.backbone} (N={self.num_samples}, K={self.num_classes})")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        atomic_write(path, lambda p: fig.savefig(p, format=Path(path).suffix.lstrip(".") or "png", dpi=120))
        return Path(path)


PENULTIMATE = "penultimate"
DEFAULT_K_ESTIMATE = 100  # classes assumed when planning streaming groups without num_classes


def _as_loader(data, backbone: Backbone, batch_size: int, num_workers: int) -> Iterable:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, str):
        splits = load_dataset(data)
        _, eval_tf = build_transforms(backbone.data_config)
        data = TransformedDataset(splits.train, eval_tf)
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if isinstance(data, Sequence) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    raise TypeError("data must be a DataLoader, a Dataset of (image, label), an (images, labels) pair or a dataset "
                    "name")


def _num_samples(loader: Iterable) -> int:
    if isinstance(loader, DataLoader):
        return len(loader.dataset)
    return sum(len(y) for _, y in loader)


def _first_image(loader: Iterable) -> torch.Tensor:
    """One input image (1, ...) without running a whole batch through the data pipeline."""
    if isinstance(loader, DataLoader):
        try:
            return torch.as_tensor(loader.dataset[0][0])[None]
        except (TypeError, NotImplementedError, IndexError):  # iterable-style dataset
            pass
    return next(iter(loader))[0][:1]


@dataclass
class _Extractor:
    """Pooled features of named layers (and ``"penultimate"``, the head input of a tuned model)."""

    model: TransferModel | Backbone
    pooling: str | None
    one_pass: bool

    @property
    def backbone(self) -> Backbone:
        return self.model.backbone if isinstance(self.model, TransferModel) else self.model

    @property
    def head_input(self) -> bool:
        """A tuned SCL-FT model's head input differs from the backbone's penultimate feature."""
        return isinstance(self.model, TransferModel) and self.model.strategy.reshapes_head_input

    def __call__(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        return (self._all if self.one_pass else self._each)(x, names)

    def _all(self, x, names):
        layers = [n for n in names if n != PENULTIMATE]
        pen = PENULTIMATE in names
        out = self.backbone.forward_all(x, self.pooling, only=layers, penultimate=pen and not self.head_input)
        if pen and self.head_input:
            out[PENULTIMATE] = self.model.forward_features(x)
        return out

    def _each(self, x, names):
        b = self.backbone
        return {n: self.model.forward_features(x) if n == PENULTIMATE
                else b.pool(b.forward_block(b.forward_prefix(x, n), n), self.pooling) for n in names}


def _batches(loader: Iterable, extract: _Extractor, names: Sequence[str], device, progress: bool, desc: str
             ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    for x, y in progress_bar(loader, desc=desc, progress=progress):
        out = extract(x.to(device, non_blocking=True), names)
        yield {n: out[n].float().cpu() for n in names}, torch.as_tensor(y).cpu()


def _plan(dims: dict[str, int], n: int, k: int, batch_size: int, budget: int, one_pass: bool, jackknife: int = 0
          ) -> list[tuple[list[str], bool]]:
    """Groups of layers, each with ``in_memory``: a group costs one pass in memory, two streamed
    (``jackknife=G`` streamed: G more sets of means and directions per layer)."""
    names = list(dims)
    if not one_pass:
        return [([name], 4 * n * dims[name] <= budget) for name in names]
    if 4 * n * sum(dims.values()) <= budget:
        return [(names, True)]
    groups: list[tuple[list[str], bool]] = []
    used = budget + 1
    for name in names:
        cost = (16 * k * (1 + jackknife) + 4 * batch_size) * dims[name]  # float64 means and U (K×D each), a batch
        if used + cost > budget:
            groups.append(([], False))
            used = 0
        groups[-1][0].append(name)
        used += cost
    return groups


def _layer_stats(batches: Callable[[], Iterable], names: Sequence[str], k: int | None, in_memory: bool,
                 jackknife: int = 0, scores: dict[str, dict[str, float]] | None = None
                 ) -> tuple[dict[str, nc.NCAccumulator], torch.Tensor, int]:
    """NC accumulators for ``names``: one data pass in memory, else two streamed passes. ``scores`` (a dict):
    filled with each layer's :func:`sclft.transfer_scores.layer_scores` (in memory only; streamed layers get NaN)."""
    if in_memory:
        feats: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        labels = []
        for out, y in batches():
            for name in names:
                feats[name].append(out[name])
            labels.append(y)
        y = torch.cat(labels)
        stats = {}
        for name in names:
            h = torch.cat(feats.pop(name))  # one N×D copy per layer, shared by the scores and NC
            if scores is not None:
                scores[name] = layer_scores(h.numpy(), y.numpy())
            stats[name] = nc.accumulate(h, y, k, jackknife=jackknife)
        return stats, y, 1
    if scores is not None:
        scores.update({name: dict.fromkeys(LAYER_SCORES, float("nan")) for name in names})
    accs = {name: nc.NCAccumulator(k, jackknife=jackknife) for name in names}
    labels = []
    for _ in range(2):
        for out, y in batches():
            for name in names:
                accs[name].update(out[name], y)
            labels.append(y)
        for acc in accs.values():
            acc.end_pass()
    return accs, torch.cat(labels[: len(labels) // 2]), 2


def _standard_error(acc: nc.NCAccumulator, normalize: bool) -> float:
    """The jackknife SE of NC1; NaN when a class has a single sample (no group can be left out)."""
    try:
        return acc.nc1_se(normalize)
    except ValueError:
        return float("nan")


def probe(
    model_or_backbone: str | nn.Module,
    data,
    layers: str | Sequence[str] = "all",
    *,
    pooling: str | None = None,
    num_classes: int | None = None,
    normalize: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    pretrained: bool = True,
    progress: bool = True,
    one_pass: bool = True,
    memory_budget: int | None = None,
    jackknife: int = 0,
    scores: bool = False,
) -> ProbeResult:
    """NC1 and separation of every block's pooled features (and the penultimate feature) on ``data``.

    ``model_or_backbone``: a backbone name, a :class:`TransferModel` (probes it as tuned) or a module
    :func:`sclft.wrap` accepts. ``data``: DataLoader / Dataset of (image tensor, label) / name.
    ``one_pass=False`` recomputes the prefix for each layer (for comparison; same results).
    ``memory_budget`` (bytes; default a quarter of the free memory) decides between holding the
    pooled features (one pass) and streaming them (two passes per group of layers); see the module doc.
    ``jackknife=G`` (≥ 2) adds each layer's ``nc1_se``: the delete-one-group jackknife standard error of NC1
    from the same samples (:class:`sclft.nc.NCAccumulator`; a DataLoader must give the same order twice).
    ``scores=True`` adds each layer's transferability scores from the same pass (``logme``, NCTI's terms
    ``ncti_seli`` / ``ncti_ncc`` / ``ncti_vc``; :mod:`sclft.transfer_scores`); they need the features in memory
    (NaN for a layer the probe had to stream).
    """
    model = model_or_backbone
    if not isinstance(model, (TransferModel, Backbone)):
        model = create_backbone(model, pretrained=pretrained)
    backbone = model.backbone if isinstance(model, TransferModel) else model
    names = [*(backbone.blocks if layers == "all" else [backbone.check_block(n) for n in layers]), PENULTIMATE]
    device = resolve_device(device)
    loader = _as_loader(data, backbone, batch_size, num_workers)
    extract = _Extractor(model, pooling, one_pass)
    budget = memory_budget if memory_budget is not None else available_memory() // 4
    model.eval().to(device)
    with torch.no_grad():
        dims = {n: int(h[0].numel()) for n, h in extract(_first_image(loader).to(device), names).items()}
        plan = _plan(dims, _num_samples(loader), num_classes or DEFAULT_K_ESTIMATE, batch_size, budget, one_pass,
                     jackknife)
        stats: dict[str, nc.NCAccumulator] = {}
        extra: dict[str, dict[str, float]] | None = {} if scores else None
        passes = 0
        for group, in_memory in plan:
            def batches(group=group):
                return _batches(loader, extract, group, device, progress, f"probe {group[0]}..{group[-1]}")

            accs, y, used = _layer_stats(batches, group, num_classes, in_memory, jackknife, extra)
            stats.update(accs)
            passes += used
    k = next(iter(stats.values())).k
    rows = [{"layer": n, "nc1": stats[n].nc1(normalize), "separation": stats[n].separation(), "dim": dims[n],
             **({"nc1_se": _standard_error(stats[n], normalize)} if jackknife else {}), **(extra or {}).get(n, {})}
            for n in names]
    return ProbeResult(rows=rows, backbone=backbone.name, num_samples=int(len(y)), num_classes=k, passes=passes)

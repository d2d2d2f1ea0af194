"""Layer-wise NC probe: one inference pass gathers every block's pooled features; NC1 per layer."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import nc
from .backbones import Backbone, create_backbone
from .io import atomic_write, atomic_write_text
from .model import TransferModel

CSV_FIELDS = ("layer", "nc1", "separation", "dim")


@dataclass
class ProbeResult:
    """Per-layer NC1 / separation, in network order (last row: the penultimate / head-input feature)."""

    rows: list[dict] = field(default_factory=list)
    backbone: str = ""
    num_samples: int = 0
    num_classes: int = 0

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

    def to_csv(self, path: str | Path) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in CSV_FIELDS} for r in self.rows)
        return atomic_write_text(path, buf.getvalue())

    def table(self) -> str:
        lines = [f"{'layer':<28}{'NC1':>14}{'separation':>14}{'dim':>8}"]
        lines += [f"{r['layer']:<28}{r['nc1']:>14.4g}{r['separation']:>14.4g}{r['dim']:>8d}" for r in self.rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(self.rows)), 4))
        ax.plot(range(len(self.rows)), [r["nc1"] for r in self.rows], marker="o")
        ax.set_yscale("log")
        ax.set_xticks(range(len(self.rows)), self.layers, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("NC1 = tr(Σ_W Σ_B⁺)")
        ax.set_title(title or f"Layer-wise NC1 — {self.backbone} (N={self.num_samples}, K={self.num_classes})")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        atomic_write(path, lambda p: fig.savefig(p, format=Path(path).suffix.lstrip(".") or "png", dpi=120))
        plt.close(fig)
        return Path(path)


def _as_loader(data, backbone: Backbone, batch_size: int, num_workers: int) -> Iterable:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, str):
        from .data import TransformedDataset, build_transforms, load_dataset

        splits = load_dataset(data)
        _, eval_tf = build_transforms(backbone.data_config)
        data = TransformedDataset(splits.train, eval_tf)
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if isinstance(data, Sequence) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    raise TypeError("data must be a DataLoader, a Dataset of (image, label), an (images, labels) pair or a dataset name")


@torch.inference_mode()
def collect_features(
    model: TransferModel | Backbone,
    loader: Iterable,
    layers: Sequence[str],
    pooling: str | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One pass over ``loader``: pooled features of ``layers`` (+ "penultimate"), float32 on CPU."""
    backbone = model.backbone if isinstance(model, TransferModel) else model
    head_input = isinstance(model, TransferModel) and model.strategy.name == "scl_ft"
    model.eval().to(device)
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in [*layers, "penultimate"]}
    labels = []
    for x, y in tqdm(loader, desc="probe", disable=not progress, leave=False):
        x = x.to(device, non_blocking=True)
        out = backbone.forward_all(x, pooling, only=layers)
        if head_input:
            out["penultimate"] = model.forward_features(x)
        for n in feats:
            feats[n].append(out[n].float().cpu())
        labels.append(torch.as_tensor(y).cpu())
    return {n: torch.cat(v) for n, v in feats.items()}, torch.cat(labels)


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
) -> ProbeResult:
    """NC1 and separation of every block's pooled features (and the penultimate feature) on ``data``.

    ``model_or_backbone``: a backbone name, a :class:`TransferModel` (probes it as tuned) or a module
    :func:`sclft.wrap` accepts. ``data``: DataLoader / Dataset of (image tensor, label) / name.
    """
    model = model_or_backbone
    if not isinstance(model, (TransferModel, Backbone)):
        model = create_backbone(model, pretrained=pretrained)
    backbone = model.backbone if isinstance(model, TransferModel) else model
    names = backbone.blocks if layers == "all" else [backbone.check_block(n) for n in layers]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loader = _as_loader(data, backbone, batch_size, num_workers)
    feats, y = collect_features(model, loader, names, pooling, device, progress)
    k = num_classes or int(y.max()) + 1
    rows = []
    for name, h in feats.items():
        rows.append({
            "layer": name,
            "nc1": nc.nc1(h, y, k, normalize=normalize),
            "separation": nc.separation(h, y, k),
            "dim": int(h.shape[1]),
        })
    return ProbeResult(rows=rows, backbone=backbone.name, num_samples=int(len(y)), num_classes=k)

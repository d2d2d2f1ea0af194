"""Evaluating a trained run directory on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from . import nc
from .data import TransformedDataset, build_transforms, load_dataset
from .devices import resolve_device
from .io import read_json_object
from .progress import progress_bar
from .save import RunFolderError, check_fields, load


@torch.inference_mode()
def evaluate_run(
    run_dir: str | Path,
    data: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    progress: bool = True,
    backbone_weights: str | None = None,
) -> dict[str, Any]:
    """Accuracy and head-input NC1 of the model in ``run_dir`` (data / image size default to the run's;
    ``backbone_weights``: the weights file a run trained with ``--checkpoint`` used, :func:`sclft.save.load`'s
    ``checkpoint``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a run folder" if run_dir.exists() else "no such run folder"
        raise ValueError(f"--checkpoint {run_dir}: {what} (expected a `sclft train --out` folder)")
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"--checkpoint {run_dir}: not a trained sclft model (no config.json; expected a "
                         "`sclft train --out` folder of a finished run)")
    run_file = run_dir / "train_config.json"
    run = read_json_object(run_file, RunFolderError) if run_file.is_file() else {}
    check_fields(run_file, run, {k: v for k, v in {
        "data": (str, None, "a dataset name"), "data_dir": ((str, type(None)), None, "a folder or null"),
        "image_size": ((int, type(None)), lambda v: v > 0, "a positive integer or null")}.items() if k in run})
    data = data or run.get("data")
    if not data:
        raise ValueError("pass --data: the run directory does not record its dataset")
    model = load(run_dir, checkpoint=backbone_weights)
    splits = load_dataset(data, data_dir or run.get("data_dir"))
    if splits.num_classes != model.num_classes:
        raise ValueError(f"{data} has {splits.num_classes} classes but the model was trained for {model.num_classes}")
    dataset = getattr(splits, split)
    if dataset is None:
        raise ValueError(f"{splits.name} has no {split!r} split")
    _, eval_tf = build_transforms(model.backbone.data_config, image_size or run.get("image_size"))
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(TransformedDataset(dataset, eval_tf), batch_size=batch_size, num_workers=num_workers)
    feats, labels, correct = [], [], 0
    for x, y in progress_bar(loader, desc=f"eval {split}", progress=progress):
        f = model.forward_features(x.to(device))
        correct += int((model.head(f).argmax(1).cpu() == y).sum())
        feats.append(f.float().cpu())
        labels.append(y)
    y = torch.cat(labels)
    return {
        "run": str(run_dir),
        "dataset": data,
        "split": split,
        "num_samples": int(len(y)),
        "accuracy": correct / len(y),
        "nc1": nc.nc1(torch.cat(feats), y, model.num_classes),
    }


"""Measured training throughput for ``--dry-run`` (``sclft bench --calibrate``).

One record per (device, backbone, strategy cost class, image size, precision): the images/s of a few timed
training steps of that class's trained part, and of a full inference pass (evaluation, the caching pass).
The cost classes are the strategies' ``frozen_scope()``: ``none`` (the whole network trains: full_ft, bitfit,
lora), ``prefix`` (a tail trains on cached frozen-prefix activations: layer_ft, scl_ft; measured from the block
at the class's ``cost`` share from the end) and ``features`` (only the head trains, on cached features). Random
weights (speed does not depend on them), random images. Stored in ``calibration.json`` in the cache folder
(``--cache-dir``, else ``~/.cache/sclft/features``), one file for every device that calibrated there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..backbones import create_backbone
from ..cache import DEFAULT_CACHE_DIR
from ..devices import resolve_device
from ..errors import UsageError
from ..io import atomic_write_json, read_json
from ..model import TransferModel
from ..predict import autocast as predict_autocast
from ..strategies import collect_strategy_options, strategy_config
from .plan import Run, blocks_of, expand_suite, meta_backbone
from .suite import Suite

CALIBRATION_FILE = "calibration.json"
STEPS, WARMUP = 5, 2


def calibration_path(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / CALIBRATION_FILE


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def cost_class(run: Run) -> tuple[str, Any]:
    """(the run's cost class, its strategy config)."""
    options = collect_strategy_options(run.config).get("strategy_options") or {}
    strategy = strategy_config(run.strategy, **options)
    return strategy.frozen_scope(), strategy


def image_size(run: Run) -> int:
    return int(run.config.get("image_size") or meta_backbone(run.config["backbone"]).data_config["input_size"][-1])


def key(backbone: str, klass: str, size: int, precision: str, device: str) -> str:
    return f"{device}|{backbone}|{klass}|{size}|{precision}"


def run_key(run: Run, device: str) -> str:
    return key(run.config["backbone"], cost_class(run)[0], image_size(run), run.config.get("precision", "no"), device)


def load_calibration(cache_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The stored records by :func:`key` (empty when there is no file)."""
    path = calibration_path(cache_dir)
    if not path.is_file():
        return {}
    try:
        records = read_json(path)["records"]
        return {key(r["backbone"], r["cost_class"], r["image_size"], r["precision"], r["device"]): r for r in records}
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a calibration file written by sclft bench --calibrate ({exc}); delete it and "
                         "calibrate again") from None


def _tail_block(backbone: str, klass: str, strategy) -> tuple[str | None, float]:
    """The start block measured for a class and the share of blocks it trains (1.0: the whole network)."""
    if klass != "prefix":
        return None, 1.0 if klass == "none" else 0.0
    blocks = blocks_of(backbone)
    index = min(len(blocks) - 1, round(len(blocks) * (1.0 - strategy.cost)))
    return blocks[index], (len(blocks) - index) / len(blocks)


def measure(run: Run, num_classes: int, device: str | None = None, steps: int = STEPS,
            warmup: int = WARMUP) -> dict[str, Any]:
    """Time ``steps`` training steps of the run's cost class and of a full inference pass (after ``warmup``)."""
    klass, strategy = cost_class(run)
    name, size, precision = run.config["backbone"], image_size(run), run.config.get("precision", "no")
    dev = resolve_device(device)

    def autocast():
        return predict_autocast(dev, precision)

    def timed(step: Callable[[], None], batch: int) -> float:
        for _ in range(warmup):
            step()
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        sync()
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return batch * steps / (time.perf_counter() - tic)

    torch.manual_seed(0)
    layer, tail = _tail_block(name, klass, strategy)
    model = TransferModel(create_backbone(name, pretrained=False, image_size=size), strategy, num_classes=num_classes,
                          layer=layer).to(dev)
    batch = int(run.config.get("batch_size", 64))
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, num_classes, (batch,), device=dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cached = model.strategy.has_frozen_prefix
    with torch.no_grad(), autocast():
        inp = model.frozen_forward(x) if cached else x

    def train_step():
        with autocast():
            loss = F.cross_entropy(model(inp, from_frozen=cached).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def forward_pass():
        with torch.inference_mode(), autocast():
            model(x)

    train_rate = timed(train_step, batch)
    model.eval()
    forward_rate = timed(forward_pass, batch)
    return {"device": device_name() if dev.type == "cuda" else "cpu", "backbone": name, "cost_class": klass,
            "image_size": size, "precision": precision, "strategy": run.strategy, "start_block": layer, "tail": tail,
            "batch_size": batch, "steps": steps, "train_images_per_second": train_rate,
            "forward_images_per_second": forward_rate, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "torch": torch.__version__}


def calibrate(suite: Suite, cache_dir: str | Path | None = None, say: Callable[[str], None] = print,
              steps: int = STEPS) -> Path:
    """Measure every (backbone, cost class, image size, precision) the suite's runs use on this machine's
    device; merge the records into ``calibration.json`` (a new measurement replaces the old one)."""
    device = device_name()
    todo: dict[str, Run] = {}
    for run in expand_suite(suite):
        todo.setdefault(run_key(run, device), run)
    classes = {d.label: d.num_classes or 10 for d in suite.datasets}
    path = calibration_path(cache_dir)
    records = load_calibration(cache_dir)
    for k, run in todo.items():
        record = measure(run, max(2, classes.get(run.dataset, 10)), steps=steps)
        records[k] = record
        say(f"{run.config['backbone']:<22} {record['cost_class']:<9} {record['image_size']:>4} px "
            f"{record['precision']:<5} train {record['train_images_per_second']:10,.1f} img/s  "
            f"inference {record['forward_images_per_second']:10,.1f} img/s  ({device}, {record['strategy']})")
    atomic_write_json(path, {"records": list(records.values())})
    say(f"{len(todo)} measurements on {device} → {path}")
    return path

"""Accelerate training loop: AMP, gradient accumulation, per-epoch eval, atomic checkpoints, resume.

>>> from sclft.train import TrainConfig, train
>>> metrics = train(TrainConfig(backbone="efficientnet_lite0", data="digits", epochs=3, out="runs/demo"))

``accelerate launch -m sclft.cli train ...`` runs the same code on several GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from . import nc
from .backbones import create_backbone
from .cache import build_cache, frozen_cache_key
from .data import DatasetSplits, TransformedDataset, build_transforms, load_dataset
from .io import atomic_path, atomic_write_json
from .model import TransferModel
from .strategies import collect_strategy_options, get_strategy_config, strategy_config

log = logging.getLogger("sclft.train")

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.json"
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("no", "bf16", "fp16")
CACHE_MODES = ("auto", "memory", "disk", "off")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything a run needs; the CLI flags and ``configs/*.yaml`` map onto these fields."""

    backbone: str = "efficientnet_lite0"
    data: str = "digits"
    strategy: str = "scl_ft"
    layer: str = "auto"  # a block name, or "auto" (chosen by NC1, see sclft.selection)
    layer_rule: str = "auto"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    grad_accum: int = 1
    precision: str = "no"
    image_size: int | None = None
    augment: bool = False
    train_per_class: int | None = None
    val_fraction: float = 0.0
    seed: int = 0
    data_dir: str | None = None
    pretrained: bool = True
    checkpoint: str | None = None
    strategy_options: dict = field(default_factory=dict)  # the chosen strategy's options, e.g. {"fuse": "concat"}
    cache: str = "auto"
    cache_dir: str | None = None
    num_workers: int = 0
    eval_every: int = 1  # evaluate on val/test every N epochs (0: only at the end)
    channels_last: bool = False
    compile: bool = False
    tensorboard: bool = False
    out: str = "runs/sclft"
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.cache in CACHE_MODES, f"cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.train_per_class is None or self.train_per_class >= 1, "train_per_class must be >= 1"),
            (self.image_size is None or self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        strategy_config(self.strategy, **self.strategy_options)  # names an option of another strategy as such
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        values = collect_strategy_options(values)  # top-level `fuse: concat` → strategy_options
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        return cls(**values)


# ------------------------------------------------------------------------------------------ pieces
def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only: norms, biases and other 1-d parameters are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        return None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _rng_state(sampler_gen: torch.Generator) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state(), "rng.sampler": sampler_gen.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict, sampler_gen: torch.Generator) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    sampler_gen.set_state(tensors["rng.sampler"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def trainable_state(model: TransferModel) -> dict[str, torch.Tensor]:
    """Trainable parameters, the head, and the buffers of trained modules (e.g. the tuned block's BN stats)."""
    trained_modules = model.strategy.trainable_backbone_modules(model.backbone)
    trained_ids = {id(t) for m in trained_modules for t in [*m.parameters(), *m.buffers()]}
    state = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if name.startswith("head.") or (isinstance(t, torch.nn.Parameter) and t.requires_grad) or id(t) in trained_ids:
            state[name] = t.detach().cpu().contiguous()
    return state


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, entry in opt_state["state"].items():
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(out: Path, model: TransferModel, optimizer, scheduler, epoch: int, sampler_gen, history) -> Path:
    """Write ``checkpoint/epoch-E`` fully, then atomically point ``checkpoint/latest.json`` at it."""
    root = out / CHECKPOINT_DIR
    target = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "model.safetensors"))
    rng_tensors, rng_meta = _rng_state(sampler_gen)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict()) if optimizer else ({}, None)
    save_file({**opt_tensors, **rng_tensors}, str(tmp / "training_state.safetensors"))
    atomic_write_json(tmp / "training_state.json", {
        "epoch": epoch,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "rng": rng_meta,
        "history": history,
    })
    atomic_write_json(tmp / "config.json", model.config())
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    atomic_write_json(root / "latest.json", {"epoch": epoch, "path": target.name})
    for old in root.glob("epoch-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(out: str | Path) -> Path | None:
    pointer = Path(out) / CHECKPOINT_DIR / "latest.json"
    if not pointer.is_file():
        return None
    path = pointer.parent / json.loads(pointer.read_text())["path"]
    return path if (path / "model.safetensors").is_file() else None


def load_model_state(model: TransferModel, path: Path) -> None:
    state = load_file(str(path / "model.safetensors"))
    missing = [k for k in state if k not in model.state_dict()]
    if missing:
        raise ValueError(f"checkpoint {path} does not fit this model (unexpected keys: {missing[:3]} ...)")
    model.load_state_dict(state, strict=False)


# ------------------------------------------------------------------------------------------ data
def _loader(dataset: Dataset, batch_size: int, *, shuffle_gen: torch.Generator | None, num_workers: int,
            pin: bool) -> DataLoader:
    sampler = RandomSampler(dataset, generator=shuffle_gen) if shuffle_gen is not None else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      pin_memory=pin, drop_last=False)


@dataclass
class PreparedData:
    train: Dataset
    evals: dict[str, Dataset]  # split name -> dataset (test, val, train-eval)
    cached: bool


def prepare_datasets(model: TransferModel, splits: DatasetSplits, cfg: TrainConfig, device) -> PreparedData:
    """Transformed splits; with a deterministic transform and a frozen prefix, cached activations instead."""
    train_tf, eval_tf = build_transforms(model.backbone.data_config, cfg.image_size, cfg.augment)
    named = {"test": splits.test, **({"val": splits.val} if splits.val is not None else {})}
    use_cache = cfg.cache != "off" and model.strategy.has_frozen_prefix and not cfg.augment
    if not use_cache:
        evals = {k: TransformedDataset(v, eval_tf) for k, v in named.items()}
        evals["train"] = TransformedDataset(splits.train, eval_tf)
        return PreparedData(TransformedDataset(splits.train, train_tf), evals, False)
    storage = "auto" if cfg.cache == "auto" else cfg.cache
    cached = {}
    for split, base in {"train": splits.train, **named}.items():
        key = frozen_cache_key(model, splits.fingerprint(split), eval_tf)
        cached[split] = build_cache(model, TransformedDataset(base, eval_tf), key, device=device,
                                    batch_size=max(cfg.batch_size, 64), num_workers=cfg.num_workers,
                                    storage=storage, cache_dir=cfg.cache_dir, progress=cfg.progress)
    return PreparedData(cached["train"], {k: cached[k] for k in ["test", *(["val"] if "val" in cached else []), "train"]},
                        True)


# ------------------------------------------------------------------------------------------ eval
@torch.no_grad()
def evaluate(model, loader: Iterable, from_frozen: bool, accelerator, num_classes: int,
             with_nc1: bool = False) -> dict[str, float]:
    """Accuracy (and NC1 of the head-input features) over ``loader``."""
    model.eval()
    correct, count, feats, labels = 0, 0, [], []
    unwrapped = accelerator.unwrap_model(model)
    for x, y in loader:
        with accelerator.autocast():
            f = unwrapped.features_from_frozen(x) if from_frozen else unwrapped.forward_features(x)
            logits = unwrapped.head(f)
        pred, y = accelerator.gather_for_metrics((logits.argmax(1), y))
        correct += int((pred == y).sum())
        count += int(y.numel())
        if with_nc1:
            feats.append(accelerator.gather_for_metrics(f.float()).cpu())
            labels.append(y.cpu())
    out = {"accuracy": correct / max(count, 1)}
    if with_nc1:
        out["nc1"] = nc.nc1(torch.cat(feats), torch.cat(labels), num_classes)
    return out


# ------------------------------------------------------------------------------------------ main
def train(cfg: TrainConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Train one model; returns (and writes ``out/metrics.json``) the run's metrics."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    cfg = cfg or TrainConfig()
    cfg = dataclasses.replace(cfg, **collect_strategy_options(overrides, cfg.strategy_options)).validate()
    out = Path(cfg.out)
    start_time = time.time()
    AcceleratorState._reset_state()  # several runs in one process may use different precisions
    accelerator = Accelerator(
        mixed_precision=cfg.precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard" if cfg.tensorboard else None,
        project_dir=str(out),
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if cfg.compile else "no",
    )
    say = accelerator.print
    set_seed(cfg.seed)
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class,
                          val_fraction=cfg.val_fraction, seed=cfg.seed)
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.checkpoint, cfg.seed)
    selection = None
    layer = cfg.layer
    resume_from = latest_checkpoint(out) if cfg.resume else None
    if resume_from is not None:
        layer = json.loads((resume_from / "config.json").read_text())["layer"] or layer
    if get_strategy_config(cfg.strategy).uses_layer and layer == "auto":
        from .selection import select_layer

        selection = select_layer(backbone, splits, cfg, device=accelerator.device)
        layer = selection["layer"]
        say(f"layer auto ({selection['rule']}): {layer}")
    set_seed(cfg.seed)
    model = TransferModel(backbone, strategy_config(cfg.strategy, **cfg.strategy_options), splits.num_classes,
                          layer if layer != "auto" else None, class_names=splits.class_names)
    model.to(accelerator.device)
    if cfg.channels_last and backbone.layout == "conv":
        model.to(memory_format=torch.channels_last)
    data = prepare_datasets(model, splits, cfg, accelerator.device)
    if data.cached:
        say(f"frozen-prefix cache: {data.train.storage}, {data.train.nbytes / 2**20:.1f} MiB for the train split")
    summary = model.parameter_summary()
    say(f"{cfg.backbone} / {cfg.strategy}" + (f" @ {layer}" if model.layer else "")
        + f": {summary['trainable']:,} of {summary['total']:,} parameters train ({summary['percent']:.2f}%)")

    sampler_gen = torch.Generator().manual_seed(cfg.seed)
    pin = accelerator.device.type == "cuda"
    train_loader = _loader(data.train, cfg.batch_size, shuffle_gen=sampler_gen, num_workers=cfg.num_workers, pin=pin)
    eval_loaders = {k: _loader(v, max(cfg.batch_size, 64), shuffle_gen=None, num_workers=cfg.num_workers, pin=pin)
                    for k, v in data.evals.items()}
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = (torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, int(round(cfg.warmup_epochs * steps_per_epoch))))
        if optimizer else None)
    model, train_loader = accelerator.prepare(model, train_loader)
    if optimizer:
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}

    start_epoch, history = 0, []
    final: dict[str, dict[str, float]] = {}  # split -> final evaluation
    if resume_from is not None:
        start_epoch, history = _resume(resume_from, accelerator.unwrap_model(model), optimizer, scheduler, sampler_gen)
        say(f"resumed from {resume_from} (epoch {start_epoch} of {cfg.epochs} done)")
    if cfg.tensorboard:
        accelerator.init_trackers("sclft", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                   if isinstance(v, (int, float, str, bool))})

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        seen, loss_sum, tic = 0, 0.0, time.time()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and
                   accelerator.is_local_main_process), leave=False)
        for x, y in bar:
            if optimizer is None:
                break
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    logits = model(x, from_frozen=data.cached)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if not torch.isfinite(loss):
                    kept = latest_checkpoint(out)
                    raise NonFiniteLossError(
                        f"loss became {loss.item()} at epoch {epoch + 1}; stopping. Try a lower --lr or "
                        f"--precision no. Last good checkpoint: {kept or 'none yet'}"
                    )
                accelerator.backward(loss)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / max(time.time() - tic, 1e-9):.0f}")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                  "lr": scheduler.get_last_lr()[0] if scheduler else 0.0}
        last = epoch + 1 == cfg.epochs
        due = cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or last)
        for split in [s for s in ("val", "test") if s in eval_loaders and due]:
            result = evaluate(model, eval_loaders[split], data.cached, accelerator, splits.num_classes,
                              with_nc1=last)
            record[f"{split}_accuracy"] = result["accuracy"]
            if last:
                final[split] = result  # reused for metrics.json: the final model is not evaluated twice
        history.append(record)
        accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
        say(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        if accelerator.is_main_process:
            save_checkpoint(out, accelerator.unwrap_model(model), optimizer, scheduler, epoch + 1, sampler_gen, history)
        accelerator.wait_for_everyone()

    for split in eval_loaders:
        if split not in final:
            final[split] = evaluate(model, eval_loaders[split], data.cached, accelerator, splits.num_classes,
                                    with_nc1=True)
    final_test, final_train = final["test"], final["train"]
    unwrapped = accelerator.unwrap_model(model)
    metrics = {
        "backbone": cfg.backbone,
        "dataset": cfg.data,
        "strategy": cfg.strategy,
        "layer": unwrapped.layer,
        "num_classes": splits.num_classes,
        "test_accuracy": final_test["accuracy"],
        "train_accuracy": final_train["accuracy"],
        "nc1_train": final_train["nc1"],
        "nc1_test": final_test["nc1"],
        "trainable_params": summary["trainable"],
        "total_params": summary["total"],
        "trainable_percent": summary["percent"],
        "epochs": cfg.epochs,
        "seconds": time.time() - start_time,
        "seed": cfg.seed,
        "train_per_class": cfg.train_per_class,
        "image_size": cfg.image_size or backbone.data_config["input_size"][-1],
        "cached": data.cached,
        "skipped_images": len(splits.skipped),
        "history": history,
    }
    if "val" in eval_loaders:
        metrics["val_accuracy"] = final["val"]["accuracy"]
    if selection is not None:
        metrics["layer_selection"] = selection
    if accelerator.is_main_process:
        save_model(unwrapped, out)
        atomic_write_json(out / "train_config.json", dataclasses.asdict(cfg))
        atomic_write_json(out / METRICS_FILE, metrics)
    accelerator.end_training()
    if splits.skipped:
        say(f"note: {len(splits.skipped)} unreadable image(s) were skipped (see the log for their paths)")
    return metrics


def _resume(path: Path, model, optimizer, scheduler, sampler_gen) -> tuple[int, list]:
    load_model_state(model, path)
    meta = json.loads((path / "training_state.json").read_text())
    tensors = load_file(str(path / "training_state.safetensors"))
    if optimizer is not None and meta["optimizer"] is not None:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    _set_rng_state(tensors, meta["rng"], sampler_gen)
    return int(meta["epoch"]), list(meta["history"])


# ------------------------------------------------------------------------------------------ save / load
def build_backbone(name: str, pretrained: bool, checkpoint: str | None, seed: int):
    """Backbone whose random initialisation (``pretrained=False``) is a function of ``seed``, so that
    :func:`load` rebuilds the same frozen weights a run trained with."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_backbone(name, pretrained=pretrained, checkpoint=checkpoint)


def save_model(model: TransferModel, out: str | Path) -> Path:
    """``model.safetensors`` (trained parameters + head + trained buffers) and ``config.json``."""
    out = Path(out)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(trainable_state(model), str(tmp))
    atomic_write_json(out / "config.json", model.config())
    return out


def load(path: str | Path, pretrained: bool | None = None, checkpoint: str | None = None) -> TransferModel:
    """Rebuild a trained model from a run directory (``config.json`` + ``model.safetensors``).

    Only what was trained is stored there; the frozen backbone weights come from the same source as
    in training (read from ``train_config.json`` unless ``pretrained`` / ``checkpoint`` are given).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a trained sclft model: no config.json (expected a `sclft train --out` "
                                "directory)")
    cfg = json.loads((path / "config.json").read_text())
    run = json.loads((path / "train_config.json").read_text()) if (path / "train_config.json").is_file() else {}
    pretrained = run.get("pretrained", True) if pretrained is None else pretrained
    checkpoint = checkpoint or run.get("checkpoint")
    backbone = build_backbone(cfg["backbone"], pretrained, checkpoint, run.get("seed", 0))
    model = TransferModel(backbone,
                          cfg["strategy"], cfg["num_classes"], cfg["layer"], cfg.get("class_names"),
                          **{k: v for k, v in (cfg.get("strategy_options") or {}).items() if v is not None})
    load_model_state(model, path)
    return model.eval()

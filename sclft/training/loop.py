"""The training loop (Accelerate: AMP, gradient accumulation, several processes, exact resume)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from ..card import write_model_card
from ..config import TrainConfig
from ..data import load_dataset
from ..errors import RunFailedError, UsageError
from ..eval import evaluate
from ..io import check_out_dir
from ..model import TransferModel
from ..optim import WarmupCosine, build_optimizer
from ..progress import progress_bar
from ..run_folder import (
    CHECKPOINT_DIR,
    CHECKPOINT_POINTER,
    STAGING,
    RunFolderError,
    build_backbone,
    file_digest,
    frozen_digest,
    load_model_state,
    replace_run,
    run_files,
    run_lock,
    trainable_state,
    write_run,
)
from ..selection import select_layer
from ..strategies import collect_strategy_options, strategy_config
from ..strategies.base import Strategy
from .checkpoint import check_resume, latest_checkpoint, restore_training_state, resume_view, save_checkpoint
from .data import make_loader, prepare_datasets

log = logging.getLogger("sclft.train")


class NonFiniteLossError(RunFailedError, RuntimeError):
    """The loss (or a trained parameter) became NaN/inf; the last good checkpoint of this run is kept."""


class DivergedError(NonFiniteLossError):
    """The loss stayed finite but grew by orders of magnitude (:data:`DIVERGENCE_FACTOR`); the run failed."""


# a batch loss above this many times the run's reference loss (its first batch's, at least log K: the loss of
# uniform predictions) ends the run as diverged; cross-entropy of a run that is learning never grows that much
DIVERGENCE_FACTOR = 1e3


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _cpu_processes() -> bool:
    """Several processes (torchrun / accelerate launch --multi_gpu) on a machine without GPUs: Accelerate
    makes them one gloo group only when told ``cpu=True``; otherwise each would run the whole job alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _init_from_first_batch(model: TransferModel, loader, sampler_gen: torch.Generator, cached: bool,
                           cfg: TrainConfig, accelerator) -> None:
    """``Strategy.init_from_data`` with the loss of the first training batch; the batch order and the global
    RNG are left as they were, so the epochs see the batches a run without the hook sees. As the Deep LoRA
    reference takes that gradient (``create_compressed_lora_train_state``: its loss with ``train=False``): in
    eval mode (no dropout / batch-norm updates), in float32 (no autocast) and without label smoothing."""
    if type(model.strategy).init_from_data is Strategy.init_from_data:
        return
    state = sampler_gen.get_state()
    with torch.random.fork_rng(devices=[]):
        x, y = next(iter(loader))
    sampler_gen.set_state(state)
    x, y = x.to(accelerator.device), y.to(accelerator.device)

    def first_loss() -> torch.Tensor:
        logits = model(x, from_frozen=cached)
        return F.cross_entropy(logits.float(), y)

    mode = model.training
    model.eval()
    try:
        model.strategy.init_from_data(first_loss)
    finally:
        model.train(mode)


def _prepare_out(out: Path, cfg: TrainConfig, accelerator) -> tuple[tuple[Path, dict] | None, Path]:
    """Check ``out`` against ``resume``/``overwrite``; returns the checkpoint to resume (and its state) and the
    folder to write the run into: ``out``, or for ``--overwrite`` of an existing run a staging folder inside it
    (the old run stays intact until :func:`~sclft.run_folder.replace_run` swaps the finished new one in)."""
    if cfg.resume and cfg.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: choose one")
    if cfg.resume:
        path = latest_checkpoint(out)
        if path is None:
            raise RunFolderError(f"--resume: there is no checkpoint to resume in {out / CHECKPOINT_DIR} (no "
                                 f"{CHECKPOINT_POINTER}); run without --resume to start the run")
        return (path, check_resume(path, cfg, accelerator.num_processes)), out
    found = run_files(out)
    if found and not cfg.overwrite:
        raise RunFolderError(f"{out} already holds a run ({', '.join(found)}); pass --overwrite to replace it, "
                             "--resume to continue it, or choose another --out")
    if not found:
        return None, out
    staging = out / STAGING
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # left by an overwrite that did not finish
        staging.mkdir()
    return None, staging


def train(cfg: TrainConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Train one model; returns (and writes ``out/metrics.json``) the run's metrics."""
    cfg = cfg or TrainConfig()
    cfg = dataclasses.replace(cfg, **collect_strategy_options(overrides, cfg.strategy_options)).validate()
    out = Path(cfg.out)
    check_out_dir(out)
    AcceleratorState._reset_state()  # several runs in one process may use different precisions
    accelerator = Accelerator(
        cpu=_cpu_processes(),
        mixed_precision=cfg.precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=cfg.trackers() or None,  # validate() checked each tracker's package is installed
        project_dir=str(out),
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if cfg.compile else "no",
    )
    if cfg.precision == "fp16" and accelerator.scaler is None:
        log.warning("--precision fp16 on %s: Accelerate has no fp16 autocast/GradScaler there, so this runs in "
                    "float32 (use bf16 for mixed precision on CPU)", accelerator.device)
    with run_lock(out) if accelerator.is_main_process else nullcontext():
        resume, target = _prepare_out(out, cfg, accelerator)
        accelerator.wait_for_everyone()
        try:
            metrics = _train(cfg, target, accelerator, resume)
        except BaseException:
            if target != out and accelerator.is_main_process:  # a failed --overwrite: the old run stays as it was
                shutil.rmtree(target, ignore_errors=True)
            raise
        if target != out and accelerator.is_main_process:  # --overwrite: only a finished run replaces the old one
            replace_run(out, target)
        return metrics


def _train(cfg: TrainConfig, out: Path, accelerator, resume: tuple[Path, dict] | None) -> dict[str, Any]:
    say = accelerator.print
    resume_from, resumed = resume or (None, {})
    start_time = time.time() - float(resumed.get("seconds", 0.0))  # seconds count the whole run
    set_seed(cfg.seed)
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class,
                          val_fraction=cfg.val_fraction, seed=cfg.seed)
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.checkpoint, cfg.seed, cfg.image_size)
    cfg.check_backbone(backbone)  # block names, selection candidates, strategy options: before any heavy step
    selection = resumed.get("layer_selection")
    layer = resumed.get("layer") or cfg.layer
    config = strategy_config(cfg.strategy, **cfg.strategy_options).for_data(cfg.data)
    if config.uses_layer and layer == "auto":
        selection = select_layer(backbone, splits, cfg, device=accelerator.device)
        layer = selection["layer"]
        say(f"layer auto ({selection['rule']}): {layer}")
    set_seed(cfg.seed)
    model = TransferModel(backbone, config, splits.num_classes, layer if layer != "auto" else None,
                          class_names=splits.class_names)
    build = {"pretrained": cfg.pretrained, "seed": cfg.seed, "checkpoint": cfg.checkpoint,
             "checkpoint_sha256": file_digest(cfg.checkpoint) if cfg.checkpoint else None,
             "frozen_sha256": frozen_digest(model)}
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
    train_loader = make_loader(data.train, cfg.batch_size, shuffle_gen=sampler_gen, num_workers=cfg.num_workers,
                               pin=pin)
    eval_loaders = {k: make_loader(v, max(cfg.batch_size, 64), shuffle_gen=None, num_workers=cfg.num_workers, pin=pin)
                    for k, v in data.evals.items()}
    optimizer = build_optimizer(model, cfg)
    if optimizer and resume_from is None:  # before prepare: every process computes the same init
        _init_from_first_batch(model, train_loader, sampler_gen, data.cached, cfg, accelerator)
    model, train_loader = accelerator.prepare(model, train_loader)
    # after prepare: the batches of *this* process, so N processes follow the 1-process schedule in epochs
    epochs = cfg.epochs if optimizer else 0  # nothing trains (zero_shot): the run is one evaluation
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = (WarmupCosine(optimizer, total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.schedule)
                 if optimizer else None)
    if optimizer:
        optimizer = accelerator.prepare(optimizer)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}

    start_epoch, history = 0, []
    last_good = None  # the newest checkpoint of this run (resumed or written here)
    if resume_from is not None:
        load_model_state(accelerator.unwrap_model(model), resume_from, f"the model this run builds ({cfg.backbone}, "
                         f"{cfg.strategy}, layer {layer}, {splits.num_classes} classes)")
        restore_training_state(accelerator, resume_from, resumed, optimizer, scheduler, sampler_gen)  # no pickle
        start_epoch, history, last_good = int(resumed["epoch"]), list(resumed["history"]), resume_from
        say(f"resumed from {resume_from} (epoch {start_epoch} of {cfg.epochs} done)")
    if cfg.trackers():
        accelerator.init_trackers("sclft", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                   if isinstance(v, (int, float, str, bool))},
                                  init_kwargs={"wandb": {"dir": str(out)}})
    run = _Run(cfg, out, accelerator, splits, data, model, train_loader, eval_loaders, optimizer, scheduler,
               sampler_gen, layer, selection, start_time)
    final = _epochs(run, start_epoch, epochs, history, last_good)
    return _final_metrics(run, epochs, history, final, summary, build, backbone)


@dataclasses.dataclass
class _Run:
    """What the epochs and the final metrics of one run share."""

    cfg: TrainConfig
    out: Path
    accelerator: Accelerator
    splits: Any
    data: Any
    model: Any
    train_loader: Any
    eval_loaders: dict[str, Any]
    optimizer: Any
    scheduler: Any
    sampler_gen: torch.Generator
    layer: str | None
    selection: dict[str, Any] | None
    start_time: float


def _epochs(run: _Run, start_epoch: int, epochs: int, history: list[dict[str, Any]],
            last_good: Path | None) -> dict[str, dict[str, float]]:
    """Train epochs ``start_epoch + 1 .. epochs`` (each evaluated when due, then checkpointed); appends to
    ``history`` and returns the last epoch's evaluations by split."""
    cfg, out, accelerator, splits, data, model = run.cfg, run.out, run.accelerator, run.splits, run.data, run.model
    optimizer, scheduler, eval_loaders, say = run.optimizer, run.scheduler, run.eval_loaders, accelerator.print
    final: dict[str, dict[str, float]] = {}  # split -> final evaluation
    reference = None  # the loss divergence is judged against (see DIVERGENCE_FACTOR)
    for epoch in range(start_epoch, epochs):
        model.train()
        seen, loss_sum, tic = 0, 0.0, time.time()
        bar = progress_bar(run.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           progress=cfg.progress and accelerator.is_local_main_process)
        for x, y in bar:
            if optimizer is None:
                break
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    logits = model(x, from_frozen=data.cached)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                value = loss.item()  # the one host sync of a step: NaN / divergence checks and the epoch's mean
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"loss became {value} at epoch {epoch + 1}; stopping. Try a lower --lr or "
                        f"--precision no. Last good checkpoint: {last_good or 'none yet'}"
                    )
                reference = reference or max(value, math.log(max(splits.num_classes, 2)))
                if value > DIVERGENCE_FACTOR * reference:
                    raise DivergedError(
                        f"loss diverged: {value:.3g} at epoch {epoch + 1}, over {DIVERGENCE_FACTOR:g} times its "
                        f"starting {reference:.3g}; stopping (the run failed). Try a lower --lr (now {cfg.lr:g}). "
                        f"Last good checkpoint: {last_good or 'none yet'}")
                accelerator.backward(loss)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            seen += len(y)
            loss_sum += value * len(y)
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
        broken = _non_finite(trainable_state(accelerator.unwrap_model(model)))
        if broken:  # a finite loss can precede non-finite weights: never checkpoint them
            raise NonFiniteLossError(
                f"trained parameters became non-finite in epoch {epoch + 1} ({', '.join(broken[:3])}); stopping. "
                f"Try a lower --lr or --precision no. Last good checkpoint: {last_good or 'none yet'}")
        last_good = save_checkpoint(accelerator, out, accelerator.unwrap_model(model), epoch + 1, run.sampler_gen, {
            "history": history, "seconds": time.time() - run.start_time, "layer": run.layer,
            "layer_selection": run.selection, "num_processes": accelerator.num_processes,
            "config": resume_view(dataclasses.asdict(cfg))}, optimizer, scheduler)
    return final


def _final_metrics(run: _Run, epochs: int, history: list[dict[str, Any]], final: dict[str, dict[str, float]],
                   summary: dict[str, Any], build: dict[str, Any], backbone) -> dict[str, Any]:
    """Evaluate what the last epoch did not, then write the finished run's files (the manifest last)."""
    cfg, out, accelerator, splits, data, model = run.cfg, run.out, run.accelerator, run.splits, run.data, run.model
    eval_loaders, selection, say = run.eval_loaders, run.selection, accelerator.print
    for split in eval_loaders:
        if split not in final:
            final[split] = evaluate(model, eval_loaders[split], data.cached, accelerator, splits.num_classes,
                                    with_nc1=True)
    if not history:  # no training epochs: one record of the evaluation
        history.append({"epoch": 0, **{f"{k}_accuracy": final[k]["accuracy"] for k in ("val", "test") if k in final}})
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
        "epochs": epochs,
        "seconds": time.time() - run.start_time,
        "seed": cfg.seed,
        "train_per_class": cfg.train_per_class,
        "image_size": cfg.image_size or backbone.data_config["input_size"][-1],
        "cached": data.cached,
        "skipped_images": len(splits.skipped),
        "num_processes": accelerator.num_processes,
        "history": history,
    }
    if "val" in eval_loaders:
        metrics["val_accuracy"] = final["val"]["accuracy"]
    if selection is not None:
        metrics["layer_selection"] = selection
    if accelerator.is_main_process:  # the card is written from the files just written; the manifest last
        write_run(out, unwrapped, build, dataclasses.asdict(cfg), metrics, card=write_model_card)
    accelerator.end_training()
    if splits.skipped:
        say(f"note: {len(splits.skipped)} unreadable image(s) were skipped (see the log for their paths)")
    return metrics

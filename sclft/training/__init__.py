"""Accelerate training loop: AMP, gradient accumulation, per-epoch eval, atomic checkpoints, resume.

>>> from sclft.training import TrainConfig, train
>>> metrics = train(TrainConfig(backbone="efficientnet_lite0", data="digits", epochs=3, out="runs/demo"))

``accelerate launch -m sclft.cli train ...`` runs the same code on several GPUs (and, on a machine
without GPUs, ``accelerate launch --multi_gpu --num_processes N`` or ``torchrun --nproc_per_node N`` runs
N CPU processes over gloo; ``accelerate launch --cpu`` always starts one process). The learning-rate
schedule is laid out in epochs, so N processes follow the 1-process schedule.

Run folder (``--out``): ``metrics.json``, ``model.safetensors`` (trained tensors only), ``config.json``
(what :func:`load` needs to rebuild the frozen weights, with their digests), ``train_config.json`` and
``checkpoint/``: ``epoch-E/`` holds the trained tensors, the optimizer state, every process's RNG and the
sampler state (safetensors) and ``training_state.json`` (epoch, history, elapsed seconds, layer selection, the
config it was trained with, optimizer groups, schedule, GradScaler); ``latest.json`` names the newest
complete one and the sha256 of its files; ``manifest.json``, written last, the sha256 of the finished run's
files. Nothing is pickled (``sclft.training.checkpoint``). ``.sclft.lock`` names the one process that writes the
folder. A folder that holds a finished run or another run's checkpoints is only replaced with
``overwrite=True`` (once the new run finished), and ``resume=True`` refuses a config that differs in anything
that changes the result. The format has one owner, :mod:`sclft.run_folder`.
"""

from ..config import ConfigError, TrainConfig
from ..run_folder import CHECKPOINT_DIR, LOCK_FILE, METRICS_FILE, RunFolderError, load, save_model
from .checkpoint import latest_checkpoint
from .loop import NonFiniteLossError, train

__all__ = ["train", "TrainConfig", "ConfigError", "NonFiniteLossError", "RunFolderError", "load", "save_model",
           "latest_checkpoint", "CHECKPOINT_DIR", "METRICS_FILE", "LOCK_FILE"]

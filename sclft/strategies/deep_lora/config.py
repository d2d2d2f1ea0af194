"""Deep LoRA options: rank r, ε, γ, the outer factors' init; targets and blocks as for ``lora``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import UsageError
from .._adapter_config import AdapterConfig, check_number
from .._registry import register_strategy

# backbone family -> layers that get a Deep LoRA update when target_modules is not given
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "resnet": ("conv1", "conv2", "conv3"),
    "efficientnet": ("conv_pw", "conv_pwl", "conv_head"),
    "vit": ("qkv", "proj", "fc1", "fc2"),
    "clip": ("c_fc", "c_proj"),  # MLP only: nn.MultiheadAttention does not call a Linear's forward to wrap
}
INITS = ("gradient", "random")


@register_strategy
@dataclass
class DeepLoRAConfig(AdapterConfig):
    name = "deep_lora"
    display_name = "Deep LoRA"
    description = ("compressed 3-factor low-rank updates (Yaras et al. 2024): outer factors from the first "
                   "gradient, r×r cores at εI, outer factors at γ·lr + a new head")
    model_class = ".model:DeepLoRA"
    trains = "ΔW = U·C₃C₂C₁·Vᵀ per target layer (U, V: r columns; cores r×r) and the head"
    # the reference code's optimiser (dlt/train.py create_optimizer, dlt/configs.py, scripts/*.py): AdamW without
    # weight decay, no warm-up, a constant learning rate, ε = 1e-6 (``adam_eps``); the lr is the run's --lr (the
    # reference: 1e-4 uncompressed, 1e-2 for the compressed runs of scripts/stsb_narrow.py; docs/peft.md)
    train_defaults: ClassVar[dict[str, Any]] = {"weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 0.0}

    eps: float = field(default=1e-3, metadata={
        "help": "ε: the factors' orthogonal init scale (cores start at εI, ΔW(0) ~ ε³), in (0, 1]"})
    gamma: float = field(default=0.01, metadata={
        "help": "γ: learning-rate ratio of the outer factors U, V to the cores (>= 0; 0 freezes them)"})
    init: str = field(default="gradient", metadata={
        "choices": INITS,
        "help": "outer factors U, V: 'gradient' (the subspace the first batch's gradient of the full-width "
                "factorisation moves, as published) or 'random' (Haar-orthonormal; the earlier variant)"})

    adam_eps: float = field(default=1e-6, metadata={
        "help": "AdamW's ε for this run (the reference's 1e-6; timm's default 1e-8 lets the cores, whose "
                "gradients are ~ε² of the layer's, take far larger early steps), > 0"})
    train_head: bool = field(default=True, metadata={
        "help": "train the new head (the reference trains only the factors: false freezes the head at its "
                "random init)"})

    def validate(self) -> DeepLoRAConfig:
        super().validate()
        check_number(self, "eps", float, 0.0, 1.0, low_open=True, high_open=False)
        check_number(self, "gamma", float, 0.0)
        check_number(self, "adam_eps", float, 0.0, low_open=True)
        if not isinstance(self.train_head, bool):
            raise UsageError(f"deep_lora: train_head must be true or false, got {self.train_head!r}")
        return self

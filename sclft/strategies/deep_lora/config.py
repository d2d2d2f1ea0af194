"""Deep LoRA options: rank cap r̂ (``r``), ε, γ; targets and blocks as for ``lora``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._adapter_config import AdapterConfig, check_number
from .._registry import register_strategy

# backbone family -> layers that get a Deep LoRA update when target_modules is not given
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "resnet": ("conv1", "conv2", "conv3"),
    "efficientnet": ("conv_pw", "conv_pwl", "conv_head"),
    "vit": ("qkv", "proj", "fc1", "fc2"),
    "clip": ("c_fc", "c_proj"),  # MLP only: nn.MultiheadAttention does not call a Linear's forward to wrap
}


@register_strategy
@dataclass
class DeepLoRAConfig(AdapterConfig):
    name = "deep_lora"
    display_name = "Deep LoRA"
    description = ("compressed deep (3-factor) low-rank updates from an ε-orthogonal init, outer factors at γ·lr "
                   "(sclft.dln) + a new head")
    model_class = ".model:DeepLoRA"
    trains = "ΔW = U·C₃C₂C₁·Vᵀ per target layer (cores 2r̂×2r̂) and the head"

    eps: float = field(default=0.1, metadata={"help": "ε of the orthogonal init (ΔW(0) has norm ~ε³), in (0, 1]"})
    gamma: float = field(default=0.1, metadata={
        "help": "γ: learning-rate ratio of the outer factors U, V to the cores (>= 0)"})

    def validate(self) -> "DeepLoRAConfig":
        super().validate()
        check_number(self, "eps", float, 0.0, 1.0, low_open=True, high_open=False)
        check_number(self, "gamma", float, 0.0)
        return self

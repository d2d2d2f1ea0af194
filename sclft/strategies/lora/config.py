"""LoRA options (passed to ``peft.LoraConfig``); rank, targets and blocks come from :class:`AdapterConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._adapter_config import AdapterConfig, check_number
from .._registry import register_strategy

# backbone family -> layers that get LoRA when target_modules is not given
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "resnet": ("conv1", "conv2", "conv3"),  # the convolutions of every residual block (not the shortcut)
    "efficientnet": ("conv_pw", "conv_pwl", "conv_head"),  # 1×1 convolutions (depthwise ones stay frozen)
    "vit": ("qkv", "proj", "fc1", "fc2"),  # attention and MLP of every transformer block
    "clip": ("attn", "c_fc", "c_proj"),  # nn.MultiheadAttention (in_proj + out_proj, peft's MHA layer) and MLP
}


@register_strategy
@dataclass
class LoRAConfig(AdapterConfig):
    name = "lora"
    display_name = "LoRA"
    description = ("LoRA adapters (Hugging Face peft) in the attention/MLP or 1x1-conv layers of the chosen blocks "
                   "+ a new head")
    model_class = ".model:LoRA"
    trains = "rank-r adapters (ΔW = alpha/r · B A) and the head"

    alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator: ΔW = alpha/r · B A"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch's input, in [0, 1)"})

    def validate(self) -> LoRAConfig:
        super().validate()
        check_number(self, "alpha", float, 0.0, low_open=True)
        check_number(self, "dropout", float, 0.0, 1.0)
        return self

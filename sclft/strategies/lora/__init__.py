"""LoRA through Hugging Face peft: adapters in the chosen blocks, saved as a peft adapter beside our model."""

from .._registry import lazy_model_side
from .config import DEFAULT_TARGETS, LoRAConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__)

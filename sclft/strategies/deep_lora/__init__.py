"""Deep LoRA: compressed deep factorised updates (config: :class:`DeepLoRAConfig`; layer: ``DeepLoRALayer``)."""

from .._registry import lazy_model_side
from .config import DEFAULT_TARGETS, DeepLoRAConfig  # noqa: F401  (torch-free)

__getattr__ = lazy_model_side(__name__, ".layer")

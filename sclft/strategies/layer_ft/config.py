"""Layer FT options (none)."""

from dataclasses import dataclass

from .._registry import register_strategy
from ..config import StrategyConfig


@register_strategy
@dataclass
class LayerFTConfig(StrategyConfig):
    name = "layer_ft"
    display_name = "Layer FT"
    description = "fine-tune one block and a new head; gradients flow through the frozen suffix"
    model_class = ".model:LayerFT"
    uses_layer = True
    trains = "one block and the head"
    cache_scope = "prefix"
    cost = 0.35

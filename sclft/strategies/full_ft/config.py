"""Full fine-tuning options (none)."""

from dataclasses import dataclass

from .._registry import register_strategy
from ..config import StrategyConfig


@register_strategy
@dataclass
class FullFTConfig(StrategyConfig):
    name = "full_ft"
    display_name = "Full FT"
    description = "ordinary fine-tuning of the whole backbone and a new head"
    model_class = ".model:FullFT"
    trains = "the whole backbone and the head"
    cache_scope = "none"
    cost = 1.0

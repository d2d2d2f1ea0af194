"""Linear probe options (none)."""

from dataclasses import dataclass

from .._registry import register_strategy
from ..config import StrategyConfig


@register_strategy
@dataclass
class LinearProbeConfig(StrategyConfig):
    name = "linear_probe"
    display_name = "Linear Probe"
    description = "train a new linear head on the frozen penultimate feature"
    model_class = ".model:LinearProbe"
    trains = "the head"
    cache_scope = "features"
    cost = 0.0

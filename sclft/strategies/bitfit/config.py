"""BitFit options: whether norm scales train too."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UsageError
from .._registry import register_strategy
from ..config import StrategyConfig


@register_strategy
@dataclass
class BitFitConfig(StrategyConfig):
    name = "bitfit"
    display_name = "BitFit"
    description = "train only the backbone's biases (norm=true: also norm scales) and a new head"
    model_class = ".model:BitFit"
    trains = "the backbone's biases (and norm scales with norm) and the head"
    cache_scope = "none"
    cost = 1.0

    norm: bool = field(default=False, metadata={
        "help": "also train the affine weights (scales) of normalisation layers; their biases always train"})

    def validate(self) -> BitFitConfig:
        super().validate()
        if not isinstance(self.norm, bool):
            raise UsageError(f"bitfit: norm must be true or false, got {self.norm!r}")
        return self

"""SCL-FT options: how the tuned block's pooled output joins the penultimate feature."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UsageError
from .._registry import register_strategy
from ..config import StrategyConfig

FUSE_MODES = ("add", "concat")
MATCH_MODES = ("repeat", "zero_pad")


@register_strategy
@dataclass
class SCLFTConfig(StrategyConfig):
    name = "scl_ft"
    display_name = "SCL FT"
    description = "Layer FT + parameter-free skip from the tuned block to the penultimate feature"
    model_class = ".model:SCLFT"
    uses_layer = True
    trains = "one block and the head (as layer_ft; fuse=concat widens the head)"
    cache_scope = "prefix"
    cost = 0.35

    fuse: str = field(default="add", metadata={
        "help": "skip fusion: add (f + match(s), same parameters as layer_ft) | concat ([f, s], wider head)",
        "choices": FUSE_MODES})
    match: str = field(default="repeat", metadata={
        "help": "fuse=add width matching when the block is narrower: repeat (tile channels) | zero_pad",
        "choices": MATCH_MODES})
    skip_pooling: str | None = field(default=None, metadata={
        "help": "pooling of the tuned block's output for the skip (default: the backbone's own): "
                "avg | avg2x2 | flatten (conv); cls | mean_tokens | flatten (ViT)"})

    def validate(self) -> SCLFTConfig:
        super().validate()
        if self.skip_pooling is not None and not isinstance(self.skip_pooling, str):
            raise UsageError(f"scl_ft: skip_pooling must be a pooling name or None, got {self.skip_pooling!r}")
        return self

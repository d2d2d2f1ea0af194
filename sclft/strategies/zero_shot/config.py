"""Zero-shot options: the prompt templates."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...errors import UsageError
from .._registry import register_strategy
from ..config import StrategyConfig


@register_strategy
@dataclass
class ZeroShotConfig(StrategyConfig):
    name = "zero_shot"
    display_name = "Zero Shot"
    description = "CLIP only: head from text prompts of the class names (no training)"
    model_class = ".model:ZeroShot"
    trains = "nothing"
    cache_scope = "features"
    cost = 0.0

    templates: tuple[str, ...] | None = field(default=None, metadata={
        "help": "prompt templates with {} for the class name, averaged (default: those of --prompts)"})
    prompts: str | None = field(default=None, metadata={
        "help": "dataset whose prompt templates and readable class names to use (default: the run's --data; "
                "unknown names get open_clip's generic ImageNet templates)"})

    def for_data(self, data: str) -> ZeroShotConfig:
        return self if self.prompts else dataclasses.replace(self, prompts=data)

    def validate(self) -> ZeroShotConfig:
        super().validate()
        if self.templates is not None:
            if isinstance(self.templates, str) or not all(isinstance(t, str) and "{}" in t for t in self.templates) \
                    or not self.templates:
                raise UsageError(f"zero_shot: templates must be a non-empty list of strings with {{}} for the class "
                                 f"name, e.g. ['a photo of a {{}}.'], got {self.templates!r}")
            self.templates = tuple(self.templates)
        return self

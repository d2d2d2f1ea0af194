"""Full fine-tuning: every backbone parameter and the head train."""

from .._registry import register_strategy
from ..base import Strategy


@register_strategy
class FullFT(Strategy):
    name = "full_ft"
    description = "ordinary fine-tuning of the whole backbone and a new head"
    has_frozen_prefix = False
    freezes_backbone = False

    def trainable_backbone_parameters(self, backbone):
        return list(backbone.parameters())

    def trainable_backbone_modules(self, backbone):
        return [backbone]

    def frozen_forward(self, backbone, x):
        return x

    def tail_forward(self, backbone, z):
        return backbone.forward_features(z)

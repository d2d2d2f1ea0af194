"""Full fine-tuning: every backbone parameter and the head train."""

from ..base import Strategy
from .config import FullFTConfig


class FullFT(Strategy):
    config_class = FullFTConfig
    freezes_backbone = False

    def trainable_backbone_parameters(self, backbone):
        return list(backbone.parameters())

    def trainable_backbone_modules(self, backbone):
        return [backbone]

    def frozen_forward(self, backbone, x):
        return x

    def tail_forward(self, backbone, z):
        return backbone.forward_features(z)

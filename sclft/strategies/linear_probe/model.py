"""Linear probe: frozen backbone → penultimate feature → new linear head."""

from .._registry import register_strategy
from ..base import Strategy


@register_strategy
class LinearProbe(Strategy):
    name = "linear_probe"
    description = "train a new linear head on the frozen penultimate feature"

    def frozen_forward(self, backbone, x):
        return backbone.forward_features(x)

    def tail_forward(self, backbone, z):
        return z

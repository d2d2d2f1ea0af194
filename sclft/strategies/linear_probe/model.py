"""Linear probe: frozen backbone → penultimate feature → new linear head."""

from ..base import Strategy
from .config import LinearProbeConfig


class LinearProbe(Strategy):
    config_class = LinearProbeConfig

    def frozen_forward(self, backbone, x):
        return backbone.forward_features(x)

    def tail_forward(self, backbone, z):
        return z

"""BitFit (Ben Zaken et al. 2022): only the backbone's bias terms (optionally norm scales) and the head train.

Biases include those of normalisation layers (a ResNet's convolutions have none, so there BitFit trains the
BatchNorm shifts). BatchNorm running statistics stay frozen (the backbone runs in eval mode).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..base import Strategy
from .config import BitFitConfig

NORM_TYPES = (_NormBase, nn.LayerNorm, nn.GroupNorm)


class BitFit(Strategy):
    config_class = BitFitConfig

    def trainable_backbone_parameters(self, backbone):
        params = {}
        for module in backbone.modules():
            for pname, p in module.named_parameters(recurse=False):
                if pname == "bias" or pname.endswith("_bias") or (
                        self.config.norm and pname == "weight" and isinstance(module, NORM_TYPES)):
                    params[id(p)] = p
        return list(params.values())

    def frozen_forward(self, backbone, x):
        return x

    def tail_forward(self, backbone, z):
        return backbone.forward_features(z)

"""Layer FT: fine-tune one block (and the head); prefix and suffix stay frozen."""

from ..base import BlockStrategy
from .config import LayerFTConfig


class LayerFT(BlockStrategy):
    config_class = LayerFTConfig

    def tail_forward(self, backbone, z):
        return backbone.forward_suffix(backbone.forward_block(z, self.layer), self.layer)

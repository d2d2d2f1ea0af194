"""Layer FT: fine-tune one block (and the head); prefix and suffix stay frozen."""

from .._registry import register_strategy
from ..base import BlockStrategy


@register_strategy
class LayerFT(BlockStrategy):
    name = "layer_ft"
    description = "fine-tune one block and a new head; gradients flow through the frozen suffix"

    def tail_forward(self, backbone, z):
        return backbone.forward_suffix(backbone.forward_block(z, self.layer), self.layer)

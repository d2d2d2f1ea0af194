"""SCL-FT: Layer FT plus a parameter-free skip from the tuned block to the penultimate feature.

The tuned block's pooled output ``s`` (width C) joins the penultimate feature ``f`` (width D):

* ``fuse="add"``: ``f + match(s)``, where ``match`` makes C equal to D without parameters
  (``"repeat"`` tiles the channels, ``"zero_pad"`` pads with zeros; when C > D both average
  neighbouring channels down to D). The head keeps its D inputs, so SCL-FT trains exactly as many
  parameters as Layer FT.
* ``fuse="concat"``: ``[f, s]``; the head sees both and grows by C·K weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...backbones.base import POOLERS
from ...errors import UsageError
from ..base import BlockStrategy
from .config import FUSE_MODES, MATCH_MODES, SCLFTConfig  # noqa: F401  (FUSE_MODES re-exported)

WIDTH_PRESERVING_POOLERS = ("avg", "cls", "mean_tokens")  # pooled width == the block's width


def match_width(v: torch.Tensor, width: int, mode: str = "repeat") -> torch.Tensor:
    """Parameter-free map of (N, C) to (N, width)."""
    c = v.shape[1]
    if c == width:
        return v
    if c > width:
        return F.adaptive_avg_pool1d(v.unsqueeze(1), width).squeeze(1)
    if mode == "repeat":
        return v.repeat(1, math.ceil(width / c))[:, :width]
    if mode == "zero_pad":
        return F.pad(v, (0, width - c))
    raise UsageError(f"unknown match mode {mode!r}; valid: {', '.join(MATCH_MODES)}")


class SCLFT(BlockStrategy):
    config_class = SCLFTConfig
    reshapes_head_input = True

    def __init__(self, backbone, layer=None, config: SCLFTConfig | None = None, **options):
        super().__init__(backbone, layer, config, **options)
        pooling = self.config.skip_pooling
        if pooling is not None and pooling not in POOLERS[backbone.layout]:
            raise UsageError(f"unknown skip_pooling {pooling!r} for a {backbone.layout} backbone; "
                             f"valid: {', '.join(POOLERS[backbone.layout])}")
        if self.config.fuse == "concat" and pooling not in (None, *WIDTH_PRESERVING_POOLERS):
            raise UsageError(f"skip_pooling {pooling!r} changes the skip's width, which fuse=concat cannot size the "
                             f"head for; with fuse=concat use {' | '.join(WIDTH_PRESERVING_POOLERS)}, or fuse=add")
        self.fuse, self.match, self.skip_pooling = self.config.fuse, self.config.match, pooling

    def head_in_features(self, backbone):
        if self.fuse == "concat":
            return backbone.num_features + backbone.block_width(self.layer)
        return backbone.num_features

    def tail_forward(self, backbone, z):
        out = backbone.forward_block(z, self.layer)
        feat = backbone.forward_suffix(out, self.layer)
        skip = backbone.pool(out, self.skip_pooling)
        if self.fuse == "concat":
            return torch.cat([feat, skip], dim=1)
        return feat + match_width(skip, feat.shape[1], self.match)

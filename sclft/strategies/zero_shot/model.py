"""CLIP zero-shot: the head is built from text prompts of the class names; nothing trains.

Prompts come from :mod:`sclft.data.prompts`: the dataset's template set (CLIP_benchmark's) or the
generic ImageNet templates, and readable class names (``american_bulldog`` → ``american bulldog``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...data import prompts
from ...errors import UsageError
from ..base import Strategy
from .config import ZeroShotConfig

CLIP_LOGIT_SCALE = 100.0


class TextHead(nn.Module):
    """Cosine-similarity head: ``scale · normalise(f) · Tᵀ`` with fixed normalised text embeddings T."""

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float = CLIP_LOGIT_SCALE):
        super().__init__()
        self.register_buffer("weight", F.normalize(class_embeddings.float(), dim=-1))
        self.logit_scale = logit_scale

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(f, dim=-1) @ self.weight.to(f.dtype).T


class ZeroShot(Strategy):
    config_class = ZeroShotConfig

    def __init__(self, backbone, layer=None, config: ZeroShotConfig | None = None, **options):
        super().__init__(backbone, layer, config, **options)
        if "encode_text" not in backbone.extras:
            raise UsageError(
                f"zero_shot needs a CLIP backbone with its text tower (e.g. clip_vit_b32); {backbone.name!r} has none"
            )
        self.dataset = self.config.prompts
        self.templates = self.config.templates or prompts.templates_for(self.dataset)

    def options(self):
        return {**self.config.options(), "templates": list(self.templates)}  # the ones used, for load()

    def build_head(self, backbone, num_classes, class_names):
        if not class_names or len(class_names) != num_classes:
            raise UsageError("zero_shot needs class_names: one name per class")
        names = prompts.readable_class_names(self.dataset, class_names)
        with torch.no_grad():
            text = backbone.extras["encode_text"](names, self.templates)  # (D, K)
        return TextHead(text.T.cpu())

    def frozen_forward(self, backbone, x):
        return backbone.forward_features(x)

    def tail_forward(self, backbone, z):
        return z

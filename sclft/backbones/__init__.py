"""Backbone registry and adapters (one module per family)."""

from . import efficientnet_lite, open_clip, timm_cnn, timm_vit  # noqa: F401  (register families)
from ._registry import backbone_entries, create_backbone, list_backbones, register_backbone, spec_from_module
from .base import Backbone, BackboneSpec, Stage

__all__ = [
    "Backbone", "BackboneSpec", "Stage", "create_backbone", "list_backbones", "backbone_entries",
    "register_backbone", "spec_from_module",
]

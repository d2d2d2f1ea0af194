"""timm Vision Transformers: stages ``blocks.0`` … ``blocks.N``; penultimate = norm → pool → fc_norm."""

from __future__ import annotations

import timm
from torch import nn

from ._registry import register_backbone, register_module_adapter
from ._timm import create_timm_model, timm_data_config
from .base import BackboneSpec, Stage, submodule


def _is_vit(m: nn.Module) -> bool:
    return isinstance(m, timm.models.VisionTransformer)


def _embed(model: nn.Module, x):
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))


def _pre_logits(model: nn.Module, x):
    return model.forward_head(model.norm(x), pre_logits=True)


@register_module_adapter(_is_vit)
def vit_spec(model: nn.Module) -> BackboneSpec:
    model.reset_classifier(0)
    stages = [Stage("embed", ["patch_embed", "patch_drop", "norm_pre"], _embed, candidate=False,
                    out_channels=model.embed_dim)]
    stages += [Stage(f"blocks.{i}", [f"blocks.{i}"], submodule(f"blocks.{i}"), out_channels=model.embed_dim)
               for i in range(len(model.blocks))]
    has_cls = getattr(model, "cls_token", None) is not None
    data_config = timm_data_config(model)
    data_config["input_size"] = (3, *model.patch_embed.img_size)  # the size it was built for (img_size=)
    return BackboneSpec(
        family="vit",
        model=model,
        stages=stages,
        pre_logits=_pre_logits,
        pre_logits_modules=["norm", "fc_norm", "head_drop"],
        num_features=model.num_features,
        data_config=data_config,
        layout="tokens",
        num_prefix_tokens=model.num_prefix_tokens,
        default_pooling="cls" if has_cls else "mean_tokens",
    )


def _size(image_size: int | None) -> dict:
    """timm builds a ViT for another input size itself (``img_size=``; pretrained position
    embeddings are resampled to the new grid)."""
    return {"img_size": image_size} if image_size else {}


@register_backbone("vit_b32", weights="timm vit_base_patch32_224.augreg_in21k_ft_in1k", description="ViT-B/32, 224 px")
def vit_b32(pretrained: bool, checkpoint: str | None, image_size: int | None = None) -> BackboneSpec:
    return vit_spec(create_timm_model("vit_base_patch32_224.augreg_in21k_ft_in1k", pretrained, checkpoint,
                                      **_size(image_size)))


@register_backbone("vit_b16", weights="timm vit_base_patch16_224.augreg2_in21k_ft_in1k", description="ViT-B/16, 224 px")
def vit_b16(pretrained: bool, checkpoint: str | None, image_size: int | None = None) -> BackboneSpec:
    return vit_spec(create_timm_model("vit_base_patch16_224.augreg2_in21k_ft_in1k", pretrained, checkpoint,
                                      **_size(image_size)))

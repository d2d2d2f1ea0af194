"""timm Vision Transformers: stages ``blocks.0`` … ``blocks.N``; penultimate = norm → pool → fc_norm."""

from __future__ import annotations

import timm
from torch import nn

from ._registry import register_backbone, register_module_adapter
from ._timm import create_timm_model, timm_data_config
from .base import BackboneSpec, Stage


def _is_vit(m: nn.Module) -> bool:
    return isinstance(m, timm.models.VisionTransformer)


@register_module_adapter(_is_vit)
def vit_spec(model: nn.Module) -> BackboneSpec:
    model.reset_classifier(0)

    def embed(x):
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))

    def pre_logits(x):
        return model.forward_head(model.norm(x), pre_logits=True)

    stages = [Stage("embed", ["patch_embed", "patch_drop", "norm_pre"], embed, candidate=False,
                    out_channels=model.embed_dim)]
    stages += [Stage(f"blocks.{i}", [f"blocks.{i}"], blk, out_channels=model.embed_dim) for i, blk in enumerate(model.blocks)]
    has_cls = getattr(model, "cls_token", None) is not None
    return BackboneSpec(
        family="vit",
        model=model,
        stages=stages,
        pre_logits=pre_logits,
        pre_logits_modules=["norm", "fc_norm", "head_drop"],
        num_features=model.num_features,
        data_config=timm_data_config(model),
        layout="tokens",
        num_prefix_tokens=model.num_prefix_tokens,
        default_pooling="cls" if has_cls else "mean_tokens",
    )


@register_backbone("vit_b32", weights="timm vit_base_patch32_224.augreg_in21k_ft_in1k", description="ViT-B/32, 224 px")
def vit_b32(pretrained: bool, checkpoint: str | None) -> BackboneSpec:
    return vit_spec(create_timm_model("vit_base_patch32_224.augreg_in21k_ft_in1k", pretrained, checkpoint))


@register_backbone("vit_b16", weights="timm vit_base_patch16_224.augreg2_in21k_ft_in1k", description="ViT-B/16, 224 px")
def vit_b16(pretrained: bool, checkpoint: str | None) -> BackboneSpec:
    return vit_spec(create_timm_model("vit_base_patch16_224.augreg2_in21k_ft_in1k", pretrained, checkpoint))

"""open_clip CLIP image towers: stages ``transformer.resblocks.i``; penultimate = ln_post → pool → proj.

The text tower is kept outside the module tree (it is not part of the image classifier and not
counted as a parameter); it is used once to build zero-shot / text-initialised heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import open_clip
import torch
from torch import nn

from .._hub import hub_reachable, weights_error
from ._registry import register_backbone, register_module_adapter, register_prefix
from .base import BackboneSpec, Stage

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def create_clip_model(arch: str, tag: str | None, pretrained: bool, checkpoint: str | None = None) -> nn.Module:
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    if checkpoint:
        if not Path(checkpoint).expanduser().is_file():
            raise FileNotFoundError(f"checkpoint file not found: {checkpoint}")
        return open_clip.create_model(arch, pretrained=str(Path(checkpoint).expanduser()))
    if not pretrained:
        return open_clip.create_model(arch)
    tag = tag or "openai"
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch))
        raise ValueError(f"unknown pretrained tag {tag!r} for {arch!r}; valid tags: {tags}")
    source = f"hf-hub:{cfg['hf_hub']}" if cfg.get("hf_hub") else cfg.get("url", f"{arch}/{tag}")
    hint = "checkpoint=PATH (CLI: --checkpoint PATH) with the downloaded open_clip weights file"
    if not hub_reachable():
        raise weights_error(f"open_clip {arch}/{tag}", source, "the model hub is not reachable", hint)
    try:
        return open_clip.create_model(arch, pretrained=tag)
    except (OSError, RuntimeError) as e:
        raise weights_error(f"open_clip {arch}/{tag}", source, f"{type(e).__name__}: {e}", hint) from e


def _is_clip(m: nn.Module) -> bool:
    if isinstance(m, (open_clip.CLIP, open_clip.CustomTextCLIP)):
        return isinstance(m.visual, open_clip.transformer.VisionTransformer)
    return isinstance(m, open_clip.transformer.VisionTransformer)


def _batch_first_block(block: nn.Module, batch_first: bool):
    if batch_first:
        return block
    return lambda x: block(x.transpose(0, 1)).transpose(0, 1)


@register_module_adapter(_is_clip)
def clip_spec(model: nn.Module, arch: str | None = None) -> BackboneSpec:
    visual = model if isinstance(model, open_clip.transformer.VisionTransformer) else model.visual
    width = visual.conv1.out_channels
    batch_first = getattr(visual.transformer, "batch_first", True)

    def pre_logits(x):
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

    stages = [Stage("embed", ["conv1", "patch_dropout", "ln_pre"], visual._embeds, candidate=False, out_channels=width)]
    stages += [
        Stage(f"transformer.resblocks.{i}", [f"transformer.resblocks.{i}"], _batch_first_block(blk, batch_first),
              out_channels=width)
        for i, blk in enumerate(visual.transformer.resblocks)
    ]
    extras = {}
    if visual is not model:
        extras["encode_text"] = _text_encoder(model, arch)
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    pre = open_clip.get_model_preprocess_cfg(model) if visual is not model else {}
    data_config = {
        "input_size": (3, size, size),
        "mean": tuple(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        "std": tuple(pre.get("std", open_clip.OPENAI_DATASET_STD)),
        "interpolation": pre.get("interpolation", "bicubic"),
        "crop_pct": 1.0,
    }
    num_features = visual.proj.shape[1] if visual.proj is not None else width
    return BackboneSpec(
        family="clip",
        model=visual,
        stages=stages,
        pre_logits=pre_logits,
        pre_logits_modules=["ln_post"],
        num_features=num_features,
        data_config=data_config,
        layout="tokens",
        num_prefix_tokens=1,
        default_pooling="cls",
        extras=extras,
    )


def _text_encoder(model: nn.Module, arch: str | None):
    holder = (model,)  # a tuple keeps the text tower out of the module tree

    def encode_text(class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
        """(num_features, K) normalised class embeddings averaged over prompt templates."""
        clip = holder[0]
        tokenizer = open_clip.get_tokenizer(arch) if arch else open_clip.tokenizer.tokenize
        device = next(clip.visual.parameters()).device
        return open_clip.build_zero_shot_classifier(
            clip, tokenizer=tokenizer, classnames=list(class_names), templates=list(templates), device=device,
            use_tqdm=False,
        )

    return encode_text


@register_prefix("open_clip")
def _open_clip_passthrough(name: str, pretrained: bool, checkpoint: str | None) -> BackboneSpec:
    """``open_clip:<arch>/<tag>`` e.g. ``open_clip:ViT-B-16/laion2b_s34b_b88k``."""
    arch, _, tag = name.partition("/")
    return clip_spec(create_clip_model(arch, tag or None, pretrained, checkpoint), arch)


@register_backbone("clip_vit_b32", weights="open_clip ViT-B-32 / openai", description="CLIP ViT-B/32 image tower")
def clip_vit_b32(pretrained: bool, checkpoint: str | None) -> BackboneSpec:
    return clip_spec(create_clip_model("ViT-B-32", "openai", pretrained, checkpoint), "ViT-B-32")

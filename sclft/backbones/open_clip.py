"""open_clip CLIP image towers: stages ``transformer.resblocks.i``; penultimate = ln_post → pool → proj.

The text tower is kept outside the module tree (it is not part of the image classifier and not
counted as a parameter); it is used once to build zero-shot / text-initialised heads.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .._hub import hub_reachable, weights_error
from ..errors import MissingFileError, UsageError
from ._hub_cache import cached_hub_file
from ._registry import register_backbone, register_module_adapter, register_prefix
from .base import BackboneSpec, Stage

DEFAULT_TEMPLATES = ("a photo of a {}.",)
DEFAULT_TAG = "openai"


def _open_clip():
    """open_clip, imported on first use: it takes about a second and brings transformers along, and a run on
    any other backbone never needs it."""
    return importlib.import_module("open_clip")


def uses_quick_gelu(arch: str, tag: str | None) -> bool:
    """Whether the weights of ``arch``/``tag`` were trained with QuickGELU (open_clip's pretrained cfg;
    ``-quickgelu`` architectures set it in their model config). open_clip 3.x only *warns* when a
    model is built with plain GELU for such weights, so it is forced here. No tag: the default tag's."""
    cfg = _open_clip().get_pretrained_cfg(arch, tag or DEFAULT_TAG) or {}
    return bool(cfg.get("quick_gelu"))


def _cached_weights(cfg: dict) -> str | None:
    """The tag's weights file in the local Hugging Face cache (the names open_clip downloads), if there."""
    if not cfg.get("hf_hub"):
        return None
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME  # open_clip loads only for CLIP (seconds)

    repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" (default file names) or "org/repo/file.bin"
    if not filename:
        files = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    else:
        stem, ext = os.path.splitext(filename)
        files = ([stem + ".safetensors"] if ext in (".bin", ".pth") else []) + [filename]
    return cached_hub_file(repo, files)


def create_clip_model(arch: str, tag: str | None, pretrained: bool, checkpoint: str | None = None,
                      image_size: int | None = None) -> nn.Module:
    """open_clip CLIP built as the weights need it (QuickGELU where the tag says so) and, with
    ``image_size``, for that input size (``force_image_size``; pretrained position embeddings resampled)."""
    oc = _open_clip()
    if arch not in oc.list_models():
        raise UsageError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    kwargs = {"force_quick_gelu": uses_quick_gelu(arch, tag)}
    if image_size:
        kwargs["force_image_size"] = image_size
    if checkpoint:
        if not Path(checkpoint).expanduser().is_file():
            raise MissingFileError(f"checkpoint file not found: {checkpoint}")
        return oc.create_model(arch, pretrained=str(Path(checkpoint).expanduser()), **kwargs)
    if not pretrained:
        return oc.create_model(arch, **kwargs)
    tag = tag or DEFAULT_TAG
    cfg = oc.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(oc.list_pretrained_tags_by_model(arch))
        raise UsageError(f"unknown pretrained tag {tag!r} for {arch!r}; valid tags: {tags}")
    source = f"hf-hub:{cfg['hf_hub']}" if cfg.get("hf_hub") else cfg.get("url", f"{arch}/{tag}")
    hint = "checkpoint=PATH (CLI: --checkpoint PATH) with the downloaded open_clip weights file"
    if not hub_reachable():
        cached = _cached_weights(cfg)
        if cached is None:
            raise weights_error(f"open_clip {arch}/{tag}", source,
                                "the model hub is not reachable and the weights are not cached", hint)
        preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        return oc.create_model(arch, pretrained=cached, force_preprocess_cfg=preprocess, **kwargs)
    try:
        return oc.create_model(arch, pretrained=tag, **kwargs)
    except (OSError, RuntimeError) as e:
        raise weights_error(f"open_clip {arch}/{tag}", source, f"{type(e).__name__}: {e}", hint) from e


def _is_clip(m: nn.Module) -> bool:
    oc = sys.modules.get("open_clip")
    if oc is None:  # an open_clip model exists only once open_clip is imported: no need to import it to say no
        return False
    if isinstance(m, (oc.CLIP, oc.CustomTextCLIP)):
        return isinstance(m.visual, oc.transformer.VisionTransformer)
    return isinstance(m, oc.transformer.VisionTransformer)


def _embed(visual: nn.Module, x):
    return visual._embeds(x)


def _block(path: str, batch_first: bool, visual: nn.Module, x):
    block = visual.get_submodule(path)
    return block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)


def _pre_logits(visual: nn.Module, x):
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


@register_module_adapter(_is_clip)
def clip_spec(model: nn.Module, arch: str | None = None) -> BackboneSpec:
    oc = _open_clip()
    visual = model if isinstance(model, oc.transformer.VisionTransformer) else model.visual
    width = visual.conv1.out_channels
    batch_first = getattr(visual.transformer, "batch_first", True)

    stages = [Stage("embed", ["conv1", "patch_dropout", "ln_pre"], _embed, candidate=False, out_channels=width)]
    stages += [
        Stage(f"transformer.resblocks.{i}", [f"transformer.resblocks.{i}"],
              partial(_block, f"transformer.resblocks.{i}", batch_first), out_channels=width)
        for i in range(len(visual.transformer.resblocks))
    ]
    extras = {}
    if visual is not model:
        extras["encode_text"] = TextEncoder(model, arch)
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    pre = oc.get_model_preprocess_cfg(model) if visual is not model else {}
    data_config = {
        "input_size": (3, size, size),
        "mean": tuple(pre.get("mean", oc.OPENAI_DATASET_MEAN)),
        "std": tuple(pre.get("std", oc.OPENAI_DATASET_STD)),
        "interpolation": pre.get("interpolation", "bicubic"),
        "crop_pct": 1.0,
    }
    num_features = visual.proj.shape[1] if visual.proj is not None else width
    return BackboneSpec(
        family="clip",
        model=visual,
        stages=stages,
        pre_logits=_pre_logits,
        pre_logits_modules=["ln_post"],
        num_features=num_features,
        data_config=data_config,
        layout="tokens",
        num_prefix_tokens=1,
        default_pooling="cls",
        extras=extras,
    )


class TextEncoder:
    """``encode_text(class_names, templates)`` → (num_features, K) normalised class embeddings, averaged
    over the prompt templates (open_clip's ``build_zero_shot_classifier``). The CLIP model is held in a
    tuple, outside the module tree; deep copies and pickles carry it along (sharing the copied tower)."""

    def __init__(self, clip: nn.Module, arch: str | None):
        self._clip = (clip,)
        self.arch = arch

    @property
    def clip(self) -> nn.Module:
        return self._clip[0]

    def tokenizer(self):
        oc = _open_clip()
        return oc.get_tokenizer(self.arch) if self.arch else oc.tokenizer.tokenize

    def __call__(self, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
        device = next(self.clip.visual.parameters()).device
        return _open_clip().build_zero_shot_classifier(
            self.clip, tokenizer=self.tokenizer(), classnames=list(class_names), templates=list(templates),
            device=device, use_tqdm=False,
        )


@register_prefix("open_clip")
def _open_clip_passthrough(name: str, pretrained: bool, checkpoint: str | None,
                           image_size: int | None = None) -> BackboneSpec:
    """``open_clip:<arch>/<tag>`` e.g. ``open_clip:ViT-B-16/laion2b_s34b_b88k`` (no tag: ``openai``)."""
    arch, _, tag = name.partition("/")
    return clip_spec(create_clip_model(arch, tag or None, pretrained, checkpoint, image_size), arch)


@register_backbone("clip_vit_b32", weights="open_clip ViT-B-32 / openai (QuickGELU)",
                   description="CLIP ViT-B/32 image tower")
def clip_vit_b32(pretrained: bool, checkpoint: str | None, image_size: int | None = None) -> BackboneSpec:
    return clip_spec(create_clip_model("ViT-B-32", "openai", pretrained, checkpoint, image_size), "ViT-B-32")

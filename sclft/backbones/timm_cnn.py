"""Convolutional families: ResNets (timm and torchvision) and timm EfficientNets."""

from __future__ import annotations

from functools import partial

import timm
import torchvision
from timm.data.constants import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ._registry import register_backbone, register_module_adapter
from ._timm import create_timm_model, timm_data_config
from .base import BackboneSpec, Stage, submodule

# torchvision's ImageNet preprocessing (bilinear, 224 px), with timm's constants
IMAGENET_DATA_CONFIG = {
    "input_size": (3, 224, 224),
    "mean": IMAGENET_DEFAULT_MEAN,
    "std": IMAGENET_DEFAULT_STD,
    "interpolation": "bilinear",
    "crop_pct": DEFAULT_CROP_PCT,
}


def _out_channels(block: nn.Module) -> int:
    """Channels a conv block emits: its last BatchNorm outside the shortcut path."""
    norms = [m for n, m in block.named_modules() if isinstance(m, nn.BatchNorm2d) and "downsample" not in n]
    return norms[-1].num_features


def _global_avg(model, x):
    return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------- ResNet
def _resnet_stem(act_name: str, model: nn.Module, x):
    return model.maxpool(getattr(model, act_name)(model.bn1(model.conv1(x))))


def _is_resnet(m: nn.Module) -> bool:
    return isinstance(m, (timm.models.ResNet, torchvision.models.ResNet))


@register_module_adapter(_is_resnet)
def resnet_spec(model: nn.Module) -> BackboneSpec:
    """Stages ``stem``, ``layer1.0`` … ``layer4.N``; penultimate = global average of layer4."""
    is_timm = isinstance(model, timm.models.ResNet)
    if is_timm:
        model.reset_classifier(0)
        act_name = "act1"
    else:
        model.fc = nn.Identity()
        act_name = "relu"
    stages = [Stage("stem", ["conv1", "bn1", act_name, "maxpool"], partial(_resnet_stem, act_name),
                    out_channels=model.bn1.num_features)]
    for li in range(1, 5):
        layer = getattr(model, f"layer{li}")
        for j, block in enumerate(layer):
            stages.append(Stage(f"layer{li}.{j}", [f"layer{li}.{j}"], submodule(f"layer{li}.{j}"),
                                out_channels=_out_channels(block)))
    return BackboneSpec(
        family="resnet",
        model=model,
        stages=stages,
        pre_logits=_global_avg,
        pre_logits_modules=[],
        num_features=stages[-1].out_channels,
        data_config=timm_data_config(model) if is_timm else dict(IMAGENET_DATA_CONFIG),
        layout="conv",
    )


@register_backbone("resnet18", weights="timm resnet18.tv_in1k (torchvision ImageNet-1k)", description="ResNet-18")
def resnet18(pretrained: bool, checkpoint: str | None, image_size: int | None = None) -> BackboneSpec:
    return resnet_spec(create_timm_model("resnet18.tv_in1k", pretrained, checkpoint))


@register_backbone("resnet50", weights="timm resnet50.tv_in1k (torchvision ImageNet-1k)", description="ResNet-50")
def resnet50(pretrained: bool, checkpoint: str | None, image_size: int | None = None) -> BackboneSpec:
    return resnet_spec(create_timm_model("resnet50.tv_in1k", pretrained, checkpoint))


# ---------------------------------------------------------------------------------------- EfficientNet
def _efficientnet_stem(model: nn.Module, x):
    return model.bn1(model.conv_stem(x))


def _efficientnet_head(model: nn.Module, x):
    return model.bn2(model.conv_head(x))


def _is_efficientnet(m: nn.Module) -> bool:
    return isinstance(m, timm.models.EfficientNet)


@register_module_adapter(_is_efficientnet)
def efficientnet_spec(model: nn.Module) -> BackboneSpec:
    """Stages ``stem``, ``blocks.i.j`` (every inverted-residual block), ``conv_head``."""
    model.reset_classifier(0)
    stages = [Stage("stem", ["conv_stem", "bn1"], _efficientnet_stem, out_channels=model.bn1.num_features)]
    for i, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            stages.append(Stage(f"blocks.{i}.{j}", [f"blocks.{i}.{j}"], submodule(f"blocks.{i}.{j}"),
                                out_channels=_out_channels(block)))
    stages.append(Stage("conv_head", ["conv_head", "bn2"], _efficientnet_head, out_channels=model.num_features))
    return BackboneSpec(
        family="efficientnet",
        model=model,
        stages=stages,
        pre_logits=_global_avg,
        pre_logits_modules=[],
        num_features=model.num_features,
        data_config=timm_data_config(model),
        layout="conv",
    )

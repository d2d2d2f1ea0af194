"""Backbone registry: short names, ``family:`` pass-through prefixes, and adoption of user modules."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..errors import MissingFileError, UsageError
from .base import Backbone, BackboneSpec

# (pretrained, checkpoint, image_size) -> spec; ``image_size`` (None: the family's default) is the input side the
# model is built for (ViT position embeddings, CLIP); CNNs take any size and ignore it
SpecFactory = Callable[[bool, "str | None", "int | None"], BackboneSpec]


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    factory: SpecFactory
    weights: str  # what ``pretrained=True`` loads, shown by ``sclft list backbones``
    description: str = ""


_BACKBONES: dict[str, BackboneEntry] = {}
# prefix -> fn(rest_of_name, pretrained, checkpoint, image_size) -> spec
# ("timm:resnet34", "open_clip:ViT-B-16/openai")
_PREFIXES: dict[str, Callable[..., BackboneSpec]] = {}
# adapters for an nn.Module the user built: (matches(module), to_spec(module)) tried in order
_MODULE_ADAPTERS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module], BackboneSpec]]] = []


def register_backbone(name: str, weights: str, description: str = ""):
    """Decorator registering a spec factory under a short name."""

    def deco(factory: SpecFactory) -> SpecFactory:
        if name in _BACKBONES:
            raise UsageError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = BackboneEntry(name, factory, weights, description)
        return factory

    return deco


def register_prefix(prefix: str):
    """Decorator registering the spec factory of a ``prefix:NAME`` family (``timm:resnet34``)."""

    def deco(fn):
        if prefix in _PREFIXES:
            raise UsageError(f"backbone prefix {prefix!r} is already registered")
        _PREFIXES[prefix] = fn
        return fn

    return deco


def register_module_adapter(matches: Callable[[nn.Module], bool]):
    """Decorator registering how to adapt a module for which ``matches(module)`` is true."""

    def deco(to_spec: Callable[[nn.Module], BackboneSpec]):
        if any(m is matches for m, _ in _MODULE_ADAPTERS):
            raise UsageError(f"a module adapter for {getattr(matches, '__name__', matches)!r} is already registered")
        _MODULE_ADAPTERS.append((matches, to_spec))
        return to_spec

    return deco


def spec_from_module(module: nn.Module) -> BackboneSpec:
    """Adapt a model built with timm / torchvision / open_clip (its classifier is dropped)."""
    for matches, to_spec in _MODULE_ADAPTERS:
        if matches(module):
            return to_spec(module)
    raise UsageError(
        f"cannot adapt a {type(module).__name__}: supported modules are timm/torchvision ResNets, "
        "timm EfficientNets, timm VisionTransformers and open_clip CLIP models (or their .visual tower)"
    )


def list_backbones() -> list[str]:
    """Registered short names (pass-through prefixes ``timm:<name>`` and ``open_clip:<arch>/<tag>`` also work)."""
    return sorted(_BACKBONES)


def backbone_entries() -> list[BackboneEntry]:
    return [_BACKBONES[n] for n in list_backbones()]


def check_weights_file(checkpoint: str) -> Path:
    """``--checkpoint``: an existing file that safetensors or ``torch.load(weights_only=True)`` reads (only its
    header: a zip checkpoint is memory-mapped). Anything else — random bytes, a pickle that would run code — is bad
    input, said without torch's own text, which advises the unsafe ``weights_only=False``."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise MissingFileError(f"--checkpoint {path}: no such file")
    try:
        with safe_open(str(path), framework="pt"):
            return path
    except Exception:  # noqa: BLE001 -- not a safetensors file: try a PyTorch state dict
        pass
    try:
        with warnings.catch_warnings():  # torch's notes on the pickle protocol of a file refused next anyway
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 -- unpickling, zip and EOF errors alike: the file is not loadable weights
        raise UsageError(f"--checkpoint {path}: not weights sclft can load safely ({type(e).__name__}); give a "
                         ".safetensors file or a PyTorch state dict of tensors (.pth/.bin)") from None
    return path
def create_backbone(
    name_or_module: str | nn.Module | Backbone,
    pretrained: bool = True,
    checkpoint: str | None = None,
    image_size: int | None = None,
) -> Backbone:
    """Build a :class:`Backbone` from a short name, ``prefix:name``, or a timm/torchvision/open_clip module.

    ``image_size``: the input side the model is built for (Vision Transformers and CLIP are created for
    it, pretrained position embeddings resampled; CNNs take any size). ``data_config["input_size"]``
    follows it. Modules you built are taken as they are.
    """
    if isinstance(name_or_module, Backbone):
        return name_or_module
    if isinstance(name_or_module, nn.Module):
        return Backbone(type(name_or_module).__name__, spec_from_module(name_or_module))
    name = str(name_or_module)
    if checkpoint:
        check_weights_file(checkpoint)
    spec = None
    if name in _BACKBONES:
        spec = _BACKBONES[name].factory(pretrained, checkpoint, image_size)
    prefix, sep, rest = name.partition(":")
    if spec is None and sep and prefix in _PREFIXES:
        spec = _PREFIXES[prefix](rest, pretrained, checkpoint, image_size)
    if spec is not None:
        if image_size is not None:
            spec.data_config["input_size"] = (3, image_size, image_size)
        backbone = Backbone(name, spec)
        backbone.image_size = image_size
        return backbone
    raise UsageError(
        f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())} "
        f"(or a pass-through name: {', '.join(p + ':<name>' for p in sorted(_PREFIXES))})"
    )

"""``TransferModel``: a backbone, a strategy and a head — and :func:`wrap`, the three-line entry point."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from .backbones import Backbone, create_backbone
from .data import build_transforms
from .errors import UsageError
from .predict import predict_images
from .strategies import StrategyConfig, get_strategy, strategy_config


class TransferModel(nn.Module):
    """Backbone + head, with only the strategy's parts trainable.

    ``forward(x) == forward_from_frozen(frozen_forward(x))``; the frozen half runs under ``no_grad``
    and can be cached when the input transform has no randomness.

    ``strategy`` is a registered name with the strategy's options as keywords (``fuse="concat"``) or a
    :class:`~sclft.strategies.StrategyConfig` instance (``SCLFTConfig(fuse="concat")``).
    """

    def __init__(
        self,
        backbone: Backbone,
        strategy: str | StrategyConfig = "scl_ft",
        num_classes: int = 10,
        layer: str | None = None,
        class_names: list[str] | None = None,
        **strategy_options: Any,
    ):
        super().__init__()
        _check_num_classes(num_classes)
        config = strategy_config(strategy, **strategy_options)
        if config.uses_layer and layer is None:
            raise UsageError(
                f"strategy {config.name!r} tunes one block: pass layer=NAME; valid layers: {', '.join(backbone.blocks)}"
            )
        self.backbone = backbone
        self.strategy = get_strategy(config.name)(backbone, layer, config)
        self.strategy.attach(backbone)  # e.g. lora: peft adapters into the backbone's modules
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else None
        self.head = self.strategy.build_head(backbone, num_classes, self.class_names)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for p in self.strategy.trainable_backbone_parameters(self.backbone):
            p.requires_grad_(True)
        self.train()

    # ------------------------------------------------------------------ description
    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    @property
    def layer(self) -> str | None:
        return self.strategy.layer

    @property
    def blocks(self) -> list[str]:
        """Ordered candidate block names of the backbone."""
        return self.backbone.blocks

    def parameter_summary(self) -> dict[str, float]:
        """Trainable and total parameter counts (backbone without its original classifier, plus our head)."""
        params = {id(p): p for p in self.parameters()}.values()
        total = sum(p.numel() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total}

    def config(self) -> dict:
        """What is needed to rebuild this model (stored beside checkpoints)."""
        return {
            "backbone": self.backbone.name,
            "image_size": self.backbone.image_size,  # the input size the backbone was built for (None: its default)
            "strategy": self.strategy.name,
            "layer": self.layer,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "strategy_options": self.strategy.options(),
        }

    # ------------------------------------------------------------------ inference
    @property
    def transform(self):
        """The eval transform of this model's input (PIL RGB image → normalised ``(3, S, S)`` tensor): the one
        it was trained and evaluated with (``sclft.data.build_transforms`` of the backbone's ``data_config``)."""
        if self.__dict__.get("_transform") is None:
            self._transform = build_transforms(self.backbone.data_config)[1]
        return self._transform

    def predict(self, images, top_k: int = 5, batch_size: int = 64) -> list[dict]:
        """Top-k class names and probabilities, one ``{"label", "prob", "index"}`` per image; ``images``: PIL
        images, paths, ``(3, S, S)`` tensors already transformed (``S``: the input size of the run, as
        ``self.transform`` makes them), or an ``(N, 3, S, S)`` batch (see :mod:`sclft.predict`)."""
        return predict_images(self, images, top_k=top_k, batch_size=batch_size)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> TransferModel:
        """Frozen backbone parts always stay in eval mode (BatchNorm statistics and dropout frozen)."""
        super().train(mode)
        if self.strategy.freezes_backbone:
            self.backbone.eval()
            for m in self.strategy.trainable_backbone_modules(self.backbone):
                m.train(mode)
        return self

    # ------------------------------------------------------------------ forward
    def frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The part of the forward pass in which nothing trains (cacheable)."""
        if not self.strategy.has_frozen_prefix:
            return x
        with torch.no_grad():
            return self.strategy.frozen_forward(self.backbone, x)

    def features_from_frozen(self, z: torch.Tensor) -> torch.Tensor:
        """Frozen activation → the head's input feature."""
        return self.strategy.tail_forward(self.backbone, z)

    def forward_from_frozen(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features_from_frozen(z))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input feature ("penultimate" for NC1), including the SCL skip."""
        return self.features_from_frozen(self.frozen_forward(x))

    def forward(self, x: torch.Tensor, from_frozen: bool = False) -> torch.Tensor:
        """Logits; ``from_frozen=True`` takes a cached ``frozen_forward`` activation instead of images."""
        return self.head(self.features_from_frozen(x) if from_frozen else self.forward_features(x))


def _check_num_classes(num_classes: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise UsageError(f"num_classes must be an integer >= 2 (the size of the new head), got {num_classes!r}")


def wrap(
    backbone: str | nn.Module,
    strategy: str | StrategyConfig = "scl_ft",
    num_classes: int = 10,
    layer: str | None = None,
    pretrained: bool = True,
    checkpoint: str | None = None,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    **strategy_options: Any,
) -> TransferModel:
    """Wrap a backbone (registry name, ``timm:``/``open_clip:`` name, or your own timm/torchvision/open_clip
    module) with a transfer strategy (a name plus its options as keywords, or a ``StrategyConfig``) and a new
    ``num_classes`` head. ``image_size`` builds a ViT / CLIP for that input side (see :func:`sclft.create_backbone`).

    >>> model = wrap("resnet50", strategy="scl_ft", num_classes=10, layer="layer3.0", pretrained=False)
    """
    _check_num_classes(num_classes)  # before the backbone is built (or downloaded)
    return TransferModel(
        create_backbone(backbone, pretrained=pretrained, checkpoint=checkpoint, image_size=image_size),
        strategy=strategy,
        num_classes=num_classes,
        layer=layer,
        class_names=class_names,
        **strategy_options,
    )

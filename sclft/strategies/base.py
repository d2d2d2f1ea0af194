"""What a strategy decides: which parameters train, and how features flow to the head.

Every strategy splits the forward pass in two: ``frozen_forward`` (no parameters train; runs under
``torch.no_grad`` and, without random augmentation, is the same every epoch — the part that can be
cached) and ``tail_forward`` (from that activation to the head's input feature).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..backbones import Backbone
from ..errors import UsageError
from .config import StrategyConfig


class Strategy:
    """Model side of a strategy, built from its config: ``Strategy(backbone, layer, config)``.

    Subclasses set ``config_class`` (their registered :class:`StrategyConfig`); ``name``, ``description``,
    ``uses_layer`` and ``has_frozen_prefix`` are copied from it, so class-level questions keep working.
    """

    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = False  # needs a block name
    has_frozen_prefix: ClassVar[bool] = True  # frozen_forward does real (cacheable) work
    freezes_backbone: ClassVar[bool] = True  # backbone in eval mode except the tuned block
    reshapes_head_input: ClassVar[bool] = False  # head input != the backbone's penultimate feature

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "config_class" not in cls.__dict__:
            return  # an abstract intermediate class such as BlockStrategy
        c = cls.config_class
        cls.name, cls.description, cls.uses_layer = c.name, c.description, c.uses_layer
        cls.has_frozen_prefix = c.cache_scope != "none"

    def __init__(self, backbone: Backbone, layer: str | None = None, config: StrategyConfig | None = None,
                 **options):
        if config is None:
            config = self.config_class.from_options(options)
        elif options:
            raise UsageError(f"pass the options of {self.name!r} in its config or as keywords, not both")
        elif not isinstance(config, self.config_class):
            raise TypeError(f"strategy {self.name!r} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config.validate()
        self.layer = backbone.check_block(layer) if self.uses_layer else None
        self.has_frozen_prefix = config.frozen_scope() != "none"  # options may change the class's cache_scope

    def attach(self, backbone: Backbone) -> None:
        """Change the backbone's modules (e.g. insert adapters); :class:`~sclft.model.TransferModel` calls it
        once, before building the head. Constructing a strategy alone (a config check) must not change it."""

    # --------------------------------------------------------------- parameters
    def trainable_backbone_parameters(self, backbone: Backbone) -> Iterable[nn.Parameter]:
        return []

    def trainable_backbone_modules(self, backbone: Backbone) -> list[nn.Module]:
        """Backbone modules that run in training mode (the rest stay in eval mode)."""
        return []

    def head_in_features(self, backbone: Backbone) -> int:
        return backbone.num_features

    def build_head(self, backbone: Backbone, num_classes: int, class_names: list[str] | None) -> nn.Module:
        return nn.Linear(self.head_in_features(backbone), num_classes)

    # --------------------------------------------------------------- forward
    def frozen_forward(self, backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tail_forward(self, backbone: Backbone, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict:
        """Options needed to rebuild this strategy (saved with checkpoints)."""
        return self.config.options()

    def cache_part(self) -> str:
        """What the cacheable ``frozen_forward`` activation is, for cache keys (see ``cache_scope``)."""
        scope = self.config.frozen_scope()
        return f"prefix:{self.layer}" if scope == "prefix" else scope

    # --------------------------------------------------------------- trainer hooks
    def lr_scales(self) -> dict[int, float]:
        """Learning-rate multipliers by ``id(parameter)`` for parameters that train at another step than the
        run's ``lr`` (Deep LoRA's outer factors at γ); the rest train at 1×."""
        return {}

    def optimizer_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the run's AdamW (Deep LoRA: the reference's ``eps``)."""
        return {}

    def init_from_data(self, first_loss: Callable[[], torch.Tensor]) -> None:
        """Data-dependent init before the first update of a new run (not on resume); ``first_loss()`` computes
        the training loss of the first batch (Deep LoRA: its outer factors from that gradient)."""

    def merge(self, backbone: Backbone) -> None:
        """Fold the strategy's trained updates into the backbone's own weights, leaving plain modules (for
        ``sclft export``); the forward must not change beyond rounding. Default: nothing to fold."""

    def export(self, backbone: Backbone, directory: Path, head: nn.Module | None = None,
               base_model: str | None = None) -> list[str]:
        """Write extra files beside ``model.safetensors`` (``lora``: a peft adapter with ``head`` and the name of
        the frozen weights, ``base_model``); returns their names."""
        return []

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}(layer={self.layer!r}{', ' + opts if opts else ''})"


class BlockStrategy(Strategy):
    """Strategies that tune one block: frozen prefix → tuned block → frozen suffix."""

    uses_layer = True

    def trainable_backbone_parameters(self, backbone):
        return backbone.block_parameters(self.layer)

    def trainable_backbone_modules(self, backbone):
        return backbone.block_modules(self.layer)

    def frozen_forward(self, backbone, x):
        return backbone.forward_prefix(x, self.layer)

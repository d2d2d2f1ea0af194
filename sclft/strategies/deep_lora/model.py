"""Deep LoRA: every target layer's update is a compressed three-factor deep linear network (``DeepLoRALayer``);
the outer factors come from the first batch's gradient (``init_from_data``, called by the trainer before the
first update) and train at γ times the learning rate (``lr_scales``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...errors import UsageError
from .._adapters import AdapterStrategy, replace_module
from .config import DEFAULT_TARGETS, DeepLoRAConfig
from .layer import SUPPORTED, DeepLoRALayer


class DeepLoRA(AdapterStrategy):
    config_class = DeepLoRAConfig
    default_targets = DEFAULT_TARGETS
    target_kinds = SUPPORTED

    def __init__(self, backbone, layer=None, config=None, **options):
        super().__init__(backbone, layer, config, **options)
        self.targets = {p: m for p, m in self.targets.items() if getattr(m, "groups", 1) == 1}  # depthwise: frozen
        for path in self.targets:
            parent_path = path.rpartition(".")[0]
            if parent_path and isinstance(backbone.model.get_submodule(parent_path), nn.MultiheadAttention):
                raise UsageError(f"deep_lora: {path} is inside nn.MultiheadAttention, which does not call its "
                                 "forward; target the MLP layers instead")
        if not self.targets:
            raise UsageError("deep_lora: no ungrouped Linear/Conv2d layer among the targets")
        self.layers: list[DeepLoRALayer] = []

    def attach(self, backbone):
        for path, module in sorted(self.targets.items()):
            wrapped = DeepLoRALayer(module, self.config.r, self.config.eps, compressed=True)
            wrapped.gradient_init = self.config.init == "gradient"
            replace_module(backbone.model, path, wrapped)
            self.layers.append(wrapped)

    def init_from_data(self, first_loss: Callable[[], torch.Tensor]) -> None:
        """``init="gradient"``: one backward of the first batch's loss through every layer's full-width ΔW(0)
        (a leaf per layer, :meth:`DeepLoRALayer.start_probe`), then ``U``, ``V`` from its gradient."""
        pending = [layer for layer in self.layers if layer.gradient_init]
        if not pending:
            return
        probes = [layer.start_probe() for layer in pending]
        try:
            with torch.enable_grad():
                grads = torch.autograd.grad(first_loss(), probes)
        finally:
            for layer in pending:
                layer.probe = None
        for layer, grad in zip(pending, grads):
            layer.init_from_gradient(grad)

    def merge(self, backbone):
        """Each ``DeepLoRALayer`` replaced by its base layer with the weight ``W₀ + ΔW``."""
        for path, layer in [(n, m) for n, m in backbone.model.named_modules() if isinstance(m, DeepLoRALayer)]:
            base = layer.base_layer
            with torch.no_grad():
                base.weight.add_(layer.delta_weight().to(base.weight.dtype))
            replace_module(backbone.model, path, base)
        self.layers = []

    def trainable_backbone_parameters(self, backbone):
        return [p for layer in self.layers for p in layer.factors]

    def lr_scales(self):
        return {id(p): self.config.gamma for layer in self.layers for p in layer.outer}

    def optimizer_options(self):
        return {"eps": self.config.adam_eps}

    def build_head(self, backbone, num_classes, class_names):
        head = super().build_head(backbone, num_classes, class_names)
        head.requires_grad_(self.config.train_head)  # false: the reference's frozen head
        return head

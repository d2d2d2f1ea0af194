"""The one interface every backbone family implements: an ordered chain of named stages.

A backbone is run as ``x → stage_0 → stage_1 → … → stage_n → pre_logits → penultimate feature``.
Each stage is a named unit (``stem``, ``layer3.0``, ``blocks.5`` …) that owns some sub-modules of the
wrapped model; the candidate blocks for Layer FT / SCL-FT and the probe points are stages. Strategies
only ever call :meth:`forward_prefix`, :meth:`forward_block`, :meth:`forward_suffix`, :meth:`pool` —
so a new family is one file that builds its stage list, and no strategy changes.

Stage functions receive the wrapped model: ``fn(model, x)`` (module-level functions, or
``functools.partial`` of them, e.g. :func:`submodule`). They hold no reference to a model instance,
so a :class:`Backbone` deep-copies (EMA / SWA copies) and pickles into an independent model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
from torch import nn

from ..errors import UsageError

Layout = Literal["conv", "tokens"]
# layout -> pooling mode -> fn(stage_output, num_prefix_tokens) -> (N, D)
POOLERS: dict[str, dict[str, Callable[[torch.Tensor, int], torch.Tensor]]] = {
    "conv": {
        "avg": lambda h, _: h.mean(dim=(2, 3)),
        "avg2x2": lambda h, _: nn.functional.adaptive_avg_pool2d(h, 2).flatten(1),
        "flatten": lambda h, _: h.flatten(1),
    },
    "tokens": {
        "cls": lambda h, _: h[:, 0],
        "mean_tokens": lambda h, p: h[:, p:].mean(dim=1),
        "flatten": lambda h, _: h.flatten(1),
    },
}


StageFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (wrapped model, input) -> output


def _call_submodule(path: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.get_submodule(path)(x)


def submodule(path: str) -> StageFn:
    """Stage function that runs the sub-module at ``path`` of the model it is given."""
    return partial(_call_submodule, path)


@dataclass
class Stage:
    """A named step of the chain: ``fn(model, h)`` maps the previous output to this stage's output."""

    name: str
    modules: list[str]  # sub-module paths (relative to Backbone.model) this stage owns
    fn: StageFn
    candidate: bool = True  # a tunable block / probe point
    out_channels: int = 0  # channel / token width of the stage output


@dataclass
class BackboneSpec:
    """What a family module hands to :class:`Backbone`."""

    family: str
    model: nn.Module
    stages: list[Stage]
    pre_logits: StageFn  # (model, last stage output) -> penultimate feature
    pre_logits_modules: list[str]
    num_features: int
    data_config: dict
    layout: Layout
    num_prefix_tokens: int = 0
    default_pooling: str | None = None  # "avg" for conv, "cls" for tokens unless set
    extras: dict = field(default_factory=dict)


class Backbone(nn.Module):
    """A pretrained feature extractor seen as a chain of named stages (see module docstring)."""

    def __init__(self, name: str, spec: BackboneSpec):
        super().__init__()
        self.name = name
        self.family = spec.family
        self.model = spec.model
        self._stages = {s.name: s for s in spec.stages}
        self._order = [s.name for s in spec.stages]
        self._pre_logits = spec.pre_logits
        self.pre_logits_modules = list(spec.pre_logits_modules)
        self.num_features = spec.num_features
        self.data_config = dict(spec.data_config)
        self.layout = spec.layout
        self.num_prefix_tokens = spec.num_prefix_tokens
        self.default_pooling = spec.default_pooling or ("avg" if spec.layout == "conv" else "cls")
        self.extras = spec.extras
        self.image_size: int | None = None  # the input side it was built for, when one was asked for

    # ----------------------------------------------------------------- structure
    @property
    def blocks(self) -> list[str]:
        """Ordered candidate block names (tunable blocks and probe points)."""
        return [n for n in self._order if self._stages[n].candidate]

    def check_block(self, block: str) -> str:
        if block not in self._stages or not self._stages[block].candidate:
            raise UsageError(
                f"unknown layer {block!r} for backbone {self.name!r}; valid layers: {', '.join(self.blocks)}"
            )
        return block

    def block_modules(self, block: str) -> list[nn.Module]:
        return [self.model.get_submodule(p) if p else self.model for p in self._stages[self.check_block(block)].modules]

    def block_parameters(self, block: str) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for m in self.block_modules(block):
            for p in m.parameters():
                seen[id(p)] = p
        return list(seen.values())

    def block_width(self, block: str) -> int:
        """Width of the block's pooled output (channels for conv maps, token width for transformers)."""
        return self._stages[self.check_block(block)].out_channels

    # ----------------------------------------------------------------- running
    def _run(self, x: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        for n in names:
            x = self._stages[n].fn(self.model, x)
        return x

    def forward_prefix(self, x: torch.Tensor, block: str) -> torch.Tensor:
        """Input image → the input of ``block`` (outputs of all stages before it)."""
        i = self._order.index(self.check_block(block))
        return self._run(x, self._order[:i])

    def forward_block(self, h: torch.Tensor, block: str) -> torch.Tensor:
        return self._stages[self.check_block(block)].fn(self.model, h)

    def forward_suffix(self, h: torch.Tensor, block: str) -> torch.Tensor:
        """Output of ``block`` → penultimate feature (N, num_features)."""
        i = self._order.index(self.check_block(block))
        return self._pre_logits(self.model, self._run(h, self._order[i + 1 :]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input image → penultimate feature (N, num_features)."""
        return self._pre_logits(self.model, self._run(x, self._order))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def forward_all(
        self,
        x: torch.Tensor,
        pooling: str | None = None,
        only: Sequence[str] | None = None,
        penultimate: bool = True,
    ) -> dict[str, torch.Tensor]:
        """One pass returning the pooled output of every candidate block (or of ``only``) and the
        penultimate feature; with ``penultimate=False`` the pass stops after the last wanted block."""
        wanted = set(self.blocks if only is None else only)
        last = max((self._order.index(n) for n in wanted), default=-1)
        order = self._order if penultimate else self._order[: 1 + last]
        out: dict[str, torch.Tensor] = {}
        for n in order:
            x = self._stages[n].fn(self.model, x)
            if n in wanted:
                out[n] = self.pool(x, pooling)
        if penultimate:
            out["penultimate"] = self._pre_logits(self.model, x)
        return out

    # ----------------------------------------------------------------- pooling
    def pool(self, h: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Pool a stage output to one vector per sample (docs/design.md §1)."""
        mode = mode or self.default_pooling
        poolers = POOLERS[self.layout]
        if mode not in poolers:
            raise UsageError(
                f"pooling {mode!r} is not valid for a {self.layout} backbone; choose one of {sorted(poolers)}"
            )
        return poolers[mode](h, self.num_prefix_tokens)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, family={self.family!r}, blocks={len(self.blocks)}, "
                f"num_features={self.num_features}")

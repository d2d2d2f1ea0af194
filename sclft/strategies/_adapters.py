"""Model side shared by the adapter strategies (``lora``, ``deep_lora``): which blocks and which layers get an
adapter, and the frozen prefix that restricting them to "block k and after" leaves for the activation cache.

Target layers are named by their last path component(s) (``"qkv"``, ``"mlp.fc1"``) and looked up only inside
the chosen blocks; defaults come from the backbone family (each strategy's ``DEFAULT_TARGETS``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..backbones import Backbone
from ..errors import UsageError
from ._adapter_config import ALL_BLOCKS
from .base import Strategy


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``path`` of ``model`` (adapters wrapping a layer, merged layers unwrapping it)."""
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, child, new)


def resolve_blocks(backbone: Backbone, blocks: str) -> list[str]:
    """``"all"`` → every candidate block; a block name → that block and the ones after it."""
    if blocks == ALL_BLOCKS:
        return list(backbone.blocks)
    if blocks not in backbone.blocks:
        raise UsageError(f"unknown blocks={blocks!r} for backbone {backbone.name!r}; valid: {ALL_BLOCKS!r} or a "
                         f"start block: {', '.join(backbone.blocks)}")
    return backbone.blocks[backbone.blocks.index(blocks):]


def find_targets(backbone: Backbone, blocks: Sequence[str], targets: Sequence[str],
                 kinds: tuple[type[nn.Module], ...], method: str, strict: bool = True) -> dict[str, nn.Module]:
    """``{path relative to backbone.model: module}`` of the modules in ``blocks`` whose path ends with one of
    ``targets`` (whole components) and whose type is one of ``kinds``; an error if a target matches nothing
    (``strict``, for targets the user named) or if nothing matches at all."""
    names = {id(m): n for n, m in backbone.model.named_modules()}
    found: dict[str, nn.Module] = {}
    hits = dict.fromkeys(targets, 0)
    seen_leaves: set[str] = set()
    for block in blocks:
        for root in backbone.block_modules(block):
            prefix = names[id(root)]
            for sub, module in root.named_modules():
                path = ".".join(p for p in (prefix, sub) if p)
                if isinstance(module, kinds):
                    seen_leaves.add(path.rsplit(".", 1)[-1])
                for t in targets:
                    if (path == t or path.endswith("." + t)) and path not in found:
                        if not isinstance(module, kinds):
                            raise UsageError(f"{method}: target {t!r} matches {path} ({type(module).__name__}); "
                                             f"{method} adapts {', '.join(k.__name__ for k in kinds)} layers")
                        found[path] = module
                        hits[t] += 1
    missing = [t for t, n in hits.items() if n == 0]
    if (missing and strict) or not found:
        raise UsageError(f"{method}: target_modules {', '.join(missing)} match no layer in blocks "
                         f"{blocks[0]}…{blocks[-1]} of {backbone.name!r}; layer names there: "
                         f"{', '.join(sorted(seen_leaves)) or 'none'}")
    return found


def default_targets(backbone: Backbone, table: dict[str, tuple[str, ...]], method: str) -> tuple[str, ...]:
    """The family's default target names (some may be absent from a given model, e.g. conv3 in a ResNet-18)."""
    if backbone.family not in table:
        raise UsageError(f"{method} has no default target_modules for the {backbone.family!r} family; pass "
                         f"target_modules (families with defaults: {', '.join(sorted(table))})")
    return table[backbone.family]


class AdapterStrategy(Strategy):
    """Adapters inside blocks ≥ ``start``; the backbone stays in eval mode, only adapter weights (and the head)
    train. ``__init__`` only finds the targets (``self.targets``); :meth:`attach` inserts the adapters."""

    default_targets: dict[str, tuple[str, ...]] = {}
    target_kinds: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

    def __init__(self, backbone, layer=None, config=None, **options):
        super().__init__(backbone, layer, config, **options)
        chosen = resolve_blocks(backbone, self.config.blocks)
        self.start = None if self.config.blocks == ALL_BLOCKS else chosen[0]
        given = self.config.target_modules
        names = given or default_targets(backbone, self.default_targets, self.name)
        self.targets = find_targets(backbone, chosen, names, self.target_kinds, self.name, strict=given is not None)

    def cache_part(self) -> str:
        return f"prefix:{self.start}" if self.start else "none"

    def frozen_forward(self, backbone, x):
        return backbone.forward_prefix(x, self.start) if self.start else x

    def tail_forward(self, backbone, z):
        if self.start is None:
            return backbone.forward_features(z)
        return backbone.forward_suffix(backbone.forward_block(z, self.start), self.start)

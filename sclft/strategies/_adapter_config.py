"""Options shared by the adapter strategies (``lora``, ``deep_lora``): rank, target layers, which blocks.

``blocks="all"`` adapts every candidate block (nothing is frozen before the first adapter, no cache);
``blocks="layer3.0"`` adapts that block and the ones after it, so the blocks before it are a frozen prefix,
cached exactly as for ``layer_ft`` (:meth:`AdapterConfig.frozen_scope` is then ``"prefix"``). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from .config import StrategyConfig

ALL_BLOCKS = "all"


def check_number(config: StrategyConfig, name: str, kind: type, low: float, high: float | None = None,
                 low_open: bool = False, high_open: bool = True) -> None:
    """``config.<name>`` is a ``kind`` (an int for int options; YAML ``1e-3`` for a float) within the bounds."""
    value = getattr(config, name)
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and ok_type and float(value).is_integer():
        value = int(value)
    elif kind is int or not ok_type:
        raise UsageError(f"{config.name}: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    else:
        value = float(value)
    below = value <= low if low_open else value < low
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo, hi = ("(" if low_open else "["), ("" if high is None else (")" if high_open else "]"))
        raise UsageError(f"{config.name}: {name} must be in {lo}{low:g}, {'∞)' if high is None else f'{high:g}{hi}'}, "
                         f"got {value!r}")
    setattr(config, name, value)


@dataclass
class AdapterConfig(StrategyConfig):
    """Base of ``lora`` / ``deep_lora`` configs (not registered itself)."""

    uses_layer = False
    cache_scope = "none"  # the default blocks="all"; frozen_scope() says "prefix" for a start block
    cost = 1.0  # the whole network runs with gradients (less with a start block)

    r: int = field(default=8, metadata={
        "help": "rank of each update (deep_lora: the width of U, V and of its r×r cores)"})
    target_modules: tuple[str, ...] | None = field(default=None, metadata={
        "help": "layer names to adapt inside the chosen blocks, matched on whole trailing path components "
                "(e.g. qkv proj mlp.fc1; default: per backbone family, see docs/peft.md)"})
    blocks: str = field(default=ALL_BLOCKS, metadata={
        "help": "'all', or a start block: adapt it and the blocks after it; the blocks before it become a "
                "cached frozen prefix as for layer_ft"})

    def validate(self) -> AdapterConfig:
        super().validate()
        check_number(self, "r", int, 1)
        if self.target_modules is not None:
            targets = (self.target_modules,) if isinstance(self.target_modules, str) else self.target_modules
            if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
                raise UsageError(f"{self.name}: target_modules must be a non-empty list of layer names (or unset "
                                 f"for the family's defaults), got {self.target_modules!r}")
            self.target_modules = tuple(t.strip() for t in targets)
        if not isinstance(self.blocks, str) or not self.blocks:
            raise UsageError(f"{self.name}: blocks must be {ALL_BLOCKS!r} or a block name, got {self.blocks!r}")
        return self

    def frozen_scope(self) -> str:
        return "none" if self.blocks == ALL_BLOCKS else "prefix"

    def start_block(self, layer: str | None) -> str | None:
        return None if self.blocks == ALL_BLOCKS else self.blocks

"""Progressive separation of classes across the layers of a trained DLN (the lecture §3, Wang et al. 2023).

Balanced K-class data with orthogonal inputs, one-hot targets, loss ``½·mean((W_{L:1}X − Y)²)`` over
all K·N output entries. The separation of layer ``l`` is ``D_l = tr(Σ_W^l)/tr(Σ_B^l)`` of the features
``z^l = W_{l:1}x`` (``D_0``: the inputs). The theorem bounds the per-layer decay
``D_{l+1}/D_l ≤ 2(√K + 1)ε²`` for ``l = 0…L−2`` under global optimality, balancedness and an
unchanged trailing spectrum; ``theorem_conditions`` measures how well those hold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from ..nc import separation
from .network import (
    DTYPE,
    FactorNetwork,
    GDConfig,
    Runtime,
    TrainLog,
    generator,
    init_network,
    layer_outputs,
    random_orthogonal,
    run_status,
    train,
)

__all__ = [
    "SeparationConfig",
    "SeparationResult",
    "make_classification_data",
    "layer_separations",
    "decay_bound",
    "theorem_conditions",
    "run_separation",
]


@dataclass
class SeparationConfig:
    """Defaults: the setting of ``fig_collapse.ipynb`` in cjyaras/law-of-parsimony (K = 5, 10 per class, width =
    input dimension = 50, ε = 0.5, η = 1 on ½·mean over the K·N outputs; its depth is 8, the default here 6), not
    one from Heimine/PNC_DLN. float64 by default: D_l falls by ~ε² per layer and the theorem's conditions are
    checked to ~1e-15."""

    num_classes: int = 5
    per_class: int = 10
    width: int = 50
    depth: int = 6
    scale: float = 0.5
    lr: float = 1.0
    steps: int = 3000
    init: str = "orthogonal"
    seed: int = 0
    runtime: Runtime = field(default_factory=Runtime)


def make_classification_data(
    num_classes: int, per_class: int, dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs X (d×N) with orthonormal columns (rows when d < N), one-hot Y (K×N) and labels (N)."""
    samples = num_classes * per_class
    gen = generator(seed)
    basis = random_orthogonal(max(dim, samples), gen)
    inputs = basis[:dim, :samples]
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return inputs, torch.nn.functional.one_hot(labels, num_classes).T.to(DTYPE), labels


def layer_separations(weights: list[torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """``[D_0, D_1, …, D_L]`` with ``D_l`` = ``sclft.nc.separation`` of ``W_{l:1}X``."""
    return [separation(z.T, labels) for z in layer_outputs(weights, inputs)]


def decay_bound(num_classes: int, scale: float) -> float:
    """The lecture's bound ``2(√K + 1)ε²`` on ``D_{l+1}/D_l``."""
    return 2.0 * (math.sqrt(num_classes) + 1.0) * scale**2


def theorem_conditions(weights: list[torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor, scale: float) -> dict:
    """How far the trained weights are from the theorem's three assumptions.

    * optimality: ``‖W_{L:1}X − Y‖_F/‖Y‖_F``;
    * balancedness: max over ``l ≤ L−2`` of ``‖W_{l+1}ᵀW_{l+1} − W_lW_lᵀ‖_F/‖W_lW_lᵀ‖_F``, and the last
      pair's ``‖W_LᵀW_L − W_{L−1}W_{L−1}ᵀ‖_F`` beside its allowance ``ε²√(d−K)``;
    * unchanged spectrum: for each ``W_l`` (``l < L``), the largest ``|σ_i − ε|/ε`` over the ``d − 2K``
      singular values closest to ε.
    """
    num_classes, width = targets.shape[0], weights[0].shape[0]
    residual = layer_outputs(weights, inputs)[-1] - targets
    gaps = [
        float(
            (weights[i + 1].T @ weights[i + 1] - weights[i] @ weights[i].T).norm() / (weights[i] @ weights[i].T).norm()
        )
        for i in range(len(weights) - 2)
    ]
    last_gap = float((weights[-1].T @ weights[-1] - weights[-2] @ weights[-2].T).norm())
    kept = width - 2 * num_classes
    spectrum = [
        float(((torch.linalg.svdvals(w) - scale).abs() / scale).sort().values[:kept].max()) for w in weights[:-1]
    ]
    return {
        "optimality_relative_residual": float(residual.norm() / targets.norm()),
        "balancedness_max_relative_gap": max(gaps) if gaps else 0.0,
        "last_layer_balancedness_gap": last_gap,
        "last_layer_allowance": scale**2 * math.sqrt(width - num_classes),
        "unchanged_spectrum_max_relative_deviation": max(spectrum),
    }


@dataclass
class SeparationResult:
    config: SeparationConfig
    separations: list[float]
    steps: list[int]
    losses: list[float]
    conditions: dict
    log: TrainLog | None = None

    @property
    def decay_ratios(self) -> list[float]:
        """``D_{l+1}/D_l`` for ``l = 0…L−2`` (the layers the bound covers)."""
        d = self.separations
        return [d[i + 1] / d[i] for i in range(self.config.depth - 1)]

    def summary(self) -> dict:
        ratios = self.decay_ratios
        return {
            "config": asdict(self.config),
            "separations": self.separations,
            "decay_ratios": ratios,
            "mean_decay_ratio": math.exp(sum(map(math.log, ratios)) / len(ratios)),
            "bound": decay_bound(self.config.num_classes, self.config.scale),
            "final_loss": self.losses[-1],
            "conditions": self.conditions,
            **run_status(self.log),
        }


def run_separation(config: SeparationConfig, record_every: int = 10) -> SeparationResult:
    """Train the DLN on the classification data and measure ``D_l`` for every layer."""
    inputs, targets, labels = make_classification_data(config.num_classes, config.per_class, config.width, config.seed)
    dims = [config.width] * config.depth + [config.num_classes]
    name = f"separation L={config.depth} ε={config.scale:g} {config.init}"
    network = FactorNetwork(
        init_network(dims, config.scale, config.init, config.seed + 1), name=name, runtime=config.runtime
    )
    on_device = config.runtime.to(inputs), config.runtime.to(targets)

    def loss_fn(factors: list[torch.Tensor]) -> torch.Tensor:
        return 0.5 * (layer_outputs(factors, on_device[0])[-1] - on_device[1]).pow(2).mean()

    log = train(network, loss_fn, GDConfig(config.lr), config.steps, record_every=record_every)
    weights = network.cpu_weights()  # the measures in float64 on the CPU
    return SeparationResult(
        config,
        layer_separations(weights, inputs, labels),
        log.steps,
        log.losses,
        theorem_conditions(weights, inputs, targets, config.scale),
        log,
    )

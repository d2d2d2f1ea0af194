"""Regenerate the lecture's deep-linear-network figures (§2–4) at the lecture's settings.

    python scripts/dln_figures.py --out benchmarks/results/dln/figures [--only parsimony separation completion]

Parsimony (slides 22–24): L = 3, d_x = d_y = 30, rank 3, with whitened inputs, non-whitened inputs and momentum.
Separation ("Effects of Initialization Scale ε"): K = 5, 10 per class, d = 50; ε ∈ {0.5, 0.25, 0.125} at L = 4,
η = 10 (D_l per layer and the loss curves: the decay-rate / convergence trade-off); L ∈ {6, 8, 10} at ε = 0.5,
η = 1 (6000 steps); orthogonal / normal / uniform init. Completion: the `sclft dln completion` defaults (d = 200).
float64 for parsimony and separation, float32 for completion (``--dtype`` overrides all three).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from sclft.dln.experiments import CompletionConfig, completion_experiment, parsimony_experiment, separation_experiment
from sclft.dln.network import DEVICES, DTYPES, Runtime
from sclft.dln.parsimony import ParsimonyConfig
from sclft.dln.separation import SeparationConfig

PARSIMONY_VARIANTS = {
    "parsimony": ParsimonyConfig(),
    "parsimony_nonwhitened": ParsimonyConfig(whitened=False),
    "parsimony_momentum": ParsimonyConfig(momentum=0.9, lr=0.01),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/dln/figures")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("parsimony", "separation", "completion"),
        default=["parsimony", "separation", "completion"],
    )
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="the matrices are small: cpu by default")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: each experiment's own")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)

    def runtime(default_dtype: str) -> Runtime:
        return Runtime(device=args.device, dtype=args.dtype or default_dtype, progress=not args.no_progress)

    if "parsimony" in args.only:
        for name, config in PARSIMONY_VARIANTS.items():
            parsimony_experiment(replace(config, runtime=runtime("float64")), out, name)
    if "separation" in args.only:  # L = 10 leaves its plateau after ~4500 steps
        separation_experiment(replace(SeparationConfig(), steps=6000, runtime=runtime("float64")), out)
    if "completion" in args.only:
        completion_experiment(CompletionConfig(runtime=runtime("float32")), out)


if __name__ == "__main__":
    main()

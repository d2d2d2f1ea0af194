"""Regenerate the seed's deep-linear-network figures (§2–4) with the seed's settings.

    python scripts/dln_figures.py --out benchmarks/results/dln/figures [--only parsimony separation completion]

Parsimony: L = 3, d = 30, r = 3 with whitened inputs, non-whitened inputs, and momentum.
Separation: K = 5, 10 per class, d = 50; L ∈ {6, 8, 10} at ε = 0.5, η = 1 (6000 steps); ε ∈ {0.5, 0.25, 0.125} at
L = 4, η = 10; orthogonal / normal / uniform init. Completion: d = 200, r = 5, 20 % observed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from sclft.dln.experiments import CompletionConfig, completion_experiment, parsimony_experiment, separation_experiment
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
    parser.add_argument("--only", nargs="+", choices=("parsimony", "separation", "completion"),
                        default=["parsimony", "separation", "completion"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if "parsimony" in args.only:
        for name, config in PARSIMONY_VARIANTS.items():
            parsimony_experiment(config, out, name)
    if "separation" in args.only:
        separation_experiment(replace(SeparationConfig(), steps=6000), out)  # L = 10 leaves its plateau after ~4500 steps
    if "completion" in args.only:
        completion_experiment(CompletionConfig(), out)


if __name__ == "__main__":
    main()

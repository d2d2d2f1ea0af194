"""Theory lab: deep linear networks — law of parsimony (the lecture §2), progressive separation (§3),
compressed deep matrix completion (§4). See ``docs/dln.md``; CLI: ``sclft dln …``."""

from .completion import (
    CompletionProblem,
    compressed_network,
    make_problem,
    narrow_network,
    original_network,
    train_completion,
)
from .network import FactorNetwork, GDConfig, init_network, train
from .parsimony import ParsimonyConfig, run_parsimony
from .separation import SeparationConfig, decay_bound, run_separation

__all__ = [
    "CompletionProblem",
    "FactorNetwork",
    "GDConfig",
    "ParsimonyConfig",
    "SeparationConfig",
    "compressed_network",
    "decay_bound",
    "init_network",
    "make_problem",
    "narrow_network",
    "original_network",
    "run_parsimony",
    "run_separation",
    "train",
    "train_completion",
]

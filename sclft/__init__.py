"""sclft: neural-collapse-guided transfer learning (linear probe, Layer FT, SCL-FT, full FT)."""

from . import nc
from ._hub import WeightsUnavailableError
from .backbones import Backbone, create_backbone, list_backbones
from .model import TransferModel, wrap
from .probe import ProbeResult, probe  # noqa: E402  (the functions shadow their modules' names, as intended)
from .train import TrainConfig, load, train  # noqa: E402
from .strategies import list_strategies

__version__ = "0.1.0"

__all__ = [
    "nc", "wrap", "probe", "ProbeResult", "train", "load", "TrainConfig", "TransferModel", "Backbone", "create_backbone", "list_backbones", "list_strategies",
    "WeightsUnavailableError", "__version__",
]

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test touches the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from sclft.backbones import create_backbone

_CACHE = {}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_backbone(name: str):
    """Random-weight backbones are built once per test session (each test wraps them anew)."""
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = create_backbone(name, pretrained=False)
    return _CACHE[name]


@pytest.fixture
def backbone_factory():
    return random_backbone

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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread (torch and BLAS) for a module of tiny models or matrices, which only lose time to
    thread hand-offs on a shared CPU. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def hf_cache(monkeypatch, tmp_path):
    """Point the datasets cache at an empty temporary folder (nothing cached, nothing left behind)."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache"


@pytest.fixture
def simulated_device_move(monkeypatch):
    """``Module.to`` materialises new tensors, as a real ``.to("cuda")`` does (on CPU it is a no-op).

    A move made under ``torch.inference_mode`` then turns parameters into inference tensors, exactly
    as on a GPU, so CPU tests see device-move bugs.
    """
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        moved = real_to(self, *args, **kwargs)
        return moved._apply(lambda t: t.clone())

    monkeypatch.setattr(torch.nn.Module, "to", to)


@pytest.fixture
def tiny_imagefolder(tmp_path):
    """``imagefolder:`` data set of 2 classes × 3 train / 2 test random 32-px images (fast transformer runs)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "tiny_images"
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("golden_retriever", "tabby_cat"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return f"imagefolder:{root}"

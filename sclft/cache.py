"""Frozen-prefix activation cache (DESIGN §4).

Without random augmentation the frozen half of a strategy (``TransferModel.frozen_forward``) gives the
same output every epoch, so it is computed once and training runs only the tail. Activations live in
memory when they fit, else in a disk-backed ``.npy`` memmap that later runs reuse. The key covers
everything the activations depend on — backbone weights (a hash of the tensors), strategy and layer,
the exact samples of the split, the transform and the dtype — so a stale cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .io import atomic_write_json

log = logging.getLogger("sclft.cache")
STORAGES = ("auto", "memory", "disk")
DEFAULT_CACHE_DIR = Path(os.environ.get("SCLFT_CACHE_DIR", Path.home() / ".cache" / "sclft" / "features"))


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (names, shapes, values)."""
    h = hashlib.blake2b(digest_size=12)
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """Stable short key of the parts (JSON-serialisable values)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def frozen_cache_key(model, split_fingerprint: str, transform: Any, dtype: torch.dtype = torch.float32) -> str:
    """Key for ``model.frozen_forward`` over one split (weights, strategy, layer, samples, transform)."""
    strategy = model.strategy
    return cache_key(
        backbone=model.backbone.name,
        weights=weights_fingerprint(model.backbone),
        strategy_part="features" if not strategy.uses_layer else f"prefix:{strategy.layer}",
        samples=split_fingerprint,
        transform=repr(transform),
        dtype=str(dtype),
    )


@dataclass
class CachedFeatures(Dataset):
    """``(activation, label)`` pairs; ``features`` is a tensor (memory) or a memmapped array (disk)."""

    features: Any
    labels: torch.Tensor
    storage: str
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        z = self.features[i]
        return (torch.from_numpy(np.array(z)) if isinstance(z, np.ndarray) else z), int(self.labels[i])

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def _choose_storage(storage: str, nbytes: int) -> str:
    if storage not in STORAGES:
        raise ValueError(f"unknown cache storage {storage!r}; valid: {', '.join(STORAGES)}")
    if storage != "auto":
        return storage
    return "memory" if nbytes <= _available_memory() // 4 else "disk"


def _load_disk(path: Path, key: str) -> CachedFeatures | None:
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        return None
    features = np.load(path / "features.npy", mmap_mode="r")
    labels = torch.from_numpy(np.load(path / "labels.npy"))
    return CachedFeatures(features, labels, "disk", path)


@torch.no_grad()
def build_cache(
    model,
    dataset: Dataset,
    key: str,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    num_workers: int = 0,
    storage: str = "auto",
    cache_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> CachedFeatures:
    """Run ``model.frozen_forward`` over ``dataset`` once; reuse a complete disk cache with the same key."""
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    path = cache_dir / key
    if storage in ("auto", "disk"):
        found = _load_disk(path, key)
        if found is not None:
            log.info("reusing disk feature cache %s", path)
            return found
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda")
    n = len(dataset)
    features = labels = None
    start = 0
    for x, y in tqdm(loader, desc="caching frozen features", disable=not progress, leave=False):
        z = model.frozen_forward(x.to(device, non_blocking=True)).to(dtype).cpu()
        if features is None:
            shape = (n, *z.shape[1:])
            nbytes = int(np.prod(shape)) * z.element_size()
            chosen = _choose_storage(storage, nbytes)
            if chosen == "memory":
                features = torch.empty(shape, dtype=dtype)
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "meta.json").unlink(missing_ok=True)
                features = np.lib.format.open_memmap(path / "features.npy", mode="w+",
                                                     dtype=torch.empty(0, dtype=dtype).numpy().dtype, shape=shape)
            labels = torch.empty(n, dtype=torch.long)
        features[start : start + len(z)] = z if isinstance(features, torch.Tensor) else z.numpy()
        labels[start : start + len(z)] = torch.as_tensor(y)
        start += len(z)
    model.train(was_training)
    if isinstance(features, torch.Tensor):
        return CachedFeatures(features, labels, "memory")
    features.flush()
    np.save(path / "labels.npy", labels.numpy())
    atomic_write_json(path / "meta.json", {"key": key, "shape": list(features.shape), "dtype": str(features.dtype)})
    return CachedFeatures(np.load(path / "features.npy", mmap_mode="r"), labels, "disk", path)

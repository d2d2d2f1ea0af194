"""Frozen-prefix activation cache (docs/design.md §4).

Without random augmentation the frozen half of a strategy (``TransferModel.frozen_forward``) gives the
same output every epoch, so it is computed once and training runs only the tail. Activations live in
memory when they fit (a quarter of the free memory), else in a disk-backed ``.npy`` memmap that later
runs reuse. The key covers everything the activations depend on — backbone weights (a hash of the
tensors), strategy part and layer, the exact samples of the split, the transform, the dtype and the
cache format — so a stale cache is never used.

A disk cache is the directory ``cache_dir/<key>/`` holding ``features.npy``, ``labels.npy`` and, written
last, ``meta.json`` (with a digest of the features and labels). It is built in a private
``.<key>.<pid>.partial`` directory and renamed into place when complete, so an interrupted or concurrent
build never leaves a directory that looks complete; a directory whose ``meta.json`` is missing, names
another key, does not match the arrays or whose content does not match its digest is rebuilt (with a
warning). Cached features that are not finite are an error that names the cache, not a training failure.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import versions
from .errors import UsageError
from .io import atomic_write_json, read_json, space_for
from .progress import progress_bar

log = logging.getLogger("sclft.cache")
STORAGES = ("auto", "memory", "disk")
FORMAT_VERSION = 4  # bump when the stored layout or the meaning of a key part changes (4: images read EXIF-upright)
DEFAULT_CACHE_DIR = Path(os.environ.get("SCLFT_CACHE_DIR", Path.home() / ".cache" / "sclft" / "features"))

_FINGERPRINTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def _state_signature(state: dict[str, torch.Tensor]) -> tuple:
    """Cheap change detector: storage address and in-place version counter of every tensor."""
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype) for name, t in state.items())


def hash_tensors(items, h) -> str:
    """Feed ``(name, tensor)`` pairs (name, shape, dtype, bytes) into the hashlib object ``h``; its hex digest."""
    for name, t in items:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (names, shapes, dtypes, values).

    Memoised per module until a tensor is replaced or modified in place (its version counter moves),
    so the three splits of one run hash the weights once.
    """
    state = module.state_dict()
    signature = _state_signature(state)
    known = _FINGERPRINTS.get(module)
    if known is not None and known[0] == signature:
        return known[1]
    digest = hash_tensors(state.items(), hashlib.blake2b(digest_size=12))
    _FINGERPRINTS[module] = (signature, digest)
    return digest


def cache_key(**parts: Any) -> str:
    """Stable short key of the parts (JSON-serialisable values)."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def frozen_cache_key(model, split_fingerprint: str, transform: Any, dtype: torch.dtype = torch.float32) -> str:
    """Key for ``model.frozen_forward`` over one split (weights, strategy part, layer, samples, transform, dtype,
    and the versions of the libraries that compute it, :func:`sclft.versions.library_versions`)."""
    return cache_key(
        versions=versions.library_versions(),
        backbone=model.backbone.name,
        weights=weights_fingerprint(model.backbone),
        strategy_part=model.strategy.cache_part(),
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


class NonFiniteFeaturesError(UsageError):
    """The frozen features (cached or just computed) hold NaN/inf: the backbone or its input is broken."""


_CHUNK_BYTES = 64 << 20


def content_digest(features, labels) -> str:
    """sha256 of the features' and labels' bytes (row chunks, so a memmap is never read whole into memory)."""
    h = hashlib.sha256()
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    h.update(f"{tuple(features.shape)}:{features.dtype}:{labels.dtype}".encode())
    for chunk in _row_chunks(features):
        h.update(np.ascontiguousarray(chunk).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def _row_chunks(features):
    n = len(features)
    row = max(1, int(np.prod(features.shape[1:])) * features.dtype.itemsize) if n else 1
    step = max(1, _CHUNK_BYTES // row)
    for start in range(0, n, step):
        chunk = features[start : start + step]
        yield chunk.numpy() if isinstance(chunk, torch.Tensor) else chunk


def check_finite(features, where: str) -> None:
    """Raise :class:`NonFiniteFeaturesError` naming ``where`` when ``features`` hold NaN/inf."""
    bad, first, start = 0, None, 0
    for chunk in _row_chunks(features):
        rows = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if rows.any():
            bad += int(rows.sum())
            first = start + int(np.argmax(rows)) if first is None else first
        start += len(chunk)
    if bad:
        raise NonFiniteFeaturesError(
            f"the frozen features in {where} hold non-finite values ({bad} of {len(features)} rows, first at row "
            f"{first}): the cached activations of the frozen backbone are broken, not the training "
            "(check the backbone weights and the input images; delete a disk cache to rebuild it)")


def available_memory() -> int:
    """Free physical memory in bytes (8 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def _choose_storage(storage: str, nbytes: int) -> str:
    if storage not in STORAGES:
        raise UsageError(f"unknown cache storage {storage!r}; valid: {', '.join(STORAGES)}")
    if storage != "auto":
        return storage
    return "memory" if nbytes <= available_memory() // 4 else "disk"


def load_disk_cache(path: Path, key: str, num_samples: int | None = None) -> CachedFeatures | None:
    """The complete disk cache at ``path`` if it was written for ``key`` (and has ``num_samples`` rows)."""
    try:
        meta = read_json(path / "meta.json")
        if meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
            return None
        features = np.load(path / "features.npy", mmap_mode="r", allow_pickle=False)  # never unpickle a cache file
        labels = torch.from_numpy(np.load(path / "labels.npy", allow_pickle=False))
    except (OSError, ValueError) as e:  # missing, truncated or unreadable: rebuild
        if (path / "meta.json").exists():
            log.warning("ignoring unreadable feature cache %s (%s)", path, e)
        return None
    fits = (list(features.shape) == meta.get("shape") and str(features.dtype) == meta.get("dtype")
            and len(labels) == len(features) and (num_samples is None or len(labels) == num_samples))
    if not fits:
        log.warning("ignoring feature cache %s: its arrays do not match meta.json / the dataset", path)
        return None
    if content_digest(features, labels) != meta.get("sha256"):
        log.warning("ignoring feature cache %s: its content does not match the digest in meta.json (changed or "
                    "damaged); rebuilding it", path)
        return None
    check_finite(features, f"the disk feature cache {path}")
    return CachedFeatures(features, labels, "disk", path)


def _reserve(file: Path) -> None:
    """Allocate the (sparse) memmap's blocks now, so a full disk is an error here, not a SIGBUS mid-write."""
    try:
        with open(file, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except (AttributeError, OSError) as e:  # no fallocate on this OS / file system: the sparse file stays
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise


class _DiskWriter:
    """Fills ``features.npy`` in a private partial directory; ``commit`` writes meta.json and renames."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: torch.dtype):
        self.path = path
        self.tmp = path.parent / f".{path.name}.{os.getpid()}.partial"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        try:
            with space_for(self.tmp, int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()):
                self.array = np.lib.format.open_memmap(self.tmp / "features.npy", mode="w+",
                                                       dtype=torch.empty(0, dtype=dtype).numpy().dtype, shape=shape)
                _reserve(self.tmp / "features.npy")
        except BaseException:
            self.abort()
            raise

    def __setitem__(self, index: slice, value: torch.Tensor) -> None:
        self.array[index] = value.numpy()

    def commit(self, key: str, labels: torch.Tensor) -> CachedFeatures:
        self.array.flush()
        try:
            check_finite(self.array, f"the feature cache being built at {self.path}")
        except NonFiniteFeaturesError:
            del self.array
            self.abort()
            raise
        with space_for(self.tmp, labels.numel() * labels.element_size()):
            np.save(self.tmp / "labels.npy", labels.numpy())
        atomic_write_json(self.tmp / "meta.json", {"key": key, "format": FORMAT_VERSION,
                                                   "shape": list(self.array.shape), "dtype": str(self.array.dtype),
                                                   "sha256": content_digest(self.array, labels)})
        del self.array
        found = load_disk_cache(self.path, key, len(labels))
        if found is not None:  # another process finished the same cache first
            shutil.rmtree(self.tmp, ignore_errors=True)
            return found
        shutil.rmtree(self.path, ignore_errors=True)  # an incomplete or foreign leftover
        try:
            os.replace(self.tmp, self.path)
        except OSError:  # a concurrent writer renamed its copy in between
            found = load_disk_cache(self.path, key, len(labels))
            if found is None:
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)
            return found
        return load_disk_cache(self.path, key, len(labels))

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


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
    """Run ``model.frozen_forward`` over ``dataset`` once; reuse a complete disk cache with the same key.

    ``storage``: ``"memory"``, ``"disk"`` or ``"auto"`` (an existing disk cache, else memory when the
    activations fit a quarter of the free memory, else disk). ``no_grad`` rather than ``inference_mode``:
    the cached tensors become inputs of the trained tail, which autograd must be allowed to save.
    """
    if storage not in STORAGES:
        raise UsageError(f"unknown cache storage {storage!r}; valid: {', '.join(STORAGES)}")
    path = (Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR) / key
    if storage in ("auto", "disk"):
        found = load_disk_cache(path, key, len(dataset))
        if found is not None:
            log.info("reusing disk feature cache %s", path)
            return found
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda")
    n = len(dataset)
    features: torch.Tensor | _DiskWriter | None = None
    labels = torch.empty(n, dtype=torch.long)
    start = 0
    try:
        for x, y in progress_bar(loader, desc="caching frozen features", progress=progress):
            z = model.frozen_forward(x.to(device, non_blocking=True)).to(dtype).cpu()
            if features is None:
                shape = (n, *z.shape[1:])
                if _choose_storage(storage, int(np.prod(shape)) * z.element_size()) == "memory":
                    features = torch.empty(shape, dtype=dtype)
                else:
                    features = _DiskWriter(path, shape, dtype)
            features[start : start + len(z)] = z
            labels[start : start + len(z)] = torch.as_tensor(y)
            start += len(z)
    except BaseException:
        if isinstance(features, _DiskWriter):
            features.abort()
        raise
    finally:
        model.train(was_training)
    if features is None:
        raise UsageError("cannot cache an empty dataset")
    if isinstance(features, torch.Tensor):
        check_finite(features, f"the in-memory feature cache ({key})")
        return CachedFeatures(features, labels, "memory")
    log.info("wrote disk feature cache %s", path)
    return features.commit(key, labels)

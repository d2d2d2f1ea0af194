"""``fashion_mnist``: 70,000 28×28 greyscale images, 10 classes (60,000 train / 10,000 test).

Sources, first match wins:

1. ``data_dir`` holding the four IDX files (``train-images-idx3-ubyte[.gz]``, …), or ``data_dir``
   as a Hugging Face local copy (``save_to_disk`` folder / Hub snapshot);
2. Debian's ``dataset-fashion-mnist`` package: ``/usr/share/datasets/fashion-mnist/*.gz``;
3. the Hugging Face Hub, ``zalando-datasets/fashion_mnist``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ._registry import register_dataset
from .base import ArrayImageDataset, DatasetSplits, DatasetUnavailableError, file_stamp
from .hub import HubSpec, load_hub, local_copy_hint

__all__ = ["read_idx", "find_idx_dir", "SYSTEM_DIR", "HUB_SPEC", "CLASS_NAMES", "APT_INSTALL"]

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_INSTALL = "sudo apt-get update && sudo apt-get install dataset-fashion-mnist"  # the same line as the README
HUB_SPEC = HubSpec("zalando-datasets/fashion_mnist", "image", "label")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``): magic ``00 00 <dtype> <ndim>``, big-endian dims, data."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UsageError(f"{path} is not an IDX file")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, _IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UsageError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape).astype(data.dtype.newbyteorder("="))


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def find_idx_dir(folder: str | Path) -> Path | None:
    """``folder`` if it holds all four Fashion-MNIST IDX files (plain or gzipped), else ``None``."""
    folder = Path(folder).expanduser()
    stems = [stem for pair in FILES.values() for stem in pair]
    return folder if all(_idx_file(folder, stem) for stem in stems) else None


def _load_idx(folder: Path) -> DatasetSplits:
    def split(name: str) -> ArrayImageDataset:
        files = [_idx_file(folder, stem) for stem in FILES[name]]
        images, labels = (read_idx(path) for path in files)
        return ArrayImageDataset(images, labels, content_id=file_stamp(files))

    return DatasetSplits("fashion_mnist", split("train"), split("test"), None, list(CLASS_NAMES), str(folder.resolve()))


def _unavailable(where: str, exc: DatasetUnavailableError) -> DatasetUnavailableError:
    """The error for no Fashion-MNIST anywhere: how to get it (the README says the same)."""
    return DatasetUnavailableError(
        f"Fashion-MNIST not found: {where} and no Hub copy ({exc}).\n"
        f"  On Debian / Ubuntu: `{APT_INSTALL}` (installs the IDX files in {SYSTEM_DIR}, where they are found "
        "without --data-dir);\n"
        "  or pass `--data-dir DIR` with the four IDX files (train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]);\n"
        f"  or {local_copy_hint('fashion_mnist', HUB_SPEC.repo_id)}."
    )


@register_dataset("fashion_mnist")
def load_fashion_mnist(data_dir: str | None = None) -> DatasetSplits:
    """Load Fashion-MNIST from IDX files (``data_dir`` or the Debian package) or the Hub."""
    if data_dir is not None:
        folder = find_idx_dir(data_dir) or find_idx_dir(Path(data_dir) / "fashion_mnist")
        if folder:
            return _load_idx(folder)
        try:
            return load_hub("fashion_mnist", HUB_SPEC, data_dir)
        except DatasetUnavailableError as exc:
            raise _unavailable(f"no IDX files in --data-dir {data_dir}", exc) from None
    if find_idx_dir(SYSTEM_DIR):
        return _load_idx(SYSTEM_DIR)
    try:
        return load_hub("fashion_mnist", HUB_SPEC, None)
    except DatasetUnavailableError as exc:
        raise _unavailable(f"no IDX files in {SYSTEM_DIR}", exc) from None

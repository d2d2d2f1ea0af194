"""``imagefolder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (optional ``PATH/val``).

Class names are the sorted sub-folder names of ``train``. Every file with an image extension is
checked when the folder is indexed (PIL ``verify``: header and, for PNG, checksums); unreadable
files are logged by path, dropped, and listed in ``DatasetSplits.skipped``. Damage that only shows
when pixels are decoded (e.g. a truncated JPEG body) is caught at read time (see ``ImageDataset``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PIL import Image

from ..errors import UsageError
from ._registry import register_dataset
from .base import DatasetSplits, DatasetUnavailableError, ImageDataset, file_stamp

__all__ = ["ImageFolderDataset", "load_imagefolder", "IMAGE_EXTENSIONS"]

log = logging.getLogger("sclft.data")
IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in Image.registered_extensions())
VAL_DIRS = ("val", "validation", "valid")


class ImageFolderDataset(ImageDataset):
    """Image files with labels; ``content_id`` hashes (path, size, mtime) of the kept files.

    ``folder`` is the split's folder (``PATH/train``), whose sub-folders are the classes.
    """

    def __init__(self, paths: list[Path], targets: list[int], skipped: list[str], folder: Path | None = None):
        super().__init__(targets, skipped, content_id=file_stamp(paths))
        self.paths, self.folder = paths, folder

    def _load(self, index: int) -> Image.Image:
        image = Image.open(self.paths[index])
        image.load()
        return image

    def describe(self, index: int) -> str:
        return str(self.paths[index])


def _readable(path: Path) -> tuple[int, int] | None:
    """The image's (width, height) when it decodes, else None (logged)."""
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()
        return size
    except Exception as exc:  # PIL raises many types for damaged files
        log.warning("skipping unreadable image %s (%s)", path, exc)
        return None


def _utf8(path: Path) -> Path:
    """``path``, whose name must be text: a file name that is not UTF-8 is named (escaped), not a codec error."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{path.parent}: the file name {os.fsencode(path.name)!r} is not valid UTF-8; rename it "
                         "(sclft records file and class names as text)") from None
    return path


def _class_names(folder: Path) -> list[str]:
    """The class sub-folders of ``folder`` (torchvision's ``find_classes``), hidden ones left out."""
    from torchvision.datasets.folder import find_classes  # torchvision's import takes seconds: image folders only

    try:
        names, _ = find_classes(folder)
    except FileNotFoundError:
        names = []
    return [_utf8(folder / name).name for name in names if not name.startswith(".")]


def _index(split_dir: Path, class_names: list[str], skipped: list[str]) -> ImageFolderDataset:
    unknown = sorted(name for name in _class_names(split_dir) if name not in class_names)
    if unknown:
        raise UsageError(f"{split_dir} has classes not present in train: {unknown}")
    sizes: dict[str, tuple[int, int]] = {}
    unreadable: list[Path] = []

    def is_valid_file(name: str) -> bool:
        """An image file (not hidden, a PIL extension, a UTF-8 name) that decodes; its size kept."""
        path = Path(name)
        if not (path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS):
            return False
        size = _readable(_utf8(path))
        if size is None:
            unreadable.append(path)
            return False
        sizes[name] = size
        return True

    from torchvision.datasets.folder import make_dataset  # torchvision's import takes seconds: image folders only

    samples = make_dataset(split_dir, {c: i for i, c in enumerate(class_names)}, is_valid_file=is_valid_file,
                           allow_empty=True)
    samples.sort(key=lambda sample: Path(sample[0]))  # class by class, in path order (what rglob gave)
    skipped += map(str, sorted(unreadable))
    paths, targets = [Path(path) for path, _ in samples], [label for _, label in samples]
    tiny = [Path(path) for path, _ in samples if sizes[path][0] * sizes[path][1] <= 1]
    if paths and len(tiny) == len(paths):
        raise UsageError(f"every image in {split_dir} is 1x1 pixel ({', '.join(map(str, tiny[:3]))}"
                         f"{' ...' if len(tiny) > 3 else ''}): there is nothing to learn or measure in them; "
                         "use images of at least 2x2 pixels")
    return ImageFolderDataset(paths, targets, skipped, split_dir)


@register_dataset("imagefolder", prefix=True, usage="imagefolder:PATH")
def load_imagefolder(path: str, data_dir: str | None = None) -> DatasetSplits:
    """Index ``PATH`` (relative paths resolve against ``data_dir`` when given)."""
    root = Path(data_dir, path) if data_dir and not Path(path).is_absolute() else Path(path)
    root = root.expanduser().resolve()
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DatasetUnavailableError(f"image folder {str(root)!r} needs 'train/<class>/' and 'test/<class>/' "
                                      "sub-folders")
    class_names = _class_names(root / "train")
    if not class_names:
        raise UsageError(f"{root / 'train'} has no class sub-folders")
    skipped: list[str] = []
    val_dir = next((root / d for d in VAL_DIRS if (root / d).is_dir()), None)
    return DatasetSplits(
        name=f"imagefolder:{path}",
        train=_index(root / "train", class_names, skipped),
        test=_index(root / "test", class_names, skipped),
        val=_index(val_dir, class_names, skipped) if val_dir else None,
        class_names=class_names,
        source=str(root),
        skipped=skipped,
    )

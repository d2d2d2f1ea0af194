"""Hugging Face ``datasets`` sources: the paper's five benchmarks and ``hf:<repo_id>``.

Images are decoded lazily, one sample at a time, by :class:`HubImageDataset` (the Arrow table
stays memory-mapped; nothing is materialised as PIL at load time). A local copy is used when
``data_dir`` is given: a folder written by ``DatasetDict.save_to_disk`` or a snapshot of the Hub
repository (e.g. ``huggingface-cli download --repo-type dataset REPO --local-dir DIR``); if
``data_dir/<name>`` exists it is preferred, so one ``--data-dir`` can hold several datasets.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Hashable, Sequence

from PIL import Image

from ._registry import register_dataset
from .base import DatasetSplits, DatasetUnavailableError, ImageDataset

__all__ = ["HubSpec", "HUB_DATASETS", "HubImageDataset", "load_hub"]


@dataclass(frozen=True)
class HubSpec:
    """A Hub dataset: repository id, optional config, and its image / label columns (auto if None)."""

    repo_id: str
    image_column: str | None = None
    label_column: str | None = None
    config: str | None = None


# Splits match torchvision's official ones (see docs/data.md for sizes).
HUB_DATASETS: dict[str, HubSpec] = {
    "cifar10": HubSpec("uoft-cs/cifar10", "img", "label"),
    "cifar100": HubSpec("uoft-cs/cifar100", "img", "fine_label"),
    "dtd": HubSpec("mcimpoi/dtd_split_1"),  # partition 1: train / validation / test, 1,880 each
    "fgvc_aircraft": HubSpec("HuggingFaceM4/FGVC-Aircraft", "image", "variant"),
    "oxford_pets": HubSpec("timm/oxford-iiit-pet", "image", "label"),
}

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("validation", "val", "valid", "dev"),
    "test": ("test", "testing"),
}
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target", "class", "category")


class HubImageDataset(ImageDataset):
    """One split of a Hugging Face ``Dataset``, decoded lazily with PIL."""

    def __init__(self, ds: Any, image_column: str, labels: Sequence[int], where: str, skipped: list[str]):
        from datasets import Image as HFImage

        super().__init__(labels, skipped, content_id=getattr(ds, "_fingerprint", ""))
        self.ds = ds.select_columns([image_column]).cast_column(image_column, HFImage(decode=False))
        self.image_column, self.where = image_column, where

    def _load(self, index: int) -> Image.Image:
        record = self.ds[index][self.image_column]
        source = io.BytesIO(record["bytes"]) if record.get("bytes") else record["path"]
        image = Image.open(source)
        image.load()
        return image

    def describe(self, index: int) -> str:
        return f"{self.where}[{index}]"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _unavailable(name: str, repo_id: str, exc: BaseException) -> DatasetUnavailableError:
    reason = _first_line(exc)
    return DatasetUnavailableError(
        f"dataset {name!r} needs the Hugging Face Hub dataset {repo_id!r}, which is neither in the local "
        f"cache nor reachable ({type(exc).__name__}: {reason}). Use a local copy instead: on a connected "
        f"machine run `datasets.load_dataset({repo_id!r}).save_to_disk(DIR)` (or `huggingface-cli download "
        f"--repo-type dataset {repo_id} --local-dir DIR`), then pass `--data-dir DIR` "
        f"(Python: load_dataset({name!r}, data_dir=DIR)). Set HF_HUB_OFFLINE=1 to fail fast without network."
    )


def _open_local(path: Path) -> Any:
    import datasets

    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    if (path / "state.json").is_file():
        raise ValueError(f"{path} holds a single saved split; save a DatasetDict with 'train' and 'test' splits")
    return datasets.load_dataset(str(path))


def _open(name: str, spec: HubSpec, data_dir: str | None) -> tuple[Any, str]:
    """Return ``(DatasetDict, source)`` from ``data_dir`` or the Hub."""
    import datasets

    if data_dir is not None:
        root = Path(data_dir).expanduser()
        path = root / name if (root / name).is_dir() else root
        if not path.is_dir():
            raise DatasetUnavailableError(f"--data-dir {str(root)!r} for dataset {name!r} does not exist")
        try:
            return _open_local(path), str(path.resolve())
        except Exception as exc:  # unreadable local copy: say what was expected, without a raw trace
            raise DatasetUnavailableError(
                f"cannot read {str(path)!r} as dataset {name!r} ({type(exc).__name__}: {_first_line(exc)}); "
                "expected a `DatasetDict.save_to_disk` folder or a local snapshot of the Hub repository"
            ) from None
    try:
        return datasets.load_dataset(spec.repo_id, spec.config), f"hf:{spec.repo_id}"
    except Exception as exc:  # connection / offline / not-found errors from datasets & huggingface_hub
        raise _unavailable(name, spec.repo_id, exc) from None


def _pick_split(dd: Any, role: str) -> str | None:
    return next((s for s in SPLIT_ALIASES[role] if s in dd), None)


def _image_column(features: Any) -> str:
    from datasets import Image as HFImage

    found = [c for c, f in features.items() if isinstance(f, HFImage)]
    if not found:
        raise ValueError(f"no image column among {list(features)}")
    return found[0]


def _label_column(features: Any) -> str:
    from datasets import ClassLabel

    class_labels = [c for c, f in features.items() if isinstance(f, ClassLabel)]
    for candidates in ([c for c in LABEL_COLUMN_NAMES if c in class_labels], class_labels,
                       [c for c in LABEL_COLUMN_NAMES if c in features]):
        if candidates:
            return candidates[0]
    raise ValueError(f"cannot tell which column holds the labels among {list(features)}")


def _label_space(dd: Any, splits: Sequence[str], column: str) -> tuple[list[str], dict[Hashable, int]]:
    """Class names and value → index: a ClassLabel's names, else the sorted distinct values."""
    from datasets import ClassLabel

    feature = dd[splits[0]].features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names), {i: i for i in range(feature.num_classes)}
    values = sorted({v for s in splits for v in dd[s][column]})
    return [str(v) for v in values], {v: i for i, v in enumerate(values)}


def load_hub(name: str, spec: HubSpec, data_dir: str | None = None) -> DatasetSplits:
    """Load ``spec`` (from ``data_dir`` or the Hub) as lazily decoded splits."""
    dd, source = _open(name, spec, data_dir)
    roles = {role: _pick_split(dd, role) for role in SPLIT_ALIASES}
    if roles["train"] is None or roles["test"] is None:
        raise ValueError(f"dataset {name!r} ({source}) needs 'train' and 'test' splits; found {list(dd)}")
    present = [s for s in roles.values() if s is not None]
    features = dd[roles["train"]].features
    image_col = spec.image_column or _image_column(features)
    label_col = spec.label_column or _label_column(features)
    for column in (image_col, label_col):
        if column not in features:
            raise ValueError(f"dataset {name!r} ({source}) has no column {column!r}; columns: {list(features)}")
    class_names, to_index = _label_space(dd, present, label_col)
    skipped: list[str] = []

    def split(role: str) -> HubImageDataset | None:
        s = roles[role]
        if s is None:
            return None
        labels = [to_index[v] for v in dd[s][label_col]]
        return HubImageDataset(dd[s], image_col, labels, f"{source}[{s}]", skipped)

    return DatasetSplits(name, split("train"), split("test"), split("val"), class_names, source, skipped)


for _name, _spec in HUB_DATASETS.items():
    register_dataset(_name)(partial(load_hub, _name, _spec))


@register_dataset("hf", prefix=True, usage="hf:<repo_id>[:config]")
def load_hf(argument: str, data_dir: str | None = None) -> DatasetSplits:
    """Any Hub image-classification dataset; image / label columns are detected automatically."""
    repo_id, _, config = argument.partition(":")
    return load_hub(f"hf:{argument}", HubSpec(repo_id, config=config or None), data_dir)

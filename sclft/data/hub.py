"""Hugging Face ``datasets`` sources: the paper's five benchmarks and ``hf:<repo_id>``.

Images are decoded lazily, one sample at a time, by :class:`HubImageDataset` (the Arrow table
stays memory-mapped; nothing is materialised as PIL at load time). A local copy is used when
``data_dir`` is given: a folder written by ``DatasetDict.save_to_disk`` or a snapshot of the Hub
repository (``hf download REPO --repo-type dataset --local-dir DIR``); if ``data_dir/<name>``
exists it is preferred, so one ``--data-dir`` can hold several datasets.

Without ``data_dir`` the Hub is asked only when it answers (:func:`sclft._hub.hub_reachable`, one
TCP connect, as for weights); otherwise ``datasets`` runs in its offline mode, which still loads a
dataset from the local Hugging Face datasets cache and fails at once, without retries, when it is
not there. Only parquet / Arrow repositories load: ``datasets`` >= 4 no longer runs loading scripts.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from .. import _hub
from ..errors import UsageError
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


# Splits match torchvision's official ones (see docs/data.md for sizes). All are parquet repositories.
HUB_DATASETS: dict[str, HubSpec] = {
    "cifar10": HubSpec("uoft-cs/cifar10", "img", "label"),
    "cifar100": HubSpec("uoft-cs/cifar100", "img", "fine_label"),
    "dtd": HubSpec("mcimpoi/dtd_split_1"),  # partition 1: train / validation / test, 1,880 each
    # mteb's parquet copy (the HuggingFaceM4/FGVC-Aircraft script repository no longer loads):
    # train / validation / test, ClassLabel columns variant (100), family, manufacturer
    "fgvc_aircraft": HubSpec("mteb/FGVCAircraft", "image", "variant"),
    "oxford_pets": HubSpec("timm/oxford-iiit-pet", "image", "label"),
}
SCRIPTS_UNSUPPORTED = "Dataset scripts are no longer supported"  # datasets >= 4, datasets/load.py

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("validation", "val", "valid", "dev"),
    "test": ("test", "testing"),
}
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target", "class", "category")


class HubImageDataset(ImageDataset):
    """One split of a Hugging Face ``Dataset``, decoded lazily with PIL."""

    def __init__(self, ds: Any, image_column: str, labels: Sequence[int], where: str, skipped: list[str]):
        from datasets import Image as HFImage  # HF datasets loads only for hub datasets (seconds)

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


def local_copy_hint(name: str, repo_id: str) -> str:
    """How to make and use a local copy of Hub dataset ``repo_id``."""
    return (
        f"on a connected machine run `hf download {repo_id} --repo-type dataset --local-dir DIR` "
        f"(or, in Python, `datasets.load_dataset({repo_id!r}).save_to_disk(DIR)`), copy DIR here and pass "
        f"`--data-dir DIR` (Python: load_dataset({name!r}, data_dir=DIR))"
    )


def _unavailable(name: str, repo_id: str, exc: BaseException, reachable: bool) -> DatasetUnavailableError:
    if not reachable:
        why = (f"the Hub ({_hub.hub_host()}) is not reachable" +
               (" (HF_HUB_OFFLINE is set)" if _hub.hub_offline_flag() else "") +
               " and the dataset is not in the local Hugging Face datasets cache")
    else:
        why = f"it could not be loaded ({type(exc).__name__}: {_first_line(exc)})"
    return DatasetUnavailableError(
        f"dataset {name!r} needs the Hugging Face Hub dataset {repo_id!r}, but {why}. "
        f"To use a local copy: {local_copy_hint(name, repo_id)}."
    )


def _scripts_unsupported(name: str, what: str, exc: BaseException) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {name!r}: {what} is a loading-script dataset, and the installed `datasets` (>= 4) no longer "
        f"runs loading scripts ({_first_line(exc)}). Use a parquet / Arrow copy instead: a Hub repository "
        "published as parquet (`hf:<repo_id>`), or a folder written by `DatasetDict.save_to_disk` (made with "
        "datasets < 4 from the script repository) passed as `--data-dir DIR`."
    )


@contextmanager
def _datasets_offline():
    """``datasets``' own offline mode for one call: cached datasets load, anything else fails at once."""
    import datasets.config  # HF datasets loads only for hub datasets (seconds)
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _open_local(path: Path) -> Any:
    import datasets  # HF datasets loads only for hub datasets (seconds)

    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    if (path / "state.json").is_file():
        raise UsageError(f"{path} holds a single saved split; save a DatasetDict with 'train' and 'test' splits")
    with _datasets_offline():  # a local folder never needs the Hub
        return datasets.load_dataset(str(path))


def _open(name: str, spec: HubSpec, data_dir: str | None) -> tuple[Any, str]:
    """Return ``(DatasetDict, source)`` from ``data_dir`` or the Hub (or the local datasets cache)."""
    import datasets  # HF datasets loads only for hub datasets (seconds)

    if data_dir is not None:
        root = Path(data_dir).expanduser()
        path = root / name if (root / name).is_dir() else root
        if not path.is_dir():
            raise DatasetUnavailableError(f"--data-dir {str(root)!r} for dataset {name!r} does not exist")
        try:
            return _open_local(path), str(path.resolve())
        except Exception as exc:  # unreadable local copy: say what was expected, without a raw trace
            if SCRIPTS_UNSUPPORTED in str(exc):
                raise _scripts_unsupported(name, f"the folder {str(path)!r}", exc) from None
            raise DatasetUnavailableError(
                f"cannot read {str(path)!r} as dataset {name!r} ({type(exc).__name__}: {_first_line(exc)}); "
                "expected a `DatasetDict.save_to_disk` folder or a local snapshot of the Hub repository "
                f"(`hf download {spec.repo_id} --repo-type dataset --local-dir DIR`)"
            ) from None
    reachable = _hub.hub_reachable()
    try:
        if reachable:
            return datasets.load_dataset(spec.repo_id, spec.config), f"hf:{spec.repo_id}"
        with _datasets_offline():
            return datasets.load_dataset(spec.repo_id, spec.config), f"hf:{spec.repo_id}"
    except Exception as exc:  # connection / offline / not-found errors from datasets & huggingface_hub
        if SCRIPTS_UNSUPPORTED in str(exc):
            raise _scripts_unsupported(name, f"the Hub repository {spec.repo_id!r}", exc) from None
        raise _unavailable(name, spec.repo_id, exc, reachable) from None


def _pick_split(dd: Any, role: str) -> str | None:
    return next((s for s in SPLIT_ALIASES[role] if s in dd), None)


def _image_column(features: Any) -> str:
    from datasets import Image as HFImage  # HF datasets loads only for hub datasets (seconds)

    found = [c for c, f in features.items() if isinstance(f, HFImage)]
    if not found:
        raise UsageError(f"no image column among {list(features)}")
    return found[0]


def _label_column(features: Any) -> str:
    from datasets import ClassLabel  # HF datasets loads only for hub datasets (seconds)

    class_labels = [c for c, f in features.items() if isinstance(f, ClassLabel)]
    for candidates in ([c for c in LABEL_COLUMN_NAMES if c in class_labels], class_labels,
                       [c for c in LABEL_COLUMN_NAMES if c in features]):
        if candidates:
            return candidates[0]
    raise UsageError(f"cannot tell which column holds the labels among {list(features)}")


def _label_space(dd: Any, splits: Sequence[str], column: str) -> tuple[list[str], dict[Hashable, int]]:
    """Class names and value → index: a ClassLabel's names, else the sorted distinct values."""
    from datasets import ClassLabel  # HF datasets loads only for hub datasets (seconds)

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
        raise UsageError(f"dataset {name!r} ({source}) needs 'train' and 'test' splits; found {list(dd)}")
    present = [s for s in roles.values() if s is not None]
    features = dd[roles["train"]].features
    image_col = spec.image_column or _image_column(features)
    label_col = spec.label_column or _label_column(features)
    for column in (image_col, label_col):
        if column not in features:
            raise UsageError(f"dataset {name!r} ({source}) has no column {column!r}; columns: {list(features)}")
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

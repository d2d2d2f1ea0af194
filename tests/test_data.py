"""Data layer: every source on tiny local data, subsetting, transforms, offline errors. No network."""

from __future__ import annotations

import gzip
import logging
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sclft.data import (
    DatasetUnavailableError,
    TransformedDataset,
    build_transforms,
    list_datasets,
    load_dataset,
    targets_of,
)
from sclft.data.fashion_mnist import CLASS_NAMES as FASHION_CLASSES
from sclft.data.fashion_mnist import read_idx

PAPER_AND_LOCAL = ["cifar10", "cifar100", "digits", "dtd", "fashion_mnist", "fgvc_aircraft", "oxford_pets"]


def _png(path: Path, colour, mode: str = "RGB", size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


# --- registry -----------------------------------------------------------------------------------


def test_list_datasets_sorted_names():
    assert list_datasets() == PAPER_AND_LOCAL


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_dataset("cifar11")
    message = str(err.value)
    assert "cifar11" in message
    for name in PAPER_AND_LOCAL + ["imagefolder:PATH", "hf:<repo_id>"]:
        assert name in message


# --- digits (embedded) --------------------------------------------------------------------------


def test_digits_splits_and_classes():
    splits = load_dataset("digits")
    assert (len(splits.train), len(splits.test), splits.val) == (1347, 450, None)
    assert splits.class_names == [str(i) for i in range(10)] and splits.num_classes == 10
    image, label = splits.train[0]
    assert image.mode == "RGB" and image.size == (8, 8) and isinstance(label, int)
    test_counts, train_counts = Counter(targets_of(splits.test)), Counter(targets_of(splits.train))
    assert all(abs(test_counts[k] - 0.25 * (test_counts[k] + train_counts[k])) <= 1 for k in range(10))  # stratified
    # the official split does not depend on the run seed
    assert load_dataset("digits", seed=5).fingerprint("test") == splits.fingerprint("test")


def test_train_per_class_balanced_seeded_nested(caplog):
    a = load_dataset("digits", train_per_class=7, seed=1)
    b = load_dataset("digits", train_per_class=7, seed=1)
    c = load_dataset("digits", train_per_class=7, seed=2)
    small = load_dataset("digits", train_per_class=3, seed=1)
    assert Counter(targets_of(a.train)) == {k: 7 for k in range(10)}
    assert a.train.indices == b.train.indices and a.fingerprint("train") == b.fingerprint("train")
    assert a.train.indices != c.train.indices and a.fingerprint("train") != c.fingerprint("train")
    assert set(small.train.indices) <= set(a.train.indices)
    assert a.fingerprint("test") != a.fingerprint("train")
    with caplog.at_level(logging.WARNING, logger="sclft.data"):
        big = load_dataset("digits", train_per_class=1000)
    assert len(big.train) == 1347 and "train_per_class=1000" in caplog.text


def test_val_fraction_is_stratified_and_disjoint():
    full = load_dataset("digits")
    splits = load_dataset("digits", val_fraction=0.2, seed=3)
    train_idx, val_idx = set(splits.train.indices), set(splits.val.indices)
    assert not train_idx & val_idx and train_idx | val_idx == set(range(len(full.train)))
    per_class = Counter(targets_of(full.train))
    assert Counter(targets_of(splits.val)) == {k: round(0.2 * n) for k, n in per_class.items()}
    few = load_dataset("digits", val_fraction=0.2, train_per_class=5, seed=3)
    few_train = {few.train.dataset.indices[i] for i in few.train.indices}  # nested subset → base indices
    assert few.val.indices == splits.val.indices and few_train <= train_idx and len(few_train) == 50
    assert len({splits.fingerprint(s) for s in ("train", "val", "test")}) == 3


# --- image folder -------------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            _png(root / split / "dog" / f"{i}.png", (200, 10, 10))
            _png(root / split / "cat" / f"{i}.png", 90, mode="L")  # greyscale → RGB
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (root / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


def test_imagefolder_indexes_and_skips_corrupt(image_folder: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="sclft.data"):
        splits = load_dataset(f"imagefolder:{image_folder}")
    broken = str(image_folder / "train" / "cat" / "broken.jpg")
    assert splits.skipped == [broken] and broken in caplog.text
    assert splits.class_names == ["cat", "dog"] and splits.val is None
    assert (len(splits.train), len(splits.test)) == (6, 4)
    assert Counter(targets_of(splits.train)) == {0: 3, 1: 3}
    image, label = splits.train[0]
    assert (image.mode, label, image.getpixel((0, 0))) == ("RGB", 0, (90, 90, 90))
    assert splits.fingerprint("train") == load_dataset(f"imagefolder:{image_folder}").fingerprint("train")


def test_imagefolder_read_time_failure_is_skipped_not_fatal(image_folder: Path):
    splits = load_dataset(f"imagefolder:{image_folder}", val_fraction=0.34)
    bad = splits.train.dataset.paths[splits.train.indices[0]]
    bad.write_bytes(b"damaged after indexing")
    image, label = splits.train[0]  # the next readable sample stands in
    assert image.mode == "RGB" and str(bad) in splits.skipped


def test_imagefolder_val_dir_and_missing_layout(image_folder: Path, tmp_path: Path):
    from sclft.data import DatasetSplitError

    _png(image_folder / "val" / "dog" / "v.png", (0, 0, 255))
    # NC1 on val needs every class
    with pytest.raises(DatasetSplitError, match="val split: 'cat' \\(folder .*val/cat\\)$"):
        load_dataset(f"imagefolder:{image_folder}")
    _png(image_folder / "val" / "cat" / "v.png", (0, 0, 255))
    assert len(load_dataset(f"imagefolder:{image_folder}").val) == 2
    with pytest.raises(DatasetUnavailableError, match="train"):
        load_dataset(f"imagefolder:{tmp_path / 'nothing'}")



def test_imagefolder_indexes_what_torchvision_imagefolder_finds(tmp_path: Path):
    """Nested sub-folders included, class by class in path order; hidden files and class folders left out."""
    from torchvision.datasets import ImageFolder

    root = tmp_path / "f"
    for rel in ("train/cat/z.png", "train/cat/a.png", "train/cat/sub/b.png", "train/dog/x.jpg", "test/cat/c.png",
                "test/dog/d.png"):
        _png(root / rel, (10, 20, 30))
    splits = load_dataset(f"imagefolder:{root}")
    ours = [(str(p), t) for p, t in zip(splits.train.paths, targets_of(splits.train))]
    assert sorted(ours) == sorted(ImageFolder(str(root / "train")).samples)
    assert [Path(p).relative_to(root / "train").as_posix() for p, _ in ours] == [
        "cat/a.png", "cat/sub/b.png", "cat/z.png", "dog/x.jpg"]
    _png(root / "train" / "cat" / ".hidden.png", (1, 2, 3))
    _png(root / "train" / ".cache" / "e.png", (1, 2, 3))
    again = load_dataset(f"imagefolder:{root}")
    assert again.class_names == ["cat", "dog"] and [str(p) for p in again.train.paths] == [p for p, _ in ours]

# --- Fashion-MNIST IDX --------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def test_fashion_mnist_from_idx_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    splits = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert (len(splits.train), len(splits.test), splits.class_names) == (20, 10, FASHION_CLASSES)
    image, label = splits.test[3]
    assert (image.mode, image.size, label) == ("RGB", (28, 28), 3)
    pixels = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")[3]
    assert np.array_equal(np.asarray(image)[..., 0], pixels)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")


# --- Hugging Face datasets (local copies) -------------------------------------------------------


def _png_bytes(colour, mode="RGB") -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new(mode, (6, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _save_dataset_dict(path: Path, image_col: str, label_col: str, labels: dict[str, list], class_label: bool):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from datasets import Image as HFImage

    names = sorted({v for values in labels.values() for v in values})
    label_feature = ClassLabel(names=[str(n) for n in names]) if class_label else Value("string")
    features = Features({image_col: HFImage(), label_col: label_feature, "extra": Value("int64")})
    splits = {}
    for split, values in labels.items():
        images = [{"bytes": _png_bytes(30 * i, mode="L"), "path": None} for i in range(len(values))]
        column = [names.index(v) for v in values] if class_label else values
        columns = {image_col: images, label_col: column, "extra": list(range(len(values)))}
        splits[split] = Dataset.from_dict(columns, features=features)
    DatasetDict(splits).save_to_disk(str(path))


def test_named_hub_dataset_from_save_to_disk(tmp_path: Path):
    _save_dataset_dict(tmp_path / "cifar10", "img", "label", {"train": [0, 1, 1, 0], "test": [1, 0]}, class_label=True)
    splits = load_dataset("cifar10", data_dir=str(tmp_path), val_fraction=0.5)  # data_dir/<name> is found
    assert splits.class_names == ["0", "1"] and (len(splits.train), len(splits.val), len(splits.test)) == (2, 2, 2)
    image, label = splits.test[0]
    assert image.mode == "RGB" and image.size == (6, 6) and label == 1
    base = splits.test
    assert type(base.ds).__name__ == "Dataset" and not hasattr(base, "images")  # decoded lazily
    assert str((tmp_path / "cifar10").resolve()) in splits.fingerprint("test")


def test_hf_prefix_autodetects_columns_and_skips_corrupt_rows(tmp_path: Path):
    labels = {"train": ["b", "a", "b"], "validation": ["b", "a"], "test": ["a", "b"]}
    _save_dataset_dict(tmp_path / "tiny", "picture", "label", labels, class_label=False)
    splits = load_dataset("hf:someone/tiny", data_dir=str(tmp_path / "tiny"))
    assert splits.class_names == ["a", "b"] and targets_of(splits.train) == [1, 0, 1]
    assert targets_of(splits.val) == [1, 0] and splits.train[1][1] == 0

    from datasets import Image as HFImage
    from datasets import load_from_disk

    dd = load_from_disk(str(tmp_path / "tiny"))
    dd["train"] = dd["train"].cast_column("picture", HFImage(decode=False)).map(
        lambda row, i: {"picture": {"bytes": b"garbage" if i == 0 else row["picture"]["bytes"], "path": None}},
        with_indices=True,
    )
    dd.save_to_disk(str(tmp_path / "tiny2"))
    splits = load_dataset("hf:someone/tiny", data_dir=str(tmp_path / "tiny2"))
    image, label = splits.train[0]
    assert label == targets_of(splits.train)[1] and len(splits.skipped) == 1 and "[train][0]" in splits.skipped[0]


def test_hub_dataset_offline_error_names_id_and_data_dir(monkeypatch, hf_cache: Path):
    import datasets.config
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for name, repo in (("cifar10", "uoft-cs/cifar10"), ("hf:nobody/nothing", "nobody/nothing")):
        with pytest.raises(DatasetUnavailableError) as err:
            load_dataset(name)
        assert repo in str(err.value) and "--data-dir" in str(err.value)
        assert err.value.__cause__ is None and err.value.__suppress_context__


# --- transforms ---------------------------------------------------------------------------------

CONFIG = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
          "crop_pct": 0.875}


@pytest.mark.parametrize("size", [(8, 8), (28, 28), (120, 80)])
def test_eval_transform_shape_dtype_normalisation(size):
    _, eval_tf = build_transforms(CONFIG)
    white = eval_tf(Image.new("RGB", size, (255, 255, 255)))
    black = eval_tf(Image.new("RGB", size, (0, 0, 0)))
    assert white.shape == (3, 32, 32) and white.dtype == torch.float32
    assert torch.allclose(white, torch.ones_like(white), atol=1e-5)
    assert torch.allclose(black, -torch.ones_like(black), atol=1e-5)


def test_low_res_images_are_not_cropped():
    _, eval_tf = build_transforms(CONFIG)
    image = Image.new("RGB", (8, 8), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))  # corner pixel survives: whole image kept
    assert eval_tf(image)[:, 0, 0].min() > 0


def test_train_transform_deterministic_without_augment_and_size_override():
    image = load_dataset("digits").train[0][0]
    train_tf, eval_tf = build_transforms(CONFIG, image_size=48, augment=False)
    assert train_tf is eval_tf
    assert torch.equal(train_tf(image), train_tf(image)) and train_tf(image).shape == (3, 48, 48)
    aug_tf, _ = build_transforms(CONFIG, augment=True)
    assert aug_tf is not eval_tf and aug_tf(image).shape == (3, 32, 32)


def test_transformed_dataset_yields_tensors():
    splits = load_dataset("digits", train_per_class=2)
    _, eval_tf = build_transforms(CONFIG)
    data = TransformedDataset(splits.train, eval_tf)
    x, y = data[0]
    assert x.shape == (3, 32, 32) and y == targets_of(splits.train)[0] and len(data) == 20
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch[0].shape == (4, 3, 32, 32) and batch[1].dtype == torch.int64


def test_unusable_data_dir_is_a_clear_error(tmp_path: Path, hf_cache: Path):
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_dataset("dtd", data_dir=str(tmp_path / "missing"))
    with pytest.raises(DatasetUnavailableError, match="save_to_disk") as err:
        load_dataset("dtd", data_dir=str(tmp_path))  # an empty folder
    assert err.value.__cause__ is None
    (tmp_path / "notes.txt").write_text("a text file makes a text dataset with only a train split")
    with pytest.raises(ValueError, match="needs 'train' and 'test' splits"):
        load_dataset("dtd", data_dir=str(tmp_path))


# --- high-bit-depth pixels ----------------------------------------------------------------------


def _gradient16() -> np.ndarray:
    """A 16-bit horizontal ramp over the full 0..65535 range (256 columns, 2 rows)."""
    row = np.linspace(0, 65535, 256).round().astype(np.uint16)
    return np.stack([row, row[::-1]])


def test_16bit_png_is_scaled_not_clipped_in_image_folders(tmp_path: Path):
    ramp = _gradient16()
    for split in ("train", "test"):
        path = tmp_path / split / "ramp" / "r.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(ramp).save(path)  # a 16-bit greyscale PNG
    with Image.open(tmp_path / "test" / "ramp" / "r.png") as raw:
        assert raw.mode.startswith("I")  # Pillow really decodes it as 16-bit
    image, _ = load_dataset(f"imagefolder:{tmp_path}").test[0]
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.dtype == np.uint8
    assert np.array_equal(pixels[..., 0], (ramp >> 8).astype(np.uint8))  # independent reference: top 8 bits
    assert np.array_equal(pixels[..., 0], pixels[..., 2]) and len(np.unique(pixels)) == 256  # spread, not 0/255


def test_16bit_and_float_images_in_hub_datasets(tmp_path: Path, hf_cache: Path):
    import io

    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage

    ramp = _gradient16()
    floats = (ramp / 65535.0).astype(np.float32)
    encoded = []
    for array, fmt in ((ramp, "PNG"), (floats, "TIFF")):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)  # mode I;16 PNG, mode F TIFF
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    features = Features({"image": HFImage(), "label": ClassLabel(names=["a", "b"])})
    split = Dataset.from_dict({"image": encoded, "label": [0, 1]}, features=features)
    DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "deep"))
    splits = load_dataset("hf:someone/deep", data_dir=str(tmp_path / "deep"))
    png, tiff = (np.asarray(splits.test[i][0])[..., 1] for i in range(2))
    assert np.array_equal(png, (ramp >> 8).astype(np.uint8))
    # float images are read as 0..1 (torchvision's convert_image_dtype): round(255 * v)
    assert np.array_equal(tiff, np.round(floats.astype(np.float64) * 255).astype(np.uint8))
    assert len(np.unique(tiff)) == 256


def test_to_rgb_int32_and_out_of_range_float():
    from sclft.data.base import to_rgb

    values = np.array([[-5, 0, 256, 65535, 70000]], dtype=np.int32)
    assert np.asarray(to_rgb(Image.fromarray(values, "I")))[0, :, 0].tolist() == [0, 0, 1, 255, 255]
    floats = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0, np.nan]], dtype=np.float32)
    assert np.asarray(to_rgb(Image.fromarray(floats, "F")))[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]


# --- split checks before any work ---------------------------------------------------------------


def _folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _png(root / split / cls / f"{i}.png", (10 * i, 0, 0))
    return root


@pytest.mark.parametrize("layout, split, named", [
    ({"train": {"cat": 2, "dog": 2}, "test": {"cat": 1}}, "test", "'dog'"),       # class missing from test
    ({"train": {"cat": 2, "dog": 0}, "test": {"cat": 1, "dog": 1}}, "train", "'dog'"),  # empty class folder
    ({"train": {"cat": 2, "dog": 2}, "test": {}}, "test", "empty"),                 # empty split
])
def test_bad_splits_are_refused_before_work(tmp_path: Path, layout, split, named):
    from sclft.data import DatasetSplitError

    root = _folder(tmp_path / "set", layout)
    with pytest.raises(DatasetSplitError) as err:
        load_dataset(f"imagefolder:{root}")
    message = str(err.value)
    assert isinstance(err.value, ValueError) and f"{split} split" in message and named in message
    if named != "empty":
        assert str(root / split / "dog") in message  # the folder to look at


def test_all_corrupt_class_folder_is_named_with_its_skipped_files(tmp_path: Path):
    from sclft.data import DatasetSplitError

    root = _folder(tmp_path / "set", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 0}})
    for i in range(3):
        (root / "test" / "dog" / f"bad{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DatasetSplitError, match=r"'dog' \(folder .*test/dog, 3 unreadable file\(s\) skipped\)"):
        load_dataset(f"imagefolder:{root}")


def test_labels_out_of_range_and_empty_val_are_refused():
    from sclft.data import ArrayImageDataset, DatasetSplitError, DatasetSplits

    images = np.zeros((4, 2, 2), np.uint8)
    good = ArrayImageDataset(images, [0, 1, 0, 1])
    bad = DatasetSplits("toy", good, ArrayImageDataset(images, [0, 1, 2, 1]), None, ["a", "b"])
    with pytest.raises(DatasetSplitError, match=r"test split has label\(s\) \[2\] outside 0..1"):
        bad.check()
    empty_val = DatasetSplits("toy", good, good, ArrayImageDataset(images[:0], []), ["a", "b"])
    with pytest.raises(DatasetSplitError, match="val split is empty$"):
        empty_val.check()
    val_without_b = DatasetSplits("toy", good, good, ArrayImageDataset(images[:1], [0]), ["a", "b"],
                                  options={"val_fraction": 0.1})
    with pytest.raises(DatasetSplitError, match=r"val split: 'b' \(raise --val-fraction"):
        val_without_b.check()
    assert DatasetSplits("toy", good, good, None, ["a", "b"]).check().num_classes == 2


def test_cli_train_exits_2_on_a_missing_test_class_before_building_a_model(tmp_path: Path, monkeypatch, capsys):
    import importlib

    from sclft.cli import main

    train_mod = importlib.import_module("sclft.training.loop")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built although the splits are unusable")

    monkeypatch.setattr(train_mod, "build_backbone", no_model)
    root = _folder(tmp_path / "set", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1}})
    code = main(["train", "--data", f"imagefolder:{root}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "'dog'" in err and "test split" in err and "Traceback" not in err


def test_few_shot_warning_names_the_class(caplog):
    from sclft.data.subsets import few_shot_indices

    with caplog.at_level(logging.WARNING, logger="sclft.data"):
        few_shot_indices([0, 0, 1, 2, 2], 2, 0, ["cat", "dog", "eel"])
    assert "class 'dog' has only 1 images in the train split (< train_per_class=2)" in caplog.text
    assert "class 1 " not in caplog.text


# --- test_subset:N:NAME -------------------------------------------------------------------------


def test_test_subset_is_a_dataset_of_sclft_data(caplog):
    from sclft.data import _registry, list_prefixes

    assert "test_subset:N:NAME" in list_prefixes()
    # registered by sclft.data itself, not as a side effect of the bench
    assert _registry._PREFIXES["test_subset"][0].__module__ == "sclft.data.cut_split"
    splits = load_dataset("test_subset:3:digits", seed=4)
    assert Counter(targets_of(splits.test)) == {k: 3 for k in range(10)} and splits.options["test_per_class"] == 3
    assert splits.test.indices == load_dataset("test_subset:3:digits", seed=9).test.indices  # fixed seed 0
    with caplog.at_level(logging.WARNING, logger="sclft.data"):
        load_dataset("test_subset:1000:digits")
    assert "class '0' has only" in caplog.text and "test split (< test_per_class=1000)" in caplog.text

"""Frozen-prefix cache: cached training equals uncached training; keys and disk reuse are never stale."""

import importlib
import json

import pytest
import torch
from safetensors.torch import load_file

import sclft
from sclft import cache
from sclft.data import build_transforms, load_dataset
from sclft.data.base import LabelSubset, targets_of
from sclft.data.subsets import few_shot_indices

train_mod = importlib.import_module("sclft.training.loop")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest


@pytest.fixture
def small_test_split(monkeypatch):
    """digits with 3 test images per class, so each tiny run evaluates 30 images."""
    real = train_mod.load_dataset

    def load(*args, **kwargs):
        splits = real(*args, **kwargs)
        splits.test = LabelSubset(splits.test, few_shot_indices(targets_of(splits.test), 3, 0))
        return splits

    monkeypatch.setattr(train_mod, "load_dataset", load)


@pytest.mark.parametrize("strategy", ["layer_ft", "scl_ft", "linear_probe"])
def test_cached_and_uncached_training_give_the_same_parameters(tmp_path, small_test_split, strategy):
    runs = {}
    for mode in ("memory", "off"):
        metrics = train_mod.train(backbone="resnet18", pretrained=False, data="digits", image_size=32,
                                  train_per_class=5, epochs=2, batch_size=16, strategy=strategy, layer="layer3.0",
                                  cache=mode, lr=1e-2, out=str(tmp_path / mode), progress=False)
        assert metrics["cached"] is (mode != "off")
        runs[mode] = load_file(str(tmp_path / mode / "model.safetensors"))
    assert runs["memory"].keys() == runs["off"].keys()
    for name, value in runs["off"].items():
        torch.testing.assert_close(runs["memory"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    start = sclft.TransferModel(sclft.create_backbone("resnet18", pretrained=False), strategy, 10, "layer3.0")
    head = start.state_dict()["head.weight"]
    assert not torch.allclose(runs["off"]["head.weight"], head)  # it trained


def _model(backbone, strategy="layer_ft", layer="layer3.0"):
    return sclft.TransferModel(backbone, strategy, num_classes=10, layer=layer)


def test_cache_key_changes_with_layer_weights_transform_samples_and_dtype(backbone_factory):
    b = backbone_factory("resnet18")
    splits = load_dataset("digits", train_per_class=3)
    fp = splits.fingerprint("train")
    _, tf32 = build_transforms(b.data_config, 32)
    _, tf40 = build_transforms(b.data_config, 40)
    base = cache.frozen_cache_key(_model(b), fp, tf32)
    assert cache.frozen_cache_key(_model(b), fp, tf32) == base
    assert cache.frozen_cache_key(_model(b, "scl_ft"), fp, tf32) == base  # same frozen prefix
    others = {
        "layer": cache.frozen_cache_key(_model(b, layer="layer2.0"), fp, tf32),
        "strategy part": cache.frozen_cache_key(_model(b, "linear_probe"), fp, tf32),
        "transform": cache.frozen_cache_key(_model(b), fp, tf40),
        "samples": cache.frozen_cache_key(_model(b), splits.fingerprint("test"), tf32),
        "dtype": cache.frozen_cache_key(_model(b), fp, tf32, torch.float16),
    }
    assert len({base, *others.values()}) == len(others) + 1, others
    other = sclft.create_backbone("resnet18", pretrained=False)  # a different random init
    assert cache.frozen_cache_key(_model(other), fp, tf32) != base
    with torch.no_grad():
        other.load_state_dict(b.state_dict())
    assert cache.frozen_cache_key(_model(other), fp, tf32) == base
    with torch.no_grad():  # an in-place update invalidates the memoised fingerprint
        other.model.layer1[0].conv1.weight[0, 0, 0, 0] += 1.0
    assert cache.frozen_cache_key(_model(other), fp, tf32) != base


def test_cache_key_changes_with_library_versions(backbone_factory, monkeypatch):
    import sclft.versions

    b = backbone_factory("resnet18")
    fp = load_dataset("digits", train_per_class=3).fingerprint("train")
    _, tf = build_transforms(b.data_config, 32)
    base = cache.frozen_cache_key(_model(b), fp, tf)
    real = sclft.versions.library_versions()
    assert real["torch"] and real["timm"]
    monkeypatch.setattr(sclft.versions, "library_versions", lambda: {**real, "torch": "9.9.9"})
    assert cache.frozen_cache_key(_model(b), fp, tf) != base


class _Counting(torch.nn.Module):
    """A stand-in with ``frozen_forward`` that counts the images it sees."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale, self.seen = scale, 0

    def frozen_forward(self, x):
        self.seen += len(x)
        return x.flatten(1) * self.scale


def _data(n=20):
    x = torch.arange(n * 6, dtype=torch.float32).reshape(n, 6)
    return torch.utils.data.TensorDataset(x, torch.arange(n) % 4)


def test_disk_cache_is_reused_only_with_the_same_key(tmp_path):
    data = _data()
    first = _Counting()
    built = cache.build_cache(first, data, "key-a", storage="disk", cache_dir=tmp_path, batch_size=8, progress=False)
    assert built.storage == "disk" and first.seen == 20
    assert json.loads((tmp_path / "key-a" / "meta.json").read_text())["key"] == "key-a"
    assert not list(tmp_path.glob(".*partial"))
    again = _Counting()
    reused = cache.build_cache(again, data, "key-a", storage="auto", cache_dir=tmp_path, progress=False)
    assert again.seen == 0 and reused.storage == "disk"
    assert torch.equal(reused[3][0], data[3][0]) and reused[3][1] == 3
    other = _Counting(2.0)
    fresh = cache.build_cache(other, data, "key-b", storage="disk", cache_dir=tmp_path, progress=False)
    assert other.seen == 20 and torch.equal(fresh[3][0], 2 * data[3][0])
    memory = _Counting()
    assert cache.build_cache(memory, data, "key-a", storage="memory", cache_dir=tmp_path, progress=False).storage \
        == "memory" and memory.seen == 20  # memory never reads disk


@pytest.mark.parametrize("damage", ["no_meta", "other_key", "wrong_rows", "truncated"])
def test_incomplete_or_foreign_disk_cache_is_rebuilt(tmp_path, damage):
    data = _data()
    cache.build_cache(_Counting(), data, "key", storage="disk", cache_dir=tmp_path, progress=False)
    d = tmp_path / "key"
    meta = json.loads((d / "meta.json").read_text())
    if damage == "no_meta":
        (d / "meta.json").unlink()
    elif damage == "other_key":
        (d / "meta.json").write_text(json.dumps({**meta, "key": "elsewhere"}))
    elif damage == "wrong_rows":
        (d / "meta.json").write_text(json.dumps({**meta, "shape": [19, 6]}))
    else:
        (d / "features.npy").write_bytes((d / "features.npy").read_bytes()[:100])
    rebuilt = _Counting(3.0)
    got = cache.build_cache(rebuilt, data, "key", storage="disk", cache_dir=tmp_path, progress=False)
    assert rebuilt.seen == 20 and got.storage == "disk" and torch.equal(got[1][0], 3 * data[1][0])
    reader = _Counting()
    assert torch.equal(cache.build_cache(reader, data, "key", cache_dir=tmp_path, progress=False)[1][0], 3 * data[1][0])
    assert reader.seen == 0 and not list(tmp_path.glob(".*partial"))


def test_auto_storage_spills_to_disk_when_memory_is_short(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "available_memory", lambda: 100)
    got = cache.build_cache(_Counting(), _data(), "big", cache_dir=tmp_path, progress=False)
    assert got.storage == "disk" and (tmp_path / "big" / "meta.json").is_file()
    monkeypatch.setattr(cache, "available_memory", lambda: 1 << 40)
    assert cache.build_cache(_Counting(), _data(), "small", cache_dir=tmp_path, progress=False).storage == "memory"
    with pytest.raises(ValueError, match="storage"):
        cache.build_cache(_Counting(), _data(), "x", storage="ram", cache_dir=tmp_path, progress=False)


def test_trainer_uses_a_disk_cache_on_the_second_run(tmp_path, small_test_split):
    kwargs = dict(backbone="resnet18", pretrained=False, data="digits", image_size=32, train_per_class=2, epochs=1,
                  strategy="linear_probe", cache="disk", cache_dir=str(tmp_path / "c"), progress=False)
    train_mod.train(out=str(tmp_path / "a"), **kwargs)
    dirs = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(dirs) == 2  # train and test splits
    stamps = {p: (tmp_path / "c" / p / "features.npy").stat().st_mtime_ns for p in dirs}
    train_mod.train(out=str(tmp_path / "b"), **kwargs)
    assert {p: (tmp_path / "c" / p / "features.npy").stat().st_mtime_ns for p in dirs} == stamps
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == dirs


def test_tampered_disk_cache_content_is_rebuilt_with_a_warning(tmp_path, caplog):
    """Labels shifted by one (meta.json untouched) must not be trained on: the content digest catches it."""
    import numpy as np

    data = _data()
    cache.build_cache(_Counting(), data, "key", storage="disk", cache_dir=tmp_path, progress=False)
    labels = np.load(tmp_path / "key" / "labels.npy")
    np.save(tmp_path / "key" / "labels.npy", (labels + 1) % 4)
    rebuilt = _Counting()
    with caplog.at_level("WARNING", logger="sclft.cache"):
        got = cache.build_cache(rebuilt, data, "key", storage="disk", cache_dir=tmp_path, progress=False)
    assert rebuilt.seen == 20 and "digest" in caplog.text and str(tmp_path / "key") in caplog.text
    assert [got[i][1] for i in range(20)] == [int(y) for y in torch.arange(20) % 4]
    feats = np.load(tmp_path / "key" / "features.npy")
    feats[3, 0] += 1.0  # one changed value is caught too
    np.save(tmp_path / "key" / "features.npy", feats)
    again = _Counting()
    cache.build_cache(again, data, "key", storage="disk", cache_dir=tmp_path, progress=False)
    assert again.seen == 20


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_non_finite_features_are_reported_as_the_cache(tmp_path, storage):
    data = _data()
    x = data.tensors[0].clone()
    x[7, 2] = float("nan")
    broken = torch.utils.data.TensorDataset(x, data.tensors[1])
    with pytest.raises(cache.NonFiniteFeaturesError, match=r"feature cache.*1 of 20 rows, first at row 7"):
        cache.build_cache(_Counting(), broken, "nan", storage=storage, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "nan").exists() and not list(tmp_path.glob(".*partial"))


def test_non_finite_values_in_a_valid_disk_cache_name_its_folder(tmp_path):
    """A cache whose digest matches but holds inf (written by a broken backbone) is named, with its path."""
    import numpy as np

    data = _data()
    cache.build_cache(_Counting(), data, "key", storage="disk", cache_dir=tmp_path, progress=False)
    d = tmp_path / "key"
    feats = np.load(d / "features.npy")
    feats[5, 1] = np.inf
    np.save(d / "features.npy", feats)
    meta = json.loads((d / "meta.json").read_text())
    meta["sha256"] = cache.content_digest(feats, np.load(d / "labels.npy"))
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"disk feature cache {d}.*row 5"):
        cache.build_cache(_Counting(), data, "key", storage="disk", cache_dir=tmp_path, progress=False)

"""Hub datasets without the Hub: the mteb/FGVCAircraft parquet layout as a local snapshot, the local
datasets cache offline, no network attempt when the Hub is unreachable, and clear errors."""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sclft import _hub
from sclft.data import DatasetUnavailableError, load_dataset, targets_of
from sclft.data.hub import HUB_DATASETS

FGVC_REPO = "mteb/FGVCAircraft"
SPLITS = {"train": 100, "validation": 100, "test": 100}  # one image per variant per split (real: 3334 / 3333 / 3333)
VARIANTS = ["707-320", "727-200", "737-200"] + [f"variant-{i:03d}" for i in range(3, 100)]


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 3), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _fgvc_rows(split: str) -> dict:
    """Row i has variant (i * 7 + offset) % 100 and grey level == its variant, so labels can be checked from pixels."""
    offset = list(SPLITS).index(split)
    variants = [(i * 7 + offset) % 100 for i in range(SPLITS[split])]
    return {"image": [{"bytes": _png(v), "path": None} for v in variants],
            "family": [v % 70 for v in variants], "manufacturer": [v % 30 for v in variants], "variant": variants}


def _fgvc_features():
    from datasets import ClassLabel, Features
    from datasets import Image as HFImage

    return Features({
        "image": HFImage(),
        "family": ClassLabel(names=[f"family-{i}" for i in range(70)]),
        "manufacturer": ClassLabel(names=[f"maker-{i}" for i in range(30)]),
        "variant": ClassLabel(names=VARIANTS),
    })


README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
  - split: test
    path: data/test-*
---
"""


def write_fgvc_snapshot(root: Path) -> dict[str, Path]:
    """What `hf download mteb/FGVCAircraft --repo-type dataset --local-dir ROOT` lays out: README.md and
    data/<split>-00000-of-00001.parquet with columns image (Image), family, manufacturer, variant (ClassLabel)."""
    from datasets import Dataset

    files = {}
    for split in SPLITS:
        path = root / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(_fgvc_rows(split), features=_fgvc_features()).to_parquet(str(path))
        files[split] = path
    (root / "README.md").write_text(README)
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    meta = root / ".cache" / "huggingface" / "download" / "data"  # what `hf download --local-dir` keeps beside
    meta.mkdir(parents=True)
    for path in files.values():
        (meta / f"{path.name}.metadata").write_text("3ae0e4e94e37c610c26df758ec3255fa90d80e67\netag\n0.0\n")
    return files


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Online configuration (no HF_HUB_OFFLINE) on a machine without network; records every connect / DNS try."""
    import datasets.config
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=3.0: False)
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _check_fgvc(splits) -> None:
    assert splits.class_names == VARIANTS and splits.num_classes == 100
    assert {s: len(getattr(splits, s)) for s in ("train", "val", "test")} == {"train": 100, "val": 100, "test": 100}
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        expected = _fgvc_rows(name)["variant"]
        assert targets_of(getattr(splits, split)) == expected
    image, label = splits.test[5]
    assert image.mode == "RGB" and image.size == (4, 3)
    assert label == (5 * 7 + 2) % 100 and np.asarray(image)[0, 0].tolist() == [label] * 3


def test_fgvc_aircraft_is_the_parquet_repo():
    spec = HUB_DATASETS["fgvc_aircraft"]
    assert (spec.repo_id, spec.image_column, spec.label_column) == (FGVC_REPO, "image", "variant")


def test_fgvc_aircraft_loads_a_hub_snapshot_via_data_dir(tmp_path: Path, hf_cache: Path):
    write_fgvc_snapshot(tmp_path / "snapshot")
    _check_fgvc(load_dataset("fgvc_aircraft", data_dir=str(tmp_path / "snapshot")))
    write_fgvc_snapshot(tmp_path / "all" / "fgvc_aircraft")  # one --data-dir holding several datasets
    splits = load_dataset("fgvc_aircraft", data_dir=str(tmp_path / "all"), train_per_class=1)
    assert len(splits.train) == 100 and str((tmp_path / "all" / "fgvc_aircraft").resolve()) in splits.source


def test_cached_hub_dataset_loads_offline_without_network(tmp_path: Path, hf_cache: Path, no_network: list):
    """What `datasets.load_dataset("mteb/FGVCAircraft")` leaves in the cache loads with the Hub unreachable."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = write_fgvc_snapshot(tmp_path / "snapshot")
    builder = Parquet(cache_dir=str(tmp_path / "build"), dataset_name="fgvc_aircraft",
                      data_files={k: str(v) for k, v in files.items()}, hash="3ae0e4e94e37")
    builder.download_and_prepare()
    cached = hf_cache / "mteb___fgvc_aircraft" / "default" / "0.0.0" / "3ae0e4e94e37"
    cached.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, cached)
    splits = load_dataset("fgvc_aircraft")
    _check_fgvc(splits)
    assert splits.source == f"hf:{FGVC_REPO}" and no_network == []


def test_unreachable_hub_fails_at_once_with_hf_download_hint(hf_cache: Path, no_network: list):
    import datasets.config

    cases = (("fgvc_aircraft", FGVC_REPO), ("cifar10", "uoft-cs/cifar10"), ("hf:nobody/nothing", "nobody/nothing"))
    for name, repo in cases:
        with pytest.raises(DatasetUnavailableError) as err:
            load_dataset(name)
        message = str(err.value)
        assert f"hf download {repo} --repo-type dataset --local-dir DIR" in message
        assert "not reachable" in message and "--data-dir DIR" in message and "huggingface-cli" not in message
        assert err.value.__cause__ is None and err.value.__suppress_context__
    assert no_network == []  # no DNS lookup, no connect, hence no retries
    assert datasets.config.HF_HUB_OFFLINE is False  # datasets' offline mode was switched on for the call only


def test_script_only_repository_is_named_as_such(tmp_path: Path, hf_cache: Path, monkeypatch):
    old = tmp_path / "FGVC-Aircraft"
    old.mkdir()
    (old / "FGVC-Aircraft.py").write_text("import datasets  # a loading script\n")
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("hf:HuggingFaceM4/FGVC-Aircraft", data_dir=str(old))  # datasets' own refusal, locally
    assert "loading-script" in str(err.value) and "no longer" in str(err.value) and "parquet" in str(err.value)

    import datasets

    def refuse_script(*args, **kwargs):  # what datasets >= 4 raises for a script repository on the Hub
        raise RuntimeError("Dataset scripts are no longer supported, but found FGVC-Aircraft.py")

    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", refuse_script)
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("hf:HuggingFaceM4/FGVC-Aircraft")
    message = str(err.value)
    assert "'HuggingFaceM4/FGVC-Aircraft' is a loading-script dataset" in message and "reachable" not in message


APT_LINE = "sudo apt-get update && sudo apt-get install dataset-fashion-mnist"  # what a fresh machine needs


def test_missing_fashion_mnist_says_apt_get(monkeypatch, tmp_path: Path, hf_cache: Path, no_network: list):
    from sclft.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-such-dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    for data_dir in (None, str(empty)):  # nothing installed; a --data-dir without the IDX files
        with pytest.raises(DatasetUnavailableError) as err:
            load_dataset("fashion_mnist", data_dir=data_dir)
        message = str(err.value)
        assert f"`{APT_LINE}`" in message and "--data-dir DIR" in message, message
        assert "t10k-labels-idx1-ubyte" in message and "hf download zalando-datasets/fashion_mnist" in message
        assert str(data_dir or tmp_path / "no-such-dir") in message and no_network == []
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert APT_LINE in readme  # the README and the error give the same command


def test_the_hub_probe_follows_huggingface_hub_endpoint_and_offline_mode(tmp_path: Path):
    """HF_ENDPOINT (a mirror) is the host probed, as huggingface_hub resolves it; HF_HUB_OFFLINE=1 probes nothing."""
    import os
    import subprocess
    import sys

    code = ("from huggingface_hub import constants; from sclft import _hub; "
            "print(constants.ENDPOINT, _hub.hub_host(), _hub.hub_reachable(), _hub.hub_offline_flag())")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    with socket.socket() as mirror, socket.socket() as closed:
        mirror.bind(("127.0.0.1", 0))
        mirror.listen(1)
        mirror.settimeout(60)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused
        port, dead = mirror.getsockname()[1], closed.getsockname()[1]

        def run(endpoint: str, **extra: str) -> list[str]:
            out = subprocess.run([sys.executable, "-c", code], env={**env, "HF_ENDPOINT": endpoint, **extra},
                                 capture_output=True, text=True, check=True).stdout
            return out.split()

        assert run(f"http://127.0.0.1:{port}/") == [f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", "True", "False"]
        mirror.accept()[0].close()  # the probe connected to the mirror, not to huggingface.co
        assert run(f"http://127.0.0.1:{dead}")[2:] == ["False", "False"]
        assert run(f"http://127.0.0.1:{port}", HF_HUB_OFFLINE="1")[2:] == ["False", "True"]
        mirror.settimeout(0)
        with pytest.raises(BlockingIOError):  # offline: no second connection
            mirror.accept()

"""A run folder, a feature cache and a bench folder are untrusted input: no file in them is ever unpickled.

A malicious pickle (its ``__reduce__`` writes a marker file) is planted in every file that ``--resume``,
``sclft eval``, ``load()``, the frozen-prefix cache and ``sclft bench --report`` read, and in the files
Accelerate's pickling ``load_state`` used to read. Each case asserts that the marker never appears (no code
ran), that no traceback is printed, and that the command either ignores the stray file (exit 0) or refuses
the damaged one with an error naming it (exit 2).
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_files import forge_digest

from sclft.cache import load_disk_cache
from sclft.cli import main
from sclft.training import load

TINY = ["--backbone", "resnet18", "--no-pretrained", "--data", "digits", "--image-size", "16",
        "--train-per-class", "3", "--epochs", "1", "--batch-size", "16", "--no-progress", "--strategy", "layer_ft",
        "--layer", "layer1.0", "--eval-every", "0", "--cache", "disk"]


class Evil:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def payload(kind: str, marker: Path) -> bytes:
    """The bytes of a malicious file: a raw pickle, a ``torch.save`` zip, or an ``.npy`` object array."""
    if kind == "pickle":
        return pickle.dumps({"state": Evil(marker)})
    buf = io.BytesIO()
    if kind == "torch":
        torch.save({"state": Evil(marker)}, buf)
    else:
        np.save(buf, np.array([Evil(marker)], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "torch", "npy"])
def test_the_payload_runs_code_when_unpickled(tmp_path, kind):
    """The reference: each payload does run code when it is loaded the unsafe way."""
    marker = tmp_path / "ran"
    data = payload(kind, marker)
    if kind == "pickle":
        pickle.loads(data)
    elif kind == "torch":
        torch.load(io.BytesIO(data), weights_only=False)
    else:
        np.load(io.BytesIO(data), allow_pickle=True)
    assert marker.read_text() == "code ran"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One finished 1-epoch run (its checkpoint kept) with a disk feature cache, reused by every case."""
    root = tmp_path_factory.mktemp("security")
    assert main(["train", *TINY, "--cache-dir", str(root / "cache"), "--out", str(root / "run")]) == 0
    assert any((root / "cache").glob("*/features.npy"))
    return root


CKPT = "run/checkpoint/epoch-0001"
ACCELERATE_FILES = [f"{CKPT}/accelerate/{n}" for n in ("custom_checkpoint_0.pkl", "optimizer.bin", "scheduler.bin",
                                                        "scaler.pt", "random_states_0.pkl", "sampler.bin")]


@dataclass
class Plant:
    id: str
    command: str  # resume | eval | load | cache | bench
    files: tuple[str, ...]  # relative to the fixture's root; "CACHE/x" = x in the feature cache's folder
    kind: str = "pickle"
    code: int = 2  # 0: the stray file is ignored
    rehash: bool = False  # record the planted file's sha256 where the run records digests (passes that check)


PLANTS = [
    # --resume: Accelerate's old pickled files are never opened; each of our files is verified, then parsed safely
    Plant("resume-stray-pickles", "resume", (*ACCELERATE_FILES, f"{CKPT}/custom_checkpoint_0.pkl",
                                             f"{CKPT}/optimizer.bin", f"{CKPT}/random_states_0.pkl",
                                             "run/checkpoint/latest.pkl"), code=0),
    *[Plant(f"resume-{name}", "resume", (f"{CKPT}/{name}",), kind="torch") for name in
      ("model.safetensors", "optimizer.safetensors", "sampler.safetensors", "rng_0.safetensors",
       "training_state.json")],
    *[Plant(f"resume-{name}-rehashed", "resume", (f"{CKPT}/{name}",), kind="torch", rehash=True) for name in
      ("model.safetensors", "optimizer.safetensors", "sampler.safetensors", "rng_0.safetensors",
       "training_state.json")],
    Plant("resume-latest-json", "resume", ("run/checkpoint/latest.json",)),
    # sclft eval / load(): the run's files, and a weights file config.json points at
    *[Plant(f"eval-{name}{'-rehashed' * rehash}", "eval", (f"run/{name}",), rehash=rehash)
      for name in ("model.safetensors", "config.json", "train_config.json", "manifest.json") for rehash in (0, 1)
      if not (rehash and name == "manifest.json")],
    Plant("eval-stray-pkl", "eval", ("run/model.pkl", "run/pytorch_model.bin", "run/optimizer.bin"), code=0),
    Plant("eval-checkpoint-in-run", "eval", ("run/weights.pth",), kind="torch"),
    Plant("eval-checkpoint-outside", "eval", ("elsewhere/weights.pth",), kind="torch"),
    Plant("load-model", "load", ("run/model.safetensors",), kind="torch"),
    Plant("load-config", "load", ("run/config.json",)),
    Plant("load-checkpoint-in-run", "load", ("run/weights.bin",), kind="torch"),
    # the frozen-prefix cache: .npy object arrays are never unpickled (the cache is rebuilt; training with it
    # is in test_cache.py)
    Plant("cache-features", "cache", ("CACHE/features.npy",), kind="npy", code=0),
    Plant("cache-labels", "cache", ("CACHE/labels.npy",), kind="npy", code=0),
    Plant("cache-meta", "cache", ("CACHE/meta.json",), code=0),
    # sclft bench --report-only: the files of a bench folder ("RUN/x": x in every run folder of the smoke suite)
    Plant("bench-report", "bench", ("bench/bench.json", "bench/summary.json", "RUN/metrics.json", "RUN/config.json",
                                    "RUN/train_config.json", "RUN/model.safetensors", "RUN/model.pkl",
                                    "bench/features.npy")),
]


def _smoke_runs(capsys) -> list[str]:
    """The run ids of the smoke suite, as ``sclft bench --dry-run`` lists them."""
    assert main(["bench", "--suite", "smoke", "--out", "unused", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [line.split()[0] for line in lines[1:] if line and "-s" in line.split()[0]]


@pytest.mark.parametrize("plant", PLANTS, ids=[p.id for p in PLANTS])
def test_no_planted_pickle_ever_runs(run, plant, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SCLFT_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run, tmp_path, dirs_exist_ok=True)
    marker = tmp_path / "CODE_RAN"
    cache = next((tmp_path / "cache").glob("*/features.npy")).parent
    targets = []
    for rel in plant.files:
        if rel.startswith("RUN/"):
            targets += [tmp_path / "bench" / "experiments" / run_id / rel[4:] for run_id in _smoke_runs(capsys)]
        else:
            targets.append(cache / rel[6:] if rel.startswith("CACHE/") else tmp_path / rel)
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload(plant.kind, marker))
        if plant.rehash:
            forge_digest(target)
    if "checkpoint-" in plant.id:  # config.json names the planted weights file
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        config["checkpoint"] = str(tmp_path / plant.files[0])
        del config["model_sha256"]  # as an older run (else the edit itself is refused first)
        (tmp_path / "run" / "config.json").write_text(json.dumps(config))
        (tmp_path / "run" / "manifest.json").unlink()

    common = ["--cache-dir", str(tmp_path / "cache")]
    if plant.command == "cache":  # the one reader of a disk cache: an unreadable cache is rebuilt (None)
        key = json.loads((run / "cache" / cache.name / "meta.json").read_text())["key"]
        assert load_disk_cache(cache, key) is None
        code, err = 0, ""
    elif plant.command == "load":
        with pytest.raises(ValueError, match=Path(plant.files[0]).name):
            load(tmp_path / "run")
        code, err = 2, ""
    else:
        argv = {"resume": ["train", *TINY, *common, "--out", str(tmp_path / "run"), "--resume"],
                "eval": ["eval", "--checkpoint", str(tmp_path / "run"), "--no-progress"],
                "bench": ["bench", "--suite", "smoke", "--out", str(tmp_path / "bench"), "--report-only"],
                }[plant.command]
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        err = out.err + out.out
        assert "Traceback" not in err
    assert not marker.exists(), f"code ran from a planted file: {plant.files}"
    assert code == plant.code, err
    if plant.code == 2 and plant.command != "load":
        assert any(Path(f).name in err for f in plant.files), err  # the error names the file

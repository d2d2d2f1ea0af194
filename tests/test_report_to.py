"""``--report-to tensorboard,wandb`` (Accelerate's trackers; ``--tensorboard`` is its alias): what is logged is
read back with TensorBoard's own reader and found in wandb's offline run; a tracker whose package is missing
is an error naming the extra to install (exit 2), never a silent no-op."""

from __future__ import annotations

import importlib.util
import json

import pytest

from sclft.cli import main
from sclft.config import TrainConfig

TINY = ["--no-pretrained", "--data", "test_subset:5:digits", "--strategy", "linear_probe", "--image-size", "16",
        "--train-per-class", "2", "--epochs", "2", "--batch-size", "16", "--no-progress"]


def test_trackers_combine_report_to_and_the_tensorboard_alias():
    assert TrainConfig().trackers() == []
    assert TrainConfig(tensorboard=True).trackers() == ["tensorboard"]
    assert TrainConfig(report_to="wandb, tensorboard", tensorboard=True).trackers() == ["wandb", "tensorboard"]
    assert TrainConfig(report_to="none").trackers() == []


@pytest.mark.parametrize("flags,package", [(["--report-to", "tensorboard,wandb"], "wandb"),
                                           (["--tensorboard"], "tensorboard")])
def test_a_missing_tracker_package_is_an_error_naming_the_extra(flags, package, tmp_path, capsys, monkeypatch):
    import sclft.config

    real = importlib.util.find_spec
    monkeypatch.setattr(sclft.config.importlib.util, "find_spec",
                        lambda name, *a: None if name == package else real(name, *a))
    assert main(["train", *TINY, *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"pip install 'sclft[{package}]'" in err and "nothing would be logged" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_an_unknown_tracker_names_the_valid_ones(tmp_path, capsys):
    assert main(["train", *TINY, "--report-to", "mlflow", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "mlflow" in err and "tensorboard" in err and "wandb" in err


@pytest.mark.slow
def test_tensorboard_and_wandb_offline_receive_every_epoch(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for var, sub in (("WANDB_DIR", "wandb-home"), ("WANDB_CONFIG_DIR", "wandb-config"),
                     ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_DATA_DIR", "wandb-data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")  # no account, no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert main(["train", *TINY, "--cache", "off", "--report-to", "tensorboard,wandb", "--out", str(out)]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    events = EventAccumulator(str(out / "sclft"))
    events.Reload()
    logged = {(e.step, round(e.value, 5)) for e in events.Scalars("train_loss")}
    assert logged == {(h["epoch"], round(h["train_loss"], 5)) for h in history}
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    data = runs[0].read_bytes()
    for h in history:  # the history records of the offline run hold each epoch's value as JSON text
        assert json.dumps(h["train_loss"]).encode() in data

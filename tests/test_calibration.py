"""``sclft bench --calibrate``: measured images/s feed ``--dry-run``, each estimate marked measured or assumed."""

import json

import pytest

from sclft import bench, cli

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add hand-offs on a shared CPU

SUITE = {
    "name": "cal", "images_per_second": 1, "cost_unit": "CPU", "backbones": ["efficientnet_lite0"],
    "datasets": [{"name": "digits", "test_per_class": 4, "num_classes": 10, "train_size": 1347}],
    "defaults": {"image_size": 16, "epochs": 1, "batch_size": 8, "layer": "auto", "progress": False},
    "groups": {"table": {"strategies": ["linear_probe", "full_ft"], "seeds": [0], "train_per_class": [3]}},
}


def _record(klass, train, forward, device="cpu"):
    return {"device": device, "backbone": "efficientnet_lite0", "cost_class": klass, "image_size": 16,
            "precision": "no", "tail": 1.0 if klass == "none" else 0.0, "train_images_per_second": train,
            "forward_images_per_second": forward}


def test_dry_run_uses_measured_rates_where_it_has_them_and_needs_no_out(tmp_path, capsys):
    (tmp_path / "calibration.json").write_text(json.dumps({"records": [
        _record("features", 0.5, 0.5), _record("none", 30.0, 70.0, device="some other GPU")]}))
    path = tmp_path / "cal.yaml"
    path.write_text(json.dumps(SUITE))
    assert cli.main(["bench", "--suite", str(path), "--dry-run", "--cache-dir", str(tmp_path)]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if "-digits-" in line}
    probe = next(v for k, v in lines.items() if "linear_probe" in k)
    full = next(v for k, v in lines.items() if "full_ft" in k)
    # linear probe: 30 training images at 0.5/s on cached features, one caching pass over 30 + 40 images at 0.5/s
    assert probe[-1] == "measured" and float(probe[-2]) == round((60 + 140) / 60, 1)
    assert full[-1] == "assumed"  # the only full_ft record is another device's
    # assumed: one epoch = 3 passes over the whole network for 30 images, plus 40 + 30 evaluated, at 1 img/s
    assert float(full[-2]) == round((3 * 30 + 70) / 60, 1)


def test_calibrate_measures_each_cost_class_once_and_the_dry_run_then_says_measured(tmp_path, capsys):
    path = tmp_path / "cal.yaml"
    path.write_text(json.dumps(SUITE))
    assert cli.main(["bench", "--suite", str(path), "--calibrate", "--dry-run", "--cache-dir", str(tmp_path)]) == 0
    records = json.loads((tmp_path / "calibration.json").read_text())["records"]
    assert sorted(r["cost_class"] for r in records) == ["features", "none"]
    assert all(r["device"] == "cpu" and r["train_images_per_second"] > 0 and r["forward_images_per_second"] > 0
               for r in records)
    said = capsys.readouterr().out
    assert "2 estimates measured on cpu" in said and "0 assumed" in said
    suite = bench.load_suite(str(path))
    assert bench.dry_run(suite, None, say=lambda _: None, cache_dir=tmp_path) > 0


def test_a_broken_calibration_file_is_named(tmp_path, capsys):
    (tmp_path / "calibration.json").write_text("{}")
    assert cli.main(["bench", "--suite", "smoke", "--dry-run", "--cache-dir", str(tmp_path)]) == 2
    assert "calibration.json: not a calibration file" in capsys.readouterr().err


def test_out_is_required_to_run_a_suite(capsys):
    assert cli.main(["bench", "--suite", "smoke"]) == 2
    assert "--out is required" in capsys.readouterr().err

"""`scripts/gpu_suite.sh --dry-run`: every step of the GPU measurement on the CPU, tiny; the stand-in data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def test_standin_folders_have_the_split_sizes_classes_and_image_size(tmp_path):
    import standin_data
    from PIL import Image

    made = standin_data.generate(tmp_path, ["dtd"], scale=0.05, max_size=40, workers=1)
    # DTD: 1,880 / 1,880 images of 47 classes at 500×500, here 5 % (94 each: two a class at least) capped at 40 px
    assert made["dtd"] == {"train": 94, "test": 94, "classes": 47, "image_size": [40, 40], "path": "dtd"}
    train = sorted((tmp_path / "dtd" / "train").iterdir())
    assert len(train) == 47 and sum(len(list(c.iterdir())) for c in train) == 94
    with Image.open(next(train[0].iterdir())) as image:
        assert image.format == "JPEG" and image.size == (40, 40)
    full = standin_data.PAPER_DATASETS
    assert full["cifar100"] == (50_000, 10_000, 100, (32, 32)) and full["oxford_pets"][:3] == (3_680, 3_669, 37)


@pytest.mark.slow
@pytest.mark.device_script
def test_gpu_suite_dry_run_runs_every_step(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_suite.sh"), "--dry-run", "--out", str(out), "--work",
                           str(work)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and set(summary["steps"]) == {"calibrate", "packed_selection", "packed_peft", "paper_timing"}
    assert {r["cost_class"] for r in summary["steps"]["calibrate"]["records"]} == {"features", "prefix", "none"}
    for name in ("packed_selection", "packed_peft"):
        assert summary["steps"][name]["trained"] == 2 and summary["steps"][name]["sampled"] is False
    timing = summary["steps"]["paper_timing"]
    assert timing["timed_classes"] == 3 and all(r["train_images_per_second"] > 0 for r in timing["classes"])
    assert sum(r["runs"] for r in timing["classes"]) == timing["runs"] and timing["paper_gpu_hours"] > 0
    text = (out / "summary.json").read_text() + (out / "README.md").read_text() + (out / "gpu_suite.log").read_text()
    assert str(work) not in text and str(tmp_path) not in text  # no machine paths in the results
    assert "accuracy" not in (out / "README.md").read_text()  # timing only

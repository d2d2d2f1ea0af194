"""Works when installed: a built wheel, installed non-editable, runs packaged configs and suites from any
directory. Answers at once: help and `list strategies` import no torch, timm or open_clip."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "open_clip")
# runs the CLI's main, then prints the top-level modules the process imported
_MODULES_AFTER = (
    "import sys\n"
    "from sclft.cli import main\n"
    "try:\n    main(sys.argv[1:])\n"
    "except SystemExit:\n    pass\n"
    "print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["list", "strategies"]])
def test_cli_help_and_list_strategies_import_no_torch(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _MODULES_AFTER, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules = proc.stdout.rsplit("MODULES", 1)[1].split()
    assert "sclft" in modules  # the wrapper ran our CLI
    assert [m for m in HEAVY if m in modules] == []
    if argv == ["list", "strategies"]:
        assert {"linear_probe", "scl_ft", "full_ft"} <= {line.split()[0] for line in proc.stdout.splitlines()[:-1]}
    else:
        assert "usage: sclft" in proc.stdout


def test_list_configs_and_suites_name_the_packaged_files(capsys, monkeypatch):
    from sclft.cli import main

    assert main(["list", "configs"]) == 0
    assert capsys.readouterr().out.split() == sorted(p.stem for p in (REPO / "sclft" / "configs").glob("*.yaml"))
    import sclft.bench.cost

    # one line per suite, its name first (then runs, cost, description: test_cli); the cost is not this test's
    monkeypatch.setattr(sclft.bench.cost, "suite_cost", lambda suite, cache_dir=None: (0, 0.0, "assumed"))
    assert main(["list", "suites"]) == 0
    packaged = sorted(p.stem for p in (REPO / "sclft" / "configs" / "bench").glob("*.yaml"))
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == packaged


def test_unknown_config_name_lists_the_packaged_ones(capsys, tmp_path, monkeypatch):
    from sclft.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "no_such_config", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--config no_such_config: no such file" in err and "efficientnet_lite0_digits" in err
    assert main(["bench", "--suite", "no_such_suite", "--out", str(tmp_path / "b"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--suite no_such_suite" in err and "smoke" in err
    (tmp_path / "mine.yaml").write_text("lr: 0.5\n")  # a path that exists wins over the packaged names
    from sclft.resources import find_yaml

    assert find_yaml("configs", "mine.yaml") == Path("mine.yaml")
    assert find_yaml("configs", "efficientnet_lite0_digits").parent == REPO / "sclft" / "configs"


@pytest.mark.slow
def test_wheel_installed_non_editable_runs_packaged_config_and_suite(tmp_path):
    src = tmp_path / "src"  # build from a clean copy: no build/ or egg-info left in the checkout
    shutil.copytree(REPO / "sclft", src / "sclft", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(src)],
                   check=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("sclft-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True,
                   timeout=300)
    shutil.rmtree(src)  # nothing of the sources is left to find
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def sclft(*argv):
        proc = subprocess.run([str(site / "bin" / "sclft"), *argv], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    where = subprocess.run([sys.executable, "-c", "import sclft; print(sclft.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel, not the checkout or the editable install
    assert "efficientnet_lite0_digits" in sclft("list", "configs").split()

    # linear_probe: its per_strategy section of the packaged YAML sets lr and weight_decay (not the defaults);
    # run through the CLI's main so the process can list what it imported: open_clip (and the transformers it
    # brings) only on first CLIP use, not in every `sclft train`
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _MODULES_AFTER, "train", "--config", "efficientnet_lite0_digits",
                           "--strategy", "linear_probe", "--epochs", "1", "--train-per-class", "3", "--image-size",
                           "16", "--no-progress", "--out", str(run)], cwd=empty, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and (run / "metrics.json").is_file(), proc.stdout + proc.stderr
    modules = proc.stdout.rsplit("MODULES", 1)[1].split()
    assert {"torch", "timm"} <= set(modules) and [m for m in ("open_clip", "transformers") if m in modules] == []
    packaged = yaml.safe_load((REPO / "sclft" / "configs" / "efficientnet_lite0_digits.yaml").read_text())
    used = json.loads((run / "train_config.json").read_text())
    expected = packaged["per_strategy"]["linear_probe"]
    assert (used["lr"], used["weight_decay"], used["backbone"]) == (expected["lr"], expected["weight_decay"],
                                                                    packaged["backbone"])
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["test_accuracy"] <= 1.0

    out = sclft("bench", "--suite", "smoke", "--out", str(tmp_path / "bench"), "--dry-run")
    assert "smoke.yaml" in out and "runs" in out
    assert list(empty.iterdir()) == []  # nothing was written to the working directory

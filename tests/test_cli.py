import csv
import json

import pytest
import yaml

from sclft.cli import main

TINY = ["--backbone", "resnet18", "--no-pretrained", "--data", "digits", "--image-size", "16",
        "--train-per-class", "4", "--batch-size", "20", "--no-progress"]


def test_list_commands(capsys):
    assert main(["list", "backbones"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["list", "datasets"]) == 0
    assert "fashion_mnist" in capsys.readouterr().out
    assert main(["list", "strategies"]) == 0
    assert "scl_ft" in capsys.readouterr().out


def test_train_probe_eval_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 3, "lr": 0.01, "per_strategy": {"layer_ft": {"epochs": 1}}}))
    rc = main(["train", *TINY, "--strategy", "layer_ft", "--layer", "layer4.0", "--config", str(cfg),
               "--cache-dir", str(tmp_path / "c"), "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["layer"] == "layer4.0"  # per_strategy section applied
    assert "test accuracy" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert main(["probe", *TINY[:7], "--no-progress", "--jackknife", "3", "--out", str(tmp_path / "p")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p" / "probe.csv")))
    assert rows[0]["layer"] == "stem" and rows[-1]["layer"] == "penultimate"
    assert all(float(r["nc1_se"]) >= 0 for r in rows) and "± SE" in capsys.readouterr().out
    assert main(["probe", *TINY[:7], "--jackknife", "1", "--out", str(tmp_path / "q")]) == 2
    assert "--jackknife must be a number of groups >= 2, got 1" in capsys.readouterr().err
    assert (tmp_path / "p" / "probe.png").stat().st_size > 1000


def test_bad_input_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "many"])
    assert e.value.code == 2
    assert main(["train", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err
    assert main(["train", "--backbone", "resnet5", "--out", str(tmp_path)]) == 2
    assert "valid names: clip_vit_b32" in capsys.readouterr().err
    assert main(["train", "--data", "mnist3d", "--out", str(tmp_path)]) == 2
    assert "digits" in capsys.readouterr().err
    assert main(["train", *TINY[:3], "--layer", "layer9", "--out", str(tmp_path)]) == 2
    assert "valid layers: stem" in capsys.readouterr().err


def test_offline_errors_are_actionable(tmp_path, capsys):
    assert main(["train", "--data", "cifar10", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "uoft-cs/cifar10" in err and "--data-dir" in err and "Traceback" not in err
    assert main(["train", "--backbone", "resnet50", "--data", "digits", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "timm/resnet50.tv_in1k" in err and "--checkpoint" in err


def test_a_value_error_inside_a_library_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """issue 32.2: only sclft's own failures (sclft.errors) are exit codes; a ValueError raised inside torch during a
    command is a bug to report: it propagates (the interpreter prints its traceback, exit 1), never a friendly 2."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    def broken_qr(*args, **kwargs):
        raise ValueError("raised inside torch.linalg.qr")

    monkeypatch.delenv("SCLFT_DEBUG", raising=False)
    monkeypatch.setattr(torch.linalg, "qr", broken_qr)
    argv = ["dln", "parsimony", "--depth", "2", "--dim", "8", "--rank", "1", "--samples", "8", "--steps", "2",
            "--no-progress", "--out", str(tmp_path / "p")]
    with pytest.raises(ValueError, match="inside torch.linalg.qr"):
        main(argv)
    assert "error:" not in capsys.readouterr().err  # no friendly message hiding it
    # the same through the installed entry point, with the library function broken in the child process
    code = ("import sys, torch; from sclft.cli import main\n"
            "def broken(*a, **k): raise ValueError('raised inside torch.linalg.qr')\n"
            "torch.linalg.qr = broken; sys.exit(main(sys.argv[1:]))")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, *argv[:-1], str(tmp_path / "r")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert done.returncode == 1 and "Traceback" in done.stderr and "raised inside torch.linalg.qr" in done.stderr


@pytest.mark.parametrize(("module", "name", "code"), [
    ("sclft.config", "ConfigError", 2), ("sclft.run_folder", "RunFolderError", 2),
    ("sclft.bench.suite", "SuiteError", 2),
    ("sclft.io", "DiskFullError", 1), ("sclft._hub", "WeightsUnavailableError", 1),
    ("sclft.data", "DatasetUnavailableError", 1), ("sclft.training", "NonFiniteLossError", 1),
    ("sclft.errors", "Interrupted", 130)])
def test_each_known_failure_carries_its_exit_code(module, name, code, tmp_path, monkeypatch, capsys):
    """The existing error classes keep working (callers catching ValueError / OSError / RuntimeError) and map, in
    the one place, to their exit code: raised from a command, main() returns it with the message, no traceback."""
    import importlib

    import sclft.cli

    cls = getattr(importlib.import_module(module), name)

    def fail(args):
        raise cls("lr", "the message") if name == "ConfigError" else cls("the message")

    monkeypatch.delenv("SCLFT_DEBUG", raising=False)
    monkeypatch.setattr(sclft.cli, "run_list", fail)
    assert main(["list", "strategies"]) == code
    assert "the message" in capsys.readouterr().err


def _flags(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action, parser


def test_every_flag_has_help_and_shows_its_default_once():
    """issue 32.8: each flag of each sub-command says what it does; a default appears at most once."""
    from sclft.cli import COMMAND_MODULES, build_parser

    seen = 0
    for command in ["list", "probe", "train", "eval", "predict", "export", "push", *COMMAND_MODULES]:
        for path, action, parser in _flags(build_parser([command])):
            if path[:1] != (command,):
                continue
            seen += 1
            name = " ".join(path) + " " + (action.option_strings or [action.dest])[0]
            assert action.help, f"{name}: no help"
            shown = parser.formatter_class(prog="sclft")._expand_help(action)
            assert shown.count("(default") <= 1, f"{name}: {shown}"
    assert seen > 150
    dln = build_parser(["dln"])._subparsers._group_actions[0].choices["dln"]
    text = dln._subparsers._group_actions[0].choices["parsimony"].format_help()
    for flag in ("--depth", "--dim", "--rank", "--samples", "--lr", "--steps"):
        assert "(default: " in text.split(flag + " ", 2)[2].split("\n  --")[0], flag


def test_list_suites_shows_description_run_count_and_cost(monkeypatch, capsys):
    """issue 32.8: `sclft list suites` says what each suite is, how many runs and what they cost (the dry run's)."""
    import sclft.cli
    from sclft import bench
    from sclft.resources import find_yaml

    monkeypatch.setattr(sclft.cli, "list_yaml", lambda kind: ["smoke"])  # one suite: the others take seconds each
    assert main(["list", "suites"]) == 0
    line = capsys.readouterr().out.strip()
    described = yaml.safe_load(find_yaml("suites", "smoke").read_text())["description"]
    runs = len(bench.expand_suite(bench.load_suite("smoke")))
    assert line.startswith("smoke") and f" {runs} runs" in line and line.endswith(described)
    assert __import__("re").search(r" ~\d+ CPU-minutes +\((assumed|measured|partly measured)\) ", line), line

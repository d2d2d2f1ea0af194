import csv
import json

import pytest

from sclft import bench
from sclft.data import load_dataset

METHODS = ["Linear Probe", "Layer FT", "SCL FT", "Full FT"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    suite = bench.load_suite("smoke")
    out = tmp_path_factory.mktemp("smoke")
    summary = bench.run_suite(suite, out, say=lambda _: None)
    return suite, out, summary


def test_smoke_suite_builds_every_report(smoke):
    suite, out, summary = smoke
    runs = bench.expand_suite(suite)
    assert summary["trained"] == len(runs) == summary["runs"]
    for name in ("table.md", "table.csv", "nc1_layers.png", "data_size.png", "data_size.md", "selection.md",
                 "ablation.md", "bench.json"):
        assert (out / name).is_file(), name
    for png in ("nc1_layers.png", "data_size.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not any(out.glob("experiments/*/checkpoint"))  # resume state is dropped once a run finished


def test_table_has_the_paper_layout(smoke):
    _, out, _ = smoke
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [r["method"] for r in rows] == METHODS
    assert all(r["seeds"] == "2" and r["dataset"] == "digits" and r["backbone"] == "efficientnet_lite0" for r in rows)
    assert {"accuracy_mean", "accuracy_std", "nc1_mean", "params_percent", "layers"} <= set(rows[0])
    params = {r["method"]: float(r["params_percent"]) for r in rows}
    assert params["Linear Probe"] < params["Layer FT"] == params["SCL FT"] < params["Full FT"] == 100.0
    md = (out / "table.md").read_text()
    blocks = md.split("### ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["Transfer accuracy (%, test)",
                                                   "NC1 of the penultimate feature (train data)",
                                                   "Parameters fine-tuned (%)"]
    for b in blocks:
        lines = [ln for ln in b.splitlines() if ln.startswith("| ")]
        assert lines[0] == "| Method | efficientnet_lite0 / digits |"
        assert [ln.split(" | ")[0][2:] for ln in lines[1:]] == METHODS
    assert " ± " in blocks[0]


def test_selection_report_scores_every_rule(smoke):
    suite, out, _ = smoke
    regrets = json.loads((out / "selection.json").read_text())
    candidates = suite["groups"]["selection"]["candidates"]
    names = {r["rule"] for r in regrets}
    assert {"profile:min", "profile:drop", "profile:rise", "trial", "trial:heldout_acc"} == names
    assert all(r["layer"] in candidates and r["regret"] >= 0 for r in regrets)
    md = (out / "selection.md").read_text()
    assert all(c in md for c in candidates) and "**best**" in md and "Summary over cells" in md


def test_resume_skips_finished_runs(smoke):
    suite, out, _ = smoke
    runs = bench.expand_suite(suite)
    again = bench.run_suite(suite, out, say=lambda _: None)
    assert again["trained"] == 0 and again["skipped"] == len(runs)
    victim = out / "experiments" / runs[0].id / "metrics.json"
    victim.unlink()
    logged = []
    assert bench.run_suite(suite, out, say=logged.append)["trained"] == 1
    assert victim.is_file() and any(runs[0].id in line for line in logged)
    assert len(json.loads((out / "bench.json").read_text())["sessions"]) == 3


def test_run_ids_are_stable_and_shared_across_groups():
    suite = bench.load_suite("smoke")
    runs = bench.expand_suite(suite)
    assert [r.id for r in runs] == [r.id for r in bench.expand_suite(suite)]
    assert len({r.id for r in runs}) == len(runs)
    shared = [r for r in runs if {"table", "data_size", "ablation"} <= r.groups]
    assert shared and shared[0].strategy == "scl_ft" and not shared[0].variant  # fuse=add is the default
    assert any(r.variant == "fuse=concat" for r in runs)


def test_paper_dry_run_lists_runs_and_cost(tmp_path):
    suite = bench.load_suite("paper")
    lines = []
    total = bench.dry_run(suite, tmp_path, say=lines.append)
    assert total > 0 and "GPU-hours" in lines[-1]
    body = "\n".join(lines)
    for name in ("resnet50", "vit_b32", "clip_vit_b32", "cifar100", "fgvc_aircraft", "dtd", "oxford_pets"):
        assert name in body
    assert "clip_vit_b32-dtd-zero_shot" in body and "resnet50-dtd-zero_shot" not in body
    assert "vit_b32-cifar10" not in body  # ViT-B/32 runs only the paper's datasets


def test_paper_suite_offline_fails_with_a_clear_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    parser = __import__("argparse").ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--suite", "paper", "--out", str(tmp_path)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "sclft bench: error:" in err and "cifar10" in err and "Traceback" not in err


def test_test_subset_dataset_cuts_the_test_split():
    splits = load_dataset("test_subset:5:digits")
    assert len(splits.test) == 50 and sorted(set(splits.test.targets)) == list(range(10))
    assert "test_per_class=5" in splits.fingerprint("test")
    with pytest.raises(ValueError, match="test_subset:N:NAME"):
        load_dataset("test_subset:x:digits")

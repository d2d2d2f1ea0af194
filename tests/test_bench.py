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
    bench.build_reports(suite, out)  # the runner trains; the reports are built once, from the folder
    return suite, out, summary


@pytest.mark.slow  # the smoke suite trains 20+ runs once per module (~1-2 min)
def test_smoke_suite_builds_every_report(smoke):
    suite, out, summary = smoke
    runs = bench.expand_suite(suite)
    assert summary["trained"] == len(runs) == summary["runs"]
    for name in ("table.md", "table.csv", "nc1_layers.png", "data_size.png", "data_size.md", "selection.md",
                 "selection.png", "summary.json", "ablation.md", "bench.json"):
        assert (out / name).is_file(), name
    for png in ("nc1_layers.png", "data_size.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not any(out.glob("experiments/*/checkpoint"))  # resume state is dropped once a run finished


@pytest.mark.slow  # the smoke suite trains 20+ runs once per module (~1-2 min)
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


def test_table_keeps_training_set_sizes_apart(smoke, tmp_path):
    suite, out, _ = smoke
    sized = suite.replace(groups={"table": {"strategies": ["scl_ft"], "seeds": [0], "train_per_class": [2, 3]}})
    bench.build_reports(sized, tmp_path, [out])  # the data_size group's runs: same configs, same ids
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    for row in rows:  # each column holds its own size's run, read straight from its folder
        (path,) = out.glob(f"experiments/*-scl_ft-n{row['train_per_class']}-s0-*/metrics.json")
        assert float(row["accuracy_mean"]) == pytest.approx(json.loads(path.read_text())["test_accuracy"])
    assert sorted(r["train_per_class"] for r in rows) == ["2", "3"]
    header = (tmp_path / "table.md").read_text().split("### ")[1].splitlines()[2]
    assert header == "| Method | efficientnet_lite0 / digits · 2/class | efficientnet_lite0 / digits · 3/class |"


def test_ablation_keeps_sizes_and_strategies_apart(smoke, tmp_path):
    from sclft.bench.render import ablation_report
    from sclft.bench.scoring import ablation_rows

    suite, out, _ = smoke
    sized = suite.replace(groups={"ablation": {"strategies": ["scl_ft", "linear_probe"], "seeds": [0],
                                               "train_per_class": [2, 3]}})
    runs = bench.expand_suite(sized)  # smoke trained scl_ft at 2 and 3 per class, the probe at 3 only
    metrics = {r.id: json.loads(p.read_text()) for r in runs for p in [out / "experiments" / r.id / "metrics.json"]
               if p.is_file()}
    text = ablation_report(ablation_rows(runs, metrics))
    sections = text.split("### ")[1:]
    assert [s.splitlines()[0] for s in sections] == ["efficientnet_lite0 / digits · 2/class",
                                                     "efficientnet_lite0 / digits · 3/class"]
    (path,) = out.glob("experiments/*-scl_ft-n3-s0-*/metrics.json")
    rows = [ln for ln in sections[1].splitlines() if ln.startswith("| SCL FT")]
    assert len(rows) == 1 and f"{100 * json.loads(path.read_text())['test_accuracy']:.2f}" in rows[0]
    assert [ln.split(" | ")[0] for ln in sections[0].splitlines() if ln.startswith("| ") and "---" not in ln][1:] == [
        "| SCL FT (defaults)"]
    assert any(ln.startswith("| Linear Probe") for ln in sections[1].splitlines())


def _sweep_accuracy(out, candidates):
    """Test accuracy of each swept block, read straight from the run folders (seed 0, 3 per class)."""
    acc = {}
    for block in candidates:
        (path,) = out.glob(f"experiments/*-scl_ft-{block}-n3-s0-*/metrics.json")
        acc[block] = json.loads(path.read_text())["test_accuracy"]
    return acc


@pytest.mark.slow  # the smoke suite trains 20+ runs once per module (~1-2 min)
def test_selection_report_scores_every_rule_against_the_sweep(smoke):
    suite, out, _ = smoke
    candidates = list(suite.group("selection").candidates)
    acc = _sweep_accuracy(out, candidates)
    best = max(acc.values())
    (profile,) = [json.loads(p.read_text()) for p in out.glob("selection/*-profile-*.json")]
    (trial,) = [json.loads(p.read_text()) for p in out.glob("selection/*-trial-*.json")]
    expected_pick = {"oracle": max(acc, key=acc.get), "fixed:middle": candidates[0], "fixed:two_thirds": candidates[1],
                     "fixed:last": candidates[1], "profile:min": min(profile["nc1"], key=profile["nc1"].get),
                     "trial": trial["layer"]}
    rules = json.loads((out / "summary.json").read_text())["rules"]
    assert {"profile:drop", "profile:rise", "profile:half", "profile:gain_per_param", "trial:heldout_acc"} <= set(rules)
    for name, block in expected_pick.items():
        regret = 100 * (best - acc[block])
        assert rules[name]["mean_regret"] == pytest.approx(regret, abs=1e-9) == rules[name]["max_regret"], name
    assert rules["oracle"]["mean_regret"] == 0.0 and rules["fixed:middle"]["seconds"] == 0.0
    assert rules["profile:min"]["seconds"] == pytest.approx(profile["seconds"])
    (cell,) = json.loads((out / "selection.json").read_text())
    assert cell["blocks"] == candidates and cell["seeds"] == [0]
    assert cell["nc1_profile_seeds"] == {"0": profile["nc1"]}
    assert cell["nc1_se_profile_seeds"] == {"0": profile["nc1_se"]}
    assert cell["rules"]["profile:one_se"]["picks"] == [profile["picks"]["one_se"]]  # rescored from the stored SEs
    assert rules["fixed:last"]["mean_percent"] == pytest.approx(cell["params_percent"][candidates[1]])
    md = (out / "selection.md").read_text()
    assert all(c in md for c in candidates) and "**best**" in md and "Summary over cells" in md
    assert (out / "selection.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # the smoke suite trains 20+ runs once per module (~1-2 min)
def test_shards_partition_the_runs_and_report_merges_their_folders(smoke, tmp_path):
    import shutil

    suite, out, _ = smoke
    runs = bench.expand_suite(suite)
    parts = [bench.shard(runs, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(r.id for p in parts for r in p) == sorted(r.id for r in runs)
    assert [r.id for r in parts[1]] == [r.id for r in runs[1::3]]
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(ValueError, match="I/N"):
            bench.shard(runs, bad)
    folders = [tmp_path / "a", tmp_path / "b"]
    for i, run in enumerate(runs):  # the runs of a 2-job array, each job with its own folder
        shutil.copytree(out / "experiments" / run.id, folders[i % 2] / "experiments" / run.id)
    shutil.copytree(out / "selection", folders[1] / "selection")
    merged = tmp_path / "merged"
    bench.build_reports(suite, merged, folders)
    for name in ("summary.json", "table.csv"):
        assert (merged / name).read_text() == (out / name).read_text()


def test_bad_shard_is_a_usage_error(tmp_path, capsys):
    from sclft import cli

    assert cli.main(["bench", "--suite", "smoke", "--out", str(tmp_path), "--dry-run", "--shard", "3/2"]) == 2
    assert "--shard must be I/N" in capsys.readouterr().err


def test_selection_suite_sweeps_every_candidate_within_the_budget(tmp_path, backbone_factory):
    from sclft.model import TransferModel

    suite = bench.load_suite("selection")
    runs = bench.expand_suite(suite)
    b = backbone_factory("efficientnet_lite0")
    share = {blk: TransferModel(b, "scl_ft", 10, blk).parameter_summary()["percent"] for blk in b.blocks[:-1]}
    within = [blk for blk in b.blocks[:-1] if share[blk] <= 8.0]
    cells = bench.plan.selection_cells(runs)
    assert len(cells) == 4 and len(runs) == 4 * 3 * len(within)
    for cell in cells.values():
        for seed in (0, 1, 2):
            assert [r.config["layer"] for r in cell if r.seed == seed] == within
        assert all(r.config["eval_every"] == 0 and r.config["image_size"] >= 64 for r in cell)
    assert {(r.dataset, r.train_per_class) for r in runs} == {(d, n) for d in ("fashion_mnist", "digits")
                                                             for n in (20, 100)}
    lines = []
    bench.dry_run(suite, tmp_path, say=lines.append)
    assert sum(line.startswith("selection cell ") for line in lines) == 4
    assert f"{len(within)} blocks × 3 seeds" in lines[-2]
    extra = suite.with_datasets(["imagefolder:/data/x"])
    assert [d.name for d in extra.datasets][-1] == "imagefolder:/data/x"


def test_test_split_cache_key_is_shared_across_seeds():
    a = load_dataset("digits", train_per_class=5, seed=0)
    b = load_dataset("digits", train_per_class=20, seed=1)
    assert a.fingerprint("test") == b.fingerprint("test")
    assert a.fingerprint("train") != b.fingerprint("train")


@pytest.mark.slow  # the smoke suite trains 20+ runs once per module (~1-2 min)
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


def test_a_failed_rule_does_not_stop_the_others_and_fails_the_command(smoke, monkeypatch, capsys):
    from sclft import cli
    from sclft.bench import runner

    suite, out, _ = smoke
    tasks = bench.plan.rule_tasks(suite, bench.expand_suite(suite))
    for t in tasks:
        (out / bench.layout.selection_file(*t)).unlink()
    real = runner.select_layer

    def select_layer(backbone, splits, cfg, device="cpu"):
        if cfg.layer_rule == "trial":
            raise RuntimeError("trial broke")
        return real(backbone, splits, cfg, device=device)

    monkeypatch.setattr(runner, "select_layer", select_layer)
    assert cli.main(["bench", "--suite", "smoke", "--out", str(out)]) == 1
    assert "trial broke" in capsys.readouterr().out
    trial = [t for t in tasks if t.rule == "trial"]
    assert trial and all("trial broke" in runner._rule_failure_file(out, t).read_text() for t in trial)
    assert all((out / bench.layout.selection_file(*t)).is_file() for t in tasks if t.rule != "trial")  # went on
    assert "sessions" in json.loads((out / "bench.json").read_text())
    monkeypatch.setattr(runner, "select_layer", real)
    assert cli.main(["bench", "--suite", "smoke", "--out", str(out)]) == 0  # the retry applies it
    assert not any(runner._rule_failure_file(out, t).exists() for t in trial)


def test_a_failed_run_does_not_stop_the_others_and_fails_the_command(smoke, monkeypatch, capsys):
    from sclft import cli
    from sclft.bench import runner as train_module  # where the bench calls the trainer

    suite, out, _ = smoke
    runs = bench.expand_suite(suite)
    broken, other = runs[1].id, runs[2].id
    for rid in (broken, other):
        (out / "experiments" / rid / "metrics.json").unlink()
    real_train = train_module.train

    def train(cfg):
        if cfg.out.endswith(broken):
            raise RuntimeError("CUDA error: out of memory")
        return real_train(cfg)

    monkeypatch.setattr(train_module, "train", train)
    assert cli.main(["bench", "--suite", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and broken in err and other not in err
    assert (out / "experiments" / other / "metrics.json").is_file()  # the run after the broken one still trained
    assert "out of memory" in (out / "experiments" / broken / "error.log").read_text()
    monkeypatch.setattr(train_module, "train", real_train)
    assert cli.main(["bench", "--suite", "smoke", "--out", str(out)]) == 0  # the retry trains it
    assert (out / "experiments" / broken / "metrics.json").is_file()
    assert not (out / "experiments" / broken / "error.log").exists()


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
    from sclft import cli  # the one exception -> exit code mapping (sclft.errors) is the CLI's, for every command

    assert cli.main(["bench", "--suite", "paper", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "sclft bench: error:" in err and "cifar10" in err and "Traceback" not in err


def test_test_subset_dataset_cuts_the_test_split():
    splits = load_dataset("test_subset:5:digits")
    assert len(splits.test) == 50 and sorted(set(splits.test.targets)) == list(range(10))
    assert "test_per_class=5" in splits.fingerprint("test")
    with pytest.raises(ValueError, match="test_subset:N:NAME"):
        load_dataset("test_subset:x:digits")


def test_run_ids_cover_every_config_field_defaults_and_library_versions(monkeypatch):
    import dataclasses

    import sclft.versions
    from sclft.config import OPTIM_DEFAULTS, TrainConfig

    suite = bench.load_suite("smoke")
    run = next(r for r in bench.expand_suite(suite) if r.strategy == "scl_ft")
    seen = bench.plan.run_fingerprint(run.config)
    left_out = {"out", "cache_dir", "progress", "num_workers", "tensorboard", "report_to", "resume", "overwrite"}
    assert set(seen["config"]) == {f.name for f in dataclasses.fields(TrainConfig)} - left_out
    assert seen["config"]["strategy_options"] == {"fuse": "add", "match": "repeat", "skip_pooling": None}  # defaults
    # unset optimisation fields are fingerprinted as resolved (the strategy's default, else the global one)
    assert seen["config"]["weight_decay"] == OPTIM_DEFAULTS["weight_decay"] and "torch" in seen["versions"]
    # an explicit value equal to the default is the same run; another library version is another run
    same = bench.plan.run_id("b", "d", {**run.config, "weight_decay": OPTIM_DEFAULTS["weight_decay"]}, "")
    assert same == bench.plan.run_id("b", "d", run.config, "")
    real = sclft.versions.library_versions()
    monkeypatch.setattr(sclft.versions, "library_versions", lambda: {**real, "timm": "0.0.1"})
    assert bench.plan.run_id("b", "d", run.config, "") != same


def test_run_ids_follow_what_layer_auto_means(monkeypatch):
    """`--layer auto` under another default rule or pick is another run, even with unchanged library versions."""
    from sclft import picks

    run = next(r for r in bench.expand_suite(bench.load_suite("smoke")) if r.strategy == "scl_ft")
    config = {**run.config, "layer_rule": "auto"}
    assert bench.plan.run_fingerprint(config)["config"]["layer_rule"] == "auto=profile:repeated_min"
    fixed = {**config, "layer_rule": "fixed"}
    before, named = bench.plan.run_id("b", "d", config, ""), bench.plan.run_id("b", "d", fixed, "")
    monkeypatch.setattr(picks, "DEFAULT_PROFILE_PICK", "min")
    assert bench.plan.run_id("b", "d", config, "") != before
    assert bench.plan.run_id("b", "d", fixed, "") == named  # a named rule is not `auto`


def test_dry_run_of_a_suite_given_as_a_path_outside_the_package(tmp_path):
    from sclft.resources import find_yaml

    mine = tmp_path / "my_suite.yaml"
    mine.write_text(find_yaml("suites", "smoke").read_text())
    lines = []
    assert bench.dry_run(bench.load_suite(str(mine)), tmp_path / "out", say=lines.append) > 0
    assert "my_suite.yaml" in lines[-1]


def _stored_cell(with_curves: bool = True) -> dict:
    """A selection.json cell as an older sclft wrote it: no repeated_min / first_repeated / one_se rows, a pick
    this version no longer has, a trial row. Blocks a (1 %), b, c (2 % each: a repeated stage), d (3 %)."""
    cell = {"cell": "net|data|scl_ft|n20|" + ("" if with_curves else "x"), "seeds": [0, 1],
            "blocks": ["a", "b", "c", "d"], "best": "c",
            "accuracy": {"a": [0.70, 0.72], "b": [0.80, 0.78], "c": [0.85, 0.83], "d": [0.81, 0.79]},
            "params_percent": {"a": 1.0, "b": 2.0, "c": 2.0, "d": 3.0},
            "run_seconds": {"a": 10.0, "b": 10.0, "c": 10.0, "d": 10.0}, "one_run_seconds": 10.0,
            "nc1_after": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 2.5},
            "nc1_profile": {"a": 9.0, "b": 5.5, "c": 5.0, "d": 4.0},
            "rules": {"oracle": {"picks": ["c", "c"], "regret": 0.0, "params_percent": 2.0, "seconds": 40.0,
                                 "cost_percent": 400.0},
                      "profile:min": {"picks": ["d", "d"], "regret": 4.0, "params_percent": 3.0, "seconds": 0.5,
                                      "cost_percent": 5.0},
                      "profile:retired": {"picks": ["a", "a"], "regret": 13.0, "params_percent": 1.0, "seconds": 0.5,
                                          "cost_percent": 5.0},
                      "trial": {"picks": ["b", "b"], "regret": 5.0, "params_percent": 2.0, "seconds": 30.0,
                                "cost_percent": 300.0}}}
    if with_curves:  # seed 0: b within one SE of c (5.4 <= 5.0 + 0.5); seed 1: not (5.6 > 5.0 + 0.5)
        cell["nc1_profile_seeds"] = {"0": {"a": 9.0, "b": 5.4, "c": 5.0, "d": 4.0},
                                     "1": {"a": 9.0, "b": 5.6, "c": 5.0, "d": 4.0}}
        cell["nc1_se_profile_seeds"] = {"0": {"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.5},
                                        "1": {"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.5}}
    return cell


def test_report_rescores_an_earlier_selection_json_with_the_current_rules(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps([_stored_cell(), _stored_cell(with_curves=False)]))
    out = tmp_path / "report"
    written = bench.build_reports(bench.load_suite("smoke"), out, [old])
    assert out / "summary.json" in written and (out / "selection.png").exists()
    new, unchanged = json.loads((out / "selection.json").read_text())
    assert unchanged == _stored_cell(with_curves=False)  # no per-seed curves: nothing can be recomputed
    rules = new["rules"]
    # mean accuracy (points): a 71, b 79, c 84, d 80; regret = 84 - the mean over the seeds' picks
    expected = {"oracle": (["c", "c"], 0.0), "profile:min": (["d", "d"], 4.0),
                "profile:repeated_min": (["c", "c"], 0.0),          # lowest NC1 among b, c
                "profile:one_se": (["b", "c"], (5.0 + 0.0) / 2),   # seed 0 within one SE, seed 1 not
                "fixed:first_repeated": (["b", "b"], 5.0), "fixed:last": (["d", "d"], 4.0),
                "trial": (["b", "b"], 5.0)}                          # carried over: its evidence is not stored
    for name, (picks, regret) in expected.items():
        assert rules[name]["picks"] == picks, name
        assert rules[name]["regret"] == pytest.approx(regret, abs=1e-9), name
    assert "profile:retired" not in rules  # a pick this version does not have is not kept as if it were current
    assert rules["profile:one_se"]["params_percent"] == 2.0 and rules["profile:repeated_min"]["seconds"] == 0.5
    assert rules["profile:one_se"]["cost_percent"] == pytest.approx(5.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suite"] == "smoke" and summary["rules"]["profile:one_se"]["cells"] == 1
    assert summary["rules"]["profile:min"]["cells"] == 2
    assert "| profile:repeated_min (`--layer auto`) | 0.00 |" in (out / "selection.md").read_text()


def test_report_sources_must_exist_and_a_json_must_be_a_selection_report(tmp_path, capsys):
    from sclft import cli

    args = ["bench", "--suite", "smoke", "--out", str(tmp_path / "out"), "--report"]
    assert cli.main([*args, str(tmp_path / "nope")]) == 2
    assert "no such bench folder or selection.json" in capsys.readouterr().err
    bad = tmp_path / "summary.json"
    bad.write_text(json.dumps({"suite": "x", "rules": {}}))
    assert cli.main([*args, str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a selection.json" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow  # the smoke suite trains 20+ runs once per module (~1-2 min)
def test_report_prefers_finished_runs_over_a_stored_selection_json(smoke, tmp_path):
    suite, out, _ = smoke
    (cell,) = json.loads((out / "selection.json").read_text())
    stale = {**cell, "accuracy": {b: [0.0] * len(v) for b, v in cell["accuracy"].items()}}
    old = tmp_path / "old.json"
    old.write_text(json.dumps([stale, _stored_cell()]))
    bench.build_reports(suite, tmp_path / "merged", [out, old])
    merged = json.loads((tmp_path / "merged" / "selection.json").read_text())
    assert [c["cell"] for c in merged] == [cell["cell"], _stored_cell()["cell"]]
    assert merged[0]["accuracy"] == cell["accuracy"]  # from the runs, not the stale copy


# ---- hostile suites (issue 29 item 4): each exits 2 naming the file, the key and what is valid, no traceback
SMOKE_HEAD = "backbones: [efficientnet_lite0]\ndatasets: [{name: digits, test_per_class: 4}]\n"
SUITE_CASES = [
    ("empty", "", ("empty", "backbones")),
    ("a-list", "- backbones\n- datasets\n", ("mapping", "list")),
    ("yaml-syntax", "backbones: [efficientnet_lite0\ndatasets: [digits]\n", ("invalid YAML", "line 2")),
    ("not-utf8", b"\xff\xfe\x00backbones", ("UTF-8",)),
    ("no-backbones", "datasets: [digits]\ngroups: {table: {strategies: [scl_ft]}}\n", ("backbones", "required")),
    ("group-as-list", SMOKE_HEAD + "groups:\n  table: [linear_probe, scl_ft]\n", ("groups.table", "mapping", "list")),
    ("seed-for-seeds", SMOKE_HEAD + "groups: {table: {strategies: [scl_ft], seed: [0, 1, 2]}}\n",
     ("groups.table.seed", "did you mean 'seeds'", "train_per_class")),
    ("unknown-top-level", SMOKE_HEAD + "image_size: 32\ngroups: {table: {strategies: [scl_ft]}}\n",
     ("image_size", "unknown key", "under `defaults:`")),
    ("unknown-group", SMOKE_HEAD + "groups: {tables: {strategies: [scl_ft]}}\n", ("groups.tables", "'table'")),
    ("per-strategy-unknown", SMOKE_HEAD + "per_strategy: {linear_prob: {lr: 0.01}}\n"
     "groups: {table: {strategies: [linear_probe]}}\n", ("per_strategy.linear_prob", "'linear_probe'")),
    ("variant-unknown-option", SMOKE_HEAD + "groups: {ablation: {strategies: [scl_ft], variants: [{fusee: concat}]}}\n",
     ("groups.ablation.variants[0].fusee", "'fuse'")),
    ("variant-bad-value", SMOKE_HEAD + "groups: {ablation: {strategies: [scl_ft], variants: [{epochs: two}]}}\n",
     ("groups.ablation.variants[0]", "epochs", "two")),
    ("strategies-a-string", SMOKE_HEAD + "groups: {table: {strategies: linear_probe}}\n",
     ("groups.table.strategies", "must be a list", "linear_probe")),
    ("strategy-unknown", SMOKE_HEAD + "groups: {table: {strategies: [scl]}}\n",
     ("groups.table.strategies", "'scl_ft'")),
    ("seeds-not-integers", SMOKE_HEAD + "groups: {table: {strategies: [scl_ft], seeds: [0.5]}}\n",
     ("groups.table.seeds", "0.5")),
    ("defaults-grid-field", SMOKE_HEAD + "defaults: {seed: 3}\ngroups: {table: {strategies: [scl_ft]}}\n",
     ("defaults.seed", "seeds")),
    ("defaults-unknown-field", SMOKE_HEAD + "defaults: {epoch: 3}\ngroups: {table: {strategies: [scl_ft]}}\n",
     ("defaults", "epoch", "valid keys")),
    ("rules-outside-selection", SMOKE_HEAD + "groups: {table: {strategies: [scl_ft], rules: [profile]}}\n",
     ("groups.table.rules", "selection")),
    ("rule-unknown", SMOKE_HEAD + "groups: {selection: {strategies: [scl_ft], layers: all, rules: [profil]}}\n",
     ("groups.selection.rules", "profil", "profile")),
    ("selection-option-unknown", SMOKE_HEAD + "groups: {selection: {strategies: [scl_ft], layers: all, "
     "rules: [profile], options: {bogus: 1}}}\n", ("groups.selection.options", "bogus", "profile_per_class")),
    ("group-dataset-unknown", SMOKE_HEAD + "groups: {table: {strategies: [scl_ft], datasets: [cifar10]}}\n",
     ("groups.table.datasets", "cifar10", "digits")),
    ("min-updates-with-epochs", SMOKE_HEAD + "groups: {ablation: {strategies: [lora], min_updates: 200, "
     "variants: [{epochs: 3}]}}\n", ("groups.ablation.min_updates", "drop `epochs`")),
    ("min-updates-zero", SMOKE_HEAD + "groups: {table: {strategies: [lora], min_updates: 0}}\n",
     ("groups.table.min_updates", "positive integer")),
    ("tune-outside-ablation", SMOKE_HEAD + "groups: {table: {strategies: [lora], tune: [lr]}}\n",
     ("groups.table.tune", "ablation")),
    ("tune-not-a-variant-key", SMOKE_HEAD + "groups: {ablation: {strategies: [lora, deep_lora], "
     "variants: [{r: 2}, {r: 8}], tune: [lr]}}\n", ("groups.ablation.tune", "'lr'", "variant keys: r")),
]


def test_min_updates_gives_each_run_the_fewest_epochs_reaching_that_many_updates():
    """Against torch's own count of a DataLoader's batches (the last, partial one kept); lr variants (run fields)
    apply to strategies without a block as well."""
    import math

    from torch.utils.data import DataLoader

    suite = bench.Suite.from_dict({
        "backbones": ["efficientnet_lite0"], "datasets": [{"name": "digits", "num_classes": 10}],
        "defaults": {"batch_size": 16},
        "groups": {"ablation": {"strategies": ["lora", "scl_ft"], "train_per_class": [5, 10, 20], "min_updates": 200,
                                "variants": [{"lr": 0.001}, {"lr": 0.01, "grad_accum": 2}], "tune": ["lr"]}}})
    runs = bench.expand_suite(suite)
    assert {(r.strategy, r.variant) for r in runs} >= {("lora", "lr=0.001"), ("lora", "grad_accum=2,lr=0.01")}
    for r in runs:
        batches = len(DataLoader(range(10 * r.train_per_class), batch_size=16))
        per_epoch = math.ceil(batches / r.config.get("grad_accum", 1))
        epochs = r.config["epochs"]
        assert epochs * per_epoch >= 200 > (epochs - 1) * per_epoch, (r.variant, r.train_per_class, epochs)
    assert {r.train_per_class: r.config["epochs"] for r in runs if r.variant == "lr=0.001"} == {5: 50, 10: 29, 20: 16}


@pytest.mark.parametrize("text, says", [c[1:] for c in SUITE_CASES], ids=[c[0] for c in SUITE_CASES])
def test_a_bad_suite_is_a_usage_error_naming_file_and_key(tmp_path, capsys, text, says):
    from sclft import cli

    path = tmp_path / "mine.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert cli.main(["bench", "--suite", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "mine.yaml" in err, err
    for fragment in says:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("flags, says", [
    (["--dry-run", "--report"], ("--dry-run", "--report", "one of them")),
    (["--dry-run", "--report-only"], ("--dry-run", "--report-only")),
    (["--strict-versions"], ("--strict-versions", "--report")),
    (["--report"], ("no finished run of suite 'smoke'", "nothing to report", "never trained")),
    (["--report-only"], ("nothing to report",)),
])
def test_report_usage_errors(tmp_path, capsys, flags, says):
    from sclft import cli

    (tmp_path / "out").mkdir()
    assert cli.main(["bench", "--suite", "smoke", "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(s in err for s in says), err
    assert not any((tmp_path / "out").iterdir())


def test_a_second_bench_into_one_out_is_refused_naming_the_holder(tmp_path, capsys):
    import os

    from sclft import cli

    with bench.bench_lock(tmp_path / "out"):
        assert cli.main(["bench", "--suite", "smoke", "--out", str(tmp_path / "out"), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "one writer" in err and "Traceback" not in err
    assert not (tmp_path / "out" / ".sclft.lock").exists()  # released: the next writer gets it


def test_report_merges_shards_of_other_library_versions_and_names_the_mix(smoke, tmp_path, monkeypatch):
    """Issue 24: shard b ran on a node with another torch patch release (other run ids); the merged report
    counts its runs, says which versions it mixes, and names every missing run with its reason."""
    import shutil

    import sclft.versions
    from sclft.bench.render import render_table
    from sclft.bench.reports import coverage_text
    from sclft.bench.scoring import table_rows

    suite, out, _ = smoke
    runs = bench.expand_suite(suite)
    real = sclft.versions.library_versions()
    major, minor, patch = real["torch"].split("+")[0].split(".")[:3]
    other = {**real, "torch": f"{major}.{minor}.{int(patch) + 1}"}
    monkeypatch.setattr(sclft.versions, "library_versions", lambda: other)
    other_ids = [r.id for r in bench.expand_suite(suite)]
    monkeypatch.setattr(sclft.versions, "library_versions", lambda: real)
    assert not set(other_ids) & {r.id for r in runs}  # a patch release changes every id
    a, b = tmp_path / "a", tmp_path / "b"
    for i, (run, rid) in enumerate(zip(runs, other_ids)):
        dest = (a / "experiments" / run.id) if i % 2 == 0 else (b / "experiments" / rid)
        shutil.copytree(out / "experiments" / run.id, dest)
        if i % 2:
            (dest / "fingerprint.json").write_text(json.dumps({"id": rid, **bench.run_fingerprint(run.config, other)}))
    shutil.copytree(out / "selection", b / "selection")
    bench.build_reports(suite, tmp_path / "merged", [a, b])
    merged = tmp_path / "merged"
    metrics = {r.id: json.loads((out / "experiments" / r.id / "metrics.json").read_text()) for r in runs}
    expected = render_table(table_rows(runs, metrics))[1]  # the table of the unsplit folder, straight from its runs
    assert (merged / "table.csv").read_text() == expected
    assert coverage_text(suite, bench.find_runs(out, runs), [out]) == ("", "")  # one folder, one version set
    note = f"mixing 2 sets of library versions (torch {real['torch']}; torch {other['torch']})"
    for name in ("table.md", "selection.md", "ablation.md", "data_size.md"):
        assert note in (merged / name).read_text(), name
    listing = (merged / "runs.md").read_text()
    assert f"{len(runs)} of {len(runs)} runs found" in listing and f"torch {other['torch']} (installed" in listing

    # --strict-versions: shard b's runs are refused, each named with its reason; a failed run says so
    # (find_runs directly: the reports it feeds were rendered above)
    failed = runs[0].id
    (a / "experiments" / failed / "metrics.json").unlink()
    (a / "experiments" / failed / "error.log").write_text("Traceback …\nRuntimeError: CUDA error: out of memory\n")
    strict = bench.find_runs([a, b], runs, strict_versions=True)  # what build_reports(strict_versions=True) uses
    assert sorted(strict.found) == sorted(r.id for r in runs[2::2])  # a's runs but the failed one
    assert set(strict.missing) == {failed, *(r.id for r in runs[1::2])}
    assert strict.missing[failed] == f"failed (traceback in a/experiments/{failed}/error.log)"
    assert all("version mismatch refused by --strict-versions" in strict.missing[r.id] and
               f"torch {other['torch']} (installed {real['torch']})" in strict.missing[r.id] for r in runs[1::2])
    listing = coverage_text(suite, strict, [a, b])[1]
    assert all(f"| {rid} | {reason} |" in listing for rid, reason in strict.missing.items())

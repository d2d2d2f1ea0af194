"""The configuration layer: SelectionConfig, the layering of defaults / YAML / per_strategy / flags, torch-free
validation, registries that refuse duplicates, the declared table order."""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sclft import picks
from sclft.config import ConfigError, SelectionConfig, TrainConfig, layered_config
from sclft.resources import list_yaml
from sclft.strategies import list_strategies, strategy_rank

ROOT = Path(__file__).resolve().parents[1]


def test_validate_and_a_rejected_train_command_import_no_torch(tmp_path):
    (tmp_path / "cfg.yaml").write_text("layer_rule: fixed\nextra: {selection: {fixed_pick: midle}}\n")
    code = ("import sys\n"
            "from sclft.config import TrainConfig\n"
            "TrainConfig(layer_rule='trial', extra={'selection': {'fixed_pick': 'last'}}).validate()\n"
            "assert 'torch' not in sys.modules, 'validate() imported torch'\n"
            "from sclft.cli import main\n"
            f"code = main(['train', '--config', {str(tmp_path / 'cfg.yaml')!r}, '--out', {str(tmp_path / 'run')!r}])\n"
            "assert 'torch' not in sys.modules, 'sclft train imported torch before rejecting its config'\n"
            "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    assert "cfg.yaml: extra: extra.selection.fixed_pick must be one of middle" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("selection, says", [
    ({"fixed_pick": "midle"}, ("extra.selection.fixed_pick", "middle, two_thirds")),
    ({"profile_pick": "repeated-min"}, ("extra.selection.profile_pick", "repeated_min")),
    ({"candidates": []}, ("extra.selection.candidates", "non-empty")),
    ({"candidates": "blocks.4.0"}, ("extra.selection.candidates", "list of block names")),
    ({"trial_holdout": math.nan}, ("extra.selection.trial_holdout", "(0, 1)")),
    ({"trial_holdout": 1.0}, ("extra.selection.trial_holdout", "(0, 1)")),
    ({"profile_jackknife": 1}, ("extra.selection.profile_jackknife", ">= 2")),
    ({"trial_epochs": 2.5}, ("extra.selection.trial_epochs", "integer")),
    ({"profile_per_class": True}, ("extra.selection.profile_per_class", "integer")),
    ({"fixed_pick": ["middle"]}, ("extra.selection.fixed_pick", "middle")),
    ({"bogus": 1}, ("bogus", "profile_per_class", "trial_epochs")),
])
def test_a_bad_selection_option_is_rejected_by_validate(selection, says):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(extra={"selection": selection}).validate()
    assert caught.value.key == "extra" and all(s in str(caught.value) for s in says), str(caught.value)


def test_selection_config_is_typed_and_carried_by_train_config():
    cfg = TrainConfig(extra={"selection": {"fixed_pick": "last", "candidates": ("a", "b")}}).validate()
    assert cfg.selection == SelectionConfig(fixed_pick="last", candidates=["a", "b"])
    assert cfg.selection.candidates == ["a", "b"] and cfg.selection.trial_holdout == 0.3
    assert TrainConfig().selection == SelectionConfig()
    assert set(SelectionConfig().options()) == {"candidates", "profile_per_class", "profile_pick", "profile_jackknife",
                                                "fixed_pick", "trial_per_class", "trial_holdout", "trial_epochs"}
    # the names it checks are the torch-free registries' (a pick registered there is valid at once)
    assert set(picks.FIXED_PICKS) == {"middle", "two_thirds", "last", "first_repeated"}
    assert {"min", "repeated_min", "one_se"} <= set(picks.PROFILE_PICKS)
    assert TrainConfig.max_params == 10.0 and picks.list_rules() == ["fixed", "profile", "trial", "tuned"]
    assert TrainConfig(max_params=None).validate().max_params is None  # no budget: every candidate


def test_registries_refuse_duplicates(monkeypatch):
    from sclft.backbones import _registry as backbones
    from sclft.data import prompts

    monkeypatch.setattr(picks, "_RULES", dict(picks._RULES))
    with pytest.raises(ValueError, match="'profile' is empty or already registered"):
        picks.register_rule("profile", "sclft.selection:fixed_rule")
    picks.register_rule("new_rule", "sclft.selection:fixed_rule")
    assert "new_rule" in picks.list_rules()
    with pytest.raises(ValueError, match="'new_rule' is empty or already registered"):
        picks.register_rule("new_rule")(lambda *a: {})
    with pytest.raises(ValueError, match="fixed pick name 'middle' is empty or already"):
        picks.register_fixed_pick("middle")(lambda names, shares: names[0])
    with pytest.raises(ValueError, match="profile pick name 'min' is empty or already"):
        picks.register_profile_pick("min")(lambda curve, shares, se, scores: {})
    try:
        first = lambda curve, shares, se, scores: {n: -i for i, (n, _) in enumerate(curve)}  # noqa: E731
        picks.register_profile_pick("first")(first)
        assert picks.profile_pick("first", [("a", 2.0), ("b", 1.0)]) == "a"
        assert TrainConfig(extra={"selection": {"profile_pick": "first"}}).validate().selection.profile_pick == "first"
    finally:
        picks.PROFILE_PICKS.pop("first", None)
    with pytest.raises(ValueError, match="prefix 'timm' is already registered"):
        backbones.register_prefix("timm")(lambda *a: None)
    with pytest.raises(ValueError, match="'cifar10' are already registered"):
        prompts.register_prompts("cifar10", ("a {}.",))
    matches, _ = backbones._MODULE_ADAPTERS[0]
    with pytest.raises(ValueError, match="already registered"):
        backbones.register_module_adapter(matches)(lambda m: None)


def test_bench_table_order_is_declared_not_imported():
    order = sorted(list_strategies(), key=strategy_rank)
    assert order == ["linear_probe", "zero_shot", "layer_ft", "scl_ft", "bitfit", "lora", "deep_lora", "full_ft"]
    assert strategy_rank("no_such_strategy") == len(order)


def _yaml(tmp_path, text: str) -> str:
    (tmp_path / "cfg.yaml").write_text(text)
    return str(tmp_path / "cfg.yaml")


def test_layering_defaults_yaml_per_strategy_flags(tmp_path):
    path = _yaml(tmp_path, "lr: 0.01\nepochs: 4\nlayer: layer3.0\nr: 4\nper_strategy:\n"
                           "  linear_probe: {lr: 0.1}\n  lora: {alpha: 8, epochs: 2}\n")
    lora = layered_config(path, {"strategy": "lora", "epochs": 3}, {"dropout": 0.1})
    assert (lora.lr, lora.epochs, lora.strategy_options) == (0.01, 3, {"r": 4, "alpha": 8, "dropout": 0.1})
    assert lora.layer == "auto"  # the top level's layer is for the strategies that tune a block
    foreign = r"cfg.yaml: r: option 'r' belongs to strategy lora, deep_lora, not to 'linear_probe'"
    with pytest.raises(ValueError, match=foreign):
        layered_config(path, {"strategy": "linear_probe"})  # a top-level option of another strategy
    path = _yaml(tmp_path, "lr: 0.01\nlayer: layer3.0\nper_strategy:\n  linear_probe: {lr: 0.1}\n")
    probe = layered_config(path, {"strategy": "linear_probe"})
    assert (probe.lr, probe.layer, probe.strategy_options) == (0.1, "auto", {})
    with pytest.raises(ValueError, match="--layer layer1.0 is an option of"):
        layered_config(path, {"strategy": "linear_probe", "layer": "layer1.0"})
    with pytest.raises(ValueError, match="--lr: lr=nan: must be a finite number"):
        layered_config(path, {"lr": math.nan})
    with pytest.raises(ValueError, match="cfg.yaml: epochs: epochs must be >= 1"):
        layered_config(_yaml(tmp_path, "epochs: 0\n"))


@pytest.mark.parametrize("name", list_yaml("configs"))
def test_every_packaged_config_loads_with_every_strategy(name):
    for strategy in list_strategies():
        cfg = layered_config(name, {"strategy": strategy})
        assert cfg.strategy == strategy and cfg.epochs >= 1


def test_probe_rank_honours_layers_and_jackknife(tmp_path, monkeypatch):
    from sclft import cli, selection

    seen = []
    real = selection.probe
    monkeypatch.setattr(selection, "probe", lambda *a, **kw: seen.append((a[2], kw["jackknife"])) or real(*a, **kw))
    rc = cli.main(["probe", "--rank", "--backbone", "resnet18", "--no-pretrained", "--data", "digits",
                   "--image-size", "16", "--train-per-class", "4", "--max-params", "100", "--no-progress",
                   "--layers", "layer1.0,layer2.1", "--jackknife", "3", "--out", str(tmp_path)])
    assert rc == 0 and seen == [(["layer1.0", "layer2.1"], 3)]
    saved = __import__("json").loads((tmp_path / "rank.json").read_text())
    assert {r["block"] for r in saved["ranking"]} == {"layer1.0", "layer2.1"}


def test_list_into_a_closed_pipe_exits_quietly():
    read, write = os.pipe()
    os.close(read)  # the reader (`| head`) is gone before the first line is written
    try:
        done = subprocess.run([sys.executable, "-m", "sclft.cli", "list", "strategies"], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60, env={**os.environ,
                              "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE and done.stderr == ""


def test_trial_rule_restores_the_backbone_when_a_trial_fails(backbone_factory, monkeypatch):
    import torch

    from sclft import selection
    from sclft.data import load_dataset

    b = backbone_factory("resnet18")
    b.train()
    before = {k: v.clone() for k, v in b.state_dict().items()}
    flags = [p.requires_grad for p in b.parameters()]

    def fit_then_fail(model, data, cfg, epochs, device):  # the tuned block's weights change, then the trial dies
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:  # what a trial trains: the block (and the head)
                    p.add_(1.0)
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(selection, "_fit_tail", fit_then_fail)
    cfg = TrainConfig(backbone="resnet18", layer_rule="trial", strategy="layer_ft", image_size=16, batch_size=8,
                      progress=False, max_params=100.0,
                      extra={"selection": {"candidates": ["layer1.0"], "trial_per_class": 2, "trial_holdout": 0.5}})
    with pytest.raises(RuntimeError, match="out of memory"):
        selection.select_layer(b, load_dataset("digits", train_per_class=2, seed=0), cfg)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())
    assert [p.requires_grad for p in b.parameters()] == flags and b.training


def test_every_train_config_field_declares_its_help_and_properties():
    """issue 32.3: a field is declared once. Each TrainConfig field carries its help text and whether it is hashed
    in bench run ids, a location, may differ on --resume and appears in the reproduce command; the five places
    that used to list them by hand read them from there."""
    import dataclasses

    from sclft import card, cli
    from sclft.bench import layout, plan
    from sclft.config import FIELD_PROPERTIES, fields_where
    from sclft.training import checkpoint

    for f in dataclasses.fields(TrainConfig):
        assert set(f.metadata) == set(FIELD_PROPERTIES), f"{f.name} declares {sorted(f.metadata)}"
        assert isinstance(f.metadata["help"], str) and len(f.metadata["help"]) > 5, f.name
        assert all(isinstance(f.metadata[p], bool) for p in FIELD_PROPERTIES[1:]), f.name
    # the sets as they were listed by hand before (bench run ids and committed reports depend on them)
    assert set(plan.UNHASHED_FIELDS) == {"out", "cache_dir", "progress", "num_workers", "tensorboard", "report_to",
                                         "resume", "overwrite"} == set(fields_where("hashed", False))
    assert layout.LOCATION_FIELDS == ("data_dir",)
    assert set(checkpoint.RESUME_MAY_DIFFER) == {"out", "resume", "overwrite", "progress", "num_workers",
                                                 "tensorboard", "report_to", "eval_every", "cache_dir", "data_dir"}
    assert card.NOT_IN_COMMAND == {"out", "resume", "overwrite", "progress", "num_workers", "cache", "cache_dir",
                                   "tensorboard", "report_to", "eval_every", "extra", "strategy_options"}
    helps: dict[str, str] = {}
    for action in cli.build_parser(["train"])._subparsers._group_actions[0].choices["train"]._actions:
        helps.setdefault(action.dest, action.help)  # --cache before --no-cache
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("extra", "strategy_options"):  # YAML only; strategy options have flags of their own
            assert helps[f.name].startswith(f.metadata["help"]), f.name


def test_layer_rule_pick_spelling_in_train_probe_and_bench(tmp_path):
    """issue 32.8: ``--layer-rule profile:logme`` (the tables' RULE:PICK) is the rule plus its pick option: one
    config however spelled (the same bench run id), accepted by train, probe (also through --config) and suites."""
    import json

    import yaml

    from sclft import bench, cli

    spelled = layered_config(None, {"layer_rule": "profile:logme"})
    assert (spelled.layer_rule, spelled.selection.profile_pick) == ("profile", "logme")
    assert spelled == layered_config(None, {"layer_rule": "profile", "extra": {"selection": {"profile_pick": "logme"}}})
    with pytest.raises(ValueError, match="--layer-rule: .*'trial:logme'.*only profile and fixed take a pick"):
        layered_config(None, {"layer_rule": "trial:logme"})
    with pytest.raises(ValueError, match="unknown profile pick 'best'.*profile:logme"):
        layered_config(None, {"layer_rule": "profile:best"})

    head = {"backbones": ["efficientnet_lite0"], "datasets": [{"name": "digits", "test_per_class": 4}]}
    ids = []
    for defaults in ({"layer_rule": "profile:logme"},
                     {"layer_rule": "profile", "extra": {"selection": {"profile_pick": "logme"}}}):
        path = tmp_path / f"s{len(ids)}.yaml"
        path.write_text(yaml.safe_dump({**head, "defaults": defaults, "groups": {"table": {"strategies": ["scl_ft"]}}}))
        ids.append([r.id for r in bench.expand_suite(bench.load_suite(str(path)))])
    assert ids[0] == ids[1] and len(ids[0]) == 1
    path.write_text(yaml.safe_dump({**head, "groups": {"selection": {"strategies": ["scl_ft"], "layers": "all",
                                                                     "rules": ["profile:logme"]}}}))
    with pytest.raises(bench.SuiteError, match="rules: profile:logme.*list profile"):
        bench.load_suite(str(path))

    cfg = tmp_path / "probe.yaml"
    cfg.write_text(yaml.safe_dump({"backbone": "resnet18", "pretrained": False, "image_size": 16, "epochs": 3,
                                   "train_per_class": 5, "progress": False}))
    assert cli.main(["probe", "--config", str(cfg), "--rank", "--layer-rule", "profile:logme", "--layers",
                     "layer1.0,layer2.1", "--max-params", "100", "--out", str(tmp_path / "p")]) == 0
    saved = json.loads((tmp_path / "p" / "rank.json").read_text())
    best_logme = max(saved["scores"], key=lambda b: saved["scores"][b]["logme"])
    assert (saved["rule"], saved["pick"], saved["layer"]) == ("profile", "logme", best_logme)

"""The torch-free config side of strategies: registry, option validation, TrainConfig, CLI flags."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from sclft.strategies import (
    StrategyConfig,
    collect_strategy_options,
    get_strategy_config,
    list_strategies,
    option_owners,
    strategy_config,
)
from sclft.strategies.scl_ft import SCLFTConfig

ROOT = Path(__file__).resolve().parents[1]


def test_registry_and_descriptions_import_no_torch():
    code = ("import sys, sclft, sclft.strategies as s\n"
            "rows = [(n, s.get_strategy_config(n).display_name, s.get_strategy_config(n).description) "
            "for n in s.list_strategies()]\n"
            "s.strategy_config('scl_ft', fuse='concat')\n"
            "print(len(rows), [m for m in ('torch', 'timm', 'open_clip') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == [str(len(list_strategies())), "[]"]


def test_every_strategy_describes_itself():
    for name in list_strategies():
        cls = get_strategy_config(name)
        assert cls.name == name and cls.display_name and cls.description and cls.trains
        assert cls.cache_scope in ("features", "prefix", "none")
        assert (cls.cache_scope == "prefix") == cls.uses_layer  # today's block strategies cache their prefix
        assert 0.0 <= cls.cost <= 1.0
        for f in dataclasses.fields(cls):
            assert f.default is not dataclasses.MISSING and f.metadata.get("help"), (name, f.name)
        cls().validate()  # the defaults are valid


def test_option_names_are_unambiguous():
    """A strategy option must not shadow a TrainConfig field (the CLI flag and YAML key would clash), and an
    option shared by several strategies must have one type (it becomes one flag)."""
    from sclft.training import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, owners in option_owners().items():
        assert name not in fields, name
        types = {next(f.type for f in dataclasses.fields(o) if f.name == name) for o in owners}
        assert len(types) == 1, (name, types)


def test_option_values_and_names_are_validated():
    assert strategy_config("scl_ft", fuse="concat") == SCLFTConfig(fuse="concat", match="repeat", skip_pooling=None)
    with pytest.raises(ValueError, match="unknown fuse 'mul'; valid: add, concat"):
        SCLFTConfig(fuse="mul")
    with pytest.raises(ValueError, match="unknown match 'tile'; valid: repeat, zero_pad"):
        strategy_config("scl_ft", match="tile")
    with pytest.raises(ValueError, match="no option fusion; valid options: fuse, match, skip_pooling"):
        strategy_config("scl_ft", fusion="add")
    with pytest.raises(ValueError, match="option 'fuse' belongs to strategy scl_ft, not to 'layer_ft'"):
        strategy_config("layer_ft", fuse="concat")
    with pytest.raises(ValueError, match="not both"):
        strategy_config(SCLFTConfig(), fuse="concat")
    with pytest.raises(ValueError, match="valid strategies: .*scl_ft"):
        strategy_config("sclft")
    with pytest.raises(ValueError, match="templates must be a non-empty list"):
        strategy_config("zero_shot", templates="a photo of a {}.")
    assert strategy_config("zero_shot", templates=["a {}."]).options() == {"templates": ["a {}."], "prompts": None}


def test_register_takes_a_config_dataclass():
    from sclft.strategies import register_strategy

    with pytest.raises(TypeError, match="StrategyConfig dataclass"):
        register_strategy(object)

    @dataclasses.dataclass
    class Nameless(StrategyConfig):
        model_class = "x:Y"

    with pytest.raises(ValueError, match="empty or already registered"):
        register_strategy(Nameless)


def test_train_config_carries_the_strategy_options():
    from sclft.training import TrainConfig

    cfg = TrainConfig.from_dict({"strategy": "scl_ft", "fuse": "concat", "skip_pooling": "avg"}).validate()
    assert cfg.strategy_options == {"fuse": "concat", "skip_pooling": "avg"}
    assert TrainConfig.from_dict({"strategy_options": {"match": "zero_pad"}}).validate().strategy_options == \
        {"match": "zero_pad"}
    with pytest.raises(ValueError, match="option 'fuse' belongs to strategy scl_ft, not to 'linear_probe'"):
        TrainConfig.from_dict({"strategy": "linear_probe", "fuse": "add"}).validate()
    assert collect_strategy_options({"fuse": "concat", "lr": 1.0}, base={"fuse": "add", "match": "zero_pad"}) == \
        {"lr": 1.0, "strategy_options": {"fuse": "concat", "match": "zero_pad"}}  # train(cfg, fuse="concat")
    assert collect_strategy_options({"lr": 1.0}, base={"fuse": "add"}) == {"lr": 1.0}
    with pytest.raises(ValueError, match="given twice"):
        collect_strategy_options({"fuse": "add", "strategy_options": {"fuse": "concat"}})
    with pytest.raises(ValueError, match="unknown fuse"):
        TrainConfig(strategy_options={"fuse": "sum"}).validate()


def test_cli_flags_reach_strategy_options(tmp_path):
    from sclft.cli import build_parser, config_from_args, main

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    assert cfg("--skip-pooling", "avg2x2").strategy_options == {"skip_pooling": "avg2x2"}
    assert cfg("--strategy", "zero_shot", "--templates", "a {}.", "an {}.").strategy_options == \
        {"templates": ["a {}.", "an {}."]}
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("strategy: scl_ft\nfuse: concat\nstrategy_options: {match: zero_pad}\n")
    assert cfg("--config", str(yaml_file), "--fuse", "add").strategy_options == {"fuse": "add", "match": "zero_pad"}
    assert cfg("--config", str(yaml_file)).strategy_options == {"fuse": "concat", "match": "zero_pad"}
    assert cfg().strategy_options == {}
    assert main(["train", "--strategy", "layer_ft", "--fuse", "concat", "--out", str(tmp_path / "x")]) == 2


def test_list_strategies_cli(capsys):
    from sclft.cli import main

    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    for name in list_strategies():
        assert f"{name} " in out and get_strategy_config(name).description in out


def test_bench_asks_the_strategy_configs():
    """Variants of one strategy's options skip the others; labels and costs come from the configs."""
    from sclft import bench

    suite = bench.load_suite("smoke")
    suite = suite.replace(groups={"ablation": {"strategies": ["layer_ft", "scl_ft"], "seeds": [0],
                                               "train_per_class": [3], "variants": [{"fuse": "concat"}, {"lr": 0.01}]}})
    runs = bench.expand_suite(suite)
    assert sorted((r.strategy, r.variant) for r in runs) == [("layer_ft", "lr=0.01"), ("scl_ft", "fuse=concat"),
                                                             ("scl_ft", "lr=0.01")]
    from sclft.training import TrainConfig

    concat = next(r for r in runs if r.variant == "fuse=concat")
    assert TrainConfig.from_dict(concat.config).validate().strategy_options == {"fuse": "concat"}
    assert bench.scoring.method_name("scl_ft") == "SCL FT"
    assert bench.scoring.method_order(["full_ft", "scl_ft", "linear_probe", "layer_ft", "zero_shot"]) == \
        ["linear_probe", "zero_shot", "layer_ft", "scl_ft", "full_ft"]
    layer_ft = next(r for r in runs if r.strategy == "layer_ft")
    full = bench.Run(layer_ft.id, layer_ft.backbone, layer_ft.dataset, {**layer_ft.config, "strategy": "full_ft"})
    assert bench.estimate_seconds(full, suite) > bench.estimate_seconds(layer_ft, suite)  # cost 1.0 vs 0.35


def test_dry_run_cost_reads_the_run_options():
    """An adapter restricted to blocks from K costs a cached tail from K, as layer_ft at K does; "all" is
    the whole network with gradients and no cache."""
    from sclft import bench

    suite = bench.load_suite("smoke")
    table = {"strategies": ["lora"], "seeds": [0], "variants": [{}, {"blocks": "blocks.5.0"}]}
    suite = suite.replace(groups={"table": table,
                                  "ablation": {"strategies": ["layer_ft"], "seeds": [0], "layers": ["blocks.5.0"]}})
    runs = {(r.strategy, r.variant): r for r in bench.expand_suite(suite)}
    lora_all = bench.estimate_seconds(runs[("lora", "")], suite)
    lora_tail = bench.estimate_seconds(runs[("lora", "blocks=blocks.5.0")], suite)
    layer_ft = bench.estimate_seconds(runs[("layer_ft", "")], suite)
    assert lora_tail == pytest.approx(layer_ft) and lora_tail < lora_all

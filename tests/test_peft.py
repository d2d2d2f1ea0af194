"""lora (through peft), bitfit and their options; save/load round trips of every strategy."""

import copy
import importlib
import json

import pytest
import torch
from conftest import random_backbone

from sclft.backbones import create_backbone
from sclft.cli import build_parser, config_from_args, main
from sclft.model import TransferModel
from sclft.run_folder import build_backbone
from sclft.strategies import list_strategies, strategy_config
from sclft.strategies.lora import load_adapter, save_adapter
from sclft.training import TrainConfig, load, train

peft = pytest.importorskip("peft")
writer = importlib.import_module("sclft.run_folder.writing")  # where train() hands the model to save_model

# peft's own matching of the same layers, written independently of our per-family defaults
PEFT_REFERENCE = {
    "resnet50": dict(target_modules=r"(layer\d\.\d+\.conv[123]|conv1)"),
    "vit_b32": dict(target_modules=r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"),
    "clip_vit_b32": dict(target_modules=r"transformer\.resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)"),
}


def _fresh(name):
    """A private copy of a cached random backbone, rebuilt around a deep copy of its module (deep-copying a
    Backbone would keep stage closures that still call the original module)."""
    return create_backbone(copy.deepcopy(random_backbone(name).model))


def _peft_count(raw_model, **config) -> int:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(raw_model, LoraConfig(r=4, lora_alpha=8, **config))
    return peft_model.get_nb_trainable_parameters()[0]


def _adapter_count(model) -> int:
    head = sum(p.numel() for p in model.head.parameters())
    return model.parameter_summary()["trainable"] - head


@pytest.mark.parametrize("name", ["resnet50", "vit_b32", "clip_vit_b32"])
def test_lora_trainable_count_equals_peft(name):
    backbone = _fresh(name)
    reference = _peft_count(copy.deepcopy(backbone.model), **PEFT_REFERENCE[name])
    model = TransferModel(backbone, "lora", 10, r=4, alpha=8)
    assert _adapter_count(model) == reference > 0
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_start_block_equals_peft_layers_to_transform():
    backbone = _fresh("vit_b32")
    reference = _peft_count(copy.deepcopy(backbone.model), target_modules=["qkv", "proj", "fc1", "fc2"],
                            layers_to_transform=list(range(6, 12)), layers_pattern="blocks")
    model = TransferModel(backbone, "lora", 10, r=4, alpha=8, blocks="blocks.6")
    # 6 blocks × r=4 × (in + out) of qkv, proj, fc1, fc2
    assert _adapter_count(model) == reference == 6 * 4 * ((768 + 3 * 768) + (768 + 768) + (768 + 3072) + (3072 + 768))


def test_building_a_strategy_alone_leaves_the_backbone_unchanged():
    """TrainConfig.check_backbone constructs the strategy to check its options; only TransferModel attaches."""
    from sclft.strategies import get_strategy

    backbone = _fresh("resnet18")
    before = sorted(n for n, _ in backbone.model.named_parameters())
    for name in ("lora", "deep_lora"):
        get_strategy(name)(backbone, None, strategy_config(name, r=2))
    assert sorted(n for n, _ in backbone.model.named_parameters()) == before
    TransferModel(backbone, "lora", 10, r=2)
    assert any("lora_A" in n for n, _ in backbone.model.named_parameters())


def test_lora_on_clip_attention_trains_and_changes_output():
    model = TransferModel(_fresh("clip_vit_b32"), "lora", 10, r=2, blocks="transformer.resblocks.10")
    x = torch.randn(2, 3, 224, 224)
    z = model.frozen_forward(x)
    before = model.forward_from_frozen(z).detach()
    model(x).square().sum().backward()
    grads = {n: p.grad for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert any(".attn." in n for n in grads) and all(g is not None for g in grads.values())
    with torch.no_grad():
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    assert not torch.allclose(model.forward_from_frozen(z), before, atol=1e-4)


def test_lora_frozen_prefix_is_layer_ft_prefix():
    backbone = _fresh("resnet50")
    x = torch.randn(2, 3, 32, 32)
    layer_ft = TransferModel(backbone, "layer_ft", 10, layer="layer3.2")
    expected = layer_ft.frozen_forward(x)
    model = TransferModel(backbone, "lora", 10, blocks="layer3.2")
    assert model.strategy.has_frozen_prefix and model.strategy.cache_part() == layer_ft.strategy.cache_part()
    assert not TransferModel(_fresh("resnet18"), "lora", 10).strategy.has_frozen_prefix  # blocks=all: no prefix
    torch.testing.assert_close(model.frozen_forward(x), expected)
    adapted = {n.split(".lora_")[0] for n, _ in model.backbone.model.named_parameters() if "lora_" in n}
    blocks = backbone.blocks[backbone.blocks.index("layer3.2"):]  # layer3.2 … layer4.2
    assert {".".join(n.split(".")[:2]) for n in adapted} == set(blocks)
    with torch.no_grad():
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    torch.testing.assert_close(model.forward_from_frozen(model.frozen_forward(x)), model(x))
    conv = model.backbone.model.get_submodule("layer3.2.conv2")
    h = torch.randn(1, conv.base_layer.in_channels, 4, 4)
    assert not torch.allclose(conv(h), conv.base_layer(h))  # the adapter is in the forward


def test_bitfit_trains_biases_only():
    backbone = _fresh("vit_b32")
    model = TransferModel(backbone, "bitfit", 10)
    names = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    expected = {n for n, _ in backbone.named_parameters() if n.endswith("bias")}
    # per block: norm1, qkv, proj, norm2, fc1, fc2; + patch_embed, norm
    assert names == expected and len(names) == 12 * 6 + 2
    with_norm = TransferModel(_fresh("vit_b32"), "bitfit", 10, norm=True)
    extra = {n for n, p in with_norm.backbone.named_parameters() if p.requires_grad} - names
    assert extra and all(("norm" in n) and n.endswith("weight") for n in extra)


def test_unknown_and_malformed_options_name_the_valid_ones(tmp_path, capsys):
    backbone = _fresh("resnet18")
    with pytest.raises(ValueError, match="no option rank; valid options: r, target_modules, blocks, alpha, dropout"):
        strategy_config("lora", rank=4)
    with pytest.raises(ValueError, match="lora: r must be an integer, got 'x'"):
        TransferModel(backbone, "lora", 10, r="x")
    with pytest.raises(ValueError, match=r"deep_lora: eps must be in \(0, 1\], got 2.0"):
        strategy_config("deep_lora", eps=2)
    with pytest.raises(ValueError, match="option 'r' belongs to strategy lora, deep_lora, not to 'scl_ft'"):
        TrainConfig(strategy="scl_ft", strategy_options={"r": 4}).validate()
    with pytest.raises(ValueError, match="match no layer"):
        TransferModel(backbone, "lora", 10, target_modules=["qkv"])
    with pytest.raises(ValueError, match="valid: 'all' or a start block"):
        TransferModel(backbone, "lora", 10, blocks="layer9")
    assert main(["train", "--strategy", "lora", "--r", "0", "--out", str(tmp_path)]) == 2
    assert "lora: r must be in [1, ∞), got 0" in capsys.readouterr().err
    assert main(["train", "--strategy", "scl_ft", "--r", "4", "--out", str(tmp_path)]) == 2


def test_cli_flags_and_yaml_reach_the_adapter_options(tmp_path):
    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    # one --r flag for both owners; lists, floats and booleans through the generated flags
    assert cfg("--strategy", "lora", "--r", "4", "--target-modules", "qkv", "proj", "--alpha", "8").strategy_options \
        == {"r": 4, "target_modules": ["qkv", "proj"], "alpha": 8.0}
    assert cfg("--strategy", "deep_lora", "--r", "2", "--gamma", "0.5").strategy_options == {"r": 2, "gamma": 0.5}
    assert cfg("--strategy", "bitfit", "--norm").strategy_options == {"norm": True}
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("strategy: lora\nr: 16\nblocks: layer3.0\ntarget_modules: [conv2]\n")
    config = strategy_config("lora", **cfg("--config", str(yaml_file)).strategy_options)
    assert (config.r, config.blocks, config.target_modules, config.frozen_scope()) == (16, "layer3.0", ("conv2",),
                                                                                       "prefix")


def test_list_strategies_shows_peft_methods(capsys):
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} " in out for name in ("lora", "bitfit", "deep_lora"))


# ------------------------------------------------------------------------------------------ round trips
TINY_DATA = "test_subset:5:digits"  # 5 test images per class (registered by sclft.data)
# random efficientnet_lite0: a random timm ResNet zero-inits each block's last BN, so no gradient reaches its convs
TINY_BACKBONE = "efficientnet_lite0"
# (strategy, layer, options, whether the frozen prefix is cached)
ROUND_TRIPS = [
    ("lora", "auto", {"r": 2, "blocks": "blocks.5.0"}, True),
    ("lora", "auto", {"r": 2}, False),
    ("bitfit", "auto", {"norm": True}, False),
    ("deep_lora", "auto", {"r": 2, "blocks": "blocks.6.0", "gamma": 0.5}, True),
    ("linear_probe", "auto", {}, True),
    ("layer_ft", "blocks.5.0", {}, True),
    ("scl_ft", "blocks.5.0", {"fuse": "concat"}, True),
    ("full_ft", "auto", {}, False),
]


def test_round_trips_cover_every_trainable_strategy():
    covered = {s for s, *_ in ROUND_TRIPS} | {"zero_shot"}  # zero_shot: tests/test_train.py (CLIP only)
    assert covered == set(list_strategies())


@pytest.mark.slow
@pytest.mark.parametrize("strategy,layer,options,cached", ROUND_TRIPS,
                         ids=[f"{s}-{i}" for i, (s, *_) in enumerate(ROUND_TRIPS)])
def test_train_then_load_gives_the_trained_models_logits(tmp_path, monkeypatch, strategy, layer, options, cached):
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    captured = {}
    original = writer.save_model

    def capture(model, out, *args, **kwargs):  # the trained model itself, as train() saves it
        captured["logits"] = model.eval()(x).detach().clone()
        captured["trainable"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return original(model, out, *args, **kwargs)

    monkeypatch.setattr(writer, "save_model", capture)
    cfg = TrainConfig(backbone=TINY_BACKBONE, pretrained=False, data=TINY_DATA, strategy=strategy, layer=layer,
                      strategy_options=options, image_size=16, train_per_class=3, epochs=1, batch_size=16, lr=1e-2,
                      progress=False, cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run"))
    metrics = train(cfg)
    assert metrics["cached"] is cached
    reloaded = load(tmp_path / "run")
    torch.testing.assert_close(reloaded(x), captured["logits"], rtol=0, atol=0)
    # the run really trained something away from the fresh model
    fresh = TransferModel(build_backbone(TINY_BACKBONE, False, None, 0, 16), strategy, 10,
                          layer if layer != "auto" else None, **options)
    changed = [n for n, p in fresh.named_parameters() if n in captured["trainable"] and
               not torch.equal(p, captured["trainable"][n])]
    assert any(n.startswith("head.") for n in changed)
    assert any(n.startswith("backbone.") for n in changed) is (strategy != "linear_probe")
    assert (tmp_path / "run" / "adapter_config.json").is_file() is (strategy == "lora")
    if strategy == "lora":
        _check_peft_adapter(tmp_path / "run", reloaded, options)


def _check_peft_adapter(run, ours, options):
    """The run's adapter_config.json + adapter_model.safetensors load with peft's own PeftModel.from_pretrained."""
    from peft import PeftModel

    assert (run / "adapter_model.safetensors").is_file()
    assert any(float(p.detach().abs().max()) > 0 for n, p in ours.named_parameters() if "lora_B" in n)  # trained
    raw = build_backbone(TINY_BACKBONE, False, None, 0, 16).model  # the same frozen weights, no adapter
    peft_model = PeftModel.from_pretrained(raw, str(run)).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(peft_model(x), ours.backbone.model(x))
    # our own loader of the adapter files, and a second save
    other = TransferModel(build_backbone(TINY_BACKBONE, False, None, 0, 16), "lora", 10, **options).eval()
    load_adapter(other, run)
    torch.testing.assert_close(other.backbone.model(x), ours.backbone.model(x))
    save_adapter(other, run / "again")
    assert (run / "again" / "adapter_model.safetensors").is_file()


def test_overwrite_by_another_strategy_removes_the_adapter(tmp_path):
    """The peft adapter belongs to the run: ``--overwrite`` with a strategy that exports nothing removes
    it (a stale adapter_model.safetensors would load as if it were the new run's); files the user put
    there stay."""
    common = dict(backbone=TINY_BACKBONE, pretrained=False, data=TINY_DATA, image_size=16, train_per_class=2,
                  epochs=1, batch_size=16, progress=False, cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run"))
    train(TrainConfig(strategy="lora", **common))
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["exported_files"] == ["adapter_model.safetensors",
                                                                               "adapter_config.json"]
    (run / "notes.txt").write_text("mine")
    train(TrainConfig(strategy="linear_probe", overwrite=True, **common))
    assert not (run / "adapter_model.safetensors").exists() and not (run / "adapter_config.json").exists()
    assert (run / "notes.txt").read_text() == "mine" and (run / "model.safetensors").is_file()

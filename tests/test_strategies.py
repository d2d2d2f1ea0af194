import pytest
import torch

import sclft
from sclft.strategies.scl_ft import match_width

# (K, expected trainable % for layer_ft / scl_ft on resnet50 layer3.0) — the lecture's table
RESNET50_PERCENT = [(10, 6.52), (100, 7.24), (47, 6.82), (37, 6.73)]


@pytest.mark.parametrize("k,expected", RESNET50_PERCENT)
@pytest.mark.parametrize("strategy", ["layer_ft", "scl_ft"])
def test_resnet50_trainable_share_matches_paper(backbone_factory, strategy, k, expected):
    model = sclft.TransferModel(backbone_factory("resnet50"), strategy, num_classes=k, layer="layer3.0")
    summary = model.parameter_summary()
    assert round(summary["percent"], 2) == expected
    assert summary["trainable"] == 1_512_448 + 2048 * k + k


def test_other_shares(backbone_factory):
    lp = sclft.TransferModel(backbone_factory("resnet50"), "linear_probe", num_classes=10)
    assert round(lp.parameter_summary()["percent"], 2) == 0.09
    lp100 = sclft.TransferModel(backbone_factory("resnet50"), "linear_probe", num_classes=100)
    assert round(lp100.parameter_summary()["percent"], 2) == 0.86
    vit = sclft.TransferModel(backbone_factory("vit_b32"), "layer_ft", num_classes=100, layer="blocks.6")
    assert vit.parameter_summary()["trainable"] == 7_087_872 + 768 * 100 + 100
    assert round(vit.parameter_summary()["percent"], 2) in (8.18, 8.19)
    full = sclft.TransferModel(backbone_factory("resnet50"), "full_ft", num_classes=10)
    assert full.parameter_summary()["percent"] == 100.0
    concat = sclft.TransferModel(backbone_factory("resnet50"), "scl_ft", num_classes=10, layer="layer3.0",
                                 fuse="concat")
    assert concat.parameter_summary()["trainable"] == 1_512_448 + (2048 + 1024) * 10 + 10


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vit_b32", pytest.param("vit_b16", marks=pytest.mark.slow),
                                  pytest.param("clip_vit_b32", marks=pytest.mark.slow), "efficientnet_lite0"])
def test_every_backbone_and_strategy_gives_logits(backbone_factory, name):
    b = backbone_factory(name)
    size = 64 if b.layout == "conv" else 224
    x = torch.randn(2, 3, size, size)
    layer = b.blocks[len(b.blocks) // 2]
    strategies = ["linear_probe", "layer_ft", "scl_ft", "full_ft"] + (["zero_shot"] if name.startswith("clip") else [])
    for s in strategies:
        model = sclft.TransferModel(b, s, num_classes=7, layer=layer, class_names=[f"c{i}" for i in range(7)])
        model.eval()
        with torch.no_grad():
            logits = model(x)
            assert logits.shape == (2, 7), s
            assert torch.isfinite(logits).all(), s


def _resnet_layer3_0(tm, x):
    """Output map of timm ResNet ``layer3[0]``, computed with the timm model's own modules (eval mode)."""
    with torch.no_grad():
        return tm.eval().layer3[0](tm.layer2(tm.layer1(tm.maxpool(tm.act1(tm.bn1(tm.conv1(x)))))))


def _timm_reference(tm, x, name, block):
    """(penultimate, pooled output of ``block``) computed with the timm model's own modules, in order."""
    with torch.no_grad():
        penultimate = tm.forward_head(tm.forward_features(x), pre_logits=True)
        if name == "resnet50":  # block "layer3.0"
            pooled = _resnet_layer3_0(tm, x).mean(dim=(2, 3))
        else:  # vit_b32, block "blocks.5": class token of the sixth transformer block
            h = tm.norm_pre(tm.patch_drop(tm._pos_embed(tm.patch_embed(x))))
            pooled = tm.blocks[:6](h)[:, 0]
    return penultimate, pooled


@pytest.mark.parametrize("name,block,size", [("resnet50", "layer3.0", 64), ("vit_b32", "blocks.5", 224)])
def test_forward_and_frozen_path_match_the_timm_model(backbone_factory, name, block, size):
    """Both the direct and the cached (frozen → tail) path equal a reference computed from timm's modules."""
    b = backbone_factory(name)
    x = torch.randn(2, 3, size, size)
    penultimate, pooled = _timm_reference(b.model.eval(), x, name, block)
    repeats = penultimate.shape[1] // pooled.shape[1]
    expected_features = {
        "linear_probe": penultimate, "layer_ft": penultimate, "full_ft": penultimate,
        "scl_ft": penultimate + pooled.repeat(1, repeats),  # fuse=add, match=repeat (widths divide here)
    }
    for strategy, feature in expected_features.items():
        model = sclft.TransferModel(b, strategy, num_classes=5, layer=block).eval()
        with torch.no_grad():
            expected = model.head(feature)
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4, msg=strategy)
            frozen = model.frozen_forward(x)
            torch.testing.assert_close(model.forward_from_frozen(frozen), expected, rtol=1e-4, atol=1e-4, msg=strategy)
        if strategy == "linear_probe":  # the cached activation is the penultimate feature itself
            torch.testing.assert_close(frozen, penultimate, rtol=1e-4, atol=1e-4)


def test_strategy_from_config_instance_and_saved_options(backbone_factory):
    from sclft.strategies.scl_ft import SCLFTConfig

    b = backbone_factory("resnet50")
    by_name = sclft.TransferModel(b, "scl_ft", num_classes=10, layer="layer3.0", fuse="concat")
    by_config = sclft.TransferModel(b, SCLFTConfig(fuse="concat"), num_classes=10, layer="layer3.0")
    assert by_config.parameter_summary() == by_name.parameter_summary()
    saved = by_config.config()
    assert saved["strategy"] == "scl_ft"
    assert saved["strategy_options"] == {"fuse": "concat", "match": "repeat", "skip_pooling": None}
    rebuilt = sclft.TransferModel(b, saved["strategy"], saved["num_classes"], saved["layer"],
                                  **saved["strategy_options"])
    assert rebuilt.strategy.config == SCLFTConfig(fuse="concat")
    old_style = {"fuse": "add", "match": "zero_pad"}  # config.json written before skip_pooling existed
    assert sclft.TransferModel(b, "scl_ft", 10, "layer3.0", **old_style).strategy.config.match == "zero_pad"
    with pytest.raises(ValueError, match="option 'fuse' belongs to strategy scl_ft"):
        sclft.TransferModel(b, "layer_ft", num_classes=3, layer="layer3.0", fuse="concat")
    with pytest.raises(ValueError, match="valid options: fuse, match, skip_pooling"):
        sclft.TransferModel(b, "scl_ft", num_classes=3, layer="layer3.0", fusion="add")


def test_skip_pooling_option(backbone_factory):
    b = backbone_factory("resnet50")
    x = torch.randn(2, 3, 64, 64)
    scl = sclft.TransferModel(b, "scl_ft", num_classes=3, layer="layer3.0", skip_pooling="avg2x2",
                              match="zero_pad").eval()
    lft = sclft.TransferModel(b, "layer_ft", num_classes=3, layer="layer3.0").eval()
    with torch.no_grad():
        out = _resnet_layer3_0(b.model, x)
        skip = torch.nn.functional.adaptive_avg_pool2d(out, 2).flatten(1)  # (2, 4096): wider than 2048
        expected = torch.nn.functional.adaptive_avg_pool1d(skip.unsqueeze(1), 2048).squeeze(1)
        torch.testing.assert_close(scl.forward_features(x) - lft.forward_features(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="valid: cls, mean_tokens, flatten"):
        sclft.TransferModel(backbone_factory("vit_b32"), "scl_ft", num_classes=3, layer="blocks.5", skip_pooling="avg")
    with pytest.raises(ValueError, match="fuse=concat"):
        sclft.TransferModel(b, "scl_ft", num_classes=3, layer="layer3.0", skip_pooling="avg2x2", fuse="concat")


def test_requires_grad_only_on_named_parts(backbone_factory):
    b = backbone_factory("resnet50")
    model = sclft.TransferModel(b, "scl_ft", num_classes=10, layer="layer3.0")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("backbone.model.layer3.0.", "head.")) for n in trainable)
    assert {"head.weight", "head.bias"} <= trainable
    lp = sclft.TransferModel(b, "linear_probe", num_classes=10)
    assert {n for n, p in lp.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}


@pytest.mark.parametrize("strategy", ["linear_probe", "layer_ft", "scl_ft"])
def test_training_step_leaves_frozen_parts_untouched(backbone_factory, strategy):
    b = backbone_factory("resnet18")
    model = sclft.TransferModel(b, strategy, num_classes=4, layer="layer3.0")
    model.train()
    assert not b.model.layer1[0].bn1.training  # frozen BatchNorm stays in eval mode
    if strategy != "linear_probe":
        assert b.model.layer3[0].bn1.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(8, 3, 64, 64), torch.arange(8) % 4
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    after = model.state_dict()
    tuned = ("head.",) if strategy == "linear_probe" else ("head.", "backbone.model.layer3.0.")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(k.startswith(tuned) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("head.") for k in changed)
    if strategy != "linear_probe":
        assert "backbone.model.layer3.0.bn1.running_mean" in changed  # the tuned block's BN does update


def test_layer_required_and_validated(backbone_factory):
    b = backbone_factory("resnet18")
    with pytest.raises(ValueError, match="pass layer=NAME; valid layers: stem, layer1.0"):
        sclft.TransferModel(b, "scl_ft", num_classes=3)
    with pytest.raises(ValueError, match="valid layers"):
        sclft.TransferModel(b, "layer_ft", num_classes=3, layer="layer7")
    with pytest.raises(ValueError, match="valid strategies: bitfit, deep_lora, full_ft, layer_ft, linear_probe, lora, "
                                         "scl_ft, zero_shot"):
        sclft.TransferModel(b, "prefix_tuning", num_classes=3)
    with pytest.raises(ValueError, match="fuse"):
        sclft.TransferModel(b, "scl_ft", num_classes=3, layer="layer2.0", fuse="mul")
    with pytest.raises(ValueError, match="zero_shot needs a CLIP"):
        sclft.TransferModel(b, "zero_shot", num_classes=3, class_names=["a", "b", "c"])


def test_scl_skip_is_the_pooled_block_output(backbone_factory):
    b = backbone_factory("resnet50")
    scl = sclft.TransferModel(b, "scl_ft", num_classes=3, layer="layer3.0", match="zero_pad").eval()
    lft = sclft.TransferModel(b, "layer_ft", num_classes=3, layer="layer3.0").eval()
    x = torch.randn(2, 3, 64, 64)
    out = _resnet_layer3_0(b.model, x).mean(dim=(2, 3))  # the skip, from timm's modules (not our stage chain)
    with torch.no_grad():
        diff = scl.forward_features(x) - lft.forward_features(x)
    torch.testing.assert_close(diff[:, :1024], out, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(diff[:, 1024:]) == 0


def test_match_width():
    v = torch.arange(6.0).reshape(2, 3)
    assert match_width(v, 7, "repeat").tolist() == [[0, 1, 2, 0, 1, 2, 0], [3, 4, 5, 3, 4, 5, 3]]
    assert match_width(v, 5, "zero_pad").tolist() == [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0]]
    w = torch.arange(8.0).reshape(1, 8)
    assert match_width(w, 4).tolist() == [[0.5, 2.5, 4.5, 6.5]]


def _open_clip_head(clip, names, templates):
    """open_clip's own zero-shot classifier (the independent reference), normalised rows per class."""
    import open_clip

    return open_clip.build_zero_shot_classifier(clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"), classnames=names,
                                                templates=templates, device="cpu", use_tqdm=False).T


def test_zero_shot_head_equals_open_clip_classifier(backbone_factory):
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    b = backbone_factory("clip_vit_b32")
    clip = b.extras["encode_text"].clip
    raw = ["american_bulldog", "Abyssinian", "great_pyrenees"]
    pets = sclft.TransferModel(b, "zero_shot", num_classes=3, class_names=raw, prompts="oxford_pets").eval()
    assert pets.parameter_summary()["trainable"] == 0
    ref = _open_clip_head(clip, ["american bulldog", "Abyssinian", "great pyrenees"],
                          [lambda c: f"a photo of a {c}, a type of pet."])  # CLIP_benchmark's pets template
    torch.testing.assert_close(pets.head.weight, ref)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        image = torch.nn.functional.normalize(clip.eval().encode_image(x), dim=-1)
        torch.testing.assert_close(pets(x), 100.0 * image @ ref.T)
    # no dataset entry: open_clip's SIMPLE_IMAGENET_TEMPLATES and readable names
    generic = sclft.TransferModel(b, "zero_shot", num_classes=2, class_names=["tabby_cat", "golden_retriever"])
    torch.testing.assert_close(generic.head.weight,
                               _open_clip_head(clip, ["tabby cat", "golden retriever"], SIMPLE_IMAGENET_TEMPLATES))
    with pytest.raises(ValueError, match="class_names"):
        sclft.TransferModel(b, "zero_shot", num_classes=3)
    with pytest.raises(ValueError, match="with {} for the class name"):
        sclft.TransferModel(b, "zero_shot", num_classes=2, class_names=["a", "b"], templates=["a photo"])


def test_prompt_registry():
    from sclft.data import prompts

    assert len(prompts.templates_for("cifar100")) == 18
    assert prompts.templates_for("dtd")[0] == "a photo of a {} texture."
    assert prompts.templates_for("fgvc_aircraft") == ("a photo of a {}, a type of aircraft.",
                                                      "a photo of the {}, a type of aircraft.")
    assert prompts.templates_for("imagefolder:x") == prompts.GENERIC_TEMPLATES and len(prompts.IMAGENET_TEMPLATES) == 80
    assert prompts.readable_class_names("cifar100", ["aquarium_fish", "maple_tree"]) == ["aquarium fish", "maple tree"]

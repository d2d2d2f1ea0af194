"""``sclft export``: one self-contained network per strategy, merged adapters, metadata, ONNX / TorchScript
logits against PyTorch (random-weight tiny models at 32 px; no training)."""

import copy

import pytest
import torch

from sclft.export import (
    RTOL,
    Classifier,
    ExportError,
    export_model,
    load_exported,
    max_relative_error,
    merged,
    read_metadata,
)
from sclft.model import TransferModel

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
BACKBONES = {"resnet18": "layer3.0", "timm:test_vit": "blocks.3", "efficientnet_lite0": "blocks.4.0"}
STRATEGIES = ["scl_ft", "layer_ft", "linear_probe", "lora", "deep_lora", "full_ft"]
_BUILT = {}


def _backbone(name):
    if name not in _BUILT:
        from sclft.backbones import create_backbone

        torch.manual_seed(0)
        _BUILT[name] = create_backbone(name, pretrained=False, image_size=SIZE)
    return copy.deepcopy(_BUILT[name])


def _model(backbone, strategy, num_classes=3):
    """A wrapped model whose trainable tensors moved away from their init (LoRA's B starts at zero, Deep LoRA's
    cores at εI: an unmoved adapter would merge to nothing and prove nothing)."""
    from sclft.strategies import get_strategy_config

    layer = BACKBONES[backbone] if get_strategy_config(strategy).uses_layer else None
    names = ["ant", "bee", "cat"][:num_classes]
    model = TransferModel(_backbone(backbone), strategy, num_classes, layer, class_names=names)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _images(n):
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(n))


# every strategy on the timm ResNet and ViT; on EfficientNet-Lite0 (the costliest graph to trace) the three
# whose exported graph differs in kind: the SCL-FT skip and the two merged adapters (its layer_ft, linear_probe
# and full_ft graphs are the prefix / full forwards the other cells already export)
CELLS = [(b, s) for b in ("resnet18", "timm:test_vit") for s in STRATEGIES] + [
    ("efficientnet_lite0", s) for s in ("scl_ft", "lora", "deep_lora")]


@pytest.mark.parametrize(("backbone", "strategy"), CELLS)
def test_onnx_and_torchscript_match_pytorch(backbone, strategy, tmp_path):
    model = _model(backbone, strategy)
    for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
        path = export_model(model, fmt, tmp_path / f"m.{suffix}", verify=False, dynamo=False)
        run = load_exported(path, fmt)
        for n in (1, 3):  # dynamic batch
            x = _images(n)
            with torch.no_grad():
                ref = model(x)  # the wrapped, unmerged model
            got = run(x)
            assert got.shape == (n, 3)
            assert max_relative_error(got, ref) <= RTOL, (fmt, n)
        meta = read_metadata(path, fmt)
        assert meta["input_size"] == [3, SIZE, SIZE] and meta["class_names"] == ["ant", "bee", "cat"]
        assert meta["mean"] == list(model.backbone.data_config["mean"]) and meta["strategy"] == strategy


@pytest.mark.parametrize("backbone", ["timm:test_vit", "efficientnet_lite0"])
def test_merged_lora_equals_the_adapted_model(backbone):
    from peft.tuners.lora import LoraLayer

    model = _model(backbone, "lora")
    plain = merged(model)
    assert not any(isinstance(m, LoraLayer) for m in plain.modules())
    assert any(isinstance(m, LoraLayer) for m in model.modules())  # the original keeps its adapters
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    x = _images(4)
    with torch.no_grad():
        ref, got = model(x), Classifier(plain)(x)
    assert ref.abs().max() > 0
    assert max_relative_error(got, ref) <= 1e-5
    # the merged weights are W + (alpha / r) B A, computed here from the adapter's own tensors
    name, layer = next((n, m) for n, m in model.backbone.model.named_modules() if isinstance(m, LoraLayer))
    scale = model.strategy.config.alpha / model.strategy.config.r
    delta = scale * layer.lora_B["default"].weight.flatten(1) @ layer.lora_A["default"].weight.flatten(1)
    expected = layer.get_base_layer().weight + delta.reshape(layer.get_base_layer().weight.shape)
    assert torch.allclose(plain.backbone.model.get_submodule(name).weight, expected, atol=1e-6)


def test_merged_deep_lora_folds_delta_into_the_weight():
    from sclft.strategies.deep_lora.layer import DeepLoRALayer

    model = _model("timm:test_vit", "deep_lora")
    name, layer = next((n, m) for n, m in model.backbone.model.named_modules() if isinstance(m, DeepLoRALayer))
    factors = [f.detach().double() for f in layer.factors]
    product = factors[0]
    for f in factors[1:]:
        product = f @ product  # ΔW = F_L ⋯ F_1
    plain = merged(model)
    assert not any(isinstance(m, DeepLoRALayer) for m in plain.modules())
    merged_w = plain.backbone.model.get_submodule(name).weight
    assert torch.allclose(merged_w.double(), layer.base_layer.weight.double() + product.reshape(merged_w.shape),
                          atol=1e-6)
    x = _images(2)
    with torch.no_grad():
        assert max_relative_error(Classifier(plain)(x), model(x)) <= 1e-5


# ------------------------------------------------------------------------------------------- safetensors
# (timm graphs: what a timm user writes; others: refused by timm, rebuilt by sclft)
TIMM_GRAPHS = [("efficientnet_lite0", "lora", "tf_efficientnet_lite0"), ("resnet18", "bitfit", "resnet18"),
               ("timm:test_vit", "deep_lora", "test_vit"), ("timm:test_vit", "linear_probe", "test_vit")]


@pytest.mark.parametrize(("backbone", "strategy", "architecture"), TIMM_GRAPHS)
def test_safetensors_export_of_a_timm_graph_is_rebuilt_by_timm(backbone, strategy, architecture, tmp_path):
    import json

    import timm
    from safetensors.torch import load_file

    model = _model(backbone, strategy)
    out = export_model(model, "safetensors", tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == architecture and config["num_classes"] == 3
    assert config["label_names"] == ["ant", "bee", "cat"] and config["pretrained_cfg"]["input_size"] == [3, SIZE, SIZE]
    x = _images(3)
    with torch.no_grad():
        ref = model(x)
        by_dir = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        assert max_relative_error(by_dir(x), ref) <= RTOL
        by_state = timm.create_model(architecture, **config["model_args"]).eval()  # num_classes, img_size ...
        by_state.load_state_dict(load_file(str(out / "model.safetensors")))  # strict: every key is timm's
        assert max_relative_error(by_state(x), ref) <= RTOL
    meta = read_metadata(out, "safetensors")
    assert meta["timm_architecture"] == architecture and meta["preprocessing"]["input_size"] == [3, SIZE, SIZE]
    hf = json.loads((out / "preprocessor_config.json").read_text())
    assert hf["crop_size"] == {"height": SIZE, "width": SIZE}


def test_safetensors_export_of_the_scl_ft_skip_does_not_load_into_timm(tmp_path):
    import json

    import timm
    from safetensors.torch import load_file

    from sclft.export import load_safetensors_export

    model = _model("resnet18", "scl_ft")
    out = export_model(model, "safetensors", tmp_path / "export")
    tensors = load_file(str(out / "model.safetensors"))
    assert all(k.startswith("sclft.") for k in tensors)
    with pytest.raises(RuntimeError, match="Missing key"):  # the architecture the file would seem to be
        timm.create_model("resnet18", num_classes=3).load_state_dict(tensors)
    with pytest.raises(Exception, match="architecture"):
        timm.create_model(f"local-dir:{out}", pretrained=True)
    meta = read_metadata(out, "safetensors")
    assert meta["timm_architecture"] is None and "load_safetensors_export" in meta["rebuild"]
    config = json.loads((out / "config.json").read_text())
    assert config["library_name"] == "sclft" and config["strategy"] == "scl_ft" and config["layer"] == "layer3.0"
    x = _images(3)
    with torch.no_grad():
        assert max_relative_error(load_safetensors_export(out)(x), model(x)) <= RTOL


def test_safetensors_export_folder_is_not_replaced_without_overwrite(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export_model(_model("timm:test_vit", "linear_probe"), "safetensors", tmp_path / "export")
    assert (tmp_path / "export" / "notes.txt").read_text() == "mine"


def test_unknown_format_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="onnx, torchscript, safetensors"):
        export_model(_model("resnet18", "linear_probe"), "tflite", tmp_path / "m.tflite")


def test_an_exporter_failure_says_what_could_not_be_exported(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset version 20 is not supported\nIR ...")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(ExportError, match=r"cannot export timm:test_vit / scl_ft to onnx: RuntimeError: .*aten::fancy"):
        export_model(_model("timm:test_vit", "scl_ft"), "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()  # nothing half-written


def test_a_safetensors_export_that_does_not_load_back_leaves_nothing(tmp_path, monkeypatch):
    import sclft.export

    monkeypatch.setattr(sclft.export, "load_safetensors_export", lambda folder: (lambda x: torch.zeros(len(x), 3)))
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_model(_model("timm:test_vit", "linear_probe"), "safetensors", tmp_path / "export")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling

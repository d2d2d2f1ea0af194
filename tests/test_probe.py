import csv
import math

import pytest
import torch

import sclft
from sclft import nc


def _digits(n=120, size=32):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32)[:, None].repeat(1, 3, 1, 1) / 16
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear")
    return (x - 0.5) / 0.5, torch.tensor(d.target[:n])


def test_probe_matches_per_layer_reference(tmp_path, backbone_factory):
    b = backbone_factory("resnet18")
    x, y = _digits()
    res = sclft.probe(b, (x, y), batch_size=50, progress=False)
    assert res.layers == b.blocks + ["penultimate"]
    b.eval()
    with torch.no_grad():
        for layer in ("stem", "layer2.1", "layer4.1"):
            h = b.forward_block(b.forward_prefix(x, layer), layer).mean(dim=(2, 3))
            assert res[layer]["nc1"] == pytest.approx(nc.nc1(h, y), rel=1e-5)
            assert res[layer]["separation"] == pytest.approx(nc.separation(h, y), rel=1e-5)
            assert res[layer]["dim"] == h.shape[1]
    res.to_csv(tmp_path / "probe.csv")
    rows = list(csv.DictReader(open(tmp_path / "probe.csv")))
    assert [r["layer"] for r in rows] == res.layers and float(rows[0]["nc1"]) == pytest.approx(res.rows[0]["nc1"])
    res.plot(tmp_path / "probe.png")
    assert (tmp_path / "probe.png").read_bytes()[:4] == b"\x89PNG"
    assert "layer2.1" in res.table()


def test_probe_subset_pooling_and_tuned_model(backbone_factory):
    b = backbone_factory("resnet18")
    x, y = _digits(60)
    res = sclft.probe(b, (x, y), layers=["layer3.0"], pooling="avg2x2", progress=False)
    assert res.layers == ["layer3.0", "penultimate"] and res["layer3.0"]["dim"] == 256 * 4
    model = sclft.TransferModel(b, "scl_ft", num_classes=10, layer="layer3.0", fuse="concat")
    tuned = sclft.probe(model, (x, y), layers=["layer3.0"], progress=False)
    assert tuned["penultimate"]["dim"] == 512 + 256  # the head-input feature including the skip


def test_layer_auto_survives_a_real_device_move(tmp_path, simulated_device_move):
    """probe() moved the model under inference_mode: the parameters became inference tensors and
    TransferModel's requires_grad_(True) failed (every GPU run with the default --layer auto)."""
    from sclft.training import TrainConfig, train

    metrics = train(TrainConfig(backbone="resnet18", pretrained=False, data="digits", strategy="scl_ft", layer="auto",
                                image_size=16, train_per_class=5, epochs=1, batch_size=16, progress=False,
                                cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run")))
    assert metrics["layer"] in metrics["layer_selection"]["nc1"]
    assert metrics["layer_selection"]["rule"] == "profile"


def test_probe_leaves_no_inference_tensors(backbone_factory, simulated_device_move):
    b = sclft.create_backbone("resnet18", pretrained=False)
    x, y = _digits(40, 16)
    sclft.probe(b, (x, y), layers=["layer2.0"], progress=False, device="cpu")
    assert not any(t.is_inference() for t in [*b.parameters(), *b.buffers()])


def test_probe_jackknife_standard_errors_in_memory_and_streamed(tmp_path, backbone_factory):
    b = backbone_factory("resnet18")
    x, y = _digits(80, 16)
    layers = ["layer2.1", "layer3.0"]
    res = sclft.probe(b, (x, y), layers=layers, batch_size=32, progress=False, jackknife=5)
    tight = sclft.probe(b, (x, y), layers=layers, batch_size=32, progress=False, jackknife=5, memory_budget=1)
    assert tight.passes == 2 * len(layers) + 2 and res.passes == 1  # streamed: two passes per layer group
    b.eval()
    with torch.no_grad():
        for layer in layers:
            h = b.forward_block(b.forward_prefix(x, layer), layer).mean(dim=(2, 3))
            se = nc.accumulate(h, y, jackknife=5).nc1_se()
            assert res[layer]["nc1_se"] == pytest.approx(se, rel=1e-5) and se > 0
            assert tight[layer]["nc1_se"] == pytest.approx(se, rel=1e-5)
    res.to_csv(tmp_path / "probe.csv")
    rows = list(csv.DictReader(open(tmp_path / "probe.csv")))
    assert float(rows[0]["nc1_se"]) == pytest.approx(res.rows[0]["nc1_se"])
    assert "± SE" in res.table() and "nc1_se" not in sclft.probe(b, (x, y), layers=layers, progress=False).rows[0]
    one = torch.cat([torch.nonzero(y != 9).flatten(), torch.nonzero(y == 9).flatten()[:1]])  # class 9: one sample
    assert math.isnan(sclft.probe(b, (x[one], y[one]), layers=layers[:1], progress=False, jackknife=5)
                      ["layer2.1"]["nc1_se"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_by_name_before_any_work(backbone_factory):
    """One device rule (sclft.devices.resolve_device) for probe, eval, predict, the bench and the theory lab."""
    from sclft.devices import resolve_device

    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device cuda:1: no such device here \(valid here: auto, cpu\)$"):
        resolve_device("cuda:1")
    x, y = _digits(20)
    with pytest.raises(ValueError, match="--device cuda: no such device here"):
        sclft.probe(backbone_factory("resnet18"), (x, y), progress=False, device="cuda")

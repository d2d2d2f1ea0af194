"""Fast paths give the numbers of the slow ones: one-pass vs per-layer probe, streaming NC1, flatten pooling."""

import numpy as np
import pytest
import torch
from test_nc import reference_nc1
from test_probe import _digits

import sclft
from sclft import nc

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest


def _rows(result):
    return {r["layer"]: (r["nc1"], r["separation"], r["dim"]) for r in result.rows}


def test_probe_one_pass_equals_per_layer_and_streaming(backbone_factory):
    b = backbone_factory("resnet18")
    x, y = _digits(60)
    one = sclft.probe(b, (x, y), batch_size=25, progress=False)
    per_layer = sclft.probe(b, (x, y), batch_size=25, progress=False, one_pass=False)
    assert one.passes == 1 and per_layer.passes == len(b.blocks) + 1
    assert _rows(one) == _rows(per_layer)  # the same tensors, bit for bit
    streamed = sclft.probe(b, (x, y), layers=["layer1.0", "layer4.1"], batch_size=25, progress=False,
                           memory_budget=1)
    assert streamed.passes == 2 * 3  # one group per layer, two passes each
    for layer, (nc1, sep, dim) in _rows(streamed).items():
        assert nc1 == pytest.approx(_rows(one)[layer][0], rel=1e-9)
        assert sep == pytest.approx(_rows(one)[layer][1], rel=1e-9)
        assert dim == _rows(one)[layer][2]


def test_probe_of_tuned_scl_model_one_pass_equals_per_layer(backbone_factory):
    model = sclft.TransferModel(backbone_factory("resnet18"), "scl_ft", num_classes=10, layer="layer3.0")
    x, y = _digits(40)
    args = dict(layers=["layer3.0"], batch_size=20, progress=False)
    assert _rows(sclft.probe(model, (x, y), **args)) == _rows(sclft.probe(model, (x, y), one_pass=False, **args))


def test_flatten_pooling_nc1_equals_explicit_reference(backbone_factory):
    b = backbone_factory("resnet18")
    x, y = _digits(60, size=16)
    layers = ["layer1.1", "layer2.1"]  # 64×4×4 and 128×2×2 maps
    streamed = sclft.probe(b, (x, y), layers=layers, pooling="flatten", batch_size=16, progress=False,
                           memory_budget=4096)
    in_memory = sclft.probe(b, (x, y), layers=layers, pooling="flatten", batch_size=16, progress=False)
    assert streamed.passes > in_memory.passes == 1
    with torch.no_grad():
        for layer in layers:
            h = b.forward_block(b.forward_prefix(x, layer), layer).flatten(1).numpy()
            assert streamed[layer]["dim"] == h.shape[1]
            ref = reference_nc1(h, y.numpy(), 10)
            assert streamed[layer]["nc1"] == pytest.approx(ref, rel=1e-5)
            assert in_memory[layer]["nc1"] == pytest.approx(ref, rel=1e-5)


def test_forward_all_can_stop_after_the_last_wanted_block(backbone_factory):
    b = backbone_factory("resnet18").eval()
    x, _ = _digits(4)
    with torch.no_grad():
        full = b.forward_all(x, only=["layer2.0"])
        short = b.forward_all(x, only=["layer2.0"], penultimate=False)
    assert set(short) == {"layer2.0"} and torch.equal(short["layer2.0"], full["layer2.0"])


def test_accumulator_streams_any_batches_and_grows_classes():
    rng = np.random.default_rng(3)
    y = rng.permutation(np.arange(300) % 6)
    h = rng.normal(size=(300, 40)) + 3 * rng.normal(size=(6, 40))[y]
    acc = nc.NCAccumulator()
    order = [slice(0, 7), slice(7, 150), slice(150, 300)]
    acc.feed((h[s], y[s]) for s in order)  # K grows as labels appear
    acc.feed((h[s], y[s]) for s in reversed(order))
    assert acc.k == 6
    assert acc.nc1() == pytest.approx(reference_nc1(h, y, 6), rel=1e-9)
    assert acc.separation() == pytest.approx(nc.separation(h, y), rel=1e-12)
    short = nc.NCAccumulator(6).feed([(h, y)])
    with pytest.raises(ValueError, match="same data"):
        short.feed([(h[:10], y[:10])])
    with pytest.raises(RuntimeError, match="two passes"):
        nc.NCAccumulator(6).feed([(h, y)]).nc1()

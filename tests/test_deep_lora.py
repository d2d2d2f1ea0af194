"""Deep LoRA: the layer against the DLN lab, compressed vs uncompressed trajectories, γ groups, the strategy."""

import copy

import pytest
import torch
from torch import nn

from sclft.dln.network import FactorNetwork, GDConfig, end_to_end
from sclft.dln.network import train as dln_train
from sclft.backbones import create_backbone
from sclft.model import TransferModel
from sclft.strategies.deep_lora import DeepLoRALayer
from sclft.config import TrainConfig
from sclft.optim import build_optimizer

from conftest import random_backbone

D64 = torch.float64


def _fresh(name):
    """A private copy of a cached random backbone (rebuilt around a deep copy of its module)."""
    return create_backbone(copy.deepcopy(random_backbone(name).model))


@pytest.fixture
def one_thread():
    """Tiny float64 matrices: one thread is ~20× faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _problem(d_in, d_out, rank, seed=0):
    """Frozen Linear W₀ (+bias), whitened inputs X (XXᵀ = I) and targets (W₀ + Φ)X + b with rank(Φ) = rank."""
    g = torch.Generator().manual_seed(seed)
    base = nn.Linear(d_in, d_out).to(D64).requires_grad_(False)
    x, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=D64))  # orthogonal: N = d_in samples
    left, _ = torch.linalg.qr(torch.randn(d_out, rank, generator=g, dtype=D64))
    right, _ = torch.linalg.qr(torch.randn(d_in, rank, generator=g, dtype=D64))
    phi = left @ torch.diag(torch.linspace(2.0, 1.0, rank, dtype=D64)) @ right.T
    y = base(x.T) + x.T @ phi.T  # rows are samples
    return base, x.T, y, phi


def _gd(layer, x, y, lr, steps, scales=None):
    """Plain full-batch GD on ½‖layer(X) − Y‖²; returns ΔW after every step."""
    scales = scales or [1.0] * len(layer.factors)
    opt = torch.optim.SGD([{"params": [f], "lr": lr * s} for f, s in zip(layer.factors, scales)], lr=lr)
    path = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (layer(x) - y).pow(2).sum()).backward()
        opt.step()
        path.append(layer.delta_weight().detach().clone())
    return path


def test_uncompressed_layer_follows_the_dln_lab_network(one_thread):
    base, x, y, phi = _problem(12, 10, 2)
    layer = DeepLoRALayer(base, eps=0.3, compressed=False, generator=torch.Generator().manual_seed(0))
    assert [tuple(f.shape) for f in layer.factors] == [(10, 12), (10, 10), (10, 10)]
    reference = FactorNetwork([f.detach() for f in layer.factors])
    # X is orthogonal, so ½‖(W₀+ΔW)X + b − Y‖² = ½‖ΔW − Φ‖²: the lab's factorisation loss
    dln_train(reference, lambda fs: 0.5 * (end_to_end(fs) - phi).pow(2).sum(), GDConfig(lr=0.1), 150)
    path = _gd(layer, x, y, 0.1, 150)
    torch.testing.assert_close(path[-1], reference.product().detach(), rtol=0, atol=1e-10)
    assert float((path[-1] - phi).norm() / phi.norm()) < 0.05  # fitted from 1.0 (the rest: the ε³-scale init)


def test_compressed_layer_follows_the_uncompressed_trajectory(one_thread):
    eps, rank = 0.02, 2
    base, x, y, phi = _problem(30, 30, rank)
    full = DeepLoRALayer(base, eps=eps, compressed=False, generator=torch.Generator().manual_seed(0))
    delta = full.delta_weight().detach().requires_grad_(True)  # ∂ℓ/∂ΔW at init
    (0.5 * (delta - phi).pow(2).sum()).backward()
    comp = DeepLoRALayer.compress(full, delta.grad, rank)
    assert sum(f.numel() for f in comp.factors) < sum(f.numel() for f in full.factors) / 3
    torch.testing.assert_close(comp.delta_weight(), full.delta_weight(), rtol=0, atol=2 * eps**3)
    lr, steps = 0.2, 600
    path_c = _gd(comp, x, y, lr, steps, scales=[0.0, 1.0, 1.0, 1.0, 0.0])  # γ = 0: factorisation
    path_f = _gd(full, x, y, lr, steps)
    gaps = [float(torch.linalg.matrix_norm(a - b, ord=2)) for a, b in zip(path_c, path_f)]
    assert float((path_f[-1] - phi).norm() / phi.norm()) < 1e-3  # escaped the small init and fitted Φ
    assert max(gaps) < 1e-5  # ≈ ε³ = 8e-6 all along: only the ρ(t)³ term of the untouched directions differs


def test_conv_update_is_the_reshaped_factor_product():
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2).requires_grad_(False)
    layer = DeepLoRALayer(conv, rank=2, eps=0.5)
    with torch.no_grad():
        for f in layer.factors:
            f.add_(0.1 * torch.randn_like(f))
    v, c1, c2, c3, u = (f.detach() for f in layer.factors)
    assert v.shape == (4, 4 * 9) and u.shape == (6, 4)
    reference = copy.deepcopy(conv)
    with torch.no_grad():
        reference.weight += (u @ c3 @ c2 @ c1 @ v).reshape(6, 4, 3, 3)
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(layer(x), reference(x))


def test_outer_factors_train_at_gamma_times_the_lr():
    model = TransferModel(_fresh("efficientnet_lite0"), "deep_lora", 10, r=2, gamma=0.25, blocks="blocks.6.0")
    layers = model.strategy.layers
    assert len(layers) == 3  # blocks.6.0.conv_pw, blocks.6.0.conv_pwl, conv_head
    optimizer = build_optimizer(model, TrainConfig(lr=0.1, optimizer="sgd", weight_decay=0.0))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for layer in layers:
        assert [lr_of[id(f)] for f in layer.factors] == pytest.approx([0.025, 0.1, 0.1, 0.1, 0.025])
    assert lr_of[id(model.head.weight)] == pytest.approx(0.1)
    # γ = 0 freezes U and V; the cores move
    frozen = TransferModel(_fresh("efficientnet_lite0"), "deep_lora", 10, r=2, gamma=0.0, blocks="blocks.6.0")
    opt = build_optimizer(frozen, TrainConfig(lr=0.1, optimizer="sgd", weight_decay=0.0))
    before = [f.detach().clone() for f in frozen.strategy.layers[0].factors]
    frozen(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    opt.step()
    moved = [not torch.equal(a, b) for a, b in zip(before, frozen.strategy.layers[0].factors)]
    assert moved == [False, True, True, True, False]


def test_deep_lora_on_transformers_restricts_blocks_and_targets():
    vit = _fresh("vit_b32")
    x = torch.randn(1, 3, 224, 224)
    expected = TransferModel(vit, "layer_ft", 10, layer="blocks.10").frozen_forward(x)
    model = TransferModel(_fresh("vit_b32"), "deep_lora", 10, r=2, blocks="blocks.10")
    torch.testing.assert_close(model.frozen_forward(x), expected)
    wrapped = sorted(n for n, m in model.backbone.model.named_modules() if isinstance(m, DeepLoRALayer))
    assert wrapped == [f"blocks.{i}.{t}" for i in (10, 11) for t in ("attn.proj", "attn.qkv", "mlp.fc1", "mlp.fc2")]
    with pytest.raises(ValueError, match="MultiheadAttention"):
        TransferModel(_fresh("clip_vit_b32"), "deep_lora", 10, target_modules="out_proj")
    model = TransferModel(_fresh("clip_vit_b32"), "deep_lora", 10, blocks="transformer.resblocks.11")
    wrapped = sorted(n for n, m in model.backbone.model.named_modules() if isinstance(m, DeepLoRALayer))
    assert wrapped == ["transformer.resblocks.11.mlp.c_fc", "transformer.resblocks.11.mlp.c_proj"]

"""Deep LoRA: the layer against the DLN lab, compressed vs uncompressed trajectories, γ groups, the strategy."""

import copy
import json

import pytest
import torch
from conftest import random_backbone
from torch import nn

from sclft.backbones import create_backbone
from sclft.config import TrainConfig
from sclft.dln.network import FactorNetwork, GDConfig, end_to_end
from sclft.dln.network import train as dln_train
from sclft.model import TransferModel
from sclft.optim import build_optimizer
from sclft.strategies.deep_lora import DeepLoRALayer

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
    assert [tuple(f.shape) for f in layer.factors] == [(12, 12), (12, 12), (10, 12)]  # width max(out, fan_in)
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
    comp = DeepLoRALayer.compress(full, delta.grad, 2 * rank)  # width 2r: r directions from each side
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
    layer = DeepLoRALayer(conv, rank=3, eps=0.5)
    with torch.no_grad():
        for f in layer.factors:
            f.add_(0.1 * torch.randn_like(f))
    v, c1, c2, c3, u = (f.detach() for f in layer.factors)
    assert v.shape == (3, 4 * 9) and u.shape == (6, 3)
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
    with torch.no_grad():
        expected = vit.forward_prefix(x, "blocks.10")  # layer_ft's frozen part, before any layer is wrapped
    model = TransferModel(vit, "deep_lora", 10, r=2, blocks="blocks.10")
    torch.testing.assert_close(model.frozen_forward(x), expected)
    wrapped = sorted(n for n, m in model.backbone.model.named_modules() if isinstance(m, DeepLoRALayer))
    assert wrapped == [f"blocks.{i}.{t}" for i in (10, 11) for t in ("attn.proj", "attn.qkv", "mlp.fc1", "mlp.fc2")]
    clip = _fresh("clip_vit_b32")
    with pytest.raises(ValueError, match="MultiheadAttention"):  # raised before anything is wrapped
        TransferModel(clip, "deep_lora", 10, target_modules="out_proj")
    model = TransferModel(clip, "deep_lora", 10, blocks="transformer.resblocks.11")
    wrapped = sorted(n for n, m in model.backbone.model.named_modules() if isinstance(m, DeepLoRALayer))
    assert wrapped == ["transformer.resblocks.11.mlp.c_fc", "transformer.resblocks.11.mlp.c_proj"]


@pytest.mark.parametrize("d_in,d_out,rank", [(12, 7, 4), (6, 11, 3)], ids=["wide", "tall"])
def test_compressed_init_spans_what_the_first_gradient_of_the_full_factorisation_moves(one_thread, d_in, d_out, rank):
    """The paper's compression (dlt/train.py): on the square end of the full-width factorisation the first
    gradient moves span{W₁ᵀ·(top-k/2 left singular vectors)/ε, top-k/2 right singular vectors} (W₃ side: the
    transpose); the other end is ΔW(0)/ε³ applied to it. Reference: autograd through the three explicit factors
    and torch.linalg.svd of the square factor's gradient."""
    eps, g = 0.05, torch.Generator().manual_seed(3)
    base = nn.Linear(d_in, d_out).to(D64).requires_grad_(False)
    x, y = torch.randn(20, d_in, generator=g, dtype=D64), torch.randint(0, d_out, (20,), generator=g)
    full = DeepLoRALayer(base, eps=eps, compressed=False, generator=g)
    torch.nn.functional.cross_entropy(full(x), y).backward()
    w1, _, w3 = (f.detach() for f in full.factors)
    k1 = (rank + 1) // 2
    if d_in > d_out:  # W₁ is d_in × d_in
        u, _, vh = torch.linalg.svd(full.factors[0].grad)
        moved = torch.cat([w1.T @ u[:, :k1] / eps, vh[: rank - k1].T], 1)
    else:  # W₃ is d_out × d_out: the same on ΔWᵀ
        u, _, vh = torch.linalg.svd(full.factors[2].grad)
        moved = torch.cat([w3 @ vh[:k1].T / eps, u[:, : rank - k1]], 1)
    reference = torch.linalg.qr(moved)[0]

    comp = DeepLoRALayer(base, rank=rank, eps=eps)
    comp.frame = end_to_end([f.detach() for f in full.factors]) / eps**3
    probe = comp.start_probe()
    torch.nn.functional.cross_entropy(comp(x), y).backward()
    comp.init_from_gradient(probe.grad)
    v, c1, c2, c3, u_c = (f.detach() for f in comp.factors)
    end, other, frame = (v.T, u_c, full.delta_weight().detach() / eps**3) if d_in > d_out else \
        (u_c, v.T, full.delta_weight().detach().T / eps**3)
    torch.testing.assert_close(end.T @ end, torch.eye(rank, dtype=D64))  # orthonormal
    cosines = torch.linalg.svdvals(reference.T @ end)  # principal angles between the two subspaces: all 0
    torch.testing.assert_close(cosines, torch.ones(rank, dtype=D64), rtol=0, atol=1e-8)
    torch.testing.assert_close(other, frame @ end)  # left = e2e · right / ε³
    for c in (c1, c2, c3):
        torch.testing.assert_close(c, eps * torch.eye(rank, dtype=D64))
    assert comp.frame is None and comp.probe is None


def test_parameter_count_is_the_papers_at_the_same_rank():
    """dlt/models.py CompressedMatrixFactorization: per layer U (out×r), V (fan_in×r) and three r×r cores, i.e.
    LoRA's r·(out + fan_in) plus 3r²; the LoRA count is peft's own (tests/test_peft.py checks it)."""
    r, blocks = 4, "blocks.5.0"
    lora = TransferModel(_fresh("efficientnet_lite0"), "lora", 10, r=r, blocks=blocks)
    deep = TransferModel(_fresh("efficientnet_lite0"), "deep_lora", 10, r=r, blocks=blocks)
    layers = deep.strategy.layers
    shapes = [(lay.base_layer.weight.shape[0], lay.base_layer.weight[0].numel()) for lay in layers]
    assert all(min(s) >= r for s in shapes) and len(layers) == 2 * 5 + 1  # conv_pw, conv_pwl of 5 blocks + head

    def adapters(model):
        return sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)

    assert adapters(deep) == sum(r * (out + fan_in) + 3 * r * r for out, fan_in in shapes)
    assert adapters(deep) - adapters(lora) == 3 * r * r * len(layers)


def test_train_uses_the_strategy_defaults_the_flags_override_and_the_gradient_init(tmp_path, monkeypatch):
    from sclft.cli import main

    calls = []
    real = DeepLoRALayer.init_from_gradient
    monkeypatch.setattr(DeepLoRALayer, "init_from_gradient",
                        lambda self, grad: calls.append(grad.shape) or real(self, grad))
    common = ["train", "--backbone", "efficientnet_lite0", "--no-pretrained", "--data", "test_subset:2:digits",
              "--train-per-class", "2", "--image-size", "16", "--epochs", "1", "--no-progress",
              "--cache-dir", str(tmp_path / "cache"), "--strategy", "deep_lora", "--r", "2", "--blocks", "blocks.6.0"]
    assert main([*common, "--weight-decay", "0.1", "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    # the flag wins; the strategy's defaults fill what was not given
    used = (saved["weight_decay"], saved["schedule"], saved["warmup_epochs"], saved["lr"])
    assert used == (0.1, "constant", 0.0, 1e-3)
    assert calls == [(1152, 192), (320, 1152), (1280, 320)]  # blocks.6.0.conv_pw, .conv_pwl, conv_head: once each
    assert TrainConfig(strategy="deep_lora").validate().weight_decay == 0.0
    assert TrainConfig().validate().weight_decay == 0.05
    # the global defaults for a strategy that declares none; YAML-style values are kept
    assert TrainConfig(strategy="lora").validate().schedule == "cosine"
    assert TrainConfig(strategy="lora", lr=0.1).validate().lr == 0.1
    assert TrainConfig.from_dict({"strategy": "deep_lora", "warmup_epochs": 1}).validate().warmup_epochs == 1.0


def test_constant_schedule_keeps_the_peak_after_the_warmup():
    from sclft.optim import WarmupCosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = WarmupCosine(opt, total_steps=6, warmup_steps=2, schedule="constant")
    used = []
    for _ in range(6):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert used == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1, 0.1], abs=1e-12)


def test_paired_report_verdicts_match_scipys_paired_t():
    """The bench's paired comparison (the deep_lora study's table) against scipy.stats.ttest_rel, by seed."""
    from scipy.stats import ttest_rel

    from sclft.bench.plan import Run
    from sclft.bench.render import paired_report
    from sclft.bench.scoring import paired_rows

    lora = {"r=2": [0.70, 0.72, 0.71, 0.69, 0.73], "r=8": [0.74, 0.70, 0.72, 0.75, 0.71]}
    deep = {"r=2": [0.72, 0.75, 0.75, 0.74, 0.79], "r=8": [0.73, 0.71, 0.70, 0.76, 0.70]}
    runs, metrics = [], {}
    for strategy, table in (("lora", lora), ("deep_lora", deep)):
        for variant, accs in table.items():
            for seed, acc in enumerate(accs):
                rid = f"{strategy}-{variant}-{seed}"
                runs.append(Run(rid, "b", "d", {"strategy": strategy, "seed": seed, "train_per_class": 5}, variant,
                                {"ablation"}))
                metrics[rid] = {"test_accuracy": acc, "trainable_percent": 1.0, "seconds": 12.0, "epochs": 6}
    data = paired_rows(runs, metrics, "lora")
    (cell,) = data["cells"]
    for v in cell["variants"]:
        ref = ttest_rel(deep[v["variant"]], lora[v["variant"]])
        assert v["accuracy"]["t"] == pytest.approx(ref.statistic)
        expected = "undecided" if ref.pvalue >= 0.05 else "holds" if ref.statistic > 0 else "fails"
        assert v["accuracy"]["verdict"] == expected
    assert [v["accuracy"]["verdict"] for v in cell["variants"]] == ["holds", "undecided"]
    ranges = {s: [abs(a - b) for a, b in zip(t["r=2"], t["r=8"], strict=True)]
              for s, t in (("lora", lora), ("deep_lora", deep))}
    assert cell["rank_range"]["t"] == pytest.approx(ttest_rel(ranges["lora"], ranges["deep_lora"]).statistic)
    assert data["claims"]["deep_lora:accuracy:r=2"] == {"cells": ["holds"], "overall": "holds"}
    assert cell["variants"][0]["methods"]["lora"]["seconds_per_epoch"] == 2.0
    assert "| r=2 | 5 |" in paired_report(data)


def test_reference_recipe_adamw_eps_frozen_head_and_first_gradient_in_eval_mode(tmp_path, monkeypatch):
    """dlt/train.py: AdamW ε = 1e-6, only the factors train (train_head=false), the first gradient from the loss
    with train=False (eval mode), float32, plain cross-entropy (no label smoothing)."""
    from sclft.cli import main
    from sclft.strategies.deep_lora.model import DeepLoRA

    model = TransferModel(_fresh("efficientnet_lite0"), "deep_lora", 10, r=2, blocks="blocks.6.0")
    adamw = build_optimizer(model, TrainConfig(strategy="deep_lora", lr=0.1))
    assert {g["eps"] for g in adamw.param_groups} == {1e-6}
    lora = TransferModel(_fresh("efficientnet_lite0"), "lora", 10, r=2, blocks="blocks.6.0")
    assert {g["eps"] for g in build_optimizer(lora, TrainConfig(strategy="lora", lr=0.1)).param_groups} == {1e-8}
    frozen = TransferModel(_fresh("efficientnet_lite0"), "deep_lora", 10, r=2, blocks="blocks.6.0", train_head=False)
    trained = {id(p) for g in build_optimizer(frozen, TrainConfig(strategy="deep_lora", lr=0.1)).param_groups
               for p in g["params"]}
    assert id(frozen.head.weight) not in trained and not frozen.head.weight.requires_grad
    assert all(id(f) in trained for layer in frozen.strategy.layers for f in layer.factors)

    seen = []
    real = DeepLoRA.init_from_data

    def spy(self, first_loss):
        loss = first_loss()
        seen.append((self.layers[0].base_layer.training, loss.dtype, torch.is_autocast_enabled()))
        return real(self, first_loss)

    monkeypatch.setattr(DeepLoRA, "init_from_data", spy)
    args = ["train", "--backbone", "efficientnet_lite0", "--no-pretrained", "--data", "test_subset:2:digits",
            "--train-per-class", "2", "--image-size", "16", "--epochs", "1", "--no-progress", "--label-smoothing",
            "0.3", "--cache-dir", str(tmp_path / "cache"), "--strategy", "deep_lora", "--r", "2",
            "--blocks", "blocks.6.0", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert seen == [(False, torch.float32, False)]


def test_paired_report_tunes_lr_per_method_on_validation_never_on_test():
    """``tune: [lr]``: each method is compared at the lr with its best mean validation accuracy; a better test
    accuracy at another lr must not move the choice."""
    from scipy.stats import ttest_rel

    from sclft.bench.plan import Run
    from sclft.bench.render import paired_report
    from sclft.bench.scoring import paired_rows

    # (val, test) per seed; lora's best validation lr is 1e-3 (its test is best at 1e-2), deep_lora's is 1e-2
    table = {("lora", "0.001"): ([0.80] * 5, [0.70, 0.72, 0.71, 0.69, 0.73]),
             ("lora", "0.01"): ([0.60] * 5, [0.90] * 5),
             ("deep_lora", "0.001"): ([0.50] * 5, [0.95] * 5),
             ("deep_lora", "0.01"): ([0.70, 0.72, 0.74, 0.70, 0.70], [0.72, 0.75, 0.75, 0.74, 0.79])}
    runs, metrics = [], {}
    for (strategy, lr), (val, test) in table.items():
        for seed, (v, t) in enumerate(zip(val, test, strict=True)):
            rid = f"{strategy}-{lr}-{seed}"
            runs.append(Run(rid, "b", "d", {"strategy": strategy, "seed": seed, "train_per_class": 5},
                            f"lr={lr},r=8", {"ablation"}))
            metrics[rid] = {"test_accuracy": t, "val_accuracy": v, "trainable_percent": 1.0, "seconds": 6.0,
                            "epochs": 3}
    data = paired_rows(runs, metrics, "lora", ("lr",))
    ((cell,),) = [data["cells"]]
    (entry,) = cell["variants"]
    assert entry["variant"] == "r=8"
    assert entry["methods"]["lora"]["chosen"]["variant"] == "lr=0.001,r=8"
    assert entry["methods"]["deep_lora"]["chosen"]["variant"] == "lr=0.01,r=8"
    assert entry["methods"]["deep_lora"]["chosen"]["val_accuracy"] == pytest.approx(0.712)
    ref = ttest_rel(table[("deep_lora", "0.01")][1], table[("lora", "0.001")][1])
    assert entry["accuracy"]["t"] == pytest.approx(ref.statistic) and ref.pvalue < 0.05
    assert entry["accuracy"]["verdict"] == "holds"
    assert "lr=0.001 (val 80.0 %) / lr=0.01 (val 71.2 %)" in paired_report(data)

    for m in metrics.values():  # a tie on validation: the first lr in the suite's order
        m["val_accuracy"] = 0.5
    tied = paired_rows(runs, metrics, "lora", ("lr",))["cells"][0]["variants"][0]["methods"]
    assert tied["lora"]["chosen"]["variant"] == tied["deep_lora"]["chosen"]["variant"] == "lr=0.001,r=8"

    del metrics["lora-0.01-3"]["val_accuracy"]
    with pytest.raises(ValueError, match=r"lora-0.01-3 has none: give the runs a validation split \(val_fraction"):
        paired_rows(runs, metrics, "lora", ("lr",))
    del metrics["lora-0.01-3"]  # a failed run: no choice among partial candidates, the cell is listed instead
    partial = paired_rows(runs, metrics, "lora", ("lr",))
    assert partial["cells"] == [] and partial["claims"] == {}
    assert partial["incomplete"] == [{"backbone": "b", "dataset": "d", "train_per_class": 5, "missing": 1, "runs": 20}]
    assert "| b / d · 5/class | 1 of 20 |" in paired_report(partial)

"""Deep-linear-network theory lab (the lecture §2–4): small, seeded, seconds each."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sclft.cli import main
from sclft.dln.completion import compressed_network, make_problem, original_network, train_completion
from sclft.dln.network import DTYPE, FactorNetwork, GDConfig, generator, init_weight, train
from sclft.dln.parsimony import ParsimonyConfig, max_principal_angle, run_parsimony
from sclft.dln.separation import SeparationConfig, decay_bound, run_separation

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: the matrices here are tiny


# --- network -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,cols", [(6, 6), (8, 5), (5, 8)])
def test_orthogonal_init_is_scaled_isometry(rows, cols):
    w = init_weight(rows, cols, 0.3, "orthogonal", generator(0))
    gram = w.T @ w if rows >= cols else w @ w.T
    assert torch.allclose(gram, 0.09 * torch.eye(min(rows, cols), dtype=DTYPE), atol=1e-14)


@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_random_inits_match_orthogonal_norm_on_average(kind):
    w = init_weight(200, 200, 0.5, kind, generator(1))
    assert w.norm() ** 2 == pytest.approx(0.25 * 200, rel=0.02)


def test_gd_step_is_decayed_weight_minus_gradient():
    w0 = torch.randn(4, 3, generator=generator(2), dtype=DTYPE)
    net = FactorNetwork([w0])
    train(net, lambda f: f[0].pow(3).sum(), GDConfig(lr=0.1, weight_decay=0.5), steps=1)
    assert torch.allclose(net.factors[0].detach(), (1 - 0.1 * 0.5) * w0 - 0.1 * 3 * w0**2, atol=1e-15)


def test_principal_angle_is_precise_for_tiny_rotations():
    q = torch.linalg.qr(torch.randn(10, 10, generator=generator(3), dtype=DTYPE))[0]
    a, c, s = q[:, :3], math.cos(1e-9), math.sin(1e-9)
    b = a.clone()
    b[:, 0] = c * a[:, 0] + s * q[:, 5]
    assert max_principal_angle(a, b) == pytest.approx(1e-9, rel=1e-4)
    assert max_principal_angle(a, q[:, 3:6]) == pytest.approx(math.pi / 2)


# --- law of parsimony (the lecture §2) ----------------------------------------------------------------

SMALL_PARSIMONY = ParsimonyConfig(depth=3, dim=16, rank=2, samples=32, scale=0.1, lr=0.1, steps=250)


@pytest.fixture(scope="module")
def parsimony():
    return run_parsimony(SMALL_PARSIMONY, record_every=5)


def test_parsimony_training_fits(parsimony):
    assert parsimony.losses[-1] < 1e-3 * parsimony.losses[0]


def test_trailing_singular_values_equal_and_subspaces_unmoved(parsimony):
    for layer in parsimony.layers[:-1]:
        assert layer["trailing_relative_spread"] < 1e-10
        assert layer["trailing_right_angle_rad"] < 1e-9
        assert layer["trailing_left_angle_rad"] < 1e-9
        assert layer["trailing_map_change"] < 1e-10  # acts as the rescaled initial map there
        assert layer["rho"] == pytest.approx(SMALL_PARSIMONY.scale, rel=0.05)


def test_leading_2r_directions_moved(parsimony):
    for layer in parsimony.layers[:-1]:
        assert len(layer["leading_singular_values"]) == 2 * SMALL_PARSIMONY.rank
        assert layer["leading_min_relative_gap"] > 0.05
        assert max(layer["leading_singular_values"]) > 5 * layer["rho"]
    # some leading singular vector rotated by a visible angle
    assert float(parsimony.right_angles.max()) > 0.2


def test_parsimony_breaks_without_whitening():
    from dataclasses import replace

    result = run_parsimony(replace(SMALL_PARSIMONY, whitened=False), record_every=50)
    assert max(layer["trailing_relative_spread"] for layer in result.layers) > 1e-4


# --- progressive separation (the lecture §3) ----------------------------------------------------------

SMALL_SEPARATION = SeparationConfig(num_classes=3, per_class=6, width=18, depth=4, scale=0.5, lr=5.0, steps=600)


@pytest.fixture(scope="module")
def separations():
    from dataclasses import replace

    return [run_separation(replace(SMALL_SEPARATION, scale=s), record_every=50) for s in (0.5, 0.25)]


def test_separation_decays_geometrically_below_the_bound(separations):
    for result in separations:
        d = result.separations
        assert all(b < a for a, b in zip(d, d[1:]))
        ratios = result.decay_ratios
        assert max(ratios) < decay_bound(3, result.config.scale)
        assert max(ratios) / min(ratios) < 1.2  # one ratio per layer: linear decay of log D_l
        assert result.conditions["optimality_relative_residual"] < 1e-6
        assert result.conditions["unchanged_spectrum_max_relative_deviation"] < 1e-8


def test_decay_ratio_scales_like_eps_squared(separations):
    big, small = (math.prod(r.decay_ratios) ** (1 / len(r.decay_ratios)) for r in separations)
    assert small / big == pytest.approx(0.25, rel=0.3)


# --- compressed deep matrix completion (the lecture §4) -----------------------------------------------


def test_factorisation_compressed_trajectory_coincides_with_original():
    problem = make_problem(40, 2, 1.0, seed=0)
    orig = original_network(problem, 3, 0.03, seed=0)
    comp = compressed_network(problem, 3, 0.03, 2, outer_lr_ratio=0.0, seed=0)
    assert comp.num_parameters < orig.num_parameters / 2
    logs = [train_completion(net, problem, 0.2, 400, record_every=20) for net in (orig, comp)]
    assert logs[0].metrics[-1] < 1e-3
    gaps = [abs(a - b) for a, b in zip(logs[0].metrics, logs[1].metrics)]
    assert max(gaps) < 1e-4  # the whole trajectory, through the escape from the small init
    # what the compressed network drops is the ρ(t)^L term: at most ε^L per unit singular value
    diff = torch.linalg.svdvals(orig.product().detach() - comp.product().detach())
    assert float(diff.max()) < 1.5 * 0.03**3


@pytest.fixture(scope="module")
def completion_runs():
    problem = make_problem(100, 2, 0.3, seed=1)
    nets = {
        "gamma": compressed_network(problem, 3, 0.05, 4, outer_lr_ratio=0.3, seed=0),
        "frozen": compressed_network(problem, 3, 0.05, 4, outer_lr_ratio=0.0, seed=0),
    }
    return {
        name: train_completion(net, problem, 0.15, 800, record_every=50, stop_below=1e-3) for name, net in nets.items()
    }


def test_compressed_with_discrepant_step_recovers_low_rank_matrix(completion_runs):
    # the floor (~6e-4 here) is set by the ε^L-sized unused directions of the 2r̂-wide core
    assert completion_runs["gamma"].metrics[-1] < 1e-3


def test_compressed_with_frozen_factors_stalls(completion_runs):
    assert completion_runs["frozen"].metrics[-1] > 0.1


# --- command line ------------------------------------------------------------------------------


def test_cli_writes_figures_and_numbers(tmp_path):
    out = ["--out", str(tmp_path)]
    assert main("dln parsimony --dim 10 --rank 2 --samples 20 --steps 60".split() + out) == 0
    separation = "dln separation --classes 2 --per-class 4 --width 8 --depths 3 4 --scales 0.5 0.25 --scale-depth 3"
    assert main(f"{separation} --steps 100 --lr 2 --scale-lr 2".split() + out) == 0
    assert main("dln completion --dim 24 --rank 1 --rank-estimate 2 --steps 60 --scale 0.1".split() + out) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "parsimony.png",
        "parsimony.json",
        "separation.json",
        "separation_depth.png",
        "separation_scale.png",
        "separation_init.png",
        "separation_loss.png",
        "completion.json",
        "completion.png",
        "factorization.png",
    } <= names
    assert not [n for n in names if n.startswith(".")]  # no temp files left behind
    numbers = json.loads((tmp_path / "separation.json").read_text())
    assert len(numbers["depth_sweep"]) == 2 and numbers["scale_sweep"][0]["bound"] == pytest.approx(decay_bound(2, 0.5))
    assert json.loads((tmp_path / "completion.json").read_text())["completion"][0]["network"] == "original"


def test_plotting_leaves_the_users_matplotlib_backend_alone():
    """Importing and plotting through the library must not call matplotlib.use (it did at import)."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import sclft.dln.plots as p, sclft.dln.separation as s; "
        "import numpy as np; import matplotlib.pyplot as plt; "
        "fig = p.plot_separation([], [], 't'); print(matplotlib.get_backend(), len(plt.get_fignums()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["svg", "0"]


def test_probe_and_bench_plots_leave_the_users_matplotlib_backend_alone(tmp_path):
    """The probe plot and the bench figures render on Figure objects: no matplotlib.use, no pyplot figures."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot as plt; from pathlib import Path; "
        "from sclft.probing import ProbeResult; from sclft.bench import render; "
        "rows = [{'layer': f'b{i}', 'nc1': 1.0 / (i + 1), 'separation': 1.0, 'dim': 4} for i in range(3)]; "
        "r = ProbeResult.__new__(ProbeResult); r.rows, r.backbone, r.num_samples, r.num_classes = rows, 'x', 9, 3; "
        f"r.plot(Path({str(tmp_path)!r}) / 'p.png'); "
        "fig, axes = render._figure(2); render._save(fig, Path(" + repr(str(tmp_path)) + ") / 'b.png'); "
        "print(matplotlib.get_backend(), len(plt.get_fignums()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["svg", "0"]
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0


# --- bad flags: exit 2 with the flag and its valid range, before any training ---------------------

# (id, sub-command and flags, substrings of stderr); `--dim -1` was a traceback, `--observed 2` NaN results
BAD_FLAGS = [
    ("parsimony-dim-negative", ["parsimony", "--dim", "-1"], ("--dim", "integer >= 1", "-1")),
    ("parsimony-depth-0", ["parsimony", "--depth", "0"], ("--depth", ">= 1")),
    ("parsimony-rank-0", ["parsimony", "--rank", "0"], ("--rank", ">= 1")),
    ("parsimony-rank-too-big", ["parsimony", "--dim", "10", "--rank", "3", "--samples", "20"], ("--rank", "--dim / 4")),
    ("parsimony-samples-below-dim", ["parsimony", "--samples", "10"], ("--samples", "--dim")),
    ("parsimony-scale-0", ["parsimony", "--scale", "0"], ("--scale", "> 0")),
    ("parsimony-lr-nan", ["parsimony", "--lr", "nan"], ("--lr", "finite")),
    ("parsimony-steps-0", ["parsimony", "--steps", "0"], ("--steps", ">= 1")),
    ("parsimony-weight-decay-negative", ["parsimony", "--weight-decay", "-0.1"], ("--weight-decay", ">= 0")),
    ("parsimony-momentum-1", ["parsimony", "--momentum", "1"], ("--momentum", "[0, 1)")),
    ("parsimony-seed-negative", ["parsimony", "--seed", "-1"], ("--seed", "from 0 to")),
    ("parsimony-seed-too-big", ["parsimony", "--seed", str(2**64)], ("--seed", "from 0 to")),
    ("parsimony-init-unknown", ["parsimony", "--init", "zeros"], ("--init", "orthogonal")),
    ("separation-classes-1", ["separation", "--classes", "1"], ("--classes", ">= 2")),
    ("separation-per-class-1", ["separation", "--per-class", "1"], ("--per-class", ">= 2")),
    ("separation-width-too-small", ["separation", "--classes", "5", "--width", "10"], ("--width", "2·--classes")),
    ("separation-depths-1", ["separation", "--depths", "6", "1"], ("--depths", ">= 2", "each value", "6 1")),
    ("separation-scales-negative", ["separation", "--scales", "0.5", "-0.25"], ("--scales", "> 0")),
    ("separation-scale-inf", ["separation", "--scale", "inf"], ("--scale", "finite")),
    ("separation-scale-depth-1", ["separation", "--scale-depth", "1"], ("--scale-depth", ">= 2")),
    ("separation-scale-lr-0", ["separation", "--scale-lr", "0"], ("--scale-lr", "> 0")),
    ("separation-lr-negative", ["separation", "--lr", "-1"], ("--lr", "> 0")),
    ("separation-steps-negative", ["separation", "--steps", "-5"], ("--steps", ">= 1")),
    ("completion-observed-2", ["completion", "--observed", "2"], ("--observed", "(0, 1]", "2.0")),
    ("completion-observed-0", ["completion", "--observed", "0"], ("--observed", "(0, 1]")),
    (
        "completion-observed-no-entry",
        ["completion", "--dim", "4", "--rank", "1", "--rank-estimate", "1", "--observed", "0.01"],
        ("--observed", "no entry"),
    ),
    ("completion-dim-1", ["completion", "--dim", "1"], ("--dim", ">= 2")),
    ("completion-rank-0", ["completion", "--rank", "0"], ("--rank", ">= 1")),
    (
        "completion-rank-estimate-below-rank",
        ["completion", "--rank", "5", "--rank-estimate", "4"],
        ("--rank-estimate", ">= --rank"),
    ),
    (
        "completion-rank-estimate-too-big",
        ["completion", "--dim", "20", "--rank-estimate", "11"],
        ("--rank-estimate", "--dim / 2"),
    ),
    ("completion-depth-0", ["completion", "--depth", "0"], ("--depth", ">= 1")),
    ("completion-scale-negative", ["completion", "--scale", "-0.01"], ("--scale", "> 0")),
    ("completion-lr-0", ["completion", "--lr", "0"], ("--lr", "> 0")),
    ("completion-gamma-negative", ["completion", "--gamma", "-1"], ("--gamma", ">= 0")),
    ("completion-steps-0", ["completion", "--steps", "0"], ("--steps", ">= 1")),
    ("completion-target-error-0", ["completion", "--target-error", "0"], ("--target-error", "> 0")),
    ("completion-max-steps-0", ["completion", "--max-steps", "0"], ("--max-steps", ">= 1")),
    ("separation-max-seconds-negative", ["separation", "--max-seconds", "-1"], ("--max-seconds", "> 0")),
    ("parsimony-dtype-float16", ["parsimony", "--dtype", "float16"], ("--dtype", "float32")),
    ("completion-networks-unknown", ["completion", "--networks", "wide"], ("--networks", "compressed")),
    ("completion-out-under-a-file", ["completion", "--out", "{file}/sub"], ("--out", "not a folder")),
]


@pytest.mark.parametrize("argv,says", [case[1:] for case in BAD_FLAGS], ids=[case[0] for case in BAD_FLAGS])
def test_bad_dln_flags_exit_2_naming_the_flag(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SCLFT_DEBUG", raising=False)
    (tmp_path / "file").write_text("a regular file\n")
    out = ["--out", str(tmp_path / "out")] if "--out" not in argv else []
    argv = [a.format(file=tmp_path / "file") for a in argv]
    try:
        code = main(["dln", *argv, *out])
    except SystemExit as e:  # argparse (choices, type)
        code = e.code
    captured = capsys.readouterr()
    assert code == 2, f"exit {code}\nstdout: {captured.out}\nstderr: {captured.err}"
    assert "Traceback" not in captured.out + captured.err and captured.out == ""  # nothing ran
    for text in says:
        assert text in captured.err, f"{text!r} not in stderr: {captured.err}"
    assert not (tmp_path / "out").exists()


# --- runtime: device / dtype, budgets, progress (issue 26) ---------------------------------------


def test_runtime_float32_cpu_is_honoured_through_training():
    from sclft.dln.experiments import CompletionConfig, build_networks, run_network
    from sclft.dln.network import Runtime

    problem = make_problem(16, 1, 0.5, seed=0)
    config = CompletionConfig(dim=16, rank=1, rank_estimate=2, scale=0.1, steps=5, runtime=Runtime("cpu", "float32"))
    for kind, net in build_networks(problem, config, ("original", "compressed", "narrow")):
        assert all(f.dtype == torch.float32 and f.device.type == "cpu" for f in net.factors), kind
        log, row = run_network(kind, net, problem, config)
        assert all(f.dtype == torch.float32 for f in net.factors)  # GD kept the dtype
        assert (row["dtype"], row["device"], row["ended_by"], log.steps[-1]) == ("float32", "cpu", "steps", 5)


def test_float64_is_the_default_of_the_exact_experiments_and_float32_of_completion():
    from sclft.dln.experiments import CompletionConfig

    assert ParsimonyConfig().runtime.torch_dtype == torch.float64
    assert SeparationConfig().runtime.torch_dtype == torch.float64
    assert CompletionConfig().runtime.torch_dtype == torch.float32


def test_step_budget_ends_the_run_and_records_what_was_reached():
    from sclft.dln.network import Runtime

    w0 = torch.randn(3, 3, generator=generator(4), dtype=DTYPE)
    net = FactorNetwork([w0], runtime=Runtime("cpu", "float64", max_steps=7))
    log = train(net, lambda f: 0.5 * f[0].pow(2).sum(), GDConfig(lr=0.1), steps=100, record_every=50)
    assert (log.ended_by, log.steps[-1], log.planned_steps, log.budget_ended) == ("max_steps", 7, 100, True)
    # what was reached is the state after 7 steps: W(7) = 0.9^7 W(0) for ½‖W‖²
    assert log.losses[-1] == pytest.approx(0.5 * float((0.9**7 * w0).pow(2).sum()), rel=1e-12)
    assert "budget reached (--max-steps) at step 7 of 100" in log.stop_note()


def test_time_budget_ends_the_run_after_the_step_that_spent_it():
    from sclft.dln.network import Runtime

    net = FactorNetwork([torch.ones(2, 2, dtype=DTYPE)], runtime=Runtime("cpu", max_seconds=1e-9))
    log = train(net, lambda f: 0.5 * f[0].pow(2).sum(), GDConfig(lr=0.5), steps=50, record_every=10)
    assert (log.ended_by, log.steps) == ("max_seconds", [0, 1])
    assert log.losses[-1] == pytest.approx(0.5 * 4 * 0.25)  # W(1) = 0.5·W(0): the last step is recorded


def test_progress_bar_shows_the_error_and_the_rate(capsys):
    from sclft.dln.network import Runtime

    problem = make_problem(12, 1, 0.5, seed=0)
    net = original_network(problem, 2, 0.1, runtime=Runtime("cpu", "float32", progress=True))
    train_completion(net, problem, 0.1, 20, record_every=5)
    err = capsys.readouterr().err
    assert "original" in err and "error=" in err and "20/20" in err and "it/s" in err


def test_cli_budget_is_printed_and_written(tmp_path, capsys):
    flags = "--dim 16 --rank 1 --rank-estimate 2 --steps 40 --max-steps 6 --networks compressed --no-factorization"
    argv = ["dln", "completion", "--out", str(tmp_path), *flags.split(), "--device", "cpu", "--dtype", "float64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "BUDGET compressed γ=0.3: budget reached (--max-steps) at step 6 of 40" in out
    (row,) = json.loads((tmp_path / "completion.json").read_text())["completion"]
    assert (row["ended_by"], row["steps_run"], row["dtype"], row["device"]) == ("max_steps", 6, "float64", "cpu")
    assert not (tmp_path / "factorization.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_a_gpu_exits_2_before_any_work(tmp_path, capsys):
    assert main(["dln", "parsimony", "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "cpu" in err and not (tmp_path / "o").exists()


# --- the compressed network against independent references -------------------------------------


def _hand_gradient_basis(problem, weights, scale, rank_estimate):
    """V_{1,1} from the closed-form gradient G = (W₃W₂)ᵀ·Ω⊙(W₃W₂W₁ − Φ)/p (no autograd)."""
    w1, w2, w3 = weights
    residual = (
        problem.mask.to(DTYPE) * (torch.linalg.multi_dot([w3, w2, w1]) - problem.target) / problem.observed_fraction
    )
    grad = (w3 @ w2).T @ residual
    _, _, vh = torch.linalg.svd(torch.cat([grad, grad.T @ w1 / scale]), full_matrices=False)
    return vh[: 2 * rank_estimate].T


def test_compressed_product_at_init_is_the_original_projected_on_the_gradient_subspace():
    from sclft.dln.network import init_network

    scale, depth, rank_estimate = 0.05, 3, 3
    problem = make_problem(30, 2, 0.4, seed=3)
    weights = init_network([30] * (depth + 1), scale, "orthogonal", seed=5)  # what original_network(seed=5) draws
    v = _hand_gradient_basis(problem, weights, scale, rank_estimate)
    product = torch.linalg.multi_dot(weights[::-1])
    comp = compressed_network(problem, depth, scale, rank_estimate, outer_lr_ratio=0.3, seed=5, basis="stacked")
    # U W̃(0) Vᵀ = (W(0)V/ε³)(ε³I)Vᵀ = W(0)VVᵀ; the dropped part W(0)(I − VVᵀ) has every singular value ε³
    assert torch.allclose(comp.product().detach(), product @ v @ v.T, atol=1e-14)
    dropped = torch.linalg.svdvals(product - comp.product().detach())
    assert torch.allclose(
        dropped[: 30 - 2 * rank_estimate], torch.full((30 - 2 * rank_estimate,), scale**3, dtype=DTYPE), rtol=1e-9
    )
    assert float(dropped[30 - 2 * rank_estimate :].max()) < 1e-12


def test_factorisation_compressed_product_tracks_the_original_up_to_rho_cubed_after_steps():
    problem = make_problem(20, 2, 1.0, seed=2)
    scale, rank_estimate = 0.1, 2
    orig = original_network(problem, 3, scale, seed=1)
    comp = compressed_network(problem, 3, scale, rank_estimate, outer_lr_ratio=0.0, seed=1)
    for net in (orig, comp):
        train_completion(net, problem, 0.2, 40, record_every=40)
    # theory (full observation): W_{L:1}(t) = U W̃_{L:1}(t) Vᵀ + ρ(t)^L U₂V₂ᵀ with a frozen V = V_{1,1}
    diff = orig.product().detach() - comp.product().detach()
    v = comp.factors[0].detach().T
    assert float((diff @ v).abs().max()) < 1e-9 * scale**3  # nothing of the difference lies in the kept subspace
    trailing = torch.linalg.svdvals(diff)[: 20 - 2 * rank_estimate]  # all ρ(t)³, one value
    assert float((trailing.max() - trailing.min()) / trailing.mean()) < 1e-6
    assert float(trailing.mean()) == pytest.approx(scale**3, rel=0.2)  # ρ(t) stays near ε
    assert float(torch.linalg.norm(orig.product().detach() - problem.target)) < 0.5 * float(problem.target.norm())


def test_fused_completion_loss_matches_the_masked_formula_and_its_gradient():
    from sclft.dln.completion import completion_loss, fused_completion_loss

    problem = make_problem(9, 2, 0.4, seed=6)
    product = torch.randn(9, 9, generator=generator(7), dtype=DTYPE).requires_grad_(True)
    p = problem.observed_fraction
    loss = fused_completion_loss(product, problem.target, problem.mask.to(DTYPE) / p, p)
    loss.backward()
    expected = problem.mask.to(DTYPE) * (product.detach() - problem.target) / p  # ∂/∂W of ½‖Ω⊙(W−Φ)‖²/p
    assert float(loss.detach()) == pytest.approx(float(completion_loss(product.detach(), problem)), rel=1e-13)
    assert torch.allclose(product.grad, expected, atol=1e-15)


@pytest.mark.slow
@pytest.mark.device_script
def test_dln_gpu_script_dry_run_writes_the_speed_table_without_machine_paths(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / "dln_gpu.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "speed" / "summary.json").read_text())
    assert [block["dim"] for block in summary["dims"]] == [32, 48] and summary["device"] == "cpu"
    assert {row["kind"] for row in summary["dims"][0]["runs"]} == {"original", "compressed", "narrow"}
    for name in ("summary.json", "suite.json", "table.md"):
        assert str(tmp_path) not in (tmp_path / "speed" / name).read_text()
    assert json.loads((tmp_path / "completion_d1000" / "completion.json").read_text())["completion"]


def test_preset_authors_fills_only_the_flags_not_given():
    from sclft.cli import build_parser
    from sclft.dln.cli import apply_preset

    argv = ["dln", "completion", "--out", "x", "--preset", "authors", "--dim", "400", "--gamma", "0.3"]
    args = build_parser(argv).parse_args(argv)
    apply_preset(args)
    # given: kept; the rest: the authors' (law-of-parsimony fig_compare_iteration_time.ipynb)
    assert (args.dim, args.gamma) == (400, 0.3)
    assert (args.rank, args.rank_estimate, args.observed, args.scale, args.dtype) == (5, 5, 0.2, 1e-3, "float64")
    assert (args.target, args.stop, args.basis, args.record_every) == ("gaussian", "train_loss", "each_side", 100)
    assert args.lr == pytest.approx(5e3 * 0.2 / 400**2)  # their η on ½·mean over d² entries, here on ½‖·‖²/p
    plain = build_parser(argv[:4]).parse_args(argv[:4])
    apply_preset(plain)
    assert (plain.dim, plain.gamma, plain.basis) == (200, 0.3, "each_side")


def test_seeds_benchmark_verdicts_follow_the_preregistered_rule():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "dln_seeds.py"
    spec = importlib.util.spec_from_file_location("dln_seeds", path)
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)

    def runs(*triples):
        return [{"seed": i, "rows": {k: {"iterations_to_target": v} for k, v in zip(("original", "compressed",
                                                                                      "narrow"), t)}}
                for i, t in enumerate(triples)]

    v = seeds.verdicts(runs((100, 105, 200), (100, 95, 150)), 0.1)
    assert (v["about_as_many_iterations"], v["narrow_needs_more_iterations"]) == ("holds", "holds")
    v = seeds.verdicts(runs((100, 120, 130), (100, 105, 90)), 0.1)  # one seed in, one out; narrow faster in one
    assert (v["about_as_many_iterations"], v["narrow_needs_more_iterations"]) == ("undecided", "undecided")
    v = seeds.verdicts(runs((100, 130, 100), (100, 125, 110)), 0.1)
    assert (v["about_as_many_iterations"], v["narrow_needs_more_iterations"]) == ("more", "fails")
    v = seeds.verdicts(runs((100, 130, math.nan), (math.nan, 125, 300)), 0.1)  # narrow missed: it is the slower one
    assert (v["about_as_many_iterations"], v["narrow_needs_more_iterations"]) == ("undecided", "holds")

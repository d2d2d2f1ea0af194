"""Deep-linear-network theory lab (seed §2–4): small, seeded, seconds each."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sclft.cli import main
from sclft.dln.completion import compressed_network, make_problem, original_network, train_completion
from sclft.dln.network import DTYPE, FactorNetwork, GDConfig, init_weight, generator, train
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


# --- law of parsimony (seed §2) ----------------------------------------------------------------

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


# --- progressive separation (seed §3) ----------------------------------------------------------

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


# --- compressed deep matrix completion (seed §4) -----------------------------------------------


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
    return {name: train_completion(net, problem, 0.15, 800, record_every=50, stop_below=1e-3) for name, net in nets.items()}


def test_compressed_with_discrepant_step_recovers_low_rank_matrix(completion_runs):
    # the floor (~6e-4 here) is set by the ε^L-sized unused directions of the 2r̂-wide core
    assert completion_runs["gamma"].metrics[-1] < 1e-3


def test_compressed_with_frozen_factors_stalls(completion_runs):
    assert completion_runs["frozen"].metrics[-1] > 0.1


# --- command line ------------------------------------------------------------------------------


def test_cli_writes_figures_and_numbers(tmp_path):
    assert main(["dln", "parsimony", "--out", str(tmp_path), "--dim", "10", "--rank", "2", "--samples", "20", "--steps", "60"]) == 0
    assert main(["dln", "separation", "--out", str(tmp_path), "--classes", "2", "--per-class", "4", "--width", "8",
                 "--depths", "3", "4", "--scales", "0.5", "0.25", "--scale-depth", "3", "--steps", "100", "--lr", "2", "--scale-lr", "2"]) == 0
    assert main(["dln", "completion", "--out", str(tmp_path), "--dim", "24", "--rank", "1", "--rank-estimate", "2",
                 "--steps", "60", "--scale", "0.1"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"parsimony.png", "parsimony.json", "separation.json", "separation_depth.png", "separation_scale.png",
            "separation_init.png", "separation_loss.png", "completion.json", "completion.png", "factorization.png"} <= names
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
        "from sclft.probe import ProbeResult; from sclft.bench import render; "
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
    ("completion-observed-no-entry", ["completion", "--dim", "4", "--rank", "1", "--rank-estimate", "1",
                                      "--observed", "0.01"], ("--observed", "no entry")),
    ("completion-dim-1", ["completion", "--dim", "1"], ("--dim", ">= 2")),
    ("completion-rank-0", ["completion", "--rank", "0"], ("--rank", ">= 1")),
    ("completion-rank-estimate-below-rank", ["completion", "--rank", "5", "--rank-estimate", "4"],
     ("--rank-estimate", ">= --rank")),
    ("completion-rank-estimate-too-big", ["completion", "--dim", "20", "--rank-estimate", "11"],
     ("--rank-estimate", "--dim / 2")),
    ("completion-depth-0", ["completion", "--depth", "0"], ("--depth", ">= 1")),
    ("completion-scale-negative", ["completion", "--scale", "-0.01"], ("--scale", "> 0")),
    ("completion-lr-0", ["completion", "--lr", "0"], ("--lr", "> 0")),
    ("completion-gamma-negative", ["completion", "--gamma", "-1"], ("--gamma", ">= 0")),
    ("completion-steps-0", ["completion", "--steps", "0"], ("--steps", ">= 1")),
    ("completion-target-error-0", ["completion", "--target-error", "0"], ("--target-error", "> 0")),
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

"""Figures people read without asking (issue 33, item 8): log-axis tick labels are plain numbers, colour that
carries meaning has a legend or a colour bar, lines that coincide stay visible, axis labels say what was measured.
Checked on the drawn figure (its texts, the pixels of its PNG), not on the plotting code's own settings."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from PIL import Image

from sclft.plotting import log_axis, subplots


def _labels(axis) -> list[tuple[float, str]]:
    """(position, text) of every labelled tick, major and minor, inside the view, as drawn."""
    FigureCanvasAgg(axis.figure).draw()
    low, high = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return sorted((t.get_loc(), t.label1.get_text()) for t in ticks
                  if t.label1.get_visible() and t.label1.get_text() and low <= t.get_loc() <= high)


@pytest.mark.parametrize(("span", "axis"), [((2.5, 8.0), "y"), ((0.45, 1.02), "y"), ((3.0, 50.0), "x"),
                                            ((0.02, 900.0), "x"), ((1e-6, 2.0), "y"), ((0.87, 1.15), "x")])
def test_log_axis_labels_are_plain_numbers_at_their_ticks(span, axis):
    fig, ax = subplots(figsize=(4, 3))
    ax.plot(np.geomspace(*span, 20), np.geomspace(*span, 20))
    log_axis(ax, axis)
    labels = _labels(ax.xaxis if axis == "x" else ax.yaxis)
    assert len(labels) >= 2, labels  # rank.png's NC1 axis had one
    for loc, text in labels:
        assert "$" not in text and "×" not in text and "times" not in text, text  # no mathtext "2×10⁰"
        assert float(text.replace("−", "-")) == pytest.approx(loc, rel=1e-9), (loc, text)
    if span[1] / span[0] > 1e3:  # long axes: decades only
        assert all(np.log10(loc) == pytest.approx(round(np.log10(loc))) for loc, _ in labels), labels


def _rank_result(controls: bool):
    from sclft.ranking import RankResult

    rows = []
    for i, (name, pretrained, nc1) in enumerate([("a", True, 3.1), ("b", True, 4.5), ("a (random)", False, 7.9),
                                                 ("b (random)", False, 9.5)][:4 if controls else 2]):
        rows.append({"rank": i + 1, "candidate": name, "backbone": name[0], "image_size": 32, "pretrained": pretrained,
                     "nc1": nc1, "separation": 1.0 + i, "logme": 0.5 - i, "ncti": float("nan"), "ncti_seli": 0.0,
                     "ncti_ncc": 0.0, "ncti_vc": 0.0, "probe_seconds": 2.0, "params": 10})
    return RankResult(rows=rows, data="digits", num_samples=20, num_classes=10)


def test_rank_figure_names_the_controls_colour_in_a_legend():
    fig = _rank_result(controls=True).figure()
    (legend,) = fig.legends
    named = {t.get_text(): h.get_facecolor()[:3] for t, h in zip(legend.get_texts(), legend.legend_handles)}
    nc1_axis = fig.axes[0]
    bars = {label.get_text(): bar.get_facecolor()[:3] for label, bar in
            zip(nc1_axis.get_yticklabels(), nc1_axis.patches)}
    control = [c for name, c in named.items() if "random" in name and "control" in name]
    assert len(control) == 1 and len(named) == 2
    assert bars["a (random)"] == bars["b (random)"] == pytest.approx(control[0])
    assert bars["a"] == pytest.approx(next(c for name, c in named.items() if "pretrained" in name))
    assert len(_labels(nc1_axis.xaxis)) >= 2  # NC1 from 3.1 to 9.5: less than a decade


def test_rank_figure_without_controls_has_no_legend():
    assert not _rank_result(controls=False).figure().legends


def _pixels(path, color, tol=12) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    return int((np.abs(rgb - np.array(to_rgb(color)) * 255).max(axis=-1) <= tol).sum())


def test_nc1_layers_lines_that_coincide_stay_visible(tmp_path):
    """Linear Probe, Layer FT and SCL FT share the pretrained layers below the tuned block, so their NC1 lines
    coincide there; each must still show: its own colour in the PNG."""
    from sclft.bench.render import plot_nc1_layers

    rows = [{"layer": f"blocks.{i}", "nc1": str(100 * 0.7 ** i)} for i in range(8)]
    strategies = ["linear_probe", "layer_ft", "scl_ft"]
    path = plot_nc1_layers({("net", "data"): [(s, rows) for s in strategies]}, tmp_path / "nc1_layers.png")
    for i in range(len(strategies)):  # the figure colours methods C0, C1, ... in table order
        assert _pixels(path, f"C{i}") > 150, f"C{i} ({strategies[i]}) hidden"


def test_parsimony_colour_bar_says_what_the_colours_are():
    from sclft.dln.parsimony import ParsimonyConfig, run_parsimony
    from sclft.dln.plots import plot_parsimony

    result = run_parsimony(ParsimonyConfig(dim=6, rank=1, samples=12, steps=4))
    fig = plot_parsimony(result)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    assert "singular value" in bars[0].get_ylabel() and sorted(bars[0].get_ylim()) == [1, 6]


def test_completion_axis_names_the_entries_it_measured(tmp_path, monkeypatch):
    """Under full observation (factorization.png) the recovery error is on all entries, not the unobserved ones."""
    from sclft.dln import experiments

    labels = {}

    def plot(logs, names, title, *args, **kwargs):
        fig = real(logs, names, title, *args, **kwargs)
        labels[title.split(",")[0]] = {ax.get_ylabel() for ax in fig.axes}
        return fig

    real = experiments.plot_completion
    monkeypatch.setattr(experiments, "plot_completion", plot)
    config = experiments.CompletionConfig(dim=12, rank=1, rank_estimate=2, steps=4, record_every=2,
                                          networks=("original",))
    experiments.completion_experiment(config, tmp_path)
    assert labels == {"completion": {"recovery error (unobserved entries)"},
                      "factorisation (full observation)": {"recovery error (all entries)"}}

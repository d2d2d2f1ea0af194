"""sclft rank / sclft.rank: candidates, one probe each, scores against direct computations, CLI errors."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch

from sclft import cli, nc, transfer_scores
from sclft.data import TransformedDataset, build_transforms, load_dataset
from sclft.ranking import Candidate, parse_candidates, rank

pytestmark = pytest.mark.usefixtures("one_thread")
rank_module = importlib.import_module("sclft.ranking")


def test_candidates_from_names_sizes_and_controls():
    got = parse_candidates(["efficientnet_lite0", "timm:resnet10t@48"], image_sizes=[32, 64], controls=True)
    assert [c.label for c in got] == [
        "efficientnet_lite0@32", "efficientnet_lite0@64", "timm:resnet10t@48",
        "efficientnet_lite0@32 (random)", "efficientnet_lite0@64 (random)", "timm:resnet10t@48 (random)"]
    assert parse_candidates(["open_clip:ViT-B-32/openai"]) == [Candidate("open_clip:ViT-B-32/openai", None)]
    for bad, match in [(["a@x"], "NAME@SIZE"), (["a@4"], "NAME@SIZE"), (["@64"], "NAME@SIZE"),
                       (["a@64", "a@64"], "given twice"), ([], "at least one")]:
        with pytest.raises(ValueError, match=match):
            parse_candidates(bad)
    with pytest.raises(ValueError, match="--image-size"):
        parse_candidates(["a"], image_sizes=[2])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _penultimate(backbone, splits, size):
    _, tf = build_transforms(backbone.data_config, size)
    data = TransformedDataset(splits.train, tf)
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        return backbone.eval().forward_features(x).numpy(), np.array([data[i][1] for i in range(len(data))])


def test_rank_scores_each_candidate_on_the_same_balanced_subset(digits, monkeypatch):
    cands = [Candidate("efficientnet_lite0", 16, pretrained=False), Candidate("efficientnet_lite0", 24, False)]
    built = {}
    real_build = rank_module.build_candidates
    monkeypatch.setattr(rank_module, "build_candidates",
                        lambda c, ck=None, seed=0: built.setdefault("m", real_build(c, ck, seed)))
    res = rank(cands, digits, train_per_class=4, seed=1, by="logme")
    assert res.num_samples == 40 and res.num_classes == 10 and [r["rank"] for r in res.rows] == [1, 2]
    assert res.rows[0]["logme"] >= res.rows[1]["logme"]  # sorted by the chosen score, best first
    subset = load_dataset("digits", train_per_class=4, seed=1)  # what `sclft train --train-per-class 4` sees
    for cand, backbone in zip(cands, built["m"]):
        row = next(r for r in res.rows if r["candidate"] == cand.label)
        f, y = _penultimate(backbone, subset, cand.image_size)
        assert row["nc1"] == pytest.approx(nc.nc1(f, y), rel=1e-5)
        assert row["separation"] == pytest.approx(nc.separation(f, y), rel=1e-5)
        assert row["logme"] == pytest.approx(transfer_scores.logme(f, y).score, rel=1e-4)
        assert row["params"] == sum(p.numel() for p in backbone.parameters()) and row["image_size"] == cand.image_size
    ncti = sorted(r["ncti"] for r in res.rows)  # two candidates: each normalised term is 0 or 1
    assert all(v in (-1.0, 0.0, 1.0, 2.0) for v in ncti) and ncti[0] < ncti[1] or ncti == [0.0, 0.0]


def test_rank_cli_writes_the_table_and_refuses_bad_candidates_before_probing(tmp_path, capsys, monkeypatch):
    rc = cli.main(["rank", "--backbones", "efficientnet_lite0@16", "--data", "digits", "--train-per-class", "3",
                   "--controls", "--by", "separation", "--out", str(tmp_path)])
    assert rc == 0
    saved = json.loads((tmp_path / "rank.json").read_text())
    assert [r["candidate"] for r in saved["rows"]] == [line.split()[1] + ("" if "(random)" not in line else
                                                                          " (random)")
                                                       for line in capsys.readouterr().out.splitlines()
                                                       if line.strip()[:1].isdigit()]
    seps = [r["separation"] for r in saved["rows"]]
    assert seps == sorted(seps) and (tmp_path / "rank.png").stat().st_size > 0
    assert (tmp_path / "rank.csv").read_text().splitlines()[0].startswith("rank,candidate,backbone")
    assert not any(isinstance(v, float) and math.isnan(v) for r in saved["rows"] for v in r.values())

    def no_probe(*a, **k):
        raise AssertionError("a probe ran before the candidates were checked")

    monkeypatch.setattr(importlib.import_module("sclft.probing"), "probe", no_probe)
    assert cli.main(["rank", "--backbones", "efficientnet_lite0@16", "nope_net", "--data", "digits"]) == 2
    assert "unknown backbone 'nope_net'" in capsys.readouterr().err
    assert cli.main(["rank", "--backbones", "efficientnet_lite0@16", "resnet18", "--data", "digits"]) == 1  # offline
    assert "resnet18" in capsys.readouterr().err
    assert cli.main(["rank", "--backbones", "efficientnet_lite0@x", "--data", "digits"]) == 2


def test_transfer_correlation_and_misordered_controls():
    acc = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    perfect = rank_module.transfer_correlation({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, acc, higher_is_better=False)
    assert perfect == {"kendall_tau": 1.0, "weighted_tau": pytest.approx(1.0), "top": "a", "regret": 0.0}
    swapped = rank_module.transfer_correlation({"a": 3, "b": 4, "c": 2, "d": 1}, acc)  # one discordant pair of 6
    assert swapped["kendall_tau"] == pytest.approx(4 / 6) and swapped["top"] == "b"
    assert swapped["regret"] == pytest.approx(0.1)
    reverse = rank_module.transfer_correlation({"a": 1, "b": 2, "c": 3, "d": 4}, acc)
    assert reverse["kendall_tau"] == -1.0 and reverse["weighted_tau"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same two or more"):
        rank_module.transfer_correlation({"a": 1}, acc)
    scores = {"p1": 5.0, "p2": 3.0, "c1": 4.0, "c2": 1.0}
    assert rank_module.misordered_controls(scores, ["p1", "p2"], ["c1", "c2"]) == 1  # c1 above p2
    assert rank_module.misordered_controls(scores, ["p1", "p2"], ["c1", "c2"], higher_is_better=False) == 3


def test_rank_backbones_statistics_and_verdicts():
    spec = importlib.util.spec_from_file_location("rank_backbones", "benchmarks/rank_backbones.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pre, ctrl = ["a", "b", "c"], ["a-random"]
    acc = {s: {"a": 0.9, "b": 0.8, "c": 0.7 + 0.01 * s} for s in (0, 1)}  # a > b > c on every seed

    def row(nc1, logme):
        return {"nc1": nc1, "separation": nc1, "logme": logme, "ncti": logme, "ncti_pretrained": logme}

    scores = {s: {"a": row(1, 3), "b": row(2, 1), "c": row(3, 2), "a-random": row(2.5, 0)} for s in (0, 1)}
    stats = mod.cell_statistics(scores, acc, pre, ctrl)
    assert stats["nc1"]["kendall_tau"] == 1.0 and stats["nc1"]["seed_kendall_tau"] == [1.0, 1.0]
    assert stats["nc1"]["regret"] == 0.0 and stats["nc1"]["misordered_controls"] == [1, 1]  # random above c
    assert stats["logme"]["kendall_tau"] == pytest.approx(1 / 3) and stats["logme"]["misordered_controls"] == [0, 0]
    assert mod._verdict(0.5, [0.2, 0.4]) == "holds" and mod._verdict(0.1, [-0.2, 0.4]) == "undecided"
    assert mod._verdict(-0.5, [-0.2, -0.4]) == "fails"
    cells = {"d|n20": {"targets": {"linear_probe": stats, "scl_ft": stats}}}
    verdicts = mod.predictions(cells)
    assert verdicts["1_nc1_orders_linear_probe"]["verdict"] == "holds"
    assert verdicts["2_logme_tau_at_least_nc1_linear_probe"]["verdict"] == "fails"  # 1/3 < 1
    assert verdicts["4_top_nc1_regret_at_most_1_point_linear_probe"]["verdict"] == "holds"
    assert verdicts["5_no_score_ranks_every_control_last"] == {
        "verdict": "fails", "scores_ranking_every_control_last": ["logme", "ncti"]}


def test_report_rescores_logme_ncti_and_trial_picks_from_stored_evidence(tmp_path):
    from sclft.bench.scoring import rescore_selection

    terms = {"a": (1.0, 0.5, 3.0), "b": (3.0, 0.9, 2.0), "c": (2.0, 0.7, 2.5)}  # NCTI: b 2, c 1, a 0
    scores = {b: {"logme": lm, **dict(zip(("ncti_seli", "ncti_ncc", "ncti_vc"), t))}
              for (b, t), lm in zip(terms.items(), (0.1, 0.2, 0.3))}  # LogME: c
    cell = {"cell": "net|data|scl_ft|n20|", "seeds": [0], "blocks": ["a", "b", "c"], "best": "b",
            "accuracy": {"a": [0.70], "b": [0.80], "c": [0.77]}, "params_percent": {"a": 1.0, "b": 2.0, "c": 2.0},
            "run_seconds": {"a": 10.0, "b": 10.0, "c": 10.0}, "one_run_seconds": 10.0,
            "nc1_after": {"a": 3.0, "b": 2.0, "c": 2.5}, "nc1_profile": {"a": 9.0, "b": 5.0, "c": 4.0},
            "nc1_profile_seeds": {"0": {"a": 9.0, "b": 5.0, "c": 4.0}}, "scores_profile_seeds": {"0": scores},
            "trial_seeds": {"0": {"nc1": {"a": 1.0, "b": 2.0, "c": 3.0}, "nc1_fit": {"a": 3.0, "b": 2.0, "c": 1.0},
                                  "heldout_accuracy": {"a": 0.5, "b": 0.9, "c": 0.6}, "seconds": 20.0}},
            "rules": {"profile:min": {"picks": ["c"], "regret": 3.0, "params_percent": 2.0, "seconds": 0.5,
                                      "cost_percent": 5.0},
                      "trial": {"picks": ["b"], "regret": 0.0, "params_percent": 2.0, "seconds": 20.0,
                                "cost_percent": 200.0}}}
    rules = rescore_selection([cell])[0]["rules"]
    expected = {"profile:logme": ("c", 3.0), "profile:ncti": ("b", 0.0), "trial": ("a", 10.0),
                "trial:train_nc1": ("c", 3.0), "trial:heldout_acc": ("b", 0.0)}
    for name, (pick, regret) in expected.items():
        assert rules[name]["picks"] == [pick] and rules[name]["regret"] == pytest.approx(regret), name
    assert rules["trial:train_nc1"]["seconds"] == 20.0
    del cell["scores_profile_seeds"], cell["trial_seeds"]
    rules = rescore_selection([cell])[0]["rules"]
    assert "profile:logme" not in rules and rules["trial"]["picks"] == ["b"]  # old evidence: carried over


def test_selection_scores_verdicts_compare_rules_on_their_common_cells():
    spec = importlib.util.spec_from_file_location("selection_scores", "benchmarks/selection_scores.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def cell(name, nc1_after, regrets):
        return {"cell": name, "blocks": ["a", "b", "c"], "best": "b",
                "accuracy": {"a": [0.70], "b": [0.80], "c": [0.78]}, "nc1_after": nc1_after,
                "rules": {r: {"picks": [p], "regret": g} for r, (p, g) in regrets.items()}}

    cells = [cell("x", {"a": 3.0, "b": 2.0, "c": 2.5}, {"profile:repeated_min": ("c", 2.0),
                                                        "fixed:first_repeated": ("b", 0.0),
                                                        "profile:logme": ("c", 2.0), "profile:ncti": ("a", 10.0),
                                                        "trial:train_nc1": ("c", 2.0)}),
             cell("y", {"a": 1.0, "b": 2.0, "c": 2.5}, {"profile:repeated_min": ("b", 0.0),
                                                        "fixed:first_repeated": ("b", 0.0),
                                                        "profile:logme": ("c", 2.0), "profile:ncti": ("c", 2.0)})]
    out = mod.verdicts(cells)
    assert out["after:min"] == {"x": {"pick": "b", "regret": 0.0}, "y": {"pick": "a", "regret": pytest.approx(10.0)}}
    assert out["rules"]["after:min"]["mean_regret"] == pytest.approx(5.0)
    assert out["rules"]["trial:train_nc1"] == {"cells": 1, "mean_regret": 2.0, "max_regret": 2.0,
                                               "default_mean_regret_on_these_cells": 2.0}
    p = out["predictions"]
    assert p["7_after_min_beats_default"] == "fails"  # 5.0 vs 1.0
    assert p["8_after_min_does_not_beat_first_repeated"] == "holds"
    assert p["9_train_nc1_no_better_than_after_min"] == "holds"  # on cell x: 2.0 >= 0.0
    assert p["6_logme_ncti_worse_than_default_and_logme_deep"] == "holds"  # 2.0 and 6.0 > 1.0; 2 of 2 deep picks


def test_probe_scores_each_layer_in_memory_and_nan_when_streamed(digits, tmp_path):
    from sclft.probing import probe

    b = rank_module.build_candidates([Candidate("efficientnet_lite0", 16, pretrained=False)])[0]
    _, tf = build_transforms(b.data_config, 16)
    data = TransformedDataset(load_dataset("digits", train_per_class=3, seed=0).train, tf)
    res = probe(b, data, ["blocks.5.0"], num_classes=10, progress=False, scores=True)
    f, y = _penultimate(b, load_dataset("digits", train_per_class=3, seed=0), 16)
    assert res["penultimate"]["logme"] == pytest.approx(transfer_scores.logme(f, y).score, rel=1e-4)
    assert res.to_csv(tmp_path / "p.csv").read_text().splitlines()[0] == (
        "layer,nc1,separation,dim,logme,ncti_seli,ncti_ncc,ncti_vc")
    streamed = probe(b, data, ["blocks.5.0"], num_classes=10, progress=False, scores=True, memory_budget=1)
    assert math.isnan(streamed["blocks.5.0"]["logme"]) and streamed["blocks.5.0"]["nc1"] == pytest.approx(
        res["blocks.5.0"]["nc1"], rel=1e-4)

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
from sclft.rank import Candidate, parse_candidates, rank

pytestmark = pytest.mark.usefixtures("one_thread")
rank_module = importlib.import_module("sclft.rank")  # `sclft.rank` is the function


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
    monkeypatch.setattr(rank_module, "build_candidates", lambda c, ck=None: built.setdefault("m", real_build(c, ck)))
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

    monkeypatch.setattr(importlib.import_module("sclft.probe"), "probe", no_probe)
    assert cli.main(["rank", "--backbones", "efficientnet_lite0@16", "nope_net", "--data", "digits"]) == 2
    assert "unknown backbone 'nope_net'" in capsys.readouterr().err
    assert cli.main(["rank", "--backbones", "efficientnet_lite0@16", "resnet18", "--data", "digits"]) == 1  # offline
    assert "resnet18" in capsys.readouterr().err
    assert cli.main(["rank", "--backbones", "efficientnet_lite0@x", "--data", "digits"]) == 2

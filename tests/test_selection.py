import math

import pytest
import torch

from sclft import selection
from sclft.data import load_dataset
from sclft.train import TrainConfig

CANDIDATES = ["blocks.4.0", "blocks.5.0", "blocks.6.0"]


def _cfg(**kw):
    extra = {"selection": {"candidates": CANDIDATES, "profile_per_class": 4, "trial_per_class": 4,
                           "trial_holdout": 0.5, "trial_epochs": 1}}
    return TrainConfig(image_size=32, batch_size=16, progress=False, extra=extra, **kw)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_per_class=4, seed=0)


CURVE = [("a", 50.0), ("b", 10.0), ("c", 4.0), ("d", 3.0), ("e", 6.0), ("f", 9.0)]


@pytest.mark.parametrize("pick, expected", [("min", "d"), ("drop", "b"), ("rise", "e")])
def test_profile_pick_functions(pick, expected):
    assert selection.PROFILE_PICKS[pick](CURVE) == expected


def test_rise_on_a_monotone_curve_stays_in_range():
    assert selection.PROFILE_PICKS["rise"]([("a", 3.0), ("b", 2.0), ("c", 1.0)]) == "c"


def test_profile_rule_returns_a_candidate_and_its_evidence(backbone_factory, digits):
    b = backbone_factory("efficientnet_lite0")
    out = selection.select_layer(b, digits, _cfg(layer_rule="profile"))
    assert out["rule"] == "profile" and out["layer"] in CANDIDATES
    assert list(out["nc1"]) == CANDIDATES and all(v > 0 and math.isfinite(v) for v in out["nc1"].values())
    assert set(out["picks"]) == set(selection.PROFILE_PICKS) and set(out["picks"].values()) <= set(CANDIDATES)
    assert out["layer"] == out["picks"][selection.DEFAULT_PROFILE_PICK] == min(out["nc1"], key=out["nc1"].get)
    assert out["samples"] == 40 and out["seconds"] >= 0


def test_trial_rule_picks_lowest_heldout_nc1_and_restores_the_backbone(backbone_factory, digits):
    b = backbone_factory("efficientnet_lite0")
    before = {k: v.clone() for k, v in b.state_dict().items()}
    flags = [p.requires_grad for p in b.parameters()]
    out = selection.select_layer(b, digits, _cfg(layer_rule="trial", strategy="layer_ft"))
    assert out["rule"] == "trial" and out["strategy"] == "layer_ft"
    assert set(out["nc1"]) == set(CANDIDATES) and out["layer"] == min(out["nc1"], key=out["nc1"].get)
    assert set(out["heldout_accuracy"]) == set(CANDIDATES)
    assert out["fit_samples"] == 20 and out["heldout_samples"] == 20
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())
    assert [p.requires_grad for p in b.parameters()] == flags


def test_auto_uses_the_default_rule_and_errors_are_clear(backbone_factory, digits, monkeypatch):
    b = backbone_factory("efficientnet_lite0")
    seen = []
    monkeypatch.setitem(selection._RULES, selection.DEFAULT_RULE,
                        lambda *a: seen.append(1) or {"layer": "blocks.5.0", "rule": "x"})
    assert selection.select_layer(b, digits, _cfg(layer_rule="auto"))["layer"] == "blocks.5.0" and seen
    with pytest.raises(ValueError, match="valid rules: auto, .*profile.*trial"):
        selection.select_layer(b, digits, _cfg(layer_rule="nope"))
    with pytest.raises(ValueError, match="unknown selection options"):
        selection.selection_options(TrainConfig(extra={"selection": {"bogus": 1}}))


def test_register_rule_adds_a_rule(backbone_factory, digits, monkeypatch):
    monkeypatch.setattr(selection, "_RULES", dict(selection._RULES))
    selection.register_rule("last")(lambda backbone, splits, cfg, device: {"layer": backbone.blocks[-1],
                                                                          "rule": "last"})
    assert "last" in selection.list_rules()
    b = backbone_factory("efficientnet_lite0")
    assert selection.select_layer(b, digits, _cfg(layer_rule="last"))["layer"] == b.blocks[-1]

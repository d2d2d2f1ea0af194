import math

import pytest
import torch

from sclft import picks, selection
from sclft.data import load_dataset
from sclft.training import TrainConfig

CANDIDATES = ["blocks.4.0", "blocks.5.0", "blocks.6.0"]


def _cfg(**kw):
    extra = {"selection": {"candidates": CANDIDATES, "profile_per_class": 4, "trial_per_class": 4,
                           "trial_holdout": 0.5, "trial_epochs": 1}}
    return TrainConfig(image_size=32, batch_size=16, progress=False, extra=extra, **kw)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_per_class=4, seed=0)


CURVE = [("a", 50.0), ("b", 10.0), ("c", 4.0), ("d", 3.0), ("e", 6.0), ("f", 9.0)]


SHARES = {"a": 0.5, "b": 1.0, "c": 2.0, "d": 4.0, "e": 6.0, "f": 8.0}


# half: log NC1 falls from log 50 to log 3; half-way is 50 * sqrt(3/50) = 12.2, first reached at b (10);
# gain_per_param: (log 50 - log v) / share = a 0, b 1.61, c 1.26, d 0.70, ...
@pytest.mark.parametrize("pick, expected", [("min", "d"), ("drop", "b"), ("rise", "e"), ("half", "b"),
                                            ("gain_per_param", "b")])
def test_profile_pick_functions(pick, expected):
    assert selection.profile_pick(pick, CURVE, SHARES) == expected


def test_repeated_min_skips_stage_opening_blocks():
    # sizes as in a CNN: stage openers (unique size) and repeated blocks; the most collapsed block ("g") opens
    # a stage, so repeated_min takes the most collapsed repeated one ("f"), where min takes "g"
    curve = [("a", 40.0), ("b", 30.0), ("c", 20.0), ("d", 12.0), ("e", 9.0), ("f", 8.0), ("g", 7.0)]
    shares = {"a": 1.0, "b": 1.5, "c": 1.5, "d": 2.0, "e": 3.0, "f": 3.0, "g": 4.0}
    assert selection.profile_pick("repeated_min", curve, shares) == "f"
    assert selection.profile_pick("min", curve, shares) == "g"
    # all blocks of one size (ViT): every block repeats, the pick is min's; no repeated block at all: min too
    assert selection.profile_pick("repeated_min", CURVE, {n: 2.0 for n, _ in CURVE}) == "d"
    assert selection.profile_pick("repeated_min", CURVE, SHARES) == "d"


def test_repeated_min_on_lite0_sizes_is_the_last_repeated_block_of_stage_4(backbone_factory):
    b = backbone_factory("efficientnet_lite0")
    blocks = selection.candidate_blocks(b, None, max_params=8.0, num_classes=10)
    shares = {x: selection.block_share(b, x, 10) for x in blocks}
    curve = [(x, 100.0 / (i + 1)) for i, x in enumerate(blocks)]  # falls with depth, like the measured curves
    assert selection.profile_pick("repeated_min", curve, shares) == "blocks.4.2"
    assert selection.profile_pick("min", curve, shares) == "blocks.5.0"
    assert selection.FIXED_PICKS["first_repeated"](blocks, shares) == "blocks.4.1"


def test_profile_rule_repeated_min_on_a_backbone(backbone_factory, digits):
    b = backbone_factory("efficientnet_lite0")
    cands = ["blocks.4.0", "blocks.4.1", "blocks.4.2", "blocks.5.0"]  # 4.1 and 4.2 are the same size
    cfg = _cfg(layer_rule="profile", max_params=100.0)
    cfg.extra["selection"].update(candidates=cands, profile_pick="repeated_min")
    out = selection.select_layer(b, digits, cfg)
    assert out["pick"] == "repeated_min" and list(out["nc1"]) == cands
    assert out["layer"] == min(["blocks.4.1", "blocks.4.2"], key=out["nc1"].get)
    assert {r["block"] for r in out["ranking"][:2]} == {"blocks.4.1", "blocks.4.2"}  # stage openers rank last


def test_one_se_takes_the_earliest_repeated_block_within_one_standard_error():
    curve = [("a", 40.0), ("b", 30.0), ("c", 10.5), ("d", 10.4), ("e", 10.0), ("f", 9.0), ("g", 7.0)]
    shares = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 3.0, "e": 3.0, "f": 3.0, "g": 4.0}  # repeated: c-f; min among them f
    se = dict.fromkeys("abcdefg", 0.1)
    pick = lambda err: selection.profile_pick("one_se", curve, shares, err)  # noqa: E731
    assert pick({**se, "f": 1.45}) == "d"  # 9 + 1.45 = 10.45 admits d (10.4) and e, not c (10.5)
    assert pick({**se, "f": 1.5}) == "c" and pick({**se, "f": 1.2}) == "e" and pick(se) == "f"
    assert pick({**se, "f": math.nan}) == pick({**se, "f": None}) == selection.profile_pick("repeated_min", curve,
                                                                                           shares) == "f"
    assert pick({**se, "g": 100.0, "a": 100.0}) == "f"  # only the lowest repeated block's SE counts; g opens a stage
    assert pick(None) is None  # evidence without standard errors (reports from before they existed)
    ranked = selection._ranking(selection.PROFILE_PICKS["one_se"](curve, shares, {**se, "f": 1.2}))
    assert [r["block"] for r in ranked] == ["e", "f", "c", "d", "a", "b", "g"]  # admitted, then the rest, openers last


def test_rise_on_a_monotone_curve_stays_in_range():
    assert selection.profile_pick("rise", [("a", 3.0), ("b", 2.0), ("c", 1.0)]) == "c"


def test_fixed_picks_are_positions_in_the_candidate_list():
    names = [f"b{i}" for i in range(13)]
    sizes = [1, 1, 2, 3, 3, 3, 4, 5, 5, 6, 6, 6, 7]  # runs b0-b1, b3-b5, b7-b8, b9-b11
    shares = {n: float(v) for n, v in zip(names, sizes)}
    assert {k: fn(names, shares) for k, fn in selection.FIXED_PICKS.items()} == {
        "middle": "b6", "two_thirds": "b8", "last": "b12", "first_repeated": "b9"}
    assert selection.FIXED_PICKS["middle"](["x", "y"], {}) == "x" and selection.FIXED_PICKS["last"](["x"], {}) == "x"
    assert selection.FIXED_PICKS["first_repeated"](["x", "y"], {"x": 1.0, "y": 2.0}) == "y"  # no run: the last
    assert selection.FIXED_PICKS["first_repeated"](["x", "y", "z"], dict.fromkeys("xyz", 1.0)) == "x"  # ViT-like


def test_block_share_matches_the_trained_model_and_bounds_the_candidates(backbone_factory):
    from sclft.model import TransferModel

    b = backbone_factory("efficientnet_lite0")
    for block in ("blocks.2.0", "blocks.5.0", "blocks.5.1"):
        reference = TransferModel(b, "layer_ft", 10, block).parameter_summary()["percent"]
        assert selection.block_share(b, block, 10) == pytest.approx(reference, rel=1e-9)
    kept = selection.candidate_blocks(b, None, max_params=8.0, num_classes=10)
    assert kept[0] == b.blocks[0] and kept[-1] == "blocks.5.0"  # blocks.5.1 trains 14 %
    assert all(selection.block_share(b, x, 10) <= 8.0 for x in kept)
    assert selection.candidate_blocks(b, None, None) == b.blocks[:-1]
    smallest = min(b.blocks[:-1], key=lambda x: sum(p.numel() for p in b.block_parameters(x)))
    assert selection.candidate_blocks(b, None, max_params=0.1, num_classes=10) == [smallest]  # budget unmeetable


def test_profile_rule_returns_a_candidate_and_its_evidence(backbone_factory, digits):
    b = backbone_factory("efficientnet_lite0")
    out = selection.select_layer(b, digits, _cfg(layer_rule="profile", max_params=100.0))
    assert out["rule"] == "profile" and out["layer"] in CANDIDATES
    assert list(out["nc1"]) == CANDIDATES and all(v > 0 and math.isfinite(v) for v in out["nc1"].values())
    assert set(out["picks"]) == set(selection.PROFILE_PICKS) - selection.SCORE_PICKS  # no scores unless picked
    assert set(out["picks"].values()) <= set(CANDIDATES) and "scores" not in out
    assert out["layer"] == out["picks"][selection.DEFAULT_PROFILE_PICK] == min(out["nc1"], key=out["nc1"].get)
    assert out["samples"] == 40 and out["seconds"] >= 0
    assert list(out["nc1_se"]) == CANDIDATES and all(v > 0 for v in out["nc1_se"].values())  # 4 per class: 4 groups
    ranked = [r["block"] for r in out["ranking"]]
    assert ranked == sorted(CANDIDATES, key=out["nc1"].get) and out["ranking"][0]["nc1"] == min(out["nc1"].values())


def test_the_budget_removes_candidates_from_every_rule(backbone_factory, digits):
    b = backbone_factory("efficientnet_lite0")
    for rule in ("profile", "fixed"):
        out = selection.select_layer(b, digits, _cfg(layer_rule=rule, max_params=8.0))
        assert out["layer"] in ("blocks.4.0", "blocks.5.0") and out["max_params"] == 8.0  # blocks.6.0: 18 %
        assert {r["block"] for r in out["ranking"]} == {"blocks.4.0", "blocks.5.0"}
    with pytest.raises(ValueError, match="max_params must be > 0"):
        TrainConfig(max_params=0).validate()


def test_trial_rule_picks_lowest_heldout_nc1_and_restores_the_backbone(backbone_factory, digits):
    b = backbone_factory("efficientnet_lite0")
    before = {k: v.clone() for k, v in b.state_dict().items()}
    flags = [p.requires_grad for p in b.parameters()]
    out = selection.select_layer(b, digits, _cfg(layer_rule="trial", strategy="layer_ft", max_params=100.0))
    assert out["rule"] == "trial" and out["strategy"] == "layer_ft"
    assert set(out["nc1"]) == set(CANDIDATES) and out["layer"] == min(out["nc1"], key=out["nc1"].get)
    assert set(out["heldout_accuracy"]) == set(CANDIDATES) and out["ranking"][0]["block"] == out["layer"]
    assert out["fit_samples"] == 20 and out["heldout_samples"] == 20
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())
    assert [p.requires_grad for p in b.parameters()] == flags


def test_auto_uses_the_default_rule_and_errors_are_clear(backbone_factory, digits, monkeypatch):
    b = backbone_factory("efficientnet_lite0")
    seen = []
    monkeypatch.setitem(selection._RULES, selection.DEFAULT_RULE,
                        lambda *a: seen.append(1) or {"layer": "blocks.5.0", "rule": "x"})
    assert selection.select_layer(b, digits, _cfg(layer_rule="auto"))["layer"] == "blocks.5.0" and seen
    with pytest.raises(ValueError, match="valid rules: auto, .*fixed.*profile.*trial"):
        selection.select_layer(b, digits, _cfg(layer_rule="nope"))
    with pytest.raises(ValueError, match="unknown selection options"):
        TrainConfig(extra={"selection": {"bogus": 1}}).validate()


def test_profile_rule_refuses_one_image_per_class(backbone_factory):
    one = load_dataset("digits", train_per_class=1, seed=0)  # NC1 would be 0 at every block (log 0 in the picks)
    with pytest.raises(ValueError, match="at least 2 training images of every class.*has 1"):
        selection.select_layer(backbone_factory("efficientnet_lite0"), one, _cfg(layer_rule="profile"))


def test_register_rule_adds_a_rule(backbone_factory, digits, monkeypatch):
    monkeypatch.setattr(picks, "_RULES", dict(picks._RULES))
    selection.register_rule("last")(lambda backbone, splits, cfg, device: {"layer": backbone.blocks[-1],
                                                                          "rule": "last"})
    assert "last" in selection.list_rules()
    b = backbone_factory("efficientnet_lite0")
    assert selection.select_layer(b, digits, _cfg(layer_rule="last"))["layer"] == b.blocks[-1]


def test_probe_rank_prints_the_ranked_candidates(tmp_path, capsys):
    from sclft import cli

    rc = cli.main(["probe", "--rank", "--data", "digits", "--train-per-class", "3", "--image-size", "16",
                   "--max-params", "3", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    saved = __import__("json").loads((tmp_path / "rank.json").read_text())
    assert [r[1] for r in rows] == [r["block"] for r in saved["ranking"]]
    assert rows[0][1] == saved["layer"] and "within 3% parameters" in text
    assert "blocks.4.0" not in text.split("other picks")[0]  # 3.5 % > 3 %
    # default pick repeated_min: blocks with an equal-size neighbour first, by NC1; stage openers last (no score)
    share, order = saved["params_percent"], list(saved["params_percent"])
    neighbours = [[order[j] for j in (i - 1, i + 1) if 0 <= j < len(order)] for i in range(len(order))]
    repeated = {b for b, near in zip(order, neighbours) if any(share[n] == share[b] for n in near)}
    k = sum(r[-1] != "–" for r in rows)
    assert 0 < k < len(rows) and all(r[-1] == "–" for r in rows[k:])
    assert [r["score"] is None for r in saved["ranking"]] == [False] * k + [True] * (len(rows) - k)
    assert "Infinity" not in (tmp_path / "rank.json").read_text()
    assert {r[1] for r in rows[:k]} == repeated
    nc1 = [float(r[2]) for r in rows[:k]]
    assert nc1 == sorted(nc1)


def test_logme_and_ncti_picks_read_the_per_block_scores():
    curve = [("a", 9.0), ("b", 5.0), ("c", 4.0)]
    scores = {"a": {"logme": 0.1, "ncti_seli": 1.0, "ncti_ncc": 0.5, "ncti_vc": 3.0},
              "b": {"logme": 0.3, "ncti_seli": 3.0, "ncti_ncc": 0.9, "ncti_vc": 2.0},  # ncti' = 1 + 1 - 0
              "c": {"logme": 0.2, "ncti_seli": 2.0, "ncti_ncc": 0.7, "ncti_vc": 2.5}}
    assert selection.profile_pick("logme", curve, None, None, scores) == "b"
    assert selection.profile_pick("ncti", curve, None, None, scores) == "b"
    scores["b"]["logme"] = None  # not finite in the probe: never picked
    assert selection.profile_pick("logme", curve, None, None, scores) == "c"
    assert selection.profile_pick("logme", curve) is None and selection.profile_pick("ncti", curve) is None


def test_profile_rule_with_a_score_pick_records_the_scores(backbone_factory, digits):
    from sclft import transfer_scores

    b = backbone_factory("efficientnet_lite0")
    cfg = _cfg(layer_rule="profile", max_params=100.0)
    cfg.extra["selection"]["profile_pick"] = "ncti"
    out = selection.select_layer(b, digits, cfg)
    assert set(out["scores"]) == set(CANDIDATES) and set(out["picks"]) == set(selection.PROFILE_PICKS)
    combined = transfer_scores.ncti_from_rows(out["scores"])
    assert out["layer"] == max(CANDIDATES, key=combined.get) == out["picks"]["ncti"]
    assert out["picks"]["logme"] == max(CANDIDATES, key=lambda n: out["scores"][n]["logme"])


def test_tuned_rule_reads_the_short_fits_on_their_training_samples(backbone_factory, digits):
    b = backbone_factory("efficientnet_lite0")
    before = {k: v.clone() for k, v in b.state_dict().items()}
    cfg = _cfg(layer_rule="tuned", strategy="layer_ft", max_params=100.0)
    cfg.extra["selection"]["candidates"] = CANDIDATES[1:]  # two fits are enough here
    out = selection.select_layer(b, digits, cfg)
    assert out["rule"] == "tuned" and set(out["nc1_fit"]) == set(CANDIDATES[1:])
    assert out["layer"] == min(out["nc1_fit"], key=out["nc1_fit"].get) == out["ranking"][0]["block"]
    assert out["nc1_fit"] != out["nc1"]  # fit samples, not the held-out ones
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())


def test_the_default_budget_admits_vit_b_blocks_and_keeps_efficientnet_lite0s_candidates():
    """issue 32.8: under the default --max-params every block of ViT-B/32 and CLIP ViT-B/32 (8.07-8.2 % each) is a
    candidate (the flagship `--backbone vit_b32 --data dtd` no longer falls back), and EfficientNet-Lite0's candidates
    on 10 classes (digits) and ResNet-50's are those of the former default 8 %, so their default picks stay."""
    from sclft.bench.plan import meta_backbone

    budget = TrainConfig.max_params
    for name in ("vit_b32", "clip_vit_b32"):
        b = meta_backbone(name)
        for k in (10, 47, 100):
            assert selection.candidate_blocks(b, None, max_params=budget, num_classes=k) == b.blocks[:-1], (name, k)
    for name, classes in (("efficientnet_lite0", (10,)), ("resnet50", (10, 100))):
        b = meta_backbone(name)
        for k in classes:
            assert (selection.candidate_blocks(b, None, max_params=budget, num_classes=k)
                    == selection.candidate_blocks(b, None, max_params=8.0, num_classes=k)), (name, k)

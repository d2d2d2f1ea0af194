"""What a reader of ``benchmarks/results/`` can rely on: no code, no machine paths, one summary per benchmark, and
README tables that are generated from the results beside them (issue 28)."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MACHINE_PATH = re.compile(r"(?<![\w.$~-])/(?:work|tmp|root|home|Users|mnt|opt|var/folders)/")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _text_files():
    for p in sorted(RESULTS.rglob("*")):
        if p.is_file() and p.suffix not in (".png", ".gz", ".pdf"):
            yield p


def test_results_hold_no_code_and_no_machine_paths():
    assert not sorted(str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*.py"))
    found = {}
    for p in _text_files():
        hits = MACHINE_PATH.findall(p.read_text(errors="replace"))
        if hits:
            found[str(p.relative_to(RESULTS))] = len(hits)
    assert found == {}


def test_the_path_pattern_finds_what_it_must():
    assert MACHINE_PATH.search('"out": "/work/runs/x"') and MACHINE_PATH.search("--out /tmp/gb peft")
    assert not MACHINE_PATH.search("$OUT/gpu/runs") and not MACHINE_PATH.search("imagefolder:data/mnist5k")


def test_one_summary_per_benchmark():
    counts = {d.name: len(list(d.rglob("summary*.json"))) for d in RESULTS.iterdir() if d.is_dir()}
    assert counts and max(counts.values()) <= 1, counts


def test_selection_readme_table_is_the_generated_one():
    assert _script("selection_groups").main([str(RESULTS / "selection"), "--check"]) == 0


def _cell(key, regrets):
    return {"cell": key, "rules": {r: {"regret": v, "params_percent": 1.0, "seconds": 0.0, "cost_percent": 0.0}
                                   for r, v in regrets.items()}}


def test_selection_groups_score_each_group_of_cells():
    groups_mod = _script("selection_groups")
    cells = [_cell("a|x|", {"r": 1.0, "s": 0.0}), _cell("a|y|", {"r": 3.0, "s": 2.0}), _cell("b|x|", {"r": 0.5})]
    groups = {"fitted": ["a|x|"], "held_out": ["a|y|", "b|"]}
    table = groups_mod.table(cells, groups)
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    # r: all three cells, mean (1 + 3 + 0.5) / 3, max 3; fitted = cell a|x|; held out = a|y| and b|x|
    assert f"{np.mean([1.0, 3.0, 0.5]):.2f} / 3.00 | 1.00 / 1.00 | {np.mean([3.0, 0.5]):.2f} / 3.00 | 1.00 | 3 |" \
        in rows["r"]
    assert "1.00 / 2.00 | 0.00 / 0.00 | 2.00 / 2.00 | 1.00 | 2 |" in rows["s"]  # s was scored on two cells
    with pytest.raises(ValueError, match="no cell starts with 'c|'"):
        groups_mod.table(cells, {"fitted": ["c|"]})
    readme = "intro\n" + groups_mod.BEGIN + "\nold\n" + groups_mod.END + "\nafter\n"
    assert groups_mod.render(readme, "new\n") == "intro\n" + groups_mod.BEGIN + "\nnew\n" + groups_mod.END + "\nafter\n"


def test_mnist5k_imagefolder_split(tmp_path):
    write = _script("make_mnist5k").write_imagefolder
    images = np.arange(7 * 784, dtype=np.uint8).reshape(7, 784) % 251
    labels = np.array([3, 3, 5, 3, 5, 5, 5])
    assert write(images, labels, tmp_path, train_per_class=2) == {"train": 4, "test": 3}
    names = lambda split, label: sorted(p.name for p in (tmp_path / split / label).glob("*.png"))  # noqa: E731
    assert names("train", "3") == ["0000.png", "0001.png"] and names("test", "3") == ["0003.png"]
    assert names("train", "5") == ["0002.png", "0004.png"] and names("test", "5") == ["0005.png", "0006.png"]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "test" / "5" / "0006.png")), images[6].reshape(28, 28))


def test_selection_summary_covers_the_cells_of_its_report():
    summary = json.loads((RESULTS / "selection" / "summary.json").read_text())
    cells = json.loads((RESULTS / "selection" / "selection.json").read_text())
    assert summary["rules"]["profile:repeated_min"]["cells"] == len(cells) == 16

"""benchmarks/speed.py's report bookkeeping: a partial rerun (--only) keeps the other rows and names the run that
measured each of them."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def speed(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_speed", module)
    spec.loader.exec_module(module)
    module.MEASURES["fake"] = lambda args: [module.row("fake", "a fake measure", 2.0, 1.0, "s")]
    threads = module.torch.get_num_threads()
    yield module
    module.torch.set_num_threads(threads)  # main() pins one thread for timing; the rest of the suite keeps its own


def test_partial_rerun_names_the_run_of_every_kept_row(speed, tmp_path):
    old_row = lambda m: {"measure": m, "what": m, "naive": 1.0, "ours": 1.0, "unit": "s", "ratio": 1.0}  # noqa: E731
    # a report of the old layout: one earlier run (full), then a partial rerun of cli_startup, rows without "run"
    (tmp_path / "speed.json").write_text(json.dumps({
        "command": "speed --only cli_startup", "date": "day 2", "rows": [old_row("probe"), old_row("cli_startup")],
        "earlier": {"command": "speed (full)", "date": "day 1", "measures": ["probe"]}}))
    report = speed.main(["--only", "fake", "--out", str(tmp_path)])
    runs = {r["measure"]: (r["run"]["command"], r["run"]["date"]) for r in report["rows"]}
    assert runs["probe"] == ("speed (full)", "day 1") and runs["cli_startup"] == ("speed --only cli_startup", "day 2")
    assert runs["fake"][0].endswith("--only fake --out " + str(tmp_path))
    assert {(r["command"], tuple(r["measures"])) for r in report["earlier_runs"]} == {
        ("speed (full)", ("probe",)), ("speed --only cli_startup", ("cli_startup",))}
    text = (tmp_path / "README.md").read_text()
    assert "Rows of probe: from the earlier run `speed (full)` (day 1" in text
    assert "Rows of cli_startup: from the earlier run `speed --only cli_startup` (day 2" in text
    again = speed.main(["--only", "fake", "--out", str(tmp_path)])  # rows now carry their run: kept as they are
    assert [r["run"] for r in again["rows"][:2]] == [r["run"] for r in report["rows"][:2]]

"""scripts/bench_jobs.sh: a suite split into N local jobs (one per shard), then merged by ``--report``."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_jobs.sh"
SCLFT = shutil.which("sclft", path=str(Path(sys.executable).parent)) or "sclft"


def _run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "SCLFT": SCLFT, **env})


def test_jobs_split_the_suite_and_the_report_merges_them(tmp_path):
    from sclft import bench

    suite = bench.load_suite("smoke").to_dict()
    suite["groups"] = {"table": {"strategies": ["linear_probe"], "seeds": [0, 1, 2], "train_per_class": [3]}}
    suite["defaults"] = {**suite["defaults"], "cache": "disk"}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**suite, "name": "tiny"}))
    result = _run("--jobs", 2, "--out", tmp_path / "out", path)
    assert result.returncode == 0, result.stderr
    runs = {s: sorted(p.name for p in (tmp_path / "out" / "tiny" / s / "experiments").iterdir())
            for s in ("shard_1", "shard_2")}
    ids = [r.id for r in bench.expand_suite(bench.load_suite(str(path)))]
    assert runs == {"shard_1": sorted(ids[0::2]), "shard_2": sorted(ids[1::2])}
    assert any((tmp_path / "out" / "cache").iterdir())  # one cache shared by the jobs, none of their own
    assert not any((tmp_path / "out" / "tiny" / s / "cache").exists() for s in ("shard_1", "shard_2"))
    table = (tmp_path / "out" / "tiny" / "merged" / "table.csv").read_text()
    assert "Linear Probe" in table and "3 finished runs" in result.stdout


def test_bad_usage_exits_2_and_says_what_is_valid(tmp_path):
    for args in (["--jobs", "0", "--out", tmp_path, "x.yaml"], ["--out", tmp_path], ["--bogus"]):
        result = _run(*args)
        assert result.returncode == 2 and ("usage" in result.stderr or "valid" in result.stderr)


def test_deadline_stops_every_job_and_still_merges(tmp_path):
    from sclft import bench

    suite = bench.load_suite("smoke").to_dict()
    suite["groups"] = {"table": {"strategies": ["full_ft"], "seeds": list(range(40)), "train_per_class": [3]}}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({**suite, "name": "long"}))
    out = tmp_path / "out"
    result = _run("--jobs", 2, "--deadline", 4, "--out", out, path)
    assert "deadline 4s reached" in result.stderr
    left = subprocess.run(["pgrep", "-f", f"--out {out}/"], capture_output=True, text=True, check=False).stdout
    assert left == ""  # no job outlives the deadline
    assert (out / "long" / "merged.log").is_file()

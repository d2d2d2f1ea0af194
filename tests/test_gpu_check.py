"""`scripts/gpu_check.sh --dry-run`: the GPU check's own commands, on the CPU with tiny settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.device_script
def test_gpu_check_dry_run_runs_every_step(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary["ok"] and not summary["failed"]
    steps = summary["steps"]
    assert set(steps) == {"vit_b32_bf16", "clip_fp16", "resume_reference", "resume_fp16_killed", "resume_fp16",
                          "clip_zero_shot", "lite0_fashion"}
    assert steps["resume_fp16_killed"]["killed"] and steps["resume_fp16"]["vs_uninterrupted"]["max_abs_diff"] == 0.0
    assert steps["vit_b32_bf16"]["layer_rule"] == "profile"  # the default --layer auto ran
    assert steps["clip_zero_shot"]["epochs"] == 0

"""Apply the selection rules of ``selection_cpu`` to Lite0's cells and seeds without training (one probe each).

The committed Lite0 report (``../selection.json``) was built before ``profile:repeated_min`` and
``fixed:first_repeated`` existed, and it keeps one NC1 curve per cell. This recomputes each seed's profile
evidence exactly as ``sclft bench`` does (same subsets, candidates and options; about 2 s a probe on a CPU)
and writes ``lite0_profiles.json``, which ``score_rules.py --lite0-profiles`` uses to score every pick per
seed against the committed accuracies:

    python benchmarks/results/selection/heldout/lite0_profiles.py /tmp/lite0_rules
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sclft.bench.runner import run_rules
from sclft.bench.suite import expand_suite, load_suite

out = Path(sys.argv[1] if len(sys.argv) > 1 else "lite0_rules")
suite = load_suite("selection_cpu")
run_rules(suite, expand_suite(suite), out)
evidence = [json.loads(p.read_text()) for p in sorted((out / "selection").glob("*.json"))]
target = Path(__file__).with_name("lite0_profiles.json")
target.write_text(json.dumps([{"cell": e["cell"], "seed": e["seed"], "nc1": e["nc1"],
                               "params_percent": e["params_percent"]} for e in evidence], indent=1))
print(f"wrote {target} ({len(evidence)} cell-seeds)")

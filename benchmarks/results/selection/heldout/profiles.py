"""Apply the ``profile`` rule of selection suites to their cells and seeds without training (one probe each).

The committed Lite0 report (``../selection.json``) and the held-out reports written before 2026-11-29 keep one
(mean) NC1 curve per cell. This recomputes each seed's profile evidence exactly as ``sclft bench`` does (same
subsets, candidates and options; about 2-3 s a probe on a CPU) and writes it as JSON, which
``score_rules.py --profiles`` uses to score every pick per seed against the committed accuracies (each seed's NC1
curve and, since 2026-11-29, its jackknife standard errors ``nc1_se``, which the pick ``one_se`` reads):

    python benchmarks/results/selection/heldout/profiles.py /tmp/lite0_rules lite0_profiles.json selection_cpu
    python benchmarks/results/selection/heldout/profiles.py /tmp/heldout_rules heldout_profiles.json \\
        selection_heldout selection_heldout_100 benchmarks/results/selection/heldout/fashion100/suite.yaml

(a target without a folder is written next to this script).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sclft.bench.runner import run_rules
from sclft.bench.suite import expand_suite, load_suite

if len(sys.argv) < 4:
    sys.exit(__doc__)
out, target, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
target = target if target.parent != Path(".") else Path(__file__).with_name(target.name)
for name in names:
    suite = load_suite(name)
    run_rules(suite, expand_suite(suite), out / name)
evidence = [json.loads(p.read_text()) for name in names for p in sorted((out / name / "selection").glob("*-profile-*.json"))]
target.write_text(json.dumps([{"cell": e["cell"], "seed": e["seed"], "nc1": e["nc1"], "nc1_se": e["nc1_se"],
                               "params_percent": e["params_percent"]} for e in evidence], indent=1) + "\n")
print(f"wrote {target} ({len(evidence)} cell-seeds)")

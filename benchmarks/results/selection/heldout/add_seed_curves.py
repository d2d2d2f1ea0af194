"""Add each seed's profile evidence (``profiles.py`` output) to a selection report written before the bench kept it.

    python benchmarks/results/selection/heldout/add_seed_curves.py benchmarks/results/selection/selection.json \\
        benchmarks/results/selection/heldout/lite0_profiles.json
    sclft bench --suite selection_cpu --out benchmarks/results/selection \\
        --report benchmarks/results/selection/selection.json      # rescored with this version's rules

Reports written before 2026-11-29 keep one (mean) NC1 curve per cell; ``sclft bench --report selection.json``
rescores a report per seed only where it has ``nc1_profile_seeds`` (and ``nc1_se_profile_seeds`` for ``one_se``).
This fills both in from the recomputed evidence, after checking it against what the report already holds: the mean
of the seeds' curves must equal the report's curve, and curves the report already keeps per seed must be equal.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() <= b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9) for k in a)


if len(sys.argv) < 3:
    sys.exit(__doc__)
report, profiles = Path(sys.argv[1]), [e for p in sys.argv[2:] for e in json.loads(Path(p).read_text())]
cells = json.loads(report.read_text())
for c in cells:
    found = {str(e["seed"]): e for e in profiles if e["cell"] == c["cell"]}
    if sorted(found) != sorted(map(str, c["seeds"])):
        print(f"{c['cell']}: no evidence for every seed, left as it is")
        continue
    mean = {b: sum(found[s]["nc1"][b] for s in found) / len(found) for b in c["blocks"]}
    kept = c.get("nc1_profile_seeds") or {}
    if not _close(mean, c["nc1_profile"]) or any(not _close(kept[s], found[s]["nc1"]) for s in kept):
        sys.exit(f"{c['cell']}: the recomputed curves do not match the report's; nothing written")
    c["nc1_profile_seeds"] = {s: kept.get(s) or found[s]["nc1"] for s in sorted(found)}
    c["nc1_se_profile_seeds"] = {s: found[s]["nc1_se"] for s in sorted(found)}
report.write_text(json.dumps(cells, indent=1) + "\n")
print(f"wrote {report}")

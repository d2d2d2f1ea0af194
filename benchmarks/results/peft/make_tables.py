"""Tables of the peft suite from a bench --out folder: python make_tables.py RUNS_DIR [MEMORY_CSV] > peft_table.md

One row per (cell, method, rank variant): test accuracy mean ± std over the finished seeds, trainable %,
tuned block (SCL-FT), seconds per epoch ((run seconds − block selection seconds) / epochs: includes the
one-off cache pass and the final evaluation) and, if MEMORY_CSV is given, peak RSS of a 1-epoch run.
Writes peft.csv beside this script.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["linear_probe", "scl_ft", "bitfit", "lora", "deep_lora", "full_ft"]


def _variant(run_id: str, strategy: str) -> str:
    """'' for the default options, else 'r=2' / 'r=10,alpha=20' read from the run id."""
    rest = run_id.split(f"-{strategy}-", 1)[1]
    if rest.startswith("alpha-20_r-10"):
        return "r=10,alpha=20"
    if rest.startswith("r-"):
        return "r=" + rest.split("-")[1]
    return ""


def main(runs: Path, memory: Path | None) -> None:
    mem = {}
    if memory and memory.is_file():
        mem = {(r["strategy"], r["variant"]): r for r in csv.DictReader(memory.open())}
    groups: dict[tuple, list[dict]] = {}
    for f in sorted(runs.glob("experiments/*/metrics.json")):
        m = json.loads(f.read_text())
        variant = _variant(f.parent.name, m["strategy"])
        groups.setdefault((m["dataset"], m["train_per_class"], m["strategy"], variant), []).append(m)
    rows = []
    for (data, n, strategy, variant), ms in sorted(groups.items(), key=lambda kv: (
            kv[0][0], -kv[0][1], ORDER.index(kv[0][2]), int(kv[0][3].split(",")[0][2:] or 8))):
        acc = [100 * m["test_accuracy"] for m in ms]
        sel = [m.get("layer_selection", {}).get("seconds", 0.0) if m.get("layer_selection") else 0.0 for m in ms]
        spe = [(m["seconds"] - s) / m["epochs"] for m, s in zip(ms, sel)]
        r = mem.get((strategy, variant), {})
        rows.append({
            "dataset": data, "train_per_class": n, "strategy": strategy, "variant": variant or "default",
            "seeds": ",".join(str(m["seed"]) for m in sorted(ms, key=lambda m: m["seed"])),
            "accuracy_mean": round(statistics.mean(acc), 2),
            "accuracy_std": round(statistics.stdev(acc), 2) if len(acc) > 1 else "",
            "trainable_percent": round(ms[0]["trainable_percent"], 2),
            "layers": " ".join(sorted({m["layer"] for m in ms if m.get("layer")})),
            "seconds_per_epoch": round(statistics.mean(spe), 2),
            "selection_seconds": round(statistics.mean(sel), 1),
            "peak_rss_mib": r.get("peak_rss_mib", ""),
        })
    with (HERE / "peft.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print("| data | n/class | method | options | seeds | test acc (%) | trainable % | block | s/epoch | "
          "selection s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = f"{r['accuracy_mean']:.2f}" + (f" ± {r['accuracy_std']:.2f}" if r["accuracy_std"] != "" else "")
        print(f"| {r['dataset']} | {r['train_per_class']} | {r['strategy']} | {r['variant']} | {r['seeds']} | {acc} | "
              f"{r['trainable_percent']:.2f} | {r['layers'] or '–'} | {r['seconds_per_epoch']} | "
              f"{r['selection_seconds'] or '–'} | {r['peak_rss_mib'] or '–'} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)

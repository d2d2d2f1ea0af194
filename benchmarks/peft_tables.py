"""Tables of the peft suite from bench folders:
    python benchmarks/peft_tables.py [--memory MEMORY_CSV] [--csv PEFT_CSV] LABEL=DIR [LABEL=DIR ...] > peft_table.md

DIR is a bench --out folder, or a folder of shard folders (DIR/shard_*; a committed ``runs.tar.gz`` unpacks into
one: ``tar -xzf runs.tar.gz -C DIR``); LABEL names the machine it ran on. A run (cell, method, rank variant, seed)
found under several labels counts once, from the first.
One row per (cell, method, rank variant): test accuracy mean ± std over the finished seeds, where each seed ran,
trainable %, tuned block (SCL-FT), seconds per epoch of the first label's runs ((run seconds − block selection
seconds) / epochs: includes the one-off cache pass and the final evaluation) and, with --memory, peak RSS of a
1-epoch run. Writes the rows as CSV to ``--csv`` (default ``benchmarks/results/peft/peft.csv``).
"""

import csv
import statistics
import sys
from pathlib import Path

from sclft.run_folder import is_finished, read_run

DEFAULT_CSV = Path(__file__).resolve().parent / "results" / "peft" / "peft.csv"
ORDER = ["linear_probe", "scl_ft", "bitfit", "lora", "deep_lora", "full_ft"]


def _variant(run_id: str, strategy: str) -> str:
    """'' for the default options, else 'r=2' / 'r=10,alpha=20' read from the run id."""
    rest = run_id.split(f"-{strategy}-", 1)[1]
    if rest.startswith("alpha-20_r-10"):
        return "r=10,alpha=20"
    if rest.startswith("r-"):
        return "r=" + rest.split("-")[1]
    return ""


def _runs(folder: Path) -> list[Path]:
    """The finished run folders under ``folder`` (and its shard folders)."""
    return sorted(p for p in [*folder.glob("experiments/*"), *folder.glob("shard_*/experiments/*")] if is_finished(p))


def main(sources: list[tuple[str, Path]], memory: Path | None, csv_path: Path = DEFAULT_CSV) -> None:
    mem = {}
    if memory and memory.is_file():
        mem = {(r["strategy"], r["variant"]): r for r in csv.DictReader(memory.open())}
    groups: dict[tuple, list[dict]] = {}
    seen = set()
    for label, folder in sources:
        for f in _runs(folder):
            m = read_run(f).metrics  # checked against the run's manifest
            if m["strategy"] not in ORDER:  # a shared folder may hold other suites' runs
                continue
            variant = _variant(f.name, m["strategy"])
            key = (m["dataset"], m["train_per_class"], m["strategy"], variant)
            if (key, m["seed"]) not in seen:
                seen.add((key, m["seed"]))
                groups.setdefault(key, []).append({**m, "ran_on": label})
    rows = []
    for (data, n, strategy, variant), ms in sorted(groups.items(), key=lambda kv: (
            kv[0][0], -kv[0][1], ORDER.index(kv[0][2]), int(kv[0][3].split(",")[0][2:] or 8))):
        ms = sorted(ms, key=lambda m: m["seed"])
        acc = [100 * m["test_accuracy"] for m in ms]
        first = [m for m in ms if m["ran_on"] == sources[0][0]] or ms
        sel = [m.get("layer_selection", {}).get("seconds", 0.0) if m.get("layer_selection") else 0.0 for m in first]
        spe = [(m["seconds"] - s) / m["epochs"] for m, s in zip(first, sel)]
        labels = list(dict.fromkeys(m["ran_on"] for m in ms))
        ran_on = labels[0] if len(labels) == 1 else "; ".join(
            f"{lab}: " + ",".join(str(m["seed"]) for m in ms if m["ran_on"] == lab) for lab in labels)
        r = mem.get((strategy, variant), {})
        rows.append({
            "dataset": data, "train_per_class": n, "strategy": strategy, "variant": variant or "default",
            "seeds": ",".join(str(m["seed"]) for m in ms), "ran_on": ran_on,
            "accuracy_mean": round(statistics.mean(acc), 2),
            "accuracy_std": round(statistics.stdev(acc), 2) if len(acc) > 1 else "",
            "trainable_percent": round(ms[0]["trainable_percent"], 2),
            "layers": " ".join(sorted({m["layer"] for m in ms if m.get("layer")})),
            "seconds_per_epoch": round(statistics.mean(spe), 2),
            "selection_seconds": round(statistics.mean(sel), 1),  # of the first label's runs
            "peak_rss_mib": r.get("peak_rss_mib", ""),
        })
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print("| data | n/class | method | options | seeds | ran on | test acc (%) | trainable % | block | s/epoch | "
          "selection s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = f"{r['accuracy_mean']:.2f}" + (f" ± {r['accuracy_std']:.2f}" if r["accuracy_std"] != "" else "")
        print(f"| {r['dataset']} | {r['train_per_class']} | {r['strategy']} | {r['variant']} | {r['seeds']} | "
              f"{r['ran_on']} | {acc} | "
              f"{r['trainable_percent']:.2f} | {r['layers'] or '–'} | {r['seconds_per_epoch']} | "
              f"{r['selection_seconds'] or '–'} | {r['peak_rss_mib'] or '–'} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    mem_path, csv_out = None, DEFAULT_CSV
    while args[:1] in (["--memory"], ["--csv"]) and len(args) > 1:
        if args[0] == "--memory":
            mem_path = Path(args[1])
        else:
            csv_out = Path(args[1])
        args = args[2:]
    if not args or any("=" not in a for a in args):
        sys.exit("usage: peft_tables.py [--memory MEMORY_CSV] [--csv PEFT_CSV] LABEL=DIR [LABEL=DIR ...]")
    main([(a.split("=", 1)[0], Path(a.split("=", 1)[1])) for a in args], mem_path, csv_out)

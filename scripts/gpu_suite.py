"""GPU measurement of the bench (issue 24): calibration, packed Ray suites, the paper suite's cost from timed runs.

Steps, in order (each one's result goes to ``OUT/summary.json`` as soon as it is done):

* ``calibrate``    — ``sclft bench --suite paper --calibrate --dry-run``: images/s per (backbone, strategy cost
  class, image size, precision) on this GPU, and the paper suite's estimate from them;
* ``packed_selection``, ``packed_peft`` — ``sclft bench --suite S --launcher ray --gpus-per-run 0.1
  --deadline D`` (real EfficientNet-Lite0 weights and data), with ``nvidia-smi --query-gpu=utilization.gpu,
  memory.used --format=csv -l 1`` sampled meanwhile: wall time, finished runs, mean utilisation, peak memory;
* ``paper_timing`` — stand-in JPEG folders with the paper datasets' split sizes, classes and typical image sizes
  (``scripts/standin_data.py``), random weights of the same architectures; for every run class of the paper
  suite (backbone × dataset × strategy cost class) two timed runs at the suite's settings (1 and 3 epochs on
  at most ``--subset`` training images, test once at the end): per-epoch training img/s (decode included) and
  the one-off part (caching pass, layer rule, evaluation); then every paper run's seconds from these, and the
  suite's GPU-hours (one run at a time). Classes not timed within ``--timing-seconds`` use the calibrated rates
  alone and are marked so. Timing only: accuracies on stand-ins mean nothing and are not written.

``--dry-run`` does every step on the CPU with tiny settings (the test suite runs it; no nvidia-smi there).
Writes ``OUT/summary.json`` and ``OUT/README.md`` (default ``benchmarks/results/gpu_<card>/``; work files in
``--work``, default a temporary folder, never under OUT).

    bash scripts/gpu_suite.sh [--dry-run] [--out DIR] [--work DIR] [--fashion-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import standin_data  # noqa: E402

GOAL_GPU_HOURS, GOAL_UTILISATION = 2.0, 80.0
DRY_SUITE = {  # --dry-run: the packed steps run this instead of selection / peft
    "name": "dry", "images_per_second": 150, "cost_unit": "CPU", "backbones": ["efficientnet_lite0"],
    "datasets": [{"name": "digits", "test_per_class": 2, "num_classes": 10, "train_size": 1347}],
    "defaults": {"image_size": 16, "epochs": 1, "batch_size": 16, "layer": "auto", "layer_rule": "profile",
                 "cache": "memory", "progress": False, "extra": {"selection": {"profile_per_class": 2}}},
    "groups": {"table": {"strategies": ["linear_probe", "scl_ft"], "seeds": [0], "train_per_class": [2]}},
}
DRY_PAPER = {"backbones": ["resnet50"], "datasets": ["dtd"], "image_size": 32, "batch_size": 16}


def sclft_cmd() -> list[str]:
    exe = shutil.which("sclft")
    return [exe] if exe else [sys.executable, "-m", "sclft.cli"]


class Suite:
    """The script's state: output and work folders, the log, the summary written after every step."""

    def __init__(self, out: Path, work: Path, dry_run: bool):
        self.out, self.work, self.dry_run = out, work, dry_run
        self.log = (out / "gpu_suite.log").open("w")
        self.summary: dict = {"dry_run": dry_run, "steps": {}}

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text.replace(str(self.work), "$WORK") + "\n")
        self.log.flush()

    def save(self, step: str, result: dict) -> None:
        self.summary["steps"][step] = result
        text = json.dumps(self.summary, indent=2, default=str).replace(str(self.work), "$WORK")
        (self.out / "summary.json").write_text(text + "\n")

    def sclft(self, *args: str, timeout: float | None = None) -> tuple[int, float, str]:
        cmd = [*sclft_cmd(), *args]
        self.say(f"$ sclft {' '.join(args)}")
        tic = time.time()
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = f"{exc.stdout or ''}{exc.stderr or ''}\n(timed out)", 124
        self.say(output.strip()[-4000:])
        return code, time.time() - tic, output


class GpuSampler:
    """``nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 1`` into a file while a step runs."""

    def __init__(self, path: Path):
        self.path, self.proc = path, None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.file = self.path.open("w")
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-l", "1"], stdout=self.file)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.file.close()

    def stats(self) -> dict:
        if self.proc is None:
            return {"sampled": False, "why": "no nvidia-smi on this machine"}
        rows = [line.split(",") for line in self.path.read_text().splitlines() if line.strip()]
        util = [float(r[0]) for r in rows if len(r) == 2]
        memory = [float(r[1]) for r in rows if len(r) == 2]
        return {"sampled": True, "samples": len(util), "mean_utilisation_percent": sum(util) / max(1, len(util)),
                "peak_memory_mib": max(memory, default=0.0)}


def calibrate(s: Suite) -> dict:
    cache = s.work / "cache"
    suite = ["--suite", str(s.work / "paper_dry.yaml")] if s.dry_run else ["--suite", "paper"]
    code, seconds, output = s.sclft("bench", *suite, "--calibrate", "--dry-run", "--cache-dir", str(cache))
    total = re.search(r"estimated ([0-9.]+) (\w+)-hours still to run \((\d+) estimates measured", output)
    records = json.loads((cache / "calibration.json").read_text())["records"] if code == 0 else []
    return {"returncode": code, "seconds": round(seconds, 1), "records": records,
            "paper_hours_from_calibration": float(total.group(1)) if total else None,
            "measured_estimates": int(total.group(3)) if total else None}


def packed(s: Suite, name: str, gpus_per_run: float, deadline: float, fashion_dir: str | None) -> dict:
    path = s.work / f"{name}.yaml"
    if s.dry_run:
        path.write_text(yaml.safe_dump({**DRY_SUITE, "name": name}))
    else:
        from sclft.bench import find_suite

        raw = yaml.safe_load(find_suite(name).read_text())
        for d in raw["datasets"]:
            if fashion_dir and isinstance(d, dict) and d["name"] == "fashion_mnist":
                d["data_dir"] = fashion_dir
        path.write_text(yaml.safe_dump(raw))
    out = s.work / "packed" / name
    with GpuSampler(s.work / f"smi_{name}.csv") as sampler:
        code, wall, _ = s.sclft("bench", "--suite", str(path), "--out", str(out), "--launcher", "ray",
                                "--gpus-per-run", str(gpus_per_run), "--deadline", str(deadline))
    session = json.loads((out / "bench.json").read_text())["sessions"][-1] if (out / "bench.json").is_file() else {}
    tasks = session.get("tasks", [])
    ok = bool(session) and not session.get("failed")  # exit 1 at the deadline is the plan, not a failure
    return {"ok": ok, "returncode": code, "wall_seconds": round(wall, 1), "gpus_per_run": gpus_per_run,
            "deadline": deadline, "runs": session.get("runs"), "trained": session.get("trained"),
            "failed": len(session.get("failed", [])), "stopped": session.get("stopped"), "tasks": len(tasks),
            "task_seconds": round(sum(t["end"] - t["start"] for t in tasks), 1), **sampler.stats()}


def _classes(suite, dry_run: bool):
    """Run classes of the paper suite → (a representative full-size run, every run of the class)."""
    from sclft.bench import expand_suite
    from sclft.bench.calibration import cost_class

    classes: dict[tuple, list] = {}
    for run in expand_suite(suite):
        if dry_run and (run.backbone not in DRY_PAPER["backbones"] or run.dataset not in DRY_PAPER["datasets"]):
            continue
        classes.setdefault((run.backbone, run.dataset, cost_class(run)[0]), []).append(run)
    rep = {k: min(runs, key=lambda r: (r.train_per_class is not None, bool(r.variant), r.seed)) for k, runs in
           classes.items()}
    return {k: (rep[k], runs) for k, runs in classes.items()}


def _timed_run(run, data: str, epochs: int, per_class: int | None, out: Path) -> dict:
    """One run of the class at the suite's settings on the stand-in data (random weights), in this process."""
    from sclft.training import TrainConfig, train

    config = {**run.config, "data": data, "pretrained": False, "epochs": epochs, "eval_every": 0,
              "train_per_class": per_class, "progress": False, "out": str(out), "overwrite": True}
    config.pop("data_dir", None)
    return train(TrainConfig.from_dict(config))


def paper_timing(s: Suite, subset: int, budget: float) -> dict:
    from sclft.bench import load_suite
    from sclft.bench.calibration import calibration_path, cost_class, device_name, load_calibration, run_key
    from sclft.bench.cost import estimate_seconds, run_sizes, trained_share

    suite = load_suite(s.work / "paper_dry.yaml" if s.dry_run else "paper")
    classes = _classes(suite, s.dry_run)
    scale, cap = (0.02, DRY_PAPER["image_size"]) if s.dry_run else (1.0, None)
    names = sorted({k[1] for k in classes})
    tic = time.time()
    made = standin_data.generate(s.work / "standin", names, scale=scale, max_size=cap)
    generated = time.time() - tic
    calibration = load_calibration(s.work / "cache")
    device = device_name()
    rows, hours, left = [], 0.0, budget
    order = sorted(classes, key=lambda k: -len(classes[k][1]))  # the classes with most runs first
    for key in order:
        rep, runs = classes[key]
        klass = key[2]
        info = made[rep.dataset]
        k = info["classes"]
        per_class = max(2, min(info["train"], subset) // k)  # NC1 needs two images of a class
        n_sub = per_class * k
        row = {"backbone": key[0], "dataset": key[1], "cost_class": klass, "strategy": rep.strategy,
               "runs": len(runs), "timed": False}
        if left > 0 and rep.config.get("epochs", 10) > 0:
            t0 = time.time()
            data = f"imagefolder:{s.work / 'standin' / info['path']}"
            one = _timed_run(rep, data, 1, per_class, s.work / "timing" / "_".join(key) / "e1")
            three = _timed_run(rep, data, 3, per_class, s.work / "timing" / "_".join(key) / "e3")
            slope = max(1e-9, (three["seconds"] - one["seconds"]) / 2)
            row.update({"timed": True, "train_images": n_sub, "test_images": info["test"],
                        "train_images_per_second": n_sub / slope, "once_seconds": max(0.0, one["seconds"] - slope),
                        "layer": three.get("layer")})
            left -= time.time() - t0
        record = calibration.get(run_key(rep, device))
        if record is None and not row["timed"]:
            row["basis"] = "none (not timed, not calibrated)"
            rows.append(row)
            continue
        forward = record["forward_images_per_second"] if record else None
        total = 0.0
        for run in runs:  # each run of the class from the class's figures, at the suite's sizes
            n_train, n_test, epochs, evals = run_sizes(run, suite)
            _, strategy = cost_class(run)
            tail, cached = trained_share(run, strategy), klass != "none"
            share = (trained_share(rep, strategy) / tail) if klass == "prefix" and tail else 1.0
            if row["timed"]:
                rate = row["train_images_per_second"] * share
                extra = 0.0
                if forward:  # more images to cache, and evaluations beyond the one timed
                    extra = (max(0, n_train - n_sub) / forward if cached else 0.0) + \
                        max(0, evals - 1) * n_test * (tail if cached else 1.0) / forward
                total += row["once_seconds"] + epochs * n_train / rate + extra
            else:
                total += estimate_seconds(run, suite, calibration, device)[0]
        row.update({"basis": "timed" if row["timed"] else "calibrated", "seconds_per_run": total / len(runs),
                    "gpu_hours": total / 3600})
        hours += total / 3600
        rows.append(row)
        s.say(f"{'/'.join(key)}: {row['basis']}, {row['seconds_per_run']:.1f} s/run × {len(runs)}"
              + (f", {row['train_images_per_second']:,.0f} img/s" if row["timed"] else ""))
    return {"device": device, "generated_seconds": round(generated, 1), "standin": made,
            "calibration": str(calibration_path(s.work / "cache")), "classes": rows, "paper_gpu_hours": hours,
            "runs": sum(len(r) for _, r in classes.values()), "timed_classes": sum(r["timed"] for r in rows),
            "goal_gpu_hours": GOAL_GPU_HOURS, "note": "selection-rule applications (profile/trial) not included"}


def readme(s: Suite, card: str) -> str:
    steps = s.summary["steps"]
    lines = [f"# GPU measurement of the bench on {card}", "",
             "Written by `bash scripts/gpu_suite.sh` (issue 24); every number below is from `summary.json`.", ""]
    if "paper_timing" in steps:
        t = steps["paper_timing"]
        lines += [f"Paper suite: {t['runs']} runs, **{t['paper_gpu_hours']:.2f} GPU-hours** one run at a time from "
                  f"measured rates ({t['timed_classes']} of {len(t['classes'])} run classes timed on stand-in data; "
                  f"goal ≤ {GOAL_GPU_HOURS:g}).", "",
                  "| backbone | dataset | cost class | runs | basis | train img/s | once (s) | s/run | GPU-h |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in t["classes"]:
            lines.append(f"| {r['backbone']} | {r['dataset']} | {r['cost_class']} | {r['runs']} | {r['basis']} | "
                         f"{r.get('train_images_per_second', float('nan')):,.0f} | {r.get('once_seconds', 0):.1f} | "
                         f"{r.get('seconds_per_run', float('nan')):.1f} | {r.get('gpu_hours', 0):.3f} |")
    for name in ("packed_selection", "packed_peft"):
        if name in steps:
            p = steps[name]
            util = f"{p['mean_utilisation_percent']:.0f} %" if p.get("sampled") else "not sampled"
            lines += ["", f"{name}: {p['trained']} runs trained in {p['wall_seconds']} s wall "
                          f"(--gpus-per-run {p['gpus_per_run']}, deadline {p['deadline']} s), mean GPU utilisation "
                          f"{util} (goal ≥ {GOAL_UTILISATION:g} %)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny settings (tests)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results/gpu_<card>)")
    p.add_argument("--work", default=None, help="work folder (runs, caches, stand-in data; default a temporary one)")
    p.add_argument("--fashion-dir", default=None, help="Fashion-MNIST IDX folder for the selection / peft suites")
    p.add_argument("--gpus-per-run", type=float, default=0.1)
    p.add_argument("--packed-deadline", type=float, default=180.0, help="seconds per packed suite (default 180)")
    p.add_argument("--subset", type=int, default=2000, help="training images of a timing run (default 2000)")
    p.add_argument("--timing-seconds", type=float, default=300.0, help="time budget of the timing runs")
    args = p.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device; use --dry-run on a CPU", file=sys.stderr)
        return 2
    card = "cpu" if args.dry_run else torch.cuda.get_device_name(0)
    slug = re.sub(r"[^a-z0-9]+", "_", card.lower().replace("nvidia", "")).strip("_").split("_")[0]
    out = Path(args.out or REPO / "benchmarks" / "results" / f"gpu_{slug}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_suite_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    s = Suite(out, work, args.dry_run)
    s.summary.update({"card": card, "torch": torch.__version__, "command": "bash scripts/gpu_suite.sh "
                      + " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("/"))})
    if args.dry_run:  # the paper suite at CPU size: one backbone and data set, small images, fp32
        from sclft.bench import find_suite

        raw = yaml.safe_load(find_suite("paper").read_text())
        raw["defaults"].update({"image_size": DRY_PAPER["image_size"], "batch_size": DRY_PAPER["batch_size"],
                                "precision": "no", "num_workers": 0, "epochs": 2})
        keep = {"backbones": DRY_PAPER["backbones"], "datasets": DRY_PAPER["datasets"]}
        for field, names in keep.items():
            raw[field] = [e for e in raw[field] if (e if isinstance(e, str) else e["name"]) in names]
        for name, group in list(raw["groups"].items()):
            for field, names in keep.items():
                if field in group:
                    group[field] = [n for n in group[field] if n in names]
            if any(field in group and not group[field] for field in keep):
                del raw["groups"][name]
        raw["name"] = "paper_dry"
        (work / "paper_dry.yaml").write_text(yaml.safe_dump(raw))
    s.save("calibrate", calibrate(s))
    deadline = 60.0 if args.dry_run else args.packed_deadline
    gpus = 0.0 if args.dry_run else args.gpus_per_run
    for name in ("selection", "peft"):
        s.save(f"packed_{name}", packed(s, name, gpus, deadline, args.fashion_dir))
    s.save("paper_timing", paper_timing(s, 40 if args.dry_run else args.subset,
                                        120.0 if args.dry_run else args.timing_seconds))
    (out / "README.md").write_text(readme(s, card))
    failed = [k for k, v in s.summary["steps"].items() if not v.get("ok", v.get("returncode", 0) == 0)]
    s.summary.update({"failed": failed, "ok": not failed})
    s.save("paper_timing", s.summary["steps"]["paper_timing"])
    s.say(f"gpu_suite: {'ok' if not failed else 'failed: ' + ', '.join(failed)}")
    print(f"results in {out}")  # not in the log: the results folder holds no machine paths
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

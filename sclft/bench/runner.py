"""Running a suite: one training run per grid point (skipped when finished), probes and rule picks."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ..io import atomic_write_json
from .suite import RUNS_SUBDIR, Run, _selection_cells, expand_suite, selection_budget, shard


FAILURE_FILE = "error.log"  # a failed run's traceback, in its run folder (the run is retried next time)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def probe_run(run_dir: Path) -> Path:
    """Layer-wise NC1 of a trained run on its training data → ``run_dir/nc1_layers.csv``."""
    from ..data import TransformedDataset, build_transforms, load_dataset
    from ..probe import probe
    from ..save import load

    cfg = json.loads((run_dir / "train_config.json").read_text())
    model = load(run_dir)
    splits = load_dataset(cfg["data"], cfg.get("data_dir"), train_per_class=cfg.get("train_per_class"),
                          val_fraction=cfg.get("val_fraction", 0.0), seed=cfg["seed"])
    _, eval_tf = build_transforms(model.backbone.data_config, cfg.get("image_size"))
    result = probe(model, TransformedDataset(splits.train, eval_tf), batch_size=max(cfg.get("batch_size", 64), 64),
                   device=_device(), progress=False, num_classes=splits.num_classes)
    return result.to_csv(run_dir / "nc1_layers.csv")


def _probe_runs(runs: list[Run]) -> set[str]:
    """Runs whose layer-wise NC1 is plotted: the table group's first seed and first train size."""
    table = [r for r in runs if "table" in r.groups and not r.variant]
    if not table:
        return set()
    seed, tpc = min(r.seed for r in table), table[0].train_per_class
    return {r.id for r in table if r.seed == seed and r.train_per_class == tpc}


def _rule_tasks(suite: dict[str, Any], runs: list[Run]) -> list[tuple[str, int, str]]:
    """(cell, seed, rule) for every rule of the selection group, in a fixed order (sharded like runs)."""
    rules = suite.get("groups", {}).get("selection", {}).get("rules", [])
    return [(key, seed, rule) for key, cell in _selection_cells(suite, runs).items()
            for seed in sorted({r.seed for r in cell}) for rule in rules]


def _selection_file(key: str, seed: int, rule: str) -> str:
    """Path of one rule's evidence, relative to the bench folder."""
    safe = hashlib.sha1(f"{key}|s{seed}".encode()).hexdigest()[:10]
    return f"selection/{key.split('|')[0]}-{key.split('|')[1]}-s{seed}-{rule}-{safe}.json"


def _roots(out: Path | list[Path]) -> list[Path]:
    return [Path(p) for p in out] if isinstance(out, (list, tuple)) else [Path(out)]


def _find(out: Path | list[Path], relative: str) -> Path | None:
    """``relative`` under the first bench folder that has it (``--report`` merges several folders)."""
    return next((root / relative for root in _roots(out) if (root / relative).exists()), None)




def run_rules(suite: dict[str, Any], runs: list[Run], out: Path, say: Callable[[str], None] = print,
              only: str | None = None) -> None:
    """Apply every rule of the selection group to each sweep cell and seed (cached in ``out/selection``)."""
    from ..backbones import create_backbone
    from ..config import TrainConfig
    from ..data import load_dataset
    from ..selection import select_layer

    group = suite.get("groups", {}).get("selection", {})
    cells = _selection_cells(suite, runs)
    budget = selection_budget(suite, group)
    for key, seed, rule in shard(_rule_tasks(suite, runs), only):
        path = out / _selection_file(key, seed, rule)
        if path.is_file():
            continue
        cell = [r for r in cells[key] if r.seed == seed]
        config = {**cell[0].config, "layer": "auto", "layer_rule": rule,
                  "max_params": budget if budget is not None else 100.0}
        extra = dict(config.get("extra") or {})
        extra["selection"] = {**extra.get("selection", {}), **group.get("options", {}),
                              "candidates": [r.config["layer"] for r in cell]}
        cfg = TrainConfig.from_dict({**config, "extra": extra})
        splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class,
                              val_fraction=cfg.val_fraction, seed=cfg.seed)
        backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint)
        result = select_layer(backbone, splits, cfg, device=_device())
        atomic_write_json(path, {"cell": key, "seed": seed, **result})
        say(f"selection {key} s{seed} {rule}: {result['layer']} ({result['seconds']:.1f} s)")


def preflight(runs: list[Run]) -> None:
    """Load each dataset and backbone the runs need once, so a missing one fails before any training
    (raises :class:`DatasetUnavailableError` / ``WeightsUnavailableError`` with the fix)."""
    from ..backbones import create_backbone
    from ..data import load_dataset

    for ref, data_dir in dict.fromkeys((r.config["data"], r.config.get("data_dir")) for r in runs):
        load_dataset(ref, data_dir)
    for name, pretrained, checkpoint in dict.fromkeys(
            (r.config["backbone"], r.config.get("pretrained", True), r.config.get("checkpoint")) for r in runs):
        create_backbone(name, pretrained=pretrained, checkpoint=checkpoint)


def run_suite(suite: dict[str, Any], out: str | Path, say: Callable[[str], None] = print,
              shard_spec: str | None = None) -> dict[str, Any]:
    """Train every missing run (of shard ``I/N`` when given), apply the selection rules, then build the
    reports (of what this folder holds); returns a summary."""
    from ..train import METRICS_FILE, TrainConfig, train

    out = Path(out)
    suite_runs = expand_suite(suite)
    runs = shard(suite_runs, shard_spec)
    preflight([r for r in runs if not (out / RUNS_SUBDIR / r.id / METRICS_FILE).is_file()])
    probed = _probe_runs(runs)
    done = trained = 0
    failed: list[str] = []
    tic = time.time()
    for i, run in enumerate(runs, 1):
        run_dir = out / RUNS_SUBDIR / run.id
        if (run_dir / METRICS_FILE).is_file():
            done += 1
        else:
            say(f"[{i}/{len(runs)}] {run.id}")
            cache_dir = run.config.get("cache_dir") or str(out / "cache")
            # this run's own folder without metrics.json: an interrupted run continues, other leftovers go
            resume = (run_dir / "checkpoint" / "latest.json").is_file()
            try:
                metrics = train(TrainConfig.from_dict({**run.config, "out": str(run_dir), "cache_dir": cache_dir,
                                                       "resume": resume, "overwrite": not resume}))
            except Exception as exc:  # noqa: BLE001 — one broken run must not cost the rest of the suite (or of a shard)
                failed.append(run.id)
                say(f"  FAILED ({type(exc).__name__}: {exc}); traceback in {run_dir / FAILURE_FILE}")
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / FAILURE_FILE).write_text(traceback.format_exc())
                continue
            trained += 1
            (run_dir / FAILURE_FILE).unlink(missing_ok=True)  # an earlier attempt's
            say(f"  test accuracy {metrics['test_accuracy']:.4f}, NC1 {metrics['nc1_train']:.4g}, "
                f"{metrics['seconds']:.0f} s")
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)  # resume state; the final model stays
        if run.id in probed and not (run_dir / "nc1_layers.csv").is_file():
            probe_run(run_dir)
    run_rules(suite, suite_runs, out, say, only=shard_spec)
    summary = {"suite": suite["name"], "runs": len(runs), "skipped": done, "trained": trained, "failed": failed,
               "seconds": time.time() - tic, **({"shard": shard_spec} if shard_spec else {})}
    history = json.loads((out / "bench.json").read_text()).get("sessions", []) if (out / "bench.json").is_file() else []
    atomic_write_json(out / "bench.json", {**environment(), "suite": suite["name"], "command": " ".join(sys.argv),
                                           "sessions": [*history, summary]})
    from .reports import build_reports  # reports read runner's files

    build_reports(suite, out)
    return summary


def environment() -> dict[str, Any]:
    import torch

    from ..versions import library_versions

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
            "torch": torch.__version__, "libraries": library_versions(), "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}

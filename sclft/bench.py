"""Benchmark suites (``sclft bench --suite NAME --out DIR``): YAML grids of training runs → paper tables and plots.

A suite (``configs/bench/NAME.yaml``) names ``backbones``, ``datasets``, run ``defaults`` (TrainConfig
fields) and ``groups``; each group is a grid (backbones × datasets × strategies × seeds × train sizes ×
variants × layers) whose runs feed one report:

* ``table``     → ``table.md`` / ``table.csv`` (paper layout) and ``nc1_layers.png`` (first seed);
* ``data_size`` → ``data_size.png`` / ``data_size.md``;
* ``selection`` → ``selection.md``: an exhaustive block sweep and the picks of each layer rule;
* ``ablation``  → ``ablation.md`` (e.g. SCL-FT ``fuse`` / ``match`` variants).

Every run trains with :func:`sclft.train.train` into ``DIR/experiments/<run-id>``; the id is readable and ends
in a hash of the run's full config, so a run whose ``metrics.json`` exists is skipped (resume) and a
changed config is a new run. See docs/bench.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import yaml

from .data import DatasetUnavailableError  # importing sclft.data also registers test_subset:N:NAME
from .io import atomic_write, atomic_write_json, atomic_write_text
from .strategies import get_strategy_config, option_owners, strategy_rank

__all__ = ["load_suite", "expand_suite", "run_suite", "build_reports", "add_parser", "find_suite"]

RUNS_SUBDIR = "experiments"  # DIR/experiments/<run-id>/: one training run each
SUITE_DIRS = ("configs/bench", "benchmarks")
REPO_ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("table", "data_size", "selection", "ablation")
GRID_KEYS = ("backbones", "datasets", "strategies", "seeds", "train_per_class", "variants", "layers")


# ------------------------------------------------------------------------------------------ suites
@dataclass
class Run:
    """One training run of a suite."""

    id: str
    backbone: str  # labels as written in the suite
    dataset: str
    config: dict[str, Any]  # TrainConfig fields, without ``out``
    variant: str = ""
    groups: set[str] = field(default_factory=set)

    @property
    def strategy(self) -> str:
        return self.config["strategy"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def train_per_class(self) -> int | None:
        return self.config.get("train_per_class")


def find_suite(name: str) -> Path:
    """A YAML path, or a suite name looked up in ``configs/bench/`` and ``benchmarks/`` (cwd, then repo)."""
    if Path(name).suffix in (".yaml", ".yml") and Path(name).is_file():
        return Path(name)
    for root in (Path.cwd(), REPO_ROOT):
        for folder in SUITE_DIRS:
            for ext in (".yaml", ".yml"):
                if (root / folder / f"{name}{ext}").is_file():
                    return root / folder / f"{name}{ext}"
    available = sorted({p.stem for r in (Path.cwd(), REPO_ROOT) for f in SUITE_DIRS for p in (r / f).glob("*.y*ml")})
    raise ValueError(f"unknown bench suite {name!r}; available: {', '.join(available) or 'none'}")


def load_suite(name: str) -> dict[str, Any]:
    path = find_suite(name)
    suite = yaml.safe_load(path.read_text())
    suite.setdefault("name", path.stem)
    unknown = sorted(set(suite.get("groups", {})) - set(GROUPS))
    if unknown:
        raise ValueError(f"{path}: unknown groups {unknown}; valid: {', '.join(GROUPS)}")
    return suite


def _entries(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Backbone / dataset entries: a name, or a mapping with ``name`` and options."""
    return [{"name": it} if isinstance(it, str) else dict(it) for it in items]


def _label(entry: dict[str, Any]) -> str:
    return entry.get("label", entry["name"])


def dataset_ref(entry: dict[str, Any]) -> str:
    """The dataset name passed to ``load_dataset`` (wrapped in ``test_subset:`` when ``test_per_class`` is set)."""
    tpc = entry.get("test_per_class")
    return f"test_subset:{tpc}:{entry['name']}" if tpc else entry["name"]


def _non_default(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``config`` that differ from TrainConfig's defaults (what identifies a run)."""
    from .train import TrainConfig

    full, default = dataclasses.asdict(TrainConfig.from_dict(config)), dataclasses.asdict(TrainConfig())
    options = full.pop("strategy_options")  # flattened: the strategy's options that differ from its defaults
    option_defaults = get_strategy_config(full["strategy"])().options()
    return {**{k: v for k, v in full.items() if v != default[k] and k not in ("out", "cache_dir", "progress")},
            **{k: v for k, v in options.items() if k not in option_defaults or v != option_defaults[k]}}


def _variant_label(variant: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(_non_default(variant).items()))


def _run_id(backbone: str, dataset: str, config: dict[str, Any], variant: str) -> str:
    digest = hashlib.sha1(json.dumps(_non_default(config), sort_keys=True, default=str).encode()).hexdigest()[:8]
    parts = [backbone, dataset, config["strategy"]]
    if config.get("layer") not in (None, "auto"):
        parts.append(config["layer"])
    parts += [variant.replace("=", "-").replace(",", "_")] if variant else []
    parts += [f"n{config.get('train_per_class') or 'all'}", f"s{config['seed']}", digest]
    return "-".join(str(p).replace("/", "_").replace(":", "_") for p in parts)


@functools.lru_cache(maxsize=None)
def _meta_backbone(name: str):
    """A backbone built without weights (on the meta device when the family allows): block names and sizes."""
    import torch

    from .backbones import create_backbone

    try:
        with torch.device("meta"):
            return create_backbone(name, pretrained=False)
    except (NotImplementedError, RuntimeError):
        return create_backbone(name, pretrained=False)


def _blocks_of(name: str) -> tuple[str, ...]:
    return tuple(_meta_backbone(name).blocks)


@functools.lru_cache(maxsize=None)
def _num_classes(entry: str) -> int:
    """A dataset entry's (JSON) ``num_classes``, else read from the data (needed for the parameter budget)."""
    d = json.loads(entry)
    if d.get("num_classes"):
        return int(d["num_classes"])
    from .data import load_dataset

    return load_dataset(dataset_ref(d), d.get("data_dir")).num_classes


def selection_budget(suite: dict[str, Any], group: dict[str, Any]) -> float | None:
    """The group's ``max_params`` (percent), else the suite defaults', else TrainConfig's; ``null`` = none."""
    from .train import TrainConfig

    for source in (group, suite.get("defaults", {})):
        if "max_params" in source:
            return source["max_params"]
    return TrainConfig.max_params


def _group_layers(group: dict[str, Any], backbone_name: str, dataset: dict[str, Any] | None = None,
                  budget: float | None = None) -> list[str]:
    """``layers: all`` = the selection candidates (given ``candidates`` or every block but the last) within
    the parameter budget, in network order."""
    from .selection import candidate_blocks

    layers = group.get("layers", ["auto"])
    if layers != "all":
        return list(layers)
    num_classes = _num_classes(json.dumps(dataset or {}, sort_keys=True)) if budget is not None else 10
    return candidate_blocks(_meta_backbone(backbone_name), {"candidates": group.get("candidates")}, budget,
                            num_classes)


def expand_suite(suite: dict[str, Any]) -> list[Run]:
    """All runs of the suite, deduplicated by id (a run shared by several groups trains once)."""
    from .train import TrainConfig

    backbones, datasets = _entries(suite["backbones"]), _entries(suite["datasets"])
    defaults, per_strategy = dict(suite.get("defaults", {})), suite.get("per_strategy", {})
    runs: dict[str, Run] = {}
    for group_name, group in suite.get("groups", {}).items():
        only_b, only_d = group.get("backbones"), group.get("datasets")
        for b, d in itertools.product(backbones, datasets):
            if (only_b and _label(b) not in only_b) or (only_d and _label(d) not in only_d) or \
                    _label(d) not in b.get("datasets", [_label(d)]):
                continue
            extra = b.get("extra_strategies", []) if group_name == "table" else []
            strategies = [*group.get("strategies", []), *extra]
            grid = itertools.product(strategies, group.get("seeds", [0]), group.get("train_per_class", [None]),
                                     group.get("variants", [{}]),
                                     _group_layers(group, b["name"], d, selection_budget(suite, group)))
            for strategy, seed, tpc, variant, layer in grid:
                strategy_cls = get_strategy_config(strategy)
                uses_layer = strategy_cls.uses_layer
                if not uses_layer and (layer != "auto" or set(variant) - set(strategy_cls.option_names())):
                    continue  # block sweeps and block variants concern block strategies; option variants their owners
                if (set(variant) & set(option_owners())) - set(strategy_cls.option_names()):
                    continue  # a variant of another strategy's options
                config = {**defaults, **per_strategy.get(strategy, {}), **b.get("overrides", {}),
                          **d.get("overrides", {}), **group.get("overrides", {}), **variant,
                          "backbone": b["name"], "data": dataset_ref(d), "strategy": strategy,
                          "seed": seed, "train_per_class": tpc, "layer": layer if uses_layer else "auto"}
                if d.get("data_dir"):
                    config["data_dir"] = d["data_dir"]
                TrainConfig.from_dict(config).validate()
                label = _variant_label(variant)
                rid = _run_id(_label(b), _label(d), config, label)
                run = runs.setdefault(rid, Run(rid, _label(b), _label(d), config, label))
                run.groups.add(group_name)
    return list(runs.values())


# ------------------------------------------------------------------------------------------ cost
def estimate_seconds(run: Run, suite: dict[str, Any]) -> float:
    """Rough cost from the suite's dataset sizes and the backbone's images/s (``--dry-run``).

    A swept block's trained tail is taken as the share of blocks from it to the end; evaluation on the
    test split counts once per ``eval_every`` epochs (once for ``eval_every: 0``).
    """
    b = next(e for e in _entries(suite["backbones"]) if _label(e) == run.backbone)
    d = next(e for e in _entries(suite["datasets"]) if _label(e) == run.dataset)
    k = d.get("num_classes", 10)
    n_train = min(d.get("train_size", 10_000), k * (run.train_per_class or 10**9))
    n_test = k * d["test_per_class"] if d.get("test_per_class") else d.get("test_size", 10_000)
    epochs, every = run.config.get("epochs", 10), run.config.get("eval_every", 1)
    strategy = get_strategy_config(run.strategy)
    tail, cached = strategy.cost, strategy.cache_scope != "none"
    layer = run.config.get("layer")
    if 0.0 < tail < 1.0 and layer not in (None, "auto"):
        blocks = _blocks_of(b["name"])
        tail = (len(blocks) - blocks.index(layer)) / len(blocks) if layer in blocks else tail
    evals = max(1, epochs // every) if every else 1
    images = epochs * 3 * tail * n_train + (evals * n_test + n_train) * (tail if cached else 1.0)
    images += (n_train + n_test) if cached else 0
    return images / float(b.get("images_per_second", suite.get("images_per_second", 500)))


# ------------------------------------------------------------------------------------------ running
def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def probe_run(run_dir: Path) -> Path:
    """Layer-wise NC1 of a trained run on its training data → ``run_dir/nc1_layers.csv``."""
    from .data import TransformedDataset, build_transforms, load_dataset
    from .probe import probe
    from .train import load

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


def _selection_cells(suite: dict[str, Any], runs: list[Run]) -> dict[str, list[Run]]:
    """Sweep runs grouped by (backbone, dataset, strategy, train size, variant): one selection problem
    each, over all seeds (accuracies are averaged over seeds; rules are applied per seed)."""
    cells: dict[str, list[Run]] = {}
    for r in runs:
        if "selection" in r.groups and r.config["layer"] != "auto":
            key = f"{r.backbone}|{r.dataset}|{r.strategy}|n{r.train_per_class or 'all'}|{r.variant}"
            cells.setdefault(key, []).append(r)
    return cells


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


def shard(items: list, spec: str | None) -> list:
    """Items ``I-1, I-1+N, …`` of ``items`` for ``spec = "I/N"`` (1 <= I <= N); all of them for ``None``."""
    if not spec:
        return list(items)
    index, sep, count = spec.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise ValueError(f"--shard must be I/N with 1 <= I <= N (e.g. 2/8), got {spec!r}")
    return list(items)[int(index) - 1::int(count)]


def run_rules(suite: dict[str, Any], runs: list[Run], out: Path, say: Callable[[str], None] = print,
              only: str | None = None) -> None:
    """Apply every rule of the selection group to each sweep cell and seed (cached in ``out/selection``)."""
    from .backbones import create_backbone
    from .data import load_dataset
    from .selection import select_layer
    from .train import TrainConfig

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
    from .backbones import create_backbone
    from .data import load_dataset

    for ref, data_dir in dict.fromkeys((r.config["data"], r.config.get("data_dir")) for r in runs):
        load_dataset(ref, data_dir)
    for name, pretrained, checkpoint in dict.fromkeys(
            (r.config["backbone"], r.config.get("pretrained", True), r.config.get("checkpoint")) for r in runs):
        create_backbone(name, pretrained=pretrained, checkpoint=checkpoint)


def run_suite(suite: dict[str, Any], out: str | Path, say: Callable[[str], None] = print,
              shard_spec: str | None = None) -> dict[str, Any]:
    """Train every missing run (of shard ``I/N`` when given), apply the selection rules, then build the
    reports (of what this folder holds); returns a summary."""
    from .train import METRICS_FILE, TrainConfig, train

    out = Path(out)
    suite_runs = expand_suite(suite)
    runs = shard(suite_runs, shard_spec)
    preflight([r for r in runs if not (out / RUNS_SUBDIR / r.id / METRICS_FILE).is_file()])
    probed = _probe_runs(runs)
    done = trained = 0
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
            metrics = train(TrainConfig.from_dict({**run.config, "out": str(run_dir), "cache_dir": cache_dir,
                                                   "resume": resume, "overwrite": not resume}))
            trained += 1
            say(f"  test accuracy {metrics['test_accuracy']:.4f}, NC1 {metrics['nc1_train']:.4g}, "
                f"{metrics['seconds']:.0f} s")
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)  # resume state; the final model stays
        if run.id in probed and not (run_dir / "nc1_layers.csv").is_file():
            probe_run(run_dir)
    run_rules(suite, suite_runs, out, say, only=shard_spec)
    summary = {"suite": suite["name"], "runs": len(runs), "skipped": done, "trained": trained,
               "seconds": time.time() - tic, **({"shard": shard_spec} if shard_spec else {})}
    history = json.loads((out / "bench.json").read_text()).get("sessions", []) if (out / "bench.json").is_file() else []
    atomic_write_json(out / "bench.json", {**environment(), "suite": suite["name"], "command": " ".join(sys.argv),
                                           "sessions": [*history, summary]})
    build_reports(suite, out)
    return summary


def environment() -> dict[str, Any]:
    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


# ------------------------------------------------------------------------------------------ reports
def _metrics(out: Path | list[Path], runs: Iterable[Run]) -> list[tuple[Run, dict[str, Any]]]:
    from .train import METRICS_FILE

    found = []
    for r in runs:
        path = _find(out, f"{RUNS_SUBDIR}/{r.id}/{METRICS_FILE}")
        if path is not None:
            found.append((r, json.loads(path.read_text())))
    return found


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _pm(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, std = _mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _method_order(strategies: Iterable[str]) -> list[str]:
    return sorted(set(strategies), key=lambda s: (strategy_rank(s), s))


def _method_name(strategy: str) -> str:
    return get_strategy_config(strategy).display_name


def _cells(rows: list[tuple[Run, dict]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r.backbone, r.dataset) for r, _ in rows))


def table_rows(suite: dict[str, Any], out: Path, runs: list[Run]) -> list[dict[str, Any]]:
    """Tidy rows of the paper table: one per (backbone, dataset, strategy), aggregated over seeds."""
    rows = _metrics(out, [r for r in runs if "table" in r.groups and not r.variant])
    result = []
    for backbone, dataset in _cells(rows):
        here = [(r, m) for r, m in rows if (r.backbone, r.dataset) == (backbone, dataset)]
        for strategy in _method_order(r.strategy for r, _ in here):
            ms = [m for r, m in here if r.strategy == strategy]
            acc, nc1 = [m["test_accuracy"] for m in ms], [m["nc1_train"] for m in ms]
            result.append({
                "backbone": backbone, "dataset": dataset, "method": _method_name(strategy),
                "strategy": strategy, "seeds": len(ms), "train_per_class": ms[0].get("train_per_class"),
                "accuracy_mean": _mean_std(acc)[0], "accuracy_std": _mean_std(acc)[1],
                "nc1_mean": _mean_std(nc1)[0], "nc1_std": _mean_std(nc1)[1],
                "train_accuracy_mean": _mean_std([m["train_accuracy"] for m in ms])[0],
                "params_percent": ms[0]["trainable_percent"], "trainable_params": ms[0]["trainable_params"],
                "layers": " ".join(sorted({str(m["layer"]) for m in ms if m.get("layer")})),
                "acc": acc, "nc1": nc1,
            })
    return result


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def render_table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(Markdown, CSV) of the paper table: columns backbone/dataset; blocks accuracy, NC1, % params."""
    cols = list(dict.fromkeys((r["backbone"], r["dataset"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in sorted(rows, key=lambda r: strategy_rank(r["strategy"]))))
    index = {(r["backbone"], r["dataset"], r["method"]): r for r in rows}
    blocks = [("Transfer accuracy (%, test)", lambda r: _pm(r["acc"], 100.0)),
              ("NC1 of the penultimate feature (train data)", lambda r: _pm(r["nc1"], 1.0, 3)),
              ("Parameters fine-tuned (%)", lambda r: f"{r['params_percent']:.2f}")]
    header = ["Method", *[f"{b} / {d}" for b, d in cols]]
    parts = ["Mean ± std over seeds; NC1 = tr(Σ_W Σ_B⁺) of the head-input feature on the training data."]
    for title, fmt in blocks:
        body = [[m, *[fmt(index[(b, d, m)]) if (b, d, m) in index else "–" for b, d in cols]] for m in methods]
        parts += [f"\n### {title}\n", _markdown(header, body)]
    picked = [f"{r['backbone']} / {r['dataset']} {r['method']}: {r['layers']}" for r in rows
              if get_strategy_config(r["strategy"]).uses_layer]
    if picked:
        parts += ["\nTuned blocks: " + "; ".join(picked) + "."]
    buf = io.StringIO()
    fields = ["backbone", "dataset", "method", "strategy", "seeds", "train_per_class", "accuracy_mean", "accuracy_std",
              "nc1_mean", "nc1_std", "train_accuracy_mean", "params_percent", "trainable_params", "layers"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return "\n".join(parts) + "\n", buf.getvalue()


def _figure(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)


def plot_nc1_layers(out: Path, runs: list[Run]) -> Path | None:
    """Layer-wise NC1 (log) after each strategy: one panel per backbone × dataset, one line per strategy."""
    csvs = {r.id: _find(out, f"{RUNS_SUBDIR}/{r.id}/nc1_layers.csv") for r in runs if r.id in _probe_runs(runs)}
    probed = [r for r in runs if csvs.get(r.id) is not None]
    cells = list(dict.fromkeys((r.backbone, r.dataset) for r in probed))
    if not cells:
        return None
    plt, fig, axes = _figure(len(cells))
    for ax, (backbone, dataset) in zip(axes, cells):
        names: list[str] = []
        for r in sorted((r for r in probed if (r.backbone, r.dataset) == (backbone, dataset)),
                        key=lambda r: strategy_rank(r.strategy)):
            with open(csvs[r.id]) as fh:
                rows = list(csv.DictReader(fh))
            names = [row["layer"] for row in rows]
            ax.plot(range(len(rows)), [float(row["nc1"]) for row in rows], marker="o", ms=3,
                    label=_method_name(r.strategy))
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("NC1 (train data)")
        ax.set_title(f"{backbone} / {dataset}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path = _roots(out)[0] / "nc1_layers.png"
    _save(plt, fig, path)
    return path


def data_size_rows(out: Path, runs: list[Run]) -> list[dict[str, Any]]:
    rows = _metrics(out, [r for r in runs if "data_size" in r.groups])
    result = []
    for backbone, dataset in _cells(rows):
        here = [(r, m) for r, m in rows if (r.backbone, r.dataset) == (backbone, dataset)]
        for strategy in _method_order(r.strategy for r, _ in here):
            for n in sorted({r.train_per_class for r, _ in here if r.strategy == strategy}):
                ms = [m for r, m in here if r.strategy == strategy and r.train_per_class == n]
                test, train = [m["test_accuracy"] for m in ms], [m["train_accuracy"] for m in ms]
                result.append({"backbone": backbone, "dataset": dataset, "strategy": strategy, "train_per_class": n,
                               "test": test, "gap": [a - b for a, b in zip(train, test)]})
    return result


def plot_data_size(rows: list[dict[str, Any]], path: Path) -> Path | None:
    cells = list(dict.fromkeys((r["backbone"], r["dataset"]) for r in rows))
    if not cells:
        return None
    plt, fig, axes = _figure(len(cells))
    for ax, cell in zip(axes, cells):
        here = [r for r in rows if (r["backbone"], r["dataset"]) == cell]
        for strategy in _method_order(r["strategy"] for r in here):
            pts = [r for r in here if r["strategy"] == strategy]
            stats = [_mean_std(r["test"]) for r in pts]
            ax.errorbar([r["train_per_class"] for r in pts], [100 * m for m, _ in stats],
                        yerr=[100 * s for _, s in stats], marker="o", capsize=3, label=_method_name(strategy))
        ax.set_xscale("log")
        ax.set_xlabel("training examples per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(" / ".join(cell))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save(plt, fig, path)
    return path


def render_data_size(rows: list[dict[str, Any]]) -> str:
    sizes = sorted({r["train_per_class"] for r in rows})
    parts = ["Test accuracy (%) and generalisation gap (train − test accuracy, points) vs training examples "
             "per class."]
    for cell in dict.fromkeys((r["backbone"], r["dataset"]) for r in rows):
        here = {(r["strategy"], r["train_per_class"]): r for r in rows if (r["backbone"], r["dataset"]) == cell}
        strategies = _method_order(s for s, _ in here)
        for title, key in (("test accuracy", "test"), ("train − test gap", "gap")):
            body = [[_method_name(s), *[_pm(here[(s, n)][key], 100.0, 1) if (s, n) in here else "–"
                                                for n in sizes]] for s in strategies]
            parts += [f"\n### {' / '.join(cell)}: {title}\n", _markdown(["Method", *[f"n={n}" for n in sizes]], body)]
    return "\n".join(parts) + "\n"


def _spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = (np.argsort(np.argsort(np.asarray(v))) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _cell_picks(blocks: list[str], best: str, evidence: dict[str, dict], shares: dict[str, float]) -> dict[str, str]:
    """Every rule's pick in one cell and seed: the oracle, the data-free baselines, each profile pick
    function (recomputed from the stored NC1 curve, so new pick functions score old evidence) and trial."""
    from .selection import FIXED_PICKS, PROFILE_PICKS, profile_pick

    picks = {"oracle": best, **{f"fixed:{k}": fn(blocks) for k, fn in FIXED_PICKS.items()}}
    if "profile" in evidence and all(b in evidence["profile"]["nc1"] for b in blocks):
        curve = [(b, evidence["profile"]["nc1"][b]) for b in blocks]
        picks.update({f"profile:{k}": profile_pick(k, curve, shares) for k in PROFILE_PICKS})
    if "trial" in evidence:
        picks["trial"] = evidence["trial"]["layer"]
        acc = evidence["trial"]["heldout_accuracy"]
        picks["trial:heldout_acc"] = max(acc, key=acc.get)
    return picks


def _rule_seconds(name: str, evidence: dict[str, dict], run_seconds: dict[str, float]) -> float:
    rule = name.split(":")[0]
    if rule == "oracle":
        return float(sum(run_seconds.values()))
    return 0.0 if rule == "fixed" else float(evidence.get(rule, {}).get("seconds", float("nan")))


def selection_cells_data(suite: dict[str, Any], out: Path | list[Path], runs: list[Run]) -> list[dict[str, Any]]:
    """Per sweep cell: per-block accuracy over seeds, NC1 evidence, and each rule's picks / regret / cost."""
    rules = suite.get("groups", {}).get("selection", {}).get("rules", [])
    cells = []
    for key, cell in _selection_cells(suite, runs).items():
        found = _metrics(out, cell)
        if not found:
            continue
        blocks = list(dict.fromkeys(r.config["layer"] for r, _ in found))
        seeds = sorted({r.seed for r, _ in found})
        acc = {b: [m["test_accuracy"] for r, m in found if r.config["layer"] == b] for b in blocks}
        mean = {b: float(np.mean(v)) for b, v in acc.items()}
        best = max(blocks, key=mean.get)
        share = {b: next(m["trainable_percent"] for r, m in found if r.config["layer"] == b) for b in blocks}
        run_seconds = {b: float(np.mean([m["seconds"] for r, m in found if r.config["layer"] == b])) for b in blocks}
        nc1_after = {b: float(np.mean([m["nc1_train"] for r, m in found if r.config["layer"] == b])) for b in blocks}
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            evidence = {}
            for rule in rules:
                path = _find(out, _selection_file(key, seed, rule))
                if path is not None:
                    evidence[rule] = json.loads(path.read_text())
            per_seed[seed] = {"evidence": evidence, "picks": _cell_picks(blocks, best, evidence, share)}
        names = list(dict.fromkeys(n for v in per_seed.values() for n in v["picks"]))
        one_run = float(np.mean(list(run_seconds.values())))
        scores = {}
        for name in names:
            chosen = [v["picks"][name] for v in per_seed.values() if name in v["picks"]]
            seconds = [_rule_seconds(name, v["evidence"], run_seconds) for v in per_seed.values() if name in v["picks"]]
            swept = [b for b in chosen if b in mean]
            scores[name] = {
                "picks": chosen,
                "regret": 100 * (mean[best] - float(np.mean([mean[b] for b in swept]))) if swept else None,
                "params_percent": float(np.mean([share[b] for b in swept])) if swept else None,
                "seconds": float(np.mean(seconds)),
                "cost_percent": 100 * float(np.mean(seconds)) / one_run if one_run else float("nan")}
        nc1_profile = {}
        for v in per_seed.values():
            for b, x in v["evidence"].get("profile", {}).get("nc1", {}).items():
                nc1_profile.setdefault(b, []).append(x)
        cells.append({"cell": key, "seeds": seeds, "blocks": blocks, "accuracy": acc, "best": best,
                      "params_percent": share, "run_seconds": run_seconds, "one_run_seconds": one_run,
                      "nc1_after": nc1_after, "nc1_profile": {b: float(np.mean(x)) for b, x in nc1_profile.items()},
                      "rules": scores})
    return cells


def summarize_rules(cells: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rule over the cells: mean / max regret (points), mean % parameters, mean seconds and % of one run."""
    names = list(dict.fromkeys(n for c in cells for n in c["rules"]))
    summary = {}
    for n in names:
        rows = [c["rules"][n] for c in cells if n in c["rules"] and c["rules"][n]["regret"] is not None]
        if rows:
            summary[n] = {"mean_regret": float(np.mean([r["regret"] for r in rows])),
                          "max_regret": float(max(r["regret"] for r in rows)),
                          "mean_percent": float(np.mean([r["params_percent"] for r in rows])),
                          "seconds": float(np.mean([r["seconds"] for r in rows])),
                          "cost_percent": float(np.mean([r["cost_percent"] for r in rows])), "cells": len(rows)}
    return summary


def selection_report(cells: list[dict[str, Any]]) -> str:
    """Markdown: per cell the accuracy of every block (mean ± std over seeds) and each rule's pick,
    regret, parameter share and cost; then the summary over cells."""
    parts = ["Exhaustive sweep of the candidate blocks (SCL-FT unless the cell says otherwise); accuracy = test "
             "accuracy, mean ± std over seeds. regret = best block's mean − the picked block's mean (points; a "
             "rule applied per seed scores the mean over its per-seed picks). `oracle` = the sweep itself, "
             "`fixed:*` = data-free baselines over the candidates, `profile:*` = pick functions of one probe of "
             "the pretrained NC1 curve, `trial` = short fine-tune of every candidate (lowest held-out NC1; "
             "`trial:heldout_acc` its held-out accuracy). cost = rule seconds, and % of one sweep run of the cell."]
    for c in cells:
        picked = {b: [n for n, r in c["rules"].items() if b in r["picks"] and n != "oracle"] for b in c["blocks"]}
        body = [[b, f"{c['params_percent'][b]:.2f}", f"{c['nc1_profile'].get(b, float('nan')):.3g}",
                 _pm(c["accuracy"][b], 100.0), f"{c['nc1_after'][b]:.3g}", f"{c['run_seconds'][b]:.0f}",
                 ", ".join(picked[b]) + (" **best**" if b == c["best"] else "")] for b in c["blocks"]]
        header = ["block", "% params", "pretrained NC1", "test acc (%)", "NC1 after FT (train)", "run (s)",
                  "picked by"]
        parts += [f"\n## {c['cell'].replace('|', ' · ').rstrip(' · ')} (seeds {', '.join(map(str, c['seeds']))})\n",
                  _markdown(header, body), ""]
        rows = [[n, " ".join(dict.fromkeys(r["picks"])), "–" if r["regret"] is None else f"{r['regret']:.2f}",
                 "–" if r["params_percent"] is None else f"{r['params_percent']:.2f}", f"{r['seconds']:.1f}",
                 f"{r['cost_percent']:.1f}"] for n, r in c["rules"].items()]
        parts += [_markdown(["rule", "pick", "regret (points)", "% params", "cost (s)", "cost (% of a run)"], rows)]
        accs = [float(np.mean(c["accuracy"][b])) for b in c["blocks"]]
        corr = [f"NC1 after FT {_spearman([c['nc1_after'][b] for b in c['blocks']], accs):+.2f}"]
        if all(b in c["nc1_profile"] for b in c["blocks"]):
            corr.append(f"pretrained NC1 {_spearman([c['nc1_profile'][b] for b in c['blocks']], accs):+.2f}")
        parts += [f"\nSpearman correlation with mean test accuracy across blocks (negative = lower NC1, higher "
                  f"accuracy): " + ", ".join(corr) + "."]
    summary = summarize_rules(cells)
    if summary:
        body = [[n, f"{v['mean_regret']:.2f}", f"{v['max_regret']:.2f}", f"{v['mean_percent']:.2f}",
                 f"{v['seconds']:.1f}", f"{v['cost_percent']:.1f}", str(v["cells"])] for n, v in summary.items()]
        parts += ["\n## Summary over cells\n", _markdown(["rule", "mean regret", "max regret", "mean % params",
                                                           "cost (s)", "cost (% of a run)", "cells"], body)]
    return "\n".join(parts) + "\n"


def plot_selection(cells: list[dict[str, Any]], path: Path) -> Path | None:
    """Per cell: test accuracy (mean ± std over seeds) and NC1 (pretrained; after fine-tuning) vs block depth."""
    if not cells:
        return None
    plt, fig, axes = _figure(len(cells))
    for ax, c in zip(axes, cells):
        x = range(len(c["blocks"]))
        stats = [_mean_std(c["accuracy"][b]) for b in c["blocks"]]
        ax.errorbar(x, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                    color="C0", label="test accuracy")
        ax.set_ylabel("test accuracy (%)", color="C0")
        ax.set_xticks(list(x), c["blocks"], rotation=70, ha="right", fontsize=7)
        ax.set_title(" · ".join(p for p in c["cell"].split("|") if p), fontsize=9)
        ax.grid(True, alpha=0.3)
        twin = ax.twinx()
        if all(b in c["nc1_profile"] for b in c["blocks"]):
            twin.plot(x, [c["nc1_profile"][b] for b in c["blocks"]], "s--", color="C1", ms=3, label="NC1 pretrained")
        twin.plot(x, [c["nc1_after"][b] for b in c["blocks"]], "^:", color="C2", ms=3, label="NC1 after FT")
        twin.set_yscale("log")
        twin.set_ylabel("NC1 (train data)")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    _save(plt, fig, path)
    return path


def ablation_report(out: Path, runs: list[Run]) -> str:
    rows = _metrics(out, [r for r in runs if "ablation" in r.groups])
    parts = ["SCL-FT variants (mean ± std over seeds)."]
    for backbone, dataset in _cells(rows):
        here = [(r, m) for r, m in rows if (r.backbone, r.dataset) == (backbone, dataset)]
        body = []
        for variant in dict.fromkeys(r.variant for r, _ in here):
            ms = [m for r, m in here if r.variant == variant]
            body.append([f"{ms[0]['strategy']} {variant or '(defaults)'}", str(len(ms)),
                         _pm([m["test_accuracy"] for m in ms], 100.0), _pm([m["nc1_train"] for m in ms], 1.0, 3),
                         f"{ms[0]['trainable_percent']:.2f}", " ".join(sorted({str(m['layer']) for m in ms}))])
        parts += [f"\n### {backbone} / {dataset}\n",
                  _markdown(["variant", "seeds", "test acc (%)", "NC1 (train)", "% params", "blocks"], body)]
    return "\n".join(parts) + "\n"


def build_reports(suite: dict[str, Any], out: str | Path, sources: Iterable[str | Path] = ()) -> list[Path]:
    """(Re)build every report in ``out`` from the finished runs under ``out`` and ``sources`` (other bench
    folders, e.g. the shards of a job array; the first folder holding a run wins); returns the written paths."""
    out = Path(out)
    roots = [out, *(Path(p) for p in sources)]
    runs = expand_suite(suite)
    written: list[Path] = []
    rows = table_rows(suite, roots, runs)
    if rows:
        md, text = render_table(rows)
        written += [atomic_write_text(out / "table.md", f"# {suite['name']} suite\n\n" + md),
                    atomic_write_text(out / "table.csv", text)]
    written += [p for p in [plot_nc1_layers(roots, runs)] if p]
    sizes = data_size_rows(roots, runs)
    if sizes:
        written += [p for p in [plot_data_size(sizes, out / "data_size.png"),
                                atomic_write_text(out / "data_size.md", render_data_size(sizes))] if p]
    cells = selection_cells_data(suite, roots, runs)
    if cells:
        written += [atomic_write_text(out / "selection.md", "# Layer selection\n\n" + selection_report(cells)),
                    atomic_write_json(out / "selection.json", cells),
                    atomic_write_json(out / "summary.json", {"suite": suite["name"], "rules": summarize_rules(cells)})]
        written += [p for p in [plot_selection(cells, out / "selection.png")] if p]
    if any("ablation" in r.groups for r in runs):
        written.append(atomic_write_text(out / "ablation.md", "# Ablation\n\n" + ablation_report(roots, runs)))
    return written


# ------------------------------------------------------------------------------------------ CLI
def dry_run(suite: dict[str, Any], out: Path, say: Callable[[str], None] = print, shard_spec: str | None = None) -> float:
    from .train import METRICS_FILE

    all_runs = expand_suite(suite)
    runs = shard(all_runs, shard_spec)
    total = 0.0
    say(f"{'run':<80} {'groups':<22} {'est. min':>9}")
    for r in runs:
        seconds = estimate_seconds(r, suite)
        done = (out / RUNS_SUBDIR / r.id / METRICS_FILE).is_file()
        total += 0.0 if done else seconds
        say(f"{r.id:<80} {','.join(sorted(r.groups)):<22} {'done' if done else f'{seconds / 60:9.1f}':>9}")
    for key, cell in _selection_cells(suite, runs).items():
        cost = [estimate_seconds(r, suite) for r in cell]
        say(f"selection cell {key.rstrip('|')}: {len(cell)} runs ({len({r.config['layer'] for r in cell})} blocks × "
            f"{len({r.seed for r in cell})} seeds), est. {sum(cost) / 60:.1f} min, one run {np.mean(cost):.0f} s")
    unit = suite.get("cost_unit", "device")
    say(f"{len(runs)} runs{f' (shard {shard_spec} of {len(all_runs)})' if shard_spec else ''}; estimated "
        f"{total / 3600:.2f} {unit}-hours still to run (from images/s in {find_suite(suite['name']).name}; "
        f"selection rules add one probe (profile) or one short fine-tune per candidate block (trial) per cell "
        f"and seed)")
    return total


def add_datasets(suite: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The suite with extra datasets (e.g. ``imagefolder:PATH``) in every group that names none."""
    extra = [{"name": n} for n in names if n not in {_label(e) for e in _entries(suite["datasets"])}]
    return {**suite, "datasets": [*suite["datasets"], *extra]} if extra else suite


def _main(args: argparse.Namespace) -> int:
    from ._hub import WeightsUnavailableError

    suite = add_datasets(load_suite(args.suite), args.dataset or [])
    out = Path(args.out)
    try:
        if args.dry_run:
            dry_run(suite, out, shard_spec=args.shard)
        elif args.report is not None or args.report_only:
            for path in build_reports(suite, out, args.report or []):
                print(path)
        else:
            summary = run_suite(suite, out, shard_spec=args.shard)
            print(f"{summary['runs']} runs ({summary['skipped']} already done, {summary['trained']} trained) "
                  f"in {summary['seconds']:.0f} s; reports in {out}")
    except (DatasetUnavailableError, WeightsUnavailableError) as exc:
        print(f"sclft bench: error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="run a benchmark suite and build its tables and plots",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True, help="suite name (configs/bench/NAME.yaml) or a YAML path")
    parser.add_argument("--out", required=True, help="output directory (experiments/, table.md, plots …)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their estimated cost; run nothing")
    parser.add_argument("--report-only", action="store_true", help="rebuild the reports from finished runs")
    parser.add_argument("--report", nargs="*", metavar="DIR", default=None,
                        help="rebuild the reports in --out from the finished runs in --out and in each DIR "
                             "(e.g. the --out folders of the shards); trains nothing")
    parser.add_argument("--shard", metavar="I/N", default=None,
                        help="run only every N-th run starting at the I-th (1-based; deterministic), and the same "
                             "share of the selection rules: one job of an N-job array")
    parser.add_argument("--dataset", action="append", metavar="NAME",
                        help="add a dataset (e.g. imagefolder:PATH) to the suite; repeatable")
    parser.set_defaults(func=_main)
    return parser

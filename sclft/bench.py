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

from .data import DatasetSplits, DatasetUnavailableError, LabelSubset, register_dataset, resolve, targets_of
from .data.subsets import few_shot_indices
from .io import atomic_write, atomic_write_json, atomic_write_text
from .strategies import get_strategy_config, option_owners, strategy_rank

__all__ = ["load_suite", "expand_suite", "run_suite", "build_reports", "add_parser", "find_suite"]

RUNS_SUBDIR = "experiments"  # DIR/experiments/<run-id>/: one training run each
SUITE_DIRS = ("configs/bench", "benchmarks")
REPO_ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("table", "data_size", "selection", "ablation")
GRID_KEYS = ("backbones", "datasets", "strategies", "seeds", "train_per_class", "variants", "layers")


# ------------------------------------------------------------------------------------------ test subsets
@register_dataset("test_subset", prefix=True, usage="test_subset:N:NAME")
def load_test_subset(argument: str, data_dir: str | None = None) -> DatasetSplits:
    """Dataset ``NAME`` with its test split cut to ``N`` images per class (class-balanced, fixed seed 0).

    Lets a CPU benchmark evaluate every epoch on a fixed, smaller test set; the fingerprint keeps
    feature caches of the full and the cut test split apart.
    """
    count, sep, name = argument.partition(":")
    if not sep or not count.isdigit() or int(count) < 1:
        raise ValueError(f"expected test_subset:N:NAME with N >= 1, got test_subset:{argument}")
    splits = resolve(name)(data_dir)
    splits.test = LabelSubset(splits.test, few_shot_indices(targets_of(splits.test), int(count), 0))
    splits.options["test_per_class"] = int(count)
    return splits


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
def _blocks_of(name: str) -> tuple[str, ...]:
    """Candidate blocks of a backbone, built without weights (on the meta device when the family allows)."""
    import torch

    from .backbones import create_backbone

    try:
        with torch.device("meta"):
            return tuple(create_backbone(name, pretrained=False).blocks)
    except (NotImplementedError, RuntimeError):
        return tuple(create_backbone(name, pretrained=False).blocks)


def _group_layers(group: dict[str, Any], backbone_name: str) -> list[str]:
    layers = group.get("layers", ["auto"])
    if layers == "all":
        return list(group.get("candidates") or _blocks_of(backbone_name))
    return list(layers)


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
                                     _group_layers(group, b["name"]))
            for strategy, seed, tpc, variant, layer in grid:
                strategy_cls = get_strategy_config(strategy)
                uses_layer = strategy_cls.uses_layer
                if not uses_layer and (layer != "auto" or variant):
                    continue  # sweeps and variants only concern block strategies
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
    """Rough cost from the suite's dataset sizes and the backbone's images/s (``--dry-run``)."""
    b = next(e for e in _entries(suite["backbones"]) if _label(e) == run.backbone)
    d = next(e for e in _entries(suite["datasets"]) if _label(e) == run.dataset)
    k = d.get("num_classes", 10)
    n_train = min(d.get("train_size", 10_000), k * (run.train_per_class or 10**9))
    n_test = k * d["test_per_class"] if d.get("test_per_class") else d.get("test_size", 10_000)
    epochs = run.config.get("epochs", 10)
    strategy = get_strategy_config(run.strategy)
    tail, cached = strategy.cost, strategy.cache_scope != "none"
    per_epoch = 3 * tail * n_train + tail * n_test
    images = epochs * per_epoch + (n_train + n_test) * (1 if cached else 1 + epochs)
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
    """Sweep runs grouped by (backbone, dataset, seed, train size, variant): one selection problem each."""
    cells: dict[str, list[Run]] = {}
    for r in runs:
        if "selection" in r.groups and r.config["layer"] != "auto":
            key = f"{r.backbone}|{r.dataset}|{r.strategy}|n{r.train_per_class or 'all'}|s{r.seed}|{r.variant}"
            cells.setdefault(key, []).append(r)
    return cells


def _selection_file(out: Path, key: str, rule: str) -> Path:
    safe = hashlib.sha1(key.encode()).hexdigest()[:10]
    return out / "selection" / f"{key.split('|')[0]}-{key.split('|')[1]}-{rule}-{safe}.json"


def run_rules(suite: dict[str, Any], runs: list[Run], out: Path, say: Callable[[str], None] = print) -> None:
    """Apply every rule of the selection group to each sweep cell (cached in ``out/selection``)."""
    from .backbones import create_backbone
    from .data import load_dataset
    from .selection import select_layer
    from .train import TrainConfig

    group = suite.get("groups", {}).get("selection", {})
    for key, cell in _selection_cells(suite, runs).items():
        for rule in group.get("rules", []):
            path = _selection_file(out, key, rule)
            if path.is_file():
                continue
            config = {**cell[0].config, "layer": "auto", "layer_rule": rule}
            extra = dict(config.get("extra") or {})
            extra["selection"] = {**extra.get("selection", {}), **group.get("options", {}),
                                  "candidates": [r.config["layer"] for r in cell]}
            cfg = TrainConfig.from_dict({**config, "extra": extra})
            splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class,
                                  val_fraction=cfg.val_fraction, seed=cfg.seed)
            backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint)
            result = select_layer(backbone, splits, cfg, device=_device())
            atomic_write_json(path, {"cell": key, **result})
            say(f"selection {key} {rule}: {result['layer']} ({result['seconds']:.1f} s)")


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


def run_suite(suite: dict[str, Any], out: str | Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every missing run, apply the selection rules, then build the reports; returns a summary."""
    from .train import METRICS_FILE, TrainConfig, train

    out = Path(out)
    runs = expand_suite(suite)
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
            metrics = train(TrainConfig.from_dict({**run.config, "out": str(run_dir), "cache_dir": cache_dir}))
            trained += 1
            say(f"  test accuracy {metrics['test_accuracy']:.4f}, NC1 {metrics['nc1_train']:.4g}, "
                f"{metrics['seconds']:.0f} s")
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)  # resume state; the final model stays
        if run.id in probed and not (run_dir / "nc1_layers.csv").is_file():
            probe_run(run_dir)
    run_rules(suite, runs, out, say)
    summary = {"suite": suite["name"], "runs": len(runs), "skipped": done, "trained": trained,
               "seconds": time.time() - tic}
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
def _metrics(out: Path, runs: Iterable[Run]) -> list[tuple[Run, dict[str, Any]]]:
    from .train import METRICS_FILE

    found = []
    for r in runs:
        path = out / RUNS_SUBDIR / r.id / METRICS_FILE
        if path.is_file():
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
    probed = [r for r in runs if r.id in _probe_runs(runs) and (out / RUNS_SUBDIR / r.id / "nc1_layers.csv").is_file()]
    cells = list(dict.fromkeys((r.backbone, r.dataset) for r in probed))
    if not cells:
        return None
    plt, fig, axes = _figure(len(cells))
    for ax, (backbone, dataset) in zip(axes, cells):
        names: list[str] = []
        for r in sorted((r for r in probed if (r.backbone, r.dataset) == (backbone, dataset)),
                        key=lambda r: strategy_rank(r.strategy)):
            with open(out / RUNS_SUBDIR / r.id / "nc1_layers.csv") as fh:
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
    _save(plt, fig, out / "nc1_layers.png")
    return out / "nc1_layers.png"


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


def selection_report(suite: dict[str, Any], out: Path, runs: list[Run]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown of every sweep cell (per-block accuracy, NC1, picks) and the per-rule regret rows."""
    parts = ["Exhaustive sweep: one run per candidate block; regret = best block's test accuracy − the picked "
             "block's (points). `profile:<pick>` are the pick functions of the profile rule (one probe); "
             "`trial` picks the lowest held-out penultimate NC1, `trial:heldout_acc` (reference only) the "
             "highest held-out accuracy of the same short fine-tunes."]
    regrets: list[dict[str, Any]] = []
    for key, cell in _selection_cells(suite, runs).items():
        found = dict((r.config["layer"], m) for r, m in _metrics(out, cell))
        if not found:
            continue
        evidence = {}
        for rule in suite["groups"]["selection"].get("rules", []):
            path = _selection_file(out, key, rule)
            if path.is_file():
                evidence[rule] = json.loads(path.read_text())
        picks: dict[str, str] = {}
        if "profile" in evidence:
            picks.update({f"profile:{k}": v for k, v in evidence["profile"]["picks"].items()})
        if "trial" in evidence:
            picks["trial"] = evidence["trial"]["layer"]
            acc = evidence["trial"]["heldout_accuracy"]
            picks["trial:heldout_acc"] = max(acc, key=acc.get)
        best = max(found, key=lambda b: found[b]["test_accuracy"])
        blocks = [r.config["layer"] for r in cell if r.config["layer"] in found]
        body = []
        for b in blocks:
            m = found[b]
            body.append([b, f"{m['trainable_percent']:.2f}",
                         *(f"{evidence[r]['nc1'].get(b, float('nan')):.3g}" for r in ("profile", "trial")
                           if r in evidence),
                         f"{100 * m['test_accuracy']:.2f}", f"{m['nc1_train']:.3g}",
                         ", ".join(p for p, v in picks.items() if v == b) + (" **best**" if b == best else "")])
        header = ["block", "% params", *(f"{r} NC1" for r in ("profile", "trial") if r in evidence),
                  "test acc (%)", "NC1 after FT (train)", "picked by"]
        parts += [f"\n## {key.replace('|', ' · ')}\n", _markdown(header, body)]
        rule_body = []
        for name, block in picks.items():
            regret = 100 * (found[best]["test_accuracy"] - found[block]["test_accuracy"]) if block in found else None
            rule = name.split(":")[0]
            seconds = evidence[rule].get("seconds", float("nan"))
            regrets.append({"cell": key, "rule": name, "layer": block, "regret": regret, "seconds": seconds})
            rule_body.append([name, block, "n/a (not swept)" if regret is None else f"{regret:.2f}", f"{seconds:.1f}"])
        parts += ["\n", _markdown(["rule", "pick", "regret (points)", "rule cost (s)"], rule_body)]
        accs = [found[b]["test_accuracy"] for b in blocks]
        corr = [f"trained NC1 {_spearman([found[b]['nc1_train'] for b in blocks], accs):+.2f}"]
        corr += [f"{r} NC1 {_spearman([evidence[r]['nc1'][b] for b in blocks], accs):+.2f}"
                 for r in ("profile", "trial")
                 if r in evidence and all(b in evidence[r]["nc1"] for b in blocks)]
        parts += [f"\nSpearman correlation with test accuracy across blocks (negative = lower NC1, higher accuracy): "
                  + ", ".join(corr) + "."]
    if regrets:
        names = list(dict.fromkeys(r["rule"] for r in regrets))
        body = []
        for n in names:
            values = [r["regret"] for r in regrets if r["rule"] == n and r["regret"] is not None]
            body.append([n, f"{np.mean(values):.2f}" if values else "–", f"{max(values):.2f}" if values else "–",
                         str(sum(r["rule"] == n and r["regret"] is None for r in regrets))])
        header = ["rule", "mean regret", "max regret", "picks not swept"]
        parts += ["\n## Summary over cells\n", _markdown(header, body)]
    return "\n".join(parts) + "\n", regrets


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


def build_reports(suite: dict[str, Any], out: str | Path) -> list[Path]:
    """(Re)build every report from the finished runs under ``out``; returns the written paths."""
    out = Path(out)
    runs = expand_suite(suite)
    written: list[Path] = []
    rows = table_rows(suite, out, runs)
    if rows:
        md, text = render_table(rows)
        written += [atomic_write_text(out / "table.md", f"# {suite['name']} suite\n\n" + md),
                    atomic_write_text(out / "table.csv", text)]
    written += [p for p in [plot_nc1_layers(out, runs)] if p]
    sizes = data_size_rows(out, runs)
    if sizes:
        written += [p for p in [plot_data_size(sizes, out / "data_size.png"),
                                atomic_write_text(out / "data_size.md", render_data_size(sizes))] if p]
    if _selection_cells(suite, runs):
        md, regrets = selection_report(suite, out, runs)
        written += [atomic_write_text(out / "selection.md", "# Layer selection\n\n" + md)]
        atomic_write_json(out / "selection.json", regrets)
    if any("ablation" in r.groups for r in runs):
        written.append(atomic_write_text(out / "ablation.md", "# Ablation\n\n" + ablation_report(out, runs)))
    return written


# ------------------------------------------------------------------------------------------ CLI
def dry_run(suite: dict[str, Any], out: Path, say: Callable[[str], None] = print) -> float:
    from .train import METRICS_FILE

    runs = expand_suite(suite)
    total = 0.0
    say(f"{'run':<80} {'groups':<22} {'est. min':>9}")
    for r in runs:
        seconds = estimate_seconds(r, suite)
        done = (out / RUNS_SUBDIR / r.id / METRICS_FILE).is_file()
        total += 0.0 if done else seconds
        say(f"{r.id:<80} {','.join(sorted(r.groups)):<22} {'done' if done else f'{seconds / 60:9.1f}':>9}")
    unit = suite.get("cost_unit", "device")
    say(f"{len(runs)} runs; estimated {total / 3600:.2f} {unit}-hours still to run "
        f"(from images/s in {find_suite(suite['name']).name}; selection rules add one probe and "
        f"one short fine-tune per candidate block and cell)")
    return total


def _main(args: argparse.Namespace) -> int:
    from ._hub import WeightsUnavailableError

    suite = load_suite(args.suite)
    out = Path(args.out)
    try:
        if args.dry_run:
            dry_run(suite, out)
        elif args.report_only:
            for path in build_reports(suite, out):
                print(path)
        else:
            summary = run_suite(suite, out)
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
    parser.set_defaults(func=_main)
    return parser

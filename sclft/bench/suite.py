"""Suite files: loading, and expanding a suite into training runs with stable run ids."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..strategies import get_strategy_config, option_owners

RUNS_SUBDIR = "experiments"  # DIR/experiments/<run-id>/: one training run each
GROUPS = ("table", "data_size", "selection", "ablation")
GRID_KEYS = ("backbones", "datasets", "strategies", "seeds", "train_per_class", "variants", "layers")


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
    """A YAML path, or the name of a suite shipped in the package (``sclft/configs/bench/NAME.yaml``)."""
    from ..resources import find_yaml

    return find_yaml("suites", name)


def load_suite(name: str) -> dict[str, Any]:
    path = find_suite(name)
    suite = yaml.safe_load(path.read_text())
    suite.setdefault("name", path.stem)
    suite["_file"] = str(path)  # where it came from (the dry run names it)
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
    from ..config import TrainConfig

    full, default = dataclasses.asdict(TrainConfig.from_dict(config)), dataclasses.asdict(TrainConfig())
    options = full.pop("strategy_options")  # flattened: the strategy's options that differ from its defaults
    option_defaults = get_strategy_config(full["strategy"])().options()
    return {**{k: v for k, v in full.items() if v != default[k] and k not in ("out", "cache_dir", "progress")},
            **{k: v for k, v in options.items() if k not in option_defaults or v != option_defaults[k]}}


def _variant_label(variant: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(_non_default(variant).items()))


def run_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """What a run's id hashes: every TrainConfig field and strategy option as it will train (defaults
    filled in, so a changed default is a new run) and the versions of the libraries that compute it.
    Fields that do not change the result (``out``, ``cache_dir``, ``progress``, ...) are left out."""
    from ..config import TrainConfig
    from ..strategies import strategy_config
    from ..versions import library_versions

    full = dataclasses.asdict(TrainConfig.from_dict(config).resolve_defaults())
    full["strategy_options"] = strategy_config(full["strategy"], **full["strategy_options"]).options()
    for key in ("out", "cache_dir", "progress", "num_workers", "tensorboard", "resume", "overwrite"):
        full.pop(key)
    return {"config": full, "versions": library_versions()}


def _run_id(backbone: str, dataset: str, config: dict[str, Any], variant: str) -> str:
    blob = json.dumps(run_fingerprint(config), sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
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

    from ..backbones import create_backbone

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
    from ..data import load_dataset

    return load_dataset(dataset_ref(d), d.get("data_dir")).num_classes


def selection_budget(suite: dict[str, Any], group: dict[str, Any]) -> float | None:
    """The group's ``max_params`` (percent), else the suite defaults', else TrainConfig's; ``null`` = none."""
    from ..config import TrainConfig

    for source in (group, suite.get("defaults", {})):
        if "max_params" in source:
            return source["max_params"]
    return TrainConfig.max_params


def _group_layers(group: dict[str, Any], backbone_name: str, dataset: dict[str, Any] | None = None,
                  budget: float | None = None) -> list[str]:
    """``layers: all`` = the selection candidates (given ``candidates`` or every block but the last) within
    the parameter budget, in network order."""
    from ..selection import candidate_blocks

    layers = group.get("layers", ["auto"])
    if layers != "all":
        return list(layers)
    num_classes = _num_classes(json.dumps(dataset or {}, sort_keys=True)) if budget is not None else 10
    return candidate_blocks(_meta_backbone(backbone_name), group.get("candidates") or None, budget,
                            num_classes)


def expand_suite(suite: dict[str, Any]) -> list[Run]:
    """All runs of the suite, deduplicated by id (a run shared by several groups trains once)."""
    from ..config import TrainConfig

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


def shard(items: list, spec: str | None) -> list:
    """Items ``I-1, I-1+N, …`` of ``items`` for ``spec = "I/N"`` (1 <= I <= N); all of them for ``None``."""
    if not spec:
        return list(items)
    index, sep, count = spec.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise ValueError(f"--shard must be I/N with 1 <= I <= N (e.g. 2/8), got {spec!r}")
    return list(items)[int(index) - 1::int(count)]


def add_datasets(suite: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The suite with extra datasets (e.g. ``imagefolder:PATH``) in every group that names none."""
    extra = [{"name": n} for n in names if n not in {_label(e) for e in _entries(suite["datasets"])}]
    return {**suite, "datasets": [*suite["datasets"], *extra]} if extra else suite


def _selection_cells(suite: dict[str, Any], runs: list[Run]) -> dict[str, list[Run]]:
    """Sweep runs grouped by (backbone, dataset, strategy, train size, variant): one selection problem
    each, over all seeds (accuracies are averaged over seeds; rules are applied per seed)."""
    cells: dict[str, list[Run]] = {}
    for r in runs:
        if "selection" in r.groups and r.config["layer"] != "auto":
            key = f"{r.backbone}|{r.dataset}|{r.strategy}|n{r.train_per_class or 'all'}|{r.variant}"
            cells.setdefault(key, []).append(r)
    return cells

"""A suite's work list: its training runs with stable ids, the rule applications of its selection group,
and the runs to probe; plus ``--shard I/N``. Pure planning: nothing here reads or writes a bench folder.

* :func:`expand_suite` → ``list[Run]`` in the suite's fixed order (deduplicated: a run shared by several
  groups trains once); ``Run.id`` = readable name + a hash of :func:`run_fingerprint` (every field as trained
  and the library versions), so the same suite on the same libraries always gives the same ids.
* :func:`rule_tasks` → ``list[RuleTask]`` (cell, seed, rule) of the selection group, in a fixed order.
* :func:`shard` → items ``I-1, I-1+N, …``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from .. import picks
from .. import versions as version_info
from ..backbones import create_backbone
from ..config import TrainConfig, fields_where
from ..data import load_dataset
from ..errors import UsageError
from ..selection import candidate_blocks
from ..strategies import get_strategy_config, option_owners, strategy_config
from .suite import Backbone, Dataset, Group, Suite, SuiteError

# what a run's id leaves out of its hash: fields that do not change the result (declared by each TrainConfig field)
UNHASHED_FIELDS = fields_where("hashed", False)


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

    @property
    def cell(self) -> str:
        """The selection problem a sweep run belongs to: backbone, dataset, strategy, train size, variant."""
        return f"{self.backbone}|{self.dataset}|{self.strategy}|n{self.train_per_class or 'all'}|{self.variant}"


class RuleTask(NamedTuple):
    """One layer rule applied to one selection cell and seed."""

    cell: str
    seed: int
    rule: str


def _non_default(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``config`` that differ from TrainConfig's defaults (what identifies a variant)."""
    full, default = dataclasses.asdict(TrainConfig.from_dict(config)), dataclasses.asdict(TrainConfig())
    options = full.pop("strategy_options")  # flattened: the strategy's options that differ from its defaults
    option_defaults = get_strategy_config(full["strategy"])().options()
    return {**{k: v for k, v in full.items() if v != default[k] and k not in ("out", "cache_dir", "progress")},
            **{k: v for k, v in options.items() if k not in option_defaults or v != option_defaults[k]}}


def variant_label(variant: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(_non_default(variant).items()))


def config_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """Every TrainConfig field and strategy option of ``config`` as it will train (defaults filled in, ``layer_rule``
    ``auto`` as the rule and pick it stands for, so a changed default is a new run), without the
    :data:`UNHASHED_FIELDS`."""
    full = dataclasses.asdict(TrainConfig.from_dict(config).resolve_defaults())
    full["strategy_options"] = strategy_config(full["strategy"], **full["strategy_options"]).options()
    if full["layer_rule"] == "auto":  # what `auto` means in this version: a changed default rule is a new run
        pick = (full.get("extra") or {}).get("selection", {}).get("profile_pick") or picks.DEFAULT_PROFILE_PICK
        full["layer_rule"] = f"auto={picks.DEFAULT_RULE}" + (f":{pick}" if picks.DEFAULT_RULE == "profile" else "")
    for key in UNHASHED_FIELDS:
        full.pop(key)
    return full


def run_fingerprint(config: dict[str, Any], versions: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run's id hashes: :func:`config_fingerprint` and the versions of the libraries that compute it
    (the installed ones, :func:`sclft.versions.library_versions`, unless given)."""
    versions = version_info.library_versions() if versions is None else versions
    return {"config": config_fingerprint(config), "versions": versions}


def digest(blob: Any) -> str:
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:8]


def readable_name(backbone: str, dataset: str, config: dict[str, Any], variant: str) -> str:
    """A run id without its hash (runs of one config under other library versions share it)."""
    parts = [backbone, dataset, config["strategy"]]
    if config.get("layer") not in (None, "auto"):
        parts.append(config["layer"])
    parts += [variant.replace("=", "-").replace(",", "_")] if variant else []
    parts += [f"n{config.get('train_per_class') or 'all'}", f"s{config['seed']}"]
    return "-".join(str(p).replace("/", "_").replace(":", "_") for p in parts)


def run_id(backbone: str, dataset: str, config: dict[str, Any], variant: str,
           versions: dict[str, Any] | None = None) -> str:
    return f"{readable_name(backbone, dataset, config, variant)}-{digest(run_fingerprint(config, versions))}"


def split_id(rid: str) -> tuple[str, str]:
    """(readable name, hash) of a run id."""
    name, _, tail = rid.rpartition("-")
    return name, tail


@functools.cache
def meta_backbone(name: str):
    """A backbone built without weights (on the meta device when the family allows): block names and sizes."""
    try:
        with torch.device("meta"):
            return create_backbone(name, pretrained=False)
    except (NotImplementedError, RuntimeError):
        return create_backbone(name, pretrained=False)


def blocks_of(name: str) -> tuple[str, ...]:
    return tuple(meta_backbone(name).blocks)


def _num_classes(dataset: Dataset) -> int:
    """A dataset entry's ``num_classes``, else read from the data (needed for the parameter budget)."""
    return int(dataset.num_classes) if dataset.num_classes else _data_classes(dataset.ref, dataset.data_dir)


@functools.cache
def _data_classes(ref: str, data_dir: str | None) -> int:
    return load_dataset(ref, data_dir).num_classes


def _group_layers(suite: Suite, group: Group, backbone: Backbone, dataset: Dataset) -> list[str]:
    """``layers: all`` = the selection candidates (given ``candidates`` or every block but the last) within
    the parameter budget, in network order."""
    if group.layers != "all":
        return list(group.layers)
    budget = suite.budget(group)
    num_classes = _num_classes(dataset) if budget is not None else 10
    return candidate_blocks(meta_backbone(backbone.name), list(group.candidates or ()) or None, budget, num_classes)


def epochs_for_updates(updates: int, config: dict[str, Any], dataset: Dataset) -> int:
    """The fewest epochs that give ``updates`` optimiser updates on one process: an epoch is
    ⌈⌈n / batch_size⌉ / grad_accum⌉ updates (the last batch is kept), n = train_per_class × classes
    (capped by the entry's ``train_size``), or the entry's ``train_size`` without a per-class size."""
    defaults = TrainConfig()
    batch = config.get("batch_size", defaults.batch_size)
    accum = config.get("grad_accum", defaults.grad_accum)
    tpc = config.get("train_per_class")
    n = tpc * _num_classes(dataset) if tpc else None
    if dataset.train_size:
        n = min(n, dataset.train_size) if n else dataset.train_size
    if not n:
        raise SuiteError(f"min_updates needs the training-set size of {dataset.label}: give the group "
                         "train_per_class or the dataset entry train_size")
    per_epoch = math.ceil(math.ceil(n / batch) / accum)
    return math.ceil(updates / per_epoch)


def expand_suite(suite: Suite) -> list[Run]:
    """All runs of the suite in its fixed order, deduplicated by id (a run shared by several groups trains
    once). Each run's config is checked by ``TrainConfig.validate()``; a bad one names the suite and group."""
    runs: dict[str, Run] = {}
    for group in suite.groups.values():
        for b, d in itertools.product(suite.backbones, suite.datasets):
            if (group.backbones and b.label not in group.backbones) or \
                    (group.datasets and d.label not in group.datasets) or (b.datasets and d.label not in b.datasets):
                continue
            extra = list(b.extra_strategies) if group.name == "table" else []
            grid = itertools.product([*group.strategies, *extra], group.seeds, group.train_per_class, group.variants,
                                     _group_layers(suite, group, b, d))
            for strategy, seed, tpc, variant, layer in grid:
                strategy_cls = get_strategy_config(strategy)
                uses_layer = strategy_cls.uses_layer
                if not uses_layer and layer != "auto":
                    continue  # block sweeps concern block strategies
                if (set(variant) & set(option_owners())) - set(strategy_cls.option_names()):
                    continue  # a variant of strategy options concerns their owners; of run fields (lr), every strategy
                config = {**suite.defaults, **suite.per_strategy.get(strategy, {}), **b.overrides, **d.overrides,
                          **group.overrides, **variant, "backbone": b.name, "data": d.ref, "strategy": strategy,
                          "seed": seed, "train_per_class": tpc, "layer": layer if uses_layer else "auto"}
                if d.data_dir:
                    config["data_dir"] = d.data_dir
                if group.min_updates:
                    config["epochs"] = epochs_for_updates(group.min_updates, config, d)
                try:
                    TrainConfig.from_dict(config).validate()
                except ValueError as e:
                    raise SuiteError(f"{suite.file or suite.name}: groups.{group.name}: run {b.label} / {d.label} / "
                                     f"{strategy} (seed {seed}): {e}") from None
                label = variant_label(variant)
                rid = run_id(b.label, d.label, config, label)
                run = runs.setdefault(rid, Run(rid, b.label, d.label, config, label))
                run.groups.add(group.name)
    return list(runs.values())


def shard(items: list, spec: str | None) -> list:
    """Items ``I-1, I-1+N, …`` of ``items`` for ``spec = "I/N"`` (1 <= I <= N); all of them for ``None``."""
    if not spec:
        return list(items)
    index, sep, count = spec.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise UsageError(f"--shard must be I/N with 1 <= I <= N (e.g. 2/8), got {spec!r}")
    return list(items)[int(index) - 1::int(count)]


def selection_cells(runs: list[Run]) -> dict[str, list[Run]]:
    """Sweep runs grouped by :attr:`Run.cell`: one selection problem each, over all seeds (accuracies are
    averaged over seeds; rules are applied per seed)."""
    cells: dict[str, list[Run]] = {}
    for r in runs:
        if "selection" in r.groups and r.config["layer"] != "auto":
            cells.setdefault(r.cell, []).append(r)
    return cells


def rule_tasks(suite: Suite, runs: list[Run]) -> list[RuleTask]:
    """Every rule of the selection group for each sweep cell and seed, in a fixed order (sharded like runs)."""
    group = suite.group("selection")
    rules = group.rules if group else ()
    return [RuleTask(key, seed, rule) for key, cell in selection_cells(runs).items()
            for seed in sorted({r.seed for r in cell}) for rule in rules]


def probe_runs(runs: list[Run]) -> set[str]:
    """Ids of the runs whose layer-wise NC1 is plotted: the table group's first seed and first train size."""
    table = [r for r in runs if "table" in r.groups and not r.variant]
    if not table:
        return set()
    seed, tpc = min(r.seed for r in table), table[0].train_per_class
    return {r.id for r in table if r.seed == seed and r.train_per_class == tpc}

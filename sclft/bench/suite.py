"""Suite files: the schema a suite YAML must follow, checked when it loads, and the typed :class:`Suite`.

A bad suite is a :class:`SuiteError` (a ValueError: ``sclft bench`` exits 2) naming the file, the key
(``groups.table.seeds``) and what is valid, with a did-you-mean for a near miss (``seed`` → ``seeds``).
Values of run fields (``defaults``, ``per_strategy``, ``overrides``, ``variants``) go through the
:class:`~sclft.config.TrainConfig` types as ``sclft train --config`` does. The suite keeps those mappings as
written, so run ids (:mod:`sclft.bench.plan`) do not depend on how a value was spelt.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import UsageError
from ..resources import find_yaml, read_yaml
from ..strategies import collect_strategy_options, get_strategy_config, list_strategies, option_owners

GROUPS = ("table", "data_size", "selection", "ablation")  # each feeds one report (sclft.bench.reports)
TOP_KEYS = ("name", "description", "images_per_second", "cost_unit", "backbones", "datasets", "defaults",
            "per_strategy", "groups")
BACKBONE_KEYS = ("name", "label", "images_per_second", "datasets", "extra_strategies", "overrides")
DATASET_KEYS = ("name", "label", "test_per_class", "data_dir", "num_classes", "train_size", "test_size", "overrides")
GROUP_KEYS = ("strategies", "seeds", "train_per_class", "variants", "layers", "backbones", "datasets", "overrides",
              "candidates", "max_params", "rules", "options", "min_updates", "tune")
SELECTION_ONLY = ("rules", "options")  # the selection group applies layer rules; other groups only train
# run fields the grid sets per run: a value in defaults / per_strategy / overrides / variants would be ignored
GRID_FIELDS = {"backbone": "backbones", "data": "datasets", "strategy": "strategies", "seed": "seeds",
               "train_per_class": "train_per_class", "out": "--out", "resume": "(the bench resumes by itself)",
               "overwrite": "(the bench decides)"}


class SuiteError(UsageError):
    """A suite file that does not follow the schema (message: file, key, what is valid)."""


@dataclass(frozen=True)
class Backbone:
    name: str
    label: str
    images_per_second: float | None = None
    datasets: tuple[str, ...] | None = None  # only these dataset labels (default: all)
    extra_strategies: tuple[str, ...] = ()  # added to the table group (e.g. zero_shot for CLIP)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    name: str
    label: str
    test_per_class: int | None = None
    data_dir: str | None = None
    num_classes: int | None = None
    train_size: int | None = None
    test_size: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """The name passed to ``load_dataset`` (wrapped in ``test_subset:`` when ``test_per_class`` is set)."""
        return f"test_subset:{self.test_per_class}:{self.name}" if self.test_per_class else self.name


@dataclass(frozen=True)
class Group:
    """One grid of runs: strategies × seeds × train_per_class × variants × layers."""

    name: str
    strategies: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    train_per_class: tuple[int | None, ...] = (None,)
    variants: tuple[dict[str, Any], ...] = ({},)
    layers: tuple[str, ...] | str = ("auto",)  # or "all": the selection candidates within the budget
    backbones: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    candidates: tuple[str, ...] | None = None
    max_params: float | None = None
    has_max_params: bool = False  # ``max_params: null`` (no budget) differs from not given
    rules: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    min_updates: int | None = None  # each run's epochs: the fewest giving this many optimiser updates
    tune: tuple[str, ...] = ()  # ablation: variant fields chosen per method on validation accuracy


@dataclass(frozen=True)
class Suite:
    """A validated suite. Build one with :func:`load_suite` (a file) or :meth:`Suite.from_dict`."""

    name: str
    backbones: tuple[Backbone, ...]
    datasets: tuple[Dataset, ...]
    groups: dict[str, Group]
    defaults: dict[str, Any] = field(default_factory=dict)
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    images_per_second: float = 500.0
    cost_unit: str = "device"
    file: str | None = None  # where it came from (the dry run names it)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "suite", file: str | None = None) -> Suite:
        """A suite from its YAML mapping, checked against the schema (:class:`SuiteError` naming ``source``)."""
        return _parse(raw, source, file)

    def to_dict(self) -> dict[str, Any]:
        """The suite as YAML would hold it (``yaml.safe_dump`` writes a suite file back)."""
        return _plain(self.raw)

    def replace(self, **keys: Any) -> Suite:
        """A copy with some top-level keys replaced (``groups={...}``), validated again."""
        return _parse({**self.raw, **keys}, f"{self.file or self.name} (replaced {', '.join(keys)})", self.file)

    def group(self, name: str) -> Group | None:
        return self.groups.get(name)

    def budget(self, group: Group) -> float | None:
        """The group's ``max_params`` (percent), else the suite defaults', else TrainConfig's; ``None`` = none."""
        if group.has_max_params:
            return group.max_params
        return self.defaults["max_params"] if "max_params" in self.defaults else TrainConfig.max_params

    def backbone(self, label: str) -> Backbone:
        return next(b for b in self.backbones if b.label == label)

    def dataset(self, label: str) -> Dataset:
        return next(d for d in self.datasets if d.label == label)

    def with_datasets(self, names: Iterable[str]) -> Suite:
        """The suite with extra datasets (e.g. ``imagefolder:PATH``) in every group that names none."""
        known = {d.label for d in self.datasets}
        extra = [n for n in dict.fromkeys(names) if n not in known]
        return self.replace(datasets=[*self.raw["datasets"], *extra]) if extra else self

    def with_defaults(self, **fields: Any) -> Suite:
        return self.replace(defaults={**self.raw.get("defaults", {}), **fields})


def find_suite(name: str) -> Path:
    """A YAML path, or the name of a suite shipped in the package (``sclft/configs/bench/NAME.yaml``)."""
    return find_yaml("suites", name)


def load_suite(name: str | Path) -> Suite:
    """The suite a ``--suite`` value names, validated (:class:`SuiteError` on a bad file)."""
    raw, path = read_yaml("suites", str(name))
    if raw is None:
        raise SuiteError(f"--suite {path}: the file is empty; a suite is a mapping with backbones, datasets and "
                         f"groups (see sclft/configs/bench/smoke.yaml)")
    if isinstance(raw, dict):
        raw = {"name": path.stem, **raw}
    return _parse(raw, str(path), str(path))


# ------------------------------------------------------------------------------------------------ schema
def _fail(source: str, key: str, message: str) -> SuiteError:
    return SuiteError(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_keys(given: dict, valid: Iterable[str], source: str, where: str) -> None:
    valid = list(valid)
    for key in given:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            if not where and not near and key in TrainConfig.__dataclass_fields__:
                hint = f" ({key} is a run field: put it under `defaults:`)"
            name = f"{where}.{key}" if where else str(key)
            raise _fail(source, name, f"unknown key{hint}; valid keys{' of ' + where if where else ''}: "
                                      f"{', '.join(valid)}")


def _mapping(value: Any, source: str, key: str, example: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(source, key, f"must be a mapping, e.g. {example}; got a {_kind(value)}")
    return value


def _list(value: Any, source: str, key: str, example: str, kind: type | tuple = str, nullable: bool = False,
          choices: Iterable[str] | None = None) -> list:
    if not isinstance(value, list):
        raise _fail(source, key, f"must be a list, e.g. {example}; got the {_kind(value)} {value!r}")
    if not value:
        raise _fail(source, key, f"is empty; give at least one value, e.g. {example}")
    choices = list(choices) if choices is not None else None
    for item in value:
        ok = (item is None and nullable) or (isinstance(item, kind) and not isinstance(item, bool))
        if not ok:
            raise _fail(source, key, f"{item!r} is not a valid entry (e.g. {example})")
        if choices is not None and item not in choices:
            near = difflib.get_close_matches(str(item), choices, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise _fail(source, key, f"unknown {item!r}{hint}; valid: {', '.join(choices)}")
    return value


def _number(value: Any, source: str, key: str, integer: bool = False) -> float | int:
    kind = int if integer else (int, float)
    if not isinstance(value, kind) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise _fail(source, key, f"must be a positive {'integer' if integer else 'number'}; got {value!r}")
    return value


def _run_fields(values: Any, source: str, key: str) -> dict[str, Any]:
    """A mapping of TrainConfig fields and strategy options, checked by the TrainConfig types (kept as given)."""
    values = _mapping(values, source, key, "{lr: 0.01, epochs: 20}")
    for name in values:
        if name in GRID_FIELDS:
            raise _fail(source, f"{key}.{name}", f"is set per run by the suite ({GRID_FIELDS[name]}); it "
                                                  "cannot be set here")
    if values.get("layer", "auto") != "auto":
        raise _fail(source, f"{key}.layer", "is set per run by a group's `layers` (e.g. layers: [blocks.5.0]); "
                                            "only `layer: auto` may be given here")
    try:
        TrainConfig.coerce(collect_strategy_options(dict(values)), f"{source}: {key}")
    except ValueError as e:
        raise SuiteError(str(e)) from None
    return values


def _entry(item: Any, source: str, key: str, valid: tuple[str, ...], example: str) -> dict[str, Any]:
    if isinstance(item, str):
        return {"name": item}
    if not isinstance(item, dict):
        raise _fail(source, key, f"must be a name or a mapping with `name`, e.g. {example}; got {item!r}")
    _check_keys(item, valid, source, key)
    if not isinstance(item.get("name"), str) or not item["name"]:
        raise _fail(source, f"{key}.name", f"is required (a string), e.g. {example}")
    return dict(item)


def _parse(raw: Any, source: str, file: str | None) -> Suite:
    if not isinstance(raw, dict):
        raise _fail(source, "", f"a suite is a mapping with backbones, datasets and groups; got a {_kind(raw)}")
    _check_keys(raw, TOP_KEYS, source, "")
    for key in ("backbones", "datasets", "groups"):
        if key not in raw:
            raise _fail(source, key, f"is required; a suite names backbones, datasets and groups "
                                     f"({', '.join(GROUPS)}); see sclft/configs/bench/smoke.yaml")
    strategies = list_strategies()
    datasets = []
    for i, item in enumerate(_list(raw["datasets"], source, "datasets", "[digits]", (str, dict))):
        d = _entry(item, source, f"datasets[{i}]", DATASET_KEYS, "{name: digits, test_per_class: 4}")
        for k in ("test_per_class", "num_classes", "train_size", "test_size"):
            if d.get(k) is not None:
                _number(d[k], source, f"datasets[{i}].{k}", integer=True)
        datasets.append(Dataset(d["name"], d.get("label", d["name"]), d.get("test_per_class"), d.get("data_dir"),
                                d.get("num_classes"), d.get("train_size"), d.get("test_size"),
                                _run_fields(d.get("overrides"), source, f"datasets[{i}].overrides")))
    labels = [d.label for d in datasets]
    backbones = []
    for i, item in enumerate(_list(raw["backbones"], source, "backbones", "[efficientnet_lite0]", (str, dict))):
        b = _entry(item, source, f"backbones[{i}]", BACKBONE_KEYS, "{name: resnet50, images_per_second: 1500}")
        key = f"backbones[{i}]"
        only = _list(b["datasets"], source, f"{key}.datasets", f"[{labels[0]}]", choices=labels) \
            if "datasets" in b else None
        extra = _list(b["extra_strategies"], source, f"{key}.extra_strategies", "[zero_shot]",
                      choices=strategies) if "extra_strategies" in b else []
        ips = _number(b["images_per_second"], source, f"{key}.images_per_second") if "images_per_second" in b else None
        backbones.append(Backbone(b["name"], b.get("label", b["name"]), ips, tuple(only) if only else None,
                                  tuple(extra), _run_fields(b.get("overrides"), source, f"{key}.overrides")))
    for key, entries in (("backbones", backbones), ("datasets", datasets)):
        seen = [e.label for e in entries]
        if len(set(seen)) < len(seen):
            raise _fail(source, key, f"{sorted({s for s in seen if seen.count(s) > 1})} appear twice; give each "
                                     f"entry its own `label`")
    defaults = _run_fields(raw.get("defaults"), source, "defaults")
    per_strategy = _mapping(raw.get("per_strategy"), source, "per_strategy", "{linear_probe: {lr: 0.01}}")
    for name, values in per_strategy.items():
        if name not in strategies:
            near = difflib.get_close_matches(str(name), strategies, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise _fail(source, f"per_strategy.{name}", f"unknown strategy{hint}; valid strategies: "
                                                       f"{', '.join(strategies)}")
        per_strategy[name] = _run_fields(values, source, f"per_strategy.{name}")
    groups_raw = _mapping(raw["groups"], source, "groups", "{table: {strategies: [linear_probe, scl_ft]}}")
    if not groups_raw:
        raise _fail(source, "groups", f"is empty; give at least one of {', '.join(GROUPS)}")
    groups = {}
    for name, g in groups_raw.items():
        if name not in GROUPS:
            near = difflib.get_close_matches(str(name), GROUPS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise _fail(source, f"groups.{name}", f"unknown group{hint}; valid groups: {', '.join(GROUPS)}")
        groups[name] = _group(name, g, source, strategies, [b.label for b in backbones], labels)
    info = {}
    for key in ("name", "description", "cost_unit"):
        if key in raw and not isinstance(raw[key], str):
            raise _fail(source, key, f"must be a string; got {raw[key]!r}")
    if "images_per_second" in raw:
        info["images_per_second"] = float(_number(raw["images_per_second"], source, "images_per_second"))
    name = raw.get("name") or (Path(file).stem if file else "suite")
    return Suite(name, tuple(backbones), tuple(datasets), groups, defaults, per_strategy,
                 raw.get("description", ""), cost_unit=raw.get("cost_unit", "device"), file=file, raw=raw, **info)


def _group(name: str, g: Any, source: str, strategies: list[str], backbones: list[str],
           datasets: list[str]) -> Group:
    key = f"groups.{name}"
    g = _mapping(g, source, key, "{strategies: [linear_probe, scl_ft], seeds: [0, 1, 2]}")
    _check_keys(g, GROUP_KEYS, source, key)
    if "strategies" not in g:
        raise _fail(source, f"{key}.strategies", "is required, e.g. strategies: [linear_probe, scl_ft]")
    for k in SELECTION_ONLY:
        if k in g and name != "selection":
            raise _fail(source, f"{key}.{k}", "only the selection group applies layer rules")
    kw: dict[str, Any] = {"strategies": tuple(_list(g["strategies"], source, f"{key}.strategies",
                                                    "[linear_probe, scl_ft]", choices=strategies))}
    if "seeds" in g:
        kw["seeds"] = tuple(_list(g["seeds"], source, f"{key}.seeds", "[0, 1, 2]", int))
    if "train_per_class" in g:
        kw["train_per_class"] = tuple(_list(g["train_per_class"], source, f"{key}.train_per_class", "[20, 100]",
                                            int, nullable=True))
        for n in kw["train_per_class"]:
            if n is not None:
                _number(n, source, f"{key}.train_per_class", integer=True)
    if "variants" in g:
        variants = _list(g["variants"], source, f"{key}.variants", "[{fuse: add}, {fuse: concat}]", dict)
        valid = sorted({f.name for f in dataclasses.fields(TrainConfig)} - {"strategy_options"} | set(option_owners()))
        for i, v in enumerate(variants):
            _check_keys(v, valid, source, f"{key}.variants[{i}]")
        kw["variants"] = tuple(_run_fields(v, source, f"{key}.variants[{i}]") for i, v in enumerate(variants))
    if "layers" in g:
        kw["layers"] = "all" if g["layers"] == "all" else tuple(_list(
            g["layers"], source, f"{key}.layers", "all, or [blocks.4.0, blocks.5.0]"))
        blockless = [s for s in kw["strategies"] if not get_strategy_config(s).uses_layer]
        if blockless and "auto" not in kw["layers"]:  # their runs would have no layer to sweep: none would run
            raise _fail(source, f"{key}.layers", f"sweeps blocks, but {', '.join(blockless)} tune(s) no block "
                        "and would not run; give them a group without `layers`")
    for k, valid_labels in (("backbones", backbones), ("datasets", datasets)):
        if k in g:
            kw[k] = tuple(_list(g[k], source, f"{key}.{k}", f"[{valid_labels[0]}]", choices=valid_labels))
    kw["overrides"] = _run_fields(g.get("overrides"), source, f"{key}.overrides")
    if "candidates" in g:
        kw["candidates"] = tuple(_list(g["candidates"], source, f"{key}.candidates", "[blocks.4.2, blocks.5.0]"))
    if "max_params" in g:
        if g["max_params"] is not None:
            _number(g["max_params"], source, f"{key}.max_params")
        kw.update(max_params=g["max_params"], has_max_params=True)
    if g.get("min_updates") is not None:
        kw["min_updates"] = int(_number(g["min_updates"], source, f"{key}.min_updates", integer=True))
        if any("epochs" in v for v in (kw["overrides"], *kw.get("variants", ()))):
            raise _fail(source, f"{key}.min_updates", "sets each run's epochs; drop `epochs` from the group's "
                        "overrides and variants (or drop min_updates)")
    if "tune" in g:
        if name != "ablation":
            raise _fail(source, f"{key}.tune", "only the ablation group's paired report tunes variant fields")
        kw["tune"] = tuple(_list(g["tune"], source, f"{key}.tune", "[lr]"))
        varied = {k for v in kw.get("variants", ()) for k in v}
        for k in kw["tune"]:
            if k not in varied:
                raise _fail(source, f"{key}.tune", f"{k!r} is not a key of any variant; tune chooses among the "
                            f"variants' values (variant keys: {', '.join(sorted(varied)) or 'none'})")
    if "rules" in g:
        kw["rules"] = tuple(_list(g["rules"], source, f"{key}.rules", "[profile, trial]"))
    kw["options"] = _mapping(g.get("options"), source, f"{key}.options", "{profile_per_class: 100}")
    for rule in kw.get("rules", ()):  # rule names and options as `sclft train` checks them
        if isinstance(rule, str) and ":" in rule:
            base = rule.partition(":")[0]
            raise _fail(source, f"{key}.rules", f"{rule}: the group applies whole rules, and the evidence of {base} "
                        f"already scores each of its picks (the rows RULE:PICK of the tables); list {base}")
        try:
            TrainConfig(layer_rule=rule, extra={"selection": dict(kw["options"])}).validate()
        except ValueError as e:
            raise _fail(source, f"{key}.{'rules' if 'layer_rule' in str(e) else 'options'}", str(e)) from None
    return Group(name, **kw)


def _plain(value: Any) -> Any:
    """``value`` with every mapping and list copied (so a caller's edits do not reach the suite)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

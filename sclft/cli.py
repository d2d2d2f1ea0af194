"""`sclft` command line: list, probe, train, eval here; bench and dln from their own modules.

Exit codes: 0 success, 1 the run failed (data or weights unavailable, non-finite loss), 2 bad input.
Set SCLFT_DEBUG=1 to see full tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

# sub-command name -> (module exposing ``add_parser(subparsers)``, its one-line help); the parser sets
# ``func(args) -> int``. A module is imported only when its command is the one run (the CLI answers at once).
COMMAND_MODULES = {
    "dln": ("sclft.dln.cli", "deep-linear-network theory lab (seed §2–4)"),
    "bench": ("sclft.bench", "run a benchmark suite and build its tables and plots"),
}
_BUILTIN: dict[str, Callable[[Any], None]] = {}

# help text for TrainConfig fields that become `sclft train` flags
TRAIN_HELP = {
    "backbone": "backbone name (sclft list backbones), timm:<name> or open_clip:<arch>/<tag>",
    "data": "dataset name (sclft list datasets), imagefolder:PATH or hf:<repo_id>",
    "strategy": "transfer strategy (sclft list strategies); its options are the flags under 'strategy options'",
    "layer": "block to tune, or 'auto' to choose it by NC1 on the training data",
    "layer_rule": "rule for --layer auto: auto | profile | fixed | trial",
    "max_params": "--layer auto: choose only among blocks training at most this percent of the parameters",
    "epochs": "training epochs",
    "lr": "peak learning rate (after warm-up; then --schedule)",
    "batch_size": "images per step",
    "optimizer": "adamw | sgd",
    "weight_decay": "weight decay (not applied to norms and biases)",
    "schedule": "learning rate after the warm-up: cosine (decay to 0) | constant",
    "warmup_epochs": "linear warm-up length in epochs",
    "label_smoothing": "label smoothing of the cross-entropy",
    "grad_accum": "gradient accumulation steps",
    "precision": "mixed precision: no | bf16 | fp16",
    "image_size": "input size in pixels (default: the backbone's)",
    "augment": "standard random train augmentation (disables the frozen-prefix cache)",
    "train_per_class": "balanced, seeded subset of N training images per class",
    "val_fraction": "hold out this fraction of train as a validation split",
    "seed": "random seed",
    "data_dir": "local copy of the dataset (no download)",
    "pretrained": "load pretrained weights (--no-pretrained: random init)",
    "checkpoint": "local weights file for the backbone (instead of downloading)",
    "cache": "frozen-prefix activation cache: auto | memory | disk | off",
    "cache_dir": "directory for disk caches (default ~/.cache/sclft/features)",
    "num_workers": "data-loading worker processes",
    "eval_every": "evaluate on val/test every N epochs (0: only at the end)",
    "channels_last": "channels_last memory format for conv backbones",
    "compile": "torch.compile the model",
    "tensorboard": "log metrics to TensorBoard under --out",
    "out": "output directory (metrics.json, model.safetensors, checkpoint/)",
    "resume": "continue an interrupted run from --out/checkpoint (refused if a result-changing option differs)",
    "overwrite": "replace a finished run or another run's checkpoints in --out",
    "progress": "progress bars",
}
_NOT_FLAGS = {"extra", "strategy_options"}
_OPTION_DEST = "strategy_option:"  # argparse dest prefix of the strategy-option flags


def command(name: str):
    """Register a built-in sub-command's parser builder."""

    def deco(fn):
        _BUILTIN[name] = fn
        return fn

    return deco


def _field_type(f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(_train_config_cls())[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _train_config_cls():
    from .config import TrainConfig

    return TrainConfig


def add_train_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One flag per TrainConfig field; defaults are None so YAML / defaults can fill what was not given."""
    from .config import OPTIM_DEFAULTS as optim_defaults

    for f in dataclasses.fields(_train_config_cls()):
        if f.name in _NOT_FLAGS or (only is not None and f.name not in only):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f)
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is None and f.name in optim_defaults:
            default = f"the strategy's, else {optim_defaults[f.name]}"
        help_text = f"{TRAIN_HELP.get(f.name, '')} (default: {default})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)
    if only is None or "cache" in only:
        parser.add_argument("--no-cache", dest="cache", action="store_const", const="off", help="same as --cache off")
    if only is None or "strategy_options" in only:
        add_strategy_option_flags(parser)


def add_strategy_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option of every registered strategy config; each is valid only with its strategy."""
    from .strategies import option_owners

    group = parser.add_argument_group("strategy options", "valid only with the strategy named in [brackets]")
    for name, owners in option_owners().items():
        f = next(f for f in dataclasses.fields(owners[0]) if f.name == name)
        hint = typing.get_type_hints(owners[0])[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kind = args[0] if args else hint
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"[{', '.join(o.name for o in owners)}] {f.metadata.get('help', '')}"
        help_text += f" (default: {default})" if default is not None else ""
        if f.metadata.get("choices"):
            choices = "|".join(map(str, f.metadata["choices"]))
            help_text = help_text if choices in help_text else f"{help_text} [{choices}]"
        kwargs: dict[str, Any] = {"dest": _OPTION_DEST + name, "default": None, "help": help_text,
                                  "metavar": name.upper()}
        if kind is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, metavar=None)
        elif typing.get_origin(kind) in (tuple, list):
            kwargs.update(nargs="+", type=typing.get_args(kind)[0])
        else:
            kwargs.update(type=kind)  # choices are checked by the config, which names the valid values
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def _load_yaml(path: str) -> tuple[dict[str, Any], Path]:
    """The mapping in a YAML config file (a path, or NAME of a packaged config: ``sclft list configs``) and
    the file it came from."""
    import yaml

    from .resources import find_yaml

    p = find_yaml("configs", path)
    try:
        values = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"--config {p}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {p}: not a text (UTF-8) file") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"--config {p}: invalid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if values is None:
        return {}, p
    if not isinstance(values, dict):
        raise ValueError(f"{p}: expected a mapping of TrainConfig fields (key: value lines), got a "
                         f"{type(values).__name__}")
    return values, p


def _per_strategy(section: Any, source: str) -> dict[str, dict[str, Any]]:
    """The ``per_strategy`` section: strategy name → TrainConfig fields (each coerced and checked)."""
    from .strategies import collect_strategy_options, list_strategies

    TrainConfig = _train_config_cls()
    if section is None:
        return {}
    example = "per_strategy: {linear_probe: {lr: 0.01}}"
    if not isinstance(section, dict):
        raise ValueError(f"{source}: per_strategy must be a mapping of strategy name to fields, e.g. {example}; "
                         f"got a {type(section).__name__}")
    out = {}
    for name, values in section.items():
        where = f"{source}: per_strategy.{name}"
        if name not in list_strategies():
            raise ValueError(f"{where}: unknown strategy {name!r}; valid strategies: {', '.join(list_strategies())}")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"{where} must be a mapping of TrainConfig fields, e.g. {example}; got {values!r}")
        if "strategy" in values:
            raise ValueError(f"{where}: 'strategy' cannot be set inside per_strategy")
        out[name] = TrainConfig.coerce(collect_strategy_options(values), where)
    return out


def _check_foreign(strategy: str, given: dict[str, Any], name_of: Callable[[str], str]) -> None:
    """An explicitly given option that only other strategies use is an error (the default value is not)."""
    import dataclasses as dc

    TrainConfig = _train_config_cls()
    defaults = {f.name: f.default for f in dc.fields(TrainConfig)}
    for option, owners in TrainConfig.foreign_options(strategy).items():
        if option in given and given[option] != defaults[option]:
            raise ValueError(f"{name_of(option)} {given[option]} is an option of {' and '.join(owners)}; "
                             f"strategy {strategy!r} does not use it")


def config_from_args(args: argparse.Namespace):
    """Defaults < YAML (--config; its `per_strategy` section for the chosen strategy) < explicit flags.

    YAML values go through the field types as the flags do. The top level of a YAML file is shared by
    all strategies, so its options of other strategies (``layer`` for linear_probe, ``fuse`` for layer_ft)
    are dropped; given as a flag or in the strategy's own ``per_strategy`` section they are an error.
    """
    from .strategies import collect_strategy_options, get_strategy_config, strategy_config
    from .config import ConfigError

    TrainConfig = _train_config_cls()
    values: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    source = "config"
    if getattr(args, "config", None):
        raw, path = _load_yaml(args.config)
        source = str(path)
        sections = _per_strategy(raw.pop("per_strategy", None), source)
        values = TrainConfig.coerce(collect_strategy_options(raw), source)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    options = {k[len(_OPTION_DEST):]: v for k, v in vars(args).items() if k.startswith(_OPTION_DEST) and v is not None}
    strategy = flags.get("strategy", values.get("strategy", TrainConfig.strategy))
    own = get_strategy_config(strategy).option_names()
    section = sections.get(strategy, {})
    flag_name = lambda o: "--" + o.replace("_", "-")  # noqa: E731
    _check_foreign(strategy, flags, flag_name)
    _check_foreign(strategy, section, lambda o: f"{source}: per_strategy.{strategy}.{o}")
    foreign = TrainConfig.foreign_options(strategy)
    values = {k: v for k, v in values.items() if k not in foreign}
    shared = {k: v for k, v in values.pop("strategy_options", {}).items() if k in own}  # top level: own options only
    origin = {**{k: f"{source}: {k}" for k in values}, **{k: f"{source}: per_strategy.{strategy}.{k}" for k in section},
              **{k: flag_name(k) for k in flags}}
    values.update({k: v for k, v in section.items() if k != "strategy_options"})
    values.update(flags)
    given = [(section.get("strategy_options", {}), lambda o: f"{source}: per_strategy.{strategy}.{o}"),
             (options, flag_name)]
    for opts, name_of in given:
        for k, v in opts.items():
            try:
                strategy_config(strategy, **{k: v})
            except ValueError as e:
                raise ValueError(f"{name_of(k)}: {e}") from None
    values["strategy_options"] = {**shared, **section.get("strategy_options", {}), **options}
    try:
        return TrainConfig.from_dict(values).validate()
    except ConfigError as e:  # say where the bad value came from
        raise ValueError(f"{origin[e.key]}: {e}" if e.key in origin else str(e)) from None


def _given(args: argparse.Namespace, names: Sequence[str]):
    """A validated TrainConfig of the train flags a sub-command (probe, eval) was given."""
    return _train_config_cls().from_dict({n: getattr(args, n) for n in names if getattr(args, n, None) is not None},
                                         "flags").validate()


# -------------------------------------------------------------------------------------------- list
@command("list")
def _list_parser(sub) -> None:
    p = sub.add_parser("list", help="list backbones, datasets, strategies, configs or bench suites")
    p.add_argument("what", choices=list(LISTERS))
    p.set_defaults(func=run_list)


def _list_backbones() -> list[str]:
    from .backbones import backbone_entries

    return [f"{e.name:<20} {e.weights}" for e in backbone_entries()] + [
        "timm:<name>          any timm ResNet / EfficientNet / ViT", "open_clip:<arch>/<tag> any open_clip ViT"]


def _list_datasets() -> list[str]:
    from .data import list_datasets, list_prefixes

    return list_datasets() + list_prefixes()


def _list_strategies() -> list[str]:
    from .strategies import get_strategy_config, list_strategies  # the configs: torch-free

    return [f"{n:<14} {get_strategy_config(n).description}" for n in list_strategies()]


def _list_packaged(kind: str) -> Callable[[], list[str]]:
    def lister() -> list[str]:
        from .resources import list_yaml

        return list_yaml(kind)

    return lister


# what `sclft list WHAT` prints; each imports only what it needs
LISTERS: dict[str, Callable[[], list[str]]] = {
    "backbones": _list_backbones,
    "datasets": _list_datasets,
    "strategies": _list_strategies,
    "configs": _list_packaged("configs"),  # sclft train --config NAME
    "suites": _list_packaged("suites"),  # sclft bench --suite NAME
}


def run_list(args) -> int:
    print("\n".join(LISTERS[args.what]()))
    return 0


# -------------------------------------------------------------------------------------------- probe
PROBE_FLAGS = ["backbone", "data", "data_dir", "image_size", "batch_size", "train_per_class", "seed", "pretrained",
               "checkpoint", "num_workers", "progress", "layer_rule", "max_params"]


@command("probe")
def _probe_parser(sub) -> None:
    p = sub.add_parser("probe", help="layer-wise NC1 of a pretrained backbone on the downstream training data")
    add_train_flags(p, only=PROBE_FLAGS)
    p.add_argument("--layers", default="all", help="'all' or comma-separated block names")
    p.add_argument("--pooling", default=None, help="avg | avg2x2 | flatten (conv); cls | mean_tokens | flatten (ViT)")
    p.add_argument("--split", default="train", choices=["train", "test", "val"])
    p.add_argument("--normalize", action="store_true", help="divide NC1 by K (Papyan et al.)")
    p.add_argument("--jackknife", type=int, default=None, metavar="G",
                   help="also each layer's standard error of NC1 (nc1_se): a delete-one-group jackknife, G >= 2 groups")
    p.add_argument("--rank", action="store_true",
                   help="rank the candidate blocks of --layer auto (--layer-rule, --max-params) with their evidence "
                        "instead of probing every layer")
    p.add_argument("--out", default=None, help="writes OUT/probe.csv and OUT/probe.png (OUT/rank.json with --rank)")
    p.set_defaults(func=run_probe)


def run_rank(args, pick) -> int:
    """``sclft probe --rank``: the layer rule's ranking of the candidate blocks, best first."""
    from .backbones import create_backbone
    from .data import load_dataset
    from .io import atomic_write_json
    from .selection import select_layer
    from .config import TrainConfig

    fields = ["backbone", "data", "data_dir", "image_size", "batch_size", "train_per_class", "seed", "pretrained",
              "checkpoint", "progress", "layer_rule", "max_params"]
    cfg = TrainConfig(**{f: pick(f) for f in fields}).validate()
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class, seed=cfg.seed)
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint, image_size=cfg.image_size)
    result = select_layer(backbone, splits, cfg)
    ranking = result["ranking"]
    columns = [k for k in ranking[0] if k not in ("block", "score")] + ["score"]
    print(f"layer rule {result['rule']}" + (f" ({result['pick']})" if result.get("pick") else "")
          + f", candidates within {result['max_params']:g}% parameters; picks {result['layer']}"
          + f" ({result['seconds']:.1f} s)")
    print(f"{'rank':>4}  {'block':<16}" + "".join(f"{c:>18}" for c in columns))
    for i, row in enumerate(ranking, 1):
        print(f"{i:>4}  {row['block']:<16}" + "".join(f"{row[c]:>18.4g}" if row[c] is not None else f"{'–':>18}"
                                                     for c in columns))
    if result.get("picks"):
        print("other picks: " + ", ".join(f"{k} {v}" for k, v in result["picks"].items()))
    if args.out:
        print(f"wrote {atomic_write_json(Path(args.out) / 'rank.json', result)}")
    return 0


def run_probe(args) -> int:
    from .backbones import create_backbone
    from .backbones.base import POOLERS
    from .data import TransformedDataset, build_transforms, load_dataset
    from .probe import probe
    from .io import check_out_dir

    cfg = _given(args, PROBE_FLAGS)
    if args.rank:
        return run_rank(args, lambda name: getattr(cfg, name))
    if not args.out:
        raise ValueError("sclft probe needs --out DIR (or --rank)")
    if args.jackknife is not None and args.jackknife < 2:
        raise ValueError(f"--jackknife must be a number of groups >= 2, got {args.jackknife}")
    check_out_dir(args.out)
    layers = "all" if args.layers == "all" else [s.strip() for s in args.layers.split(",")]
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class, seed=cfg.seed)
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint, image_size=cfg.image_size)
    for name in [] if layers == "all" else layers:
        backbone.check_block(name)
    if args.pooling is not None and args.pooling not in POOLERS[backbone.layout]:
        raise ValueError(f"--pooling {args.pooling!r} is not valid for {backbone.name} ({backbone.layout} layout); "
                         f"valid: {', '.join(POOLERS[backbone.layout])}")
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size)
    split = getattr(splits, args.split)
    if split is None:
        raise ValueError(f"{splits.name} has no {args.split!r} split")
    res = probe(backbone, TransformedDataset(split, eval_tf), layers, pooling=args.pooling,
                num_classes=splits.num_classes, normalize=args.normalize, batch_size=cfg.batch_size,
                num_workers=cfg.num_workers, progress=cfg.progress, jackknife=args.jackknife or 0)
    out = Path(args.out)
    res.to_csv(out / "probe.csv")
    res.plot(out / "probe.png", title=f"Layer-wise NC1 — {backbone.name} on {splits.name} ({args.split})")
    print(res.table())
    print(f"wrote {out / 'probe.csv'} and {out / 'probe.png'}")
    return 0


# -------------------------------------------------------------------------------------------- train
@command("train")
def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one model; writes OUT/metrics.json, OUT/model.safetensors, checkpoints")
    p.add_argument("--config", help="YAML file of TrainConfig fields, or the NAME of a packaged one (sclft list configs); "
                                       "explicit flags win")
    add_train_flags(p)
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from .io import check_out_dir
    from .train import train

    cfg = config_from_args(args)
    check_out_dir(cfg.out)
    metrics = train(cfg)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch` every process trains; the main one reports
        return 0
    layer = metrics["layer"] or "-"
    print(
        f"{metrics['backbone']} / {metrics['strategy']} on {metrics['dataset']}: layer {layer}, "
        f"test accuracy {100 * metrics['test_accuracy']:.2f}%, train accuracy {100 * metrics['train_accuracy']:.2f}%, "
        f"NC1 train {metrics['nc1_train']:.3g}, trainable {metrics['trainable_percent']:.2f}% "
        f"({metrics['trainable_params']:,} params), {metrics['seconds']:.0f} s"
    )
    print(f"wrote {Path(cfg.out) / 'metrics.json'}")
    return 0


# -------------------------------------------------------------------------------------------- eval
EVAL_FLAGS = ["data", "data_dir", "image_size", "batch_size", "num_workers", "progress"]


@command("eval")
def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model directory on a dataset split")
    p.add_argument("--checkpoint", required=True, help="a `sclft train --out` directory")
    add_train_flags(p, only=EVAL_FLAGS)
    p.add_argument("--split", default="test", choices=["train", "test", "val"])
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from .eval import evaluate_run

    given = _given(args, EVAL_FLAGS)
    result = evaluate_run(args.checkpoint, data=args.data, split=args.split, data_dir=args.data_dir,
                          image_size=args.image_size, batch_size=args.batch_size or 64,
                          num_workers=given.num_workers, progress=given.progress)
    print(json.dumps(result, indent=2))
    return 0


# -------------------------------------------------------------------------------------------- main
def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `sclft` parser. Given ``argv``, only the module of the command it runs is imported; the other
    module commands get a placeholder parser (name and help), so ``sclft --help`` imports none of them."""
    parser = argparse.ArgumentParser(prog="sclft", description="Neural-collapse-guided transfer learning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _BUILTIN.values():
        add(sub)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (module, help_text) in COMMAND_MODULES.items():
        if chosen is None or chosen == name:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


# exception (module, class) -> exit code; first match wins: a missing file is bad input, other OS errors (disk
# full, permissions) fail the run. Classes of modules not imported yet cannot have been raised: not imported here.
FAILURE_CODES = [("sclft.data", "DatasetUnavailableError", 1), ("sclft._hub", "WeightsUnavailableError", 1),
                 ("sclft.train", "NonFiniteLossError", 1), ("builtins", "FileNotFoundError", 2),
                 ("builtins", "ValueError", 2), ("builtins", "OSError", 1)]


def _exit_code(e: BaseException) -> int | None:
    """The exit code of a known failure, or None (an unexpected error: show the traceback)."""
    for module, name, code in FAILURE_CODES:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return code
    return None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as e:
        code = _exit_code(e)
        if code is None or os.environ.get("SCLFT_DEBUG"):
            raise
        print(f"sclft {args.command}: error: {e}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())

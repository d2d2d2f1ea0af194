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

# sub-command name -> module exposing ``add_parser(subparsers)``; the parser sets ``func(args) -> int``.
COMMAND_MODULES = {
    "dln": "sclft.dln.cli",
    "bench": "sclft.bench",
}
_BUILTIN: dict[str, Callable[[Any], None]] = {}

# help text for TrainConfig fields that become `sclft train` flags
TRAIN_HELP = {
    "backbone": "backbone name (sclft list backbones), timm:<name> or open_clip:<arch>/<tag>",
    "data": "dataset name (sclft list datasets), imagefolder:PATH or hf:<repo_id>",
    "strategy": "transfer strategy (sclft list strategies); its options are the flags under 'strategy options'",
    "layer": "block to tune, or 'auto' to choose it by NC1 on the training data",
    "layer_rule": "rule for --layer auto: auto | profile | trial",
    "epochs": "training epochs",
    "lr": "peak learning rate (after warm-up; cosine decay to 0)",
    "batch_size": "images per step",
    "optimizer": "adamw | sgd",
    "weight_decay": "weight decay (not applied to norms and biases)",
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
    "resume": "continue an interrupted run from --out/checkpoint",
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
    from .train import TrainConfig

    return TrainConfig


def add_train_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One flag per TrainConfig field; defaults are None so YAML / defaults can fill what was not given."""
    for f in dataclasses.fields(_train_config_cls()):
        if f.name in _NOT_FLAGS or (only is not None and f.name not in only):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f)
        default = f.default if f.default is not dataclasses.MISSING else None
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
        kwargs: dict[str, Any] = {"dest": _OPTION_DEST + name, "default": None, "help": help_text,
                                  "metavar": name.upper()}
        if kind is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, metavar=None)
        elif typing.get_origin(kind) in (tuple, list):
            kwargs.update(nargs="+", type=typing.get_args(kind)[0])
        else:
            kwargs.update(type=kind, choices=f.metadata.get("choices"))
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file() and (Path("configs") / f"{path}.yaml").is_file():
        p = Path("configs") / f"{path}.yaml"
    if not p.is_file():
        raise ValueError(f"config file not found: {path}")
    values = yaml.safe_load(p.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{p}: expected a mapping of TrainConfig fields")
    return values


def config_from_args(args: argparse.Namespace):
    """Defaults < YAML (--config; its `per_strategy` section for the chosen strategy) < explicit flags."""
    TrainConfig = _train_config_cls()
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = _load_yaml(args.config)
    per_strategy = values.pop("per_strategy", {}) or {}
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    options = {k[len(_OPTION_DEST):]: v for k, v in vars(args).items() if k.startswith(_OPTION_DEST) and v is not None}
    strategy = flags.get("strategy", values.get("strategy", TrainConfig.strategy))
    values.update(per_strategy.get(strategy, {}))
    values.update(flags)
    if options:  # flags win over YAML: lift YAML's top-level option keys first, then override
        from .strategies import collect_strategy_options

        values = collect_strategy_options(values)
        values["strategy_options"] = {**values.get("strategy_options", {}), **options}
    return TrainConfig.from_dict(values).validate()


# -------------------------------------------------------------------------------------------- list
@command("list")
def _list_parser(sub) -> None:
    p = sub.add_parser("list", help="list backbones, datasets or strategies")
    p.add_argument("what", choices=["backbones", "datasets", "strategies"])
    p.set_defaults(func=run_list)


def run_list(args) -> int:
    from .backbones import backbone_entries
    from .data import list_datasets, list_prefixes
    from .strategies import get_strategy_config, list_strategies

    listers = {
        "backbones": lambda: [f"{e.name:<20} {e.weights}" for e in backbone_entries()]
        + ["timm:<name>          any timm ResNet / EfficientNet / ViT", "open_clip:<arch>/<tag> any open_clip ViT"],
        "datasets": lambda: list_datasets() + list_prefixes(),
        "strategies": lambda: [f"{n:<14} {get_strategy_config(n).description}" for n in list_strategies()],
    }
    print("\n".join(listers[args.what]()))
    return 0


# -------------------------------------------------------------------------------------------- probe
@command("probe")
def _probe_parser(sub) -> None:
    p = sub.add_parser("probe", help="layer-wise NC1 of a pretrained backbone on the downstream training data")
    add_train_flags(p, only=["backbone", "data", "data_dir", "image_size", "batch_size", "train_per_class", "seed",
                             "pretrained", "checkpoint", "num_workers", "progress"])
    p.add_argument("--layers", default="all", help="'all' or comma-separated block names")
    p.add_argument("--pooling", default=None, help="avg | avg2x2 | flatten (conv); cls | mean_tokens | flatten (ViT)")
    p.add_argument("--split", default="train", choices=["train", "test", "val"])
    p.add_argument("--normalize", action="store_true", help="divide NC1 by K (Papyan et al.)")
    p.add_argument("--out", required=True, help="writes OUT/probe.csv and OUT/probe.png")
    p.set_defaults(func=run_probe)


def run_probe(args) -> int:
    from .backbones import create_backbone
    from .data import TransformedDataset, build_transforms, load_dataset
    from .probe import probe
    from .train import TrainConfig

    d = TrainConfig()
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else getattr(d, name)  # noqa: E731
    splits = load_dataset(pick("data"), pick("data_dir"), train_per_class=pick("train_per_class"), seed=pick("seed"))
    backbone = create_backbone(pick("backbone"), pretrained=pick("pretrained"), checkpoint=pick("checkpoint"))
    _, eval_tf = build_transforms(backbone.data_config, pick("image_size"))
    split = getattr(splits, args.split)
    if split is None:
        raise ValueError(f"{splits.name} has no {args.split!r} split")
    layers = "all" if args.layers == "all" else [s.strip() for s in args.layers.split(",")]
    res = probe(backbone, TransformedDataset(split, eval_tf), layers, pooling=args.pooling,
                num_classes=splits.num_classes, normalize=args.normalize, batch_size=pick("batch_size"),
                num_workers=pick("num_workers"), progress=pick("progress"))
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
    p.add_argument("--config", help="YAML file of TrainConfig fields (configs/*.yaml); explicit flags win")
    add_train_flags(p)
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from .train import train

    cfg = config_from_args(args)
    metrics = train(cfg)
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
@command("eval")
def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model directory on a dataset split")
    p.add_argument("--checkpoint", required=True, help="a `sclft train --out` directory")
    add_train_flags(p, only=["data", "data_dir", "image_size", "batch_size", "num_workers", "progress"])
    p.add_argument("--split", default="test", choices=["train", "test", "val"])
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from .eval import evaluate_run

    result = evaluate_run(args.checkpoint, data=args.data, split=args.split, data_dir=args.data_dir,
                          image_size=args.image_size, batch_size=args.batch_size or 64,
                          num_workers=args.num_workers or 0, progress=args.progress is not False)
    print(json.dumps(result, indent=2))
    return 0


# -------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sclft", description="Neural-collapse-guided transfer learning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _BUILTIN.values():
        add(sub)
    for module in COMMAND_MODULES.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def _failure_codes() -> dict[type, int]:
    from ._hub import WeightsUnavailableError
    from .data import DatasetUnavailableError
    from .train import NonFiniteLossError

    return {DatasetUnavailableError: 1, WeightsUnavailableError: 1, NonFiniteLossError: 1, FileNotFoundError: 2,
            ValueError: 2}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    codes = _failure_codes()
    try:
        return int(args.func(args) or 0)
    except tuple(codes) as e:
        if os.environ.get("SCLFT_DEBUG"):
            raise
        code = next(c for t, c in codes.items() if isinstance(e, t))
        print(f"sclft {args.command}: error: {e}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`sclft` command line: list, probe, train, eval here; bench and dln from their own modules.

Exit codes (:mod:`sclft.errors`): 0 success, 1 the environment lacks something (data, weights, a device, disk
space) or the run failed (non-finite or diverged loss), 2 bad input, 130 interrupted. Any other exception is a bug
and keeps its traceback; SCLFT_DEBUG=1 shows the traceback of the expected failures too.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
import typing
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import OPTIM_DEFAULTS, PRECISIONS, TrainConfig, flag_name, layered_config, unwrap_optional
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, Interrupted, UsageError, exit_code
from .io import atomic_write_json, atomic_write_text, check_out_dir
from .resources import list_yaml
from .run_folder import METRICS_FILE, WEIGHTS_FILE, check_out_file, check_out_folder
from .strategies import get_strategy_config, list_strategies, option_owners

# sub-command name -> (module exposing ``add_parser(subparsers)``, its one-line help); the parser sets
# ``func(args) -> int``. A module is imported only when its command is the one run (the CLI answers at once).
COMMAND_MODULES = {
    "dln": ("sclft.dln.cli", "deep-linear-network theory lab (the lecture §2–4)"),
    "bench": ("sclft.bench", "run a benchmark suite and build its tables and plots"),
    "rank": ("sclft.rank_cli", "rank candidate backbones by NC1, LogME and NCTI on the training data"),
}
_BUILTIN: dict[str, Callable[[Any], None]] = {}

_NOT_FLAGS = {"extra", "strategy_options"}
_OPTION_DEST = "strategy_option:"  # argparse dest prefix of the strategy-option flags


def command(name: str):
    """Register a built-in sub-command's parser builder."""

    def deco(fn):
        _BUILTIN[name] = fn
        return fn

    return deco


def _field_type(f: dataclasses.Field) -> type:
    return unwrap_optional(typing.get_type_hints(TrainConfig)[f.name])[0]


def add_train_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One flag per TrainConfig field; defaults are None so YAML / defaults can fill what was not given."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_FLAGS or (only is not None and f.name not in only):
            continue
        flag = flag_name(f.name)
        kind = _field_type(f)
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is None and f.name in OPTIM_DEFAULTS:
            default = f"the strategy's, else {OPTIM_DEFAULTS[f.name]}"
        help_text = f.metadata["help"]  # declared with the field (sclft.config.TrainConfig)
        if default is not None and "(default" not in help_text:  # a default shown once; None: none, or said
            help_text += f" (default: {default})"
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
    group = parser.add_argument_group("strategy options", "valid only with the strategy named in [brackets]")
    for name, owners in option_owners().items():
        f = next(f for f in dataclasses.fields(owners[0]) if f.name == name)
        kind = unwrap_optional(typing.get_type_hints(owners[0])[name])[0]
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
        group.add_argument(flag_name(name), **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: defaults < ``--config`` YAML < explicit flags (:func:`sclft.config.layered_config`)."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    options = {k[len(_OPTION_DEST):]: v for k, v in vars(args).items() if k.startswith(_OPTION_DEST) and v is not None}
    return layered_config(getattr(args, "config", None), flags, options)


def _given(args: argparse.Namespace, names: Sequence[str]):
    """A validated TrainConfig of the train flags a sub-command (probe, eval) was given."""
    return TrainConfig.from_dict({n: getattr(args, n) for n in names if getattr(args, n, None) is not None},
                                         "flags").validate()


# -------------------------------------------------------------------------------------------- list
@command("list")
def _list_parser(sub) -> None:
    p = sub.add_parser("list", help="list backbones, datasets, strategies, configs or bench suites")
    p.add_argument("what", choices=list(LISTERS), help=f"what to list: {', '.join(LISTERS)}")
    p.set_defaults(func=run_list)


def _list_backbones() -> list[str]:
    from .backbones import backbone_entries  # torch: only when the command runs (light --help)

    return [f"{e.name:<20} {e.weights}" for e in backbone_entries()] + [
        "timm:<name>          any timm ResNet / EfficientNet / ViT", "open_clip:<arch>/<tag> any open_clip ViT"]


def _list_datasets() -> list[str]:
    from .data import list_datasets, list_prefixes  # torch: only when the command runs (light --help)

    return list_datasets() + list_prefixes()


def _list_strategies() -> list[str]:
    return [f"{n:<14} {get_strategy_config(n).description}" for n in list_strategies()]


def _list_suites() -> list[str]:
    """Each packaged suite with its run count, estimated cost (as ``sclft bench --dry-run`` totals it) and
    description."""

    from .bench.cost import suite_cost  # torch: only when the command runs (light --help)
    from .bench.suite import load_suite

    rows = []
    logging.disable(logging.WARNING)  # the block budget's fallback notes of expanding each suite are not the listing
    try:
        for name in list_yaml("suites"):
            suite = load_suite(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs, seconds, basis = suite_cost(suite)
            cost = f"{seconds / 3600:.1f} {suite.cost_unit}-hours" if seconds >= 3600 else \
                f"{seconds / 60:.0f} {suite.cost_unit}-minutes"
            rows.append(f"{name:<22} {runs:>4} runs  ~{cost:<17} ({basis})  {suite.description}")
    finally:
        logging.disable(logging.NOTSET)
    return rows


def _list_packaged(kind: str) -> Callable[[], list[str]]:
    def lister() -> list[str]:
        return list_yaml(kind)

    return lister


# what `sclft list WHAT` prints; each imports only what it needs
LISTERS: dict[str, Callable[[], list[str]]] = {
    "backbones": _list_backbones,
    "datasets": _list_datasets,
    "strategies": _list_strategies,
    "configs": _list_packaged("configs"),  # sclft train --config NAME
    "suites": _list_suites,  # sclft bench --suite NAME
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
    p.add_argument("--config", help="YAML file of TrainConfig fields (or NAME: sclft list configs); probe reads the "
                                    "ones of its flags below and extra.selection (with --rank); explicit flags win")
    add_train_flags(p, only=PROBE_FLAGS)
    p.add_argument("--layers", default="all", help="'all' or comma-separated block names")
    p.add_argument("--pooling", default=None, help="avg | avg2x2 | flatten (conv); cls | mean_tokens | flatten (ViT)")
    p.add_argument("--split", default="train", choices=["train", "test", "val"],
                   help="split to probe (default: train)")
    p.add_argument("--normalize", action="store_true", help="divide NC1 by K (Papyan et al.)")
    p.add_argument("--jackknife", type=int, default=None, metavar="G",
                   help="also each layer's standard error of NC1 (nc1_se): a delete-one-group jackknife, G >= 2 groups")
    p.add_argument("--rank", action="store_true",
                   help="rank the candidate blocks of --layer auto (--layer-rule, --max-params) with their evidence "
                        "instead of probing every layer")
    p.add_argument("--out", default=None, help="writes OUT/probe.csv and OUT/probe.png (OUT/rank.json with --rank)")
    p.set_defaults(func=run_probe)


def run_rank(args, cfg: TrainConfig, layers: list[str] | None) -> int:
    """``sclft probe --rank``: the layer rule's ranking of the candidate blocks, best first. ``--layers`` are the
    candidates, ``--jackknife`` the profile rule's groups; flags of the plain probe that a rule does not use are
    refused."""
    from .backbones import create_backbone  # torch: loaded only when the command runs (sclft --help stays light)
    from .data import load_dataset
    from .picks import DEFAULT_RULE
    from .selection import select_layer

    unused = [flag for flag, given in (("--pooling", args.pooling is not None), ("--normalize", args.normalize),
                                       ("--split", args.split != "train")) if given]
    rule = DEFAULT_RULE if cfg.layer_rule == "auto" else cfg.layer_rule
    if args.jackknife is not None and rule != "profile":
        unused.append(f"--jackknife (layer rule {rule} computes no standard error)")
    if unused:
        raise UsageError(f"{', '.join(unused)}: not used by --rank (the layer rule reads the training split its own "
                         "way); drop them, or probe without --rank")
    selection = {**({"candidates": layers} if layers else {}),
                 **({"profile_jackknife": args.jackknife} if args.jackknife is not None else {})}
    given = (cfg.extra or {}).get("selection") or {}  # e.g. the pick of --layer-rule profile:logme, or --config's
    cfg = dataclasses.replace(cfg, extra={**cfg.extra, "selection": {**given, **selection}}).validate()
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class, seed=cfg.seed)
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                               image_size=cfg.image_size)
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
    from .backbones import create_backbone  # torch: only when the command runs (light --help)
    from .backbones.base import POOLERS
    from .data import TransformedDataset, build_transforms, load_dataset, targets_of
    from .probing import probe

    flags = {n: getattr(args, n) for n in PROBE_FLAGS if getattr(args, n, None) is not None}
    cfg = layered_config(args.config, flags) if args.config else _given(args, PROBE_FLAGS)
    if args.jackknife is not None and args.jackknife < 2:
        raise UsageError(f"--jackknife must be a number of groups >= 2, got {args.jackknife}")
    layers = None if args.layers == "all" else [s.strip() for s in args.layers.split(",")]
    if args.out:
        check_out_folder(args.out, ("rank.json",) if args.rank else ("probe.csv", "probe.png"))
    if args.rank:
        return run_rank(args, cfg, layers)
    if not args.out:
        raise UsageError("sclft probe needs --out DIR (or --rank)")
    splits = load_dataset(cfg.data, cfg.data_dir, train_per_class=cfg.train_per_class, seed=cfg.seed)
    split = getattr(splits, args.split)
    if split is None:
        raise UsageError(f"{splits.name} has no {args.split!r} split")
    largest = max(Counter(targets_of(split)).values())
    if args.jackknife is not None and args.jackknife > largest:  # the groups beyond it would stay empty
        raise UsageError(f"--jackknife {args.jackknife}: more groups than samples of any class in the {args.split} "
                         f"split (at most {largest}); use --jackknife {largest} or fewer")
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                               image_size=cfg.image_size)
    for name in layers or []:
        backbone.check_block(name)
    if args.pooling is not None and args.pooling not in POOLERS[backbone.layout]:
        raise UsageError(f"--pooling {args.pooling!r} is not valid for {backbone.name} ({backbone.layout} layout); "
                         f"valid: {', '.join(POOLERS[backbone.layout])}")
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size)
    res = probe(backbone, TransformedDataset(split, eval_tf), layers or "all", pooling=args.pooling,
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
    p = sub.add_parser("train", help=f"train one model; writes OUT/{METRICS_FILE}, OUT/{WEIGHTS_FILE}, checkpoints")
    p.add_argument("--config", help="YAML file of TrainConfig fields, or the NAME of a packaged one "
                                    "(sclft list configs); explicit flags win")
    add_train_flags(p)
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    cfg = config_from_args(args)  # every option checked before torch, the data or the weights load
    from accelerate import PartialState  # torch: loaded only when the command runs (sclft --help stays light)

    from .training import train  # torch: only when the command runs (light --help)

    check_out_dir(cfg.out)
    metrics = train(cfg)

    if not PartialState().is_main_process:  # under `accelerate launch` every process trains; the main one reports
        return 0
    layer = metrics["layer"] or "-"
    print(
        f"{metrics['backbone']} / {metrics['strategy']} on {metrics['dataset']}: layer {layer}, "
        f"test accuracy {100 * metrics['test_accuracy']:.2f}%, train accuracy {100 * metrics['train_accuracy']:.2f}%, "
        f"NC1 train {metrics['nc1_train']:.3g}, trainable {metrics['trainable_percent']:.2f}% "
        f"({metrics['trainable_params']:,} params), {metrics['seconds']:.0f} s"
    )
    print(f"wrote {Path(cfg.out) / METRICS_FILE}")
    return 0


# -------------------------------------------------------------------------------------------- eval
def add_backbone_weights_flag(p: argparse.ArgumentParser) -> None:
    """``--backbone-weights FILE`` of the commands that load a run (eval, predict, export): load(checkpoint=)."""
    p.add_argument("--backbone-weights", default=None, metavar="FILE",
                   help="the backbone weights file of a run trained with `--checkpoint FILE` (a run folder never leads "
                        "to a file outside it; checked against the run's checkpoint_sha256)")


EVAL_FLAGS = ["data", "data_dir", "image_size", "batch_size", "num_workers", "progress"]


@command("eval")
def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model directory on a dataset split")
    p.add_argument("--checkpoint", required=True, help="a `sclft train --out` directory")
    add_backbone_weights_flag(p)
    add_train_flags(p, only=EVAL_FLAGS)
    p.add_argument("--split", default="test", choices=["train", "test", "val"],
                   help="split to evaluate (default: test)")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from .eval import evaluate_run  # torch: only when the command runs (light --help)

    given = _given(args, EVAL_FLAGS)
    result = evaluate_run(args.checkpoint, data=args.data, split=args.split, data_dir=args.data_dir,
                          image_size=args.image_size, batch_size=args.batch_size or 64,
                          num_workers=given.num_workers, progress=given.progress,
                          backbone_weights=args.backbone_weights)
    print(json.dumps(result, indent=2))
    return 0


# -------------------------------------------------------------------------------------------- predict
@command("predict")
def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify image files / folders with a trained run (top-k CSV or JSON)")
    p.add_argument("--checkpoint", required=True, help="a finished `sclft train --out` folder")
    add_backbone_weights_flag(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files, folders (searched recursively) or .txt files listing image paths")
    p.add_argument("--top-k", type=int, default=5, help="classes per image, most probable first (default: 5)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--out", default=None, help="FILE.csv or FILE.json (default: CSV on stdout); never a device or a "
                                               "file of a run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument("--precision", default="no", choices=PRECISIONS, help="autocast dtype (default: no)")
    p.add_argument("--num-workers", type=int, default=0, help="image-decoding worker processes (default: 0)")
    p.add_argument("--strict", action="store_true", help="an unreadable file is an error (exit 2) instead of a "
                                                         "warning; nothing is written")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args) -> int:
    from .predict import OUT_FORMATS, format_rows, gather_images, predict_files, resolve_device  # torch
    from .run_folder import check_run, load

    fmt = Path(args.out).suffix.lower() if args.out else ".csv"
    if fmt not in OUT_FORMATS:
        raise UsageError(f"--out {args.out}: unknown format {fmt or '(no suffix)'}; valid: {', '.join(OUT_FORMATS)}")
    if args.top_k < 1 or args.batch_size < 1:
        raise UsageError(f"--top-k and --batch-size must be >= 1, got {args.top_k} and {args.batch_size}")
    resolve_device(args.device)  # before the model loads
    if args.out:
        check_out_file(args.out, "--out", args.overwrite)
    run = check_run(args.checkpoint)
    inputs = gather_images(args.inputs)  # before the model loads: bad input fails at once
    for what in inputs.empty:
        print(f"sclft predict: warning: {what}", file=sys.stderr)
    model = load(run, checkpoint=args.backbone_weights)
    rows, skipped = predict_files(model, inputs, top_k=args.top_k, batch_size=args.batch_size, device=args.device,
                                  precision=args.precision, num_workers=args.num_workers, progress=args.progress)
    if skipped:
        listed = "\n".join(f"  {reason}" for _, reason in skipped)
        if args.strict:
            raise UsageError(f"{len(skipped)} of {len(inputs.files)} file(s) are not readable images "
                             f"(--strict; nothing written):\n{listed}")
        print(f"sclft predict: warning: skipped {len(skipped)} of {len(inputs.files)} file(s) that are not readable "
              f"images:\n{listed}", file=sys.stderr)
    if not rows:
        raise UsageError(f"none of the {len(inputs.files)} file(s) is a readable image; nothing to predict")
    text = format_rows(rows, fmt, args.top_k)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {len(rows)} prediction(s) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# -------------------------------------------------------------------------------------------- export
@command("export")
def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a trained run as one network: ONNX, TorchScript or safetensors")
    p.add_argument("--checkpoint", required=True, help="a finished `sclft train --out` folder")
    add_backbone_weights_flag(p)
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "safetensors"],
                   help="onnx (checked with onnx.checker and onnxruntime), torchscript (traced), safetensors "
                        "(a folder in timm's Hub layout: timm rebuilds timm graphs, sclft the others)")
    p.add_argument("--out", required=True, help="the file to write (atomically; safetensors: a new or empty folder); "
                                                "never a device or a file of a run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (safetensors: the "
                                                            "export's files in a non-empty folder)")
    p.add_argument("--dynamo", action=argparse.BooleanOptionalAction, default=True,
                   help="onnx: torch's dynamo exporter (default); --no-dynamo: its older TorchScript-based one")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="compare the exported logits with PyTorch's at batch sizes 1 and 3 (default: on)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    # torch: only when the command runs (light --help)
    from .export import check_export_out, export_model, read_metadata
    from .run_folder import check_run, load

    check_export_out(args.out, args.format, args.overwrite)
    model = load(check_run(args.checkpoint), checkpoint=args.backbone_weights)
    path = export_model(model, args.format, args.out, verify=args.verify, dynamo=args.dynamo, overwrite=args.overwrite)
    meta = read_metadata(path, args.format)
    how = f"; rebuild: {meta['rebuild']}" if "rebuild" in meta else ""
    print(f"wrote {path} ({args.format}; input {meta['input_size']}, {len(meta['class_names'])} classes"
          + (", logits checked against PyTorch" if args.verify else "") + how + "; preprocessing: the "
          "'preprocessing' metadata, sclft.preprocess)")
    return 0


# -------------------------------------------------------------------------------------------- push
@command("push")
def _push_parser(sub) -> None:
    p = sub.add_parser("push", help="upload a finished run to the Hugging Face Hub (card, config, weights, exports)")
    p.add_argument("--checkpoint", required=True, help="a finished `sclft train --out` folder")
    p.add_argument("--repo-id", required=True, help="the Hub model repository, NAME or OWNER/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps its "
                                                          "visibility)")
    p.add_argument("--exports", default=None, metavar="FORMATS",
                   help="also upload these exports under exports/<format>/: a comma-separated list of onnx, "
                        "torchscript, safetensors")
    p.add_argument("--message", default=None, help="commit message (default: sclft run NAME)")
    p.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    p.set_defaults(func=run_push)


def run_push(args) -> int:
    from .push import parse_exports, push  # huggingface_hub / torch: only when the command runs (light --help)

    exports = parse_exports(args.exports)
    files, url = push(args.checkpoint, args.repo_id, private=args.private, exports=exports, dry_run=args.dry_run,
                      message=args.message)
    for name, size in files:
        print(f"{size:>12,}  {name}")
    total = f"{len(files)} files, {sum(s for _, s in files):,} bytes"
    if url is None:
        print(f"dry run: would upload {total} to {args.repo_id}" + (" (private)" if args.private else ""))
    else:
        print(f"uploaded {total}: {url}")
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


def _interrupted(args) -> str:
    """What Ctrl-C prints: for ``sclft train``, ``--resume`` only where a checkpoint of this run exists."""
    if args.command != "train":
        return "interrupted"
    try:
        cfg = config_from_args(args)
    except Exception:  # the hint must never replace the interruption with another error
        return "interrupted"
    from .run_folder import CHECKPOINT_DIR, STAGING, has_checkpoint  # loaded already: the run had started

    out = Path(cfg.out)
    if (out / METRICS_FILE).is_file() or (out / STAGING).is_dir():  # --overwrite writes the new run beside the old
        return (f"interrupted; the previous run in {out} is unchanged; rerun with --overwrite to start the new run "
                "again")
    if has_checkpoint(out):
        return (f"interrupted; rerun with --resume{' (instead of --overwrite)' if cfg.overwrite else ''} to continue "
                f"from the last checkpoint in {out / CHECKPOINT_DIR}")
    return "interrupted before the first checkpoint was written; rerun the same command to start the run again"
def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:  # `sclft list ... | head`: the reader has gone; stop quietly, as a CLI killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail again
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as e:  # Ctrl-C, or an Interrupted that says what was kept
        print(f"sclft {args.command}: {e}" if isinstance(e, Interrupted) else _interrupted(args), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = exit_code(e)  # None: not an expected failure but a bug (also inside torch, numpy, timm): traceback
        if code is None or os.environ.get("SCLFT_DEBUG"):
            raise
        print(f"sclft {args.command}: error: {e}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())

"""``sclft rank``: score candidate backbones (and input sizes) on the training data (:mod:`sclft.ranking`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_format import HelpFormatter
from .run_folder import check_out_folder


def _main(args: argparse.Namespace) -> int:
    from .devices import resolve_device  # torch: only when the command runs (light --help)
    from .ranking import rank

    resolve_device(args.device)  # a device that does not exist here fails before any weights or data load
    if args.out:
        check_out_folder(args.out, ("rank.csv", "rank.json", "rank.png"))
    res = rank(args.backbones, args.data, image_sizes=args.image_size, train_per_class=args.train_per_class,
               seed=args.seed, by=args.by, controls=args.controls, data_dir=args.data_dir,
               batch_size=args.batch_size, device=args.device, progress=args.progress, checkpoint=args.checkpoint)
    print(f"{res.data}: {len(res.rows)} candidates on {res.num_samples} training images "
          f"({args.train_per_class} per class), best first by {res.by}")
    print(res.table())
    if args.out:
        out = Path(args.out)
        print("wrote " + ", ".join(str(p) for p in (res.to_csv(out / "rank.csv"), res.to_json(out / "rank.json"),
                                                    res.plot(out / "rank.png"))))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``rank`` on the top-level ``sclft`` parser."""
    from .ranking import DEFAULT_BY, SCORES  # torch: only when the command runs (light --help)

    p = subparsers.add_parser(
        "rank", help="rank candidate backbones by NC1, LogME and NCTI on the training data (one probe each)",
        description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--backbones", nargs="+", required=True, metavar="NAME[@SIZE]",
                   help="candidates: registry names (sclft list backbones), timm:<name>, open_clip:<arch>/<tag>; "
                        "NAME@SIZE fixes the input size of that candidate")
    p.add_argument("--data", required=True, help="dataset name (sclft list datasets), imagefolder:PATH or hf:<repo>")
    p.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N",
                   help="input sizes: each NAME without @SIZE becomes one candidate per size (default: its own)")
    p.add_argument("--train-per-class", type=int, default=100,
                   help="balanced, seeded subset of the training split that every candidate is probed on")
    p.add_argument("--by", choices=tuple(SCORES), default=DEFAULT_BY, help="score the table is sorted by")
    p.add_argument("--controls", action="store_true",
                   help="add a random-weight twin of every candidate (negative controls)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training subset and of the random twins")
    p.add_argument("--data-dir", default=None, help="local copy of the dataset (no download)")
    p.add_argument("--checkpoint", default=None, help="local weights file (only with a single backbone name)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] | mps (default: cuda when available)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--out", default=None, help="writes OUT/rank.csv, OUT/rank.json and OUT/rank.png")
    p.set_defaults(func=_main)
    return p

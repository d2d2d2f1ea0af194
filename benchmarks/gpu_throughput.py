"""Training-step throughput (images/s) of each strategy on one GPU: ViT-B/32, bf16 autocast.

Self-contained (sclft from this repository, ``pretrained=False``: no network). For every strategy it
times training steps on synthetic 224-px images — from images (uncached) and, where the strategy has a
frozen prefix, from cached prefix activations (the tail only, what ``sclft train`` does after the first
epoch) — plus the all-layer probe pass. Prints a markdown table; writes ``gpu_throughput.json`` to
``$OUT`` when that is set. Finishes in well under 4 minutes on an H100/H200.

    python benchmarks/gpu_throughput.py                       # CUDA required
    python benchmarks/gpu_throughput.py --quick --device cpu  # tiny smoke run anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's sclft

import sclft  # noqa: E402
from sclft.backbones import create_backbone  # noqa: E402

STRATEGIES = {"linear_probe": None, "layer_ft": "blocks.6", "scl_ft": "blocks.6", "full_ft": None}


def timed_rate(step, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Images per second over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - t)


def train_rates(backbone, strategy: str, x, y, args, device, autocast) -> dict[str, float]:
    model = sclft.TransferModel(backbone, strategy, num_classes=100, layer=STRATEGIES[strategy]).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=device.type == "cuda")
    with torch.no_grad(), autocast():
        z = model.frozen_forward(x) if model.strategy.has_frozen_prefix else None
    inputs = {"uncached": (x, False), **({"cached": (z, True)} if z is not None else {})}
    rates = {}
    for mode, (inp, from_frozen) in inputs.items():
        def step(inp=inp, from_frozen=from_frozen):
            with autocast():
                loss = F.cross_entropy(model(inp, from_frozen=from_frozen).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        rates[mode] = timed_rate(step, len(y), args.steps, args.warmup, device)
    return rates  # the model and optimizer are freed with this frame


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="batch 4, 2 steps: a smoke run for any device")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.warmup = 4, 2, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_throughput.py: CUDA is not available (torch.cuda.is_available() is False). "
                 "Run it on a GPU machine, or use --quick --device cpu for a smoke run.")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    start = time.time()
    torch.manual_seed(0)
    backbone = create_backbone("vit_b32", pretrained=False).to(device)
    x = torch.randn(args.batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 100, (args.batch_size,), device=device)
    rows = []
    for strategy in STRATEGIES:
        for mode, rate in train_rates(backbone, strategy, x, y, args, device, autocast).items():
            rows.append({"what": f"{strategy} training step ({mode})", "images_per_s": rate})
            print(f"  {rows[-1]['what']}: {rate:,.2f} img/s", file=sys.stderr, flush=True)
    backbone.eval()

    def probe_pass():
        with torch.inference_mode(), autocast():
            backbone.forward_all(x)

    def plain_pass():
        with torch.inference_mode(), autocast():
            backbone(x)

    rows.append({"what": "all-layer probe pass (forward_all, 12 blocks pooled)",
                 "images_per_s": timed_rate(probe_pass, len(y), args.steps, args.warmup, device)})
    rows.append({"what": "plain inference pass", "images_per_s": timed_rate(plain_pass, len(y), args.steps,
                                                                            args.warmup, device)})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": name, "backbone": "vit_b32 (random weights)", "precision": "bf16 autocast" if
              device.type == "cuda" else "fp32", "batch_size": args.batch_size, "steps": args.steps,
              "torch": torch.__version__, "quick": args.quick, "seconds": time.time() - start, "rows": rows}
    table = [f"ViT-B/32, {report['precision']}, batch {args.batch_size}, {name}", "",
             "| measurement | images/s |", "|---|---|"]
    table += [f"| {r['what']} | {r['images_per_s']:,.{0 if r['images_per_s'] >= 100 else 2}f} |" for r in rows]
    print("\n".join(table))
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_throughput.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()

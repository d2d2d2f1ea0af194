"""Speed of sclft's fast paths, as ratios against the naive timm + plain-PyTorch way, measured side by side.

1. ``probe``: all-layer NC1 probe ÷ one plain inference pass over the same images (goal ≤ 1.15); the probe
   with the jackknife standard errors of the ``profile`` rule ÷ without.
2. ``layer_ft``: naive (full forward every step, frozen parameters ``requires_grad=False``) ÷ ours
   (cached frozen prefix, tail only), seconds per epoch after the first (goal ≥ 3×).
3. ``linear_probe``: 10 epochs end to end, naive ÷ ``sclft.train`` (goal ≥ 8×).
4. ``nc1``: explicit D×D covariances + pinv ÷ ours for D=2048, K=100, N=5000 (time and peak memory),
   and ours on flattened conv features with D ≥ 100,000 (where D×D does not fit).
5. ``memory``: peak memory of one training step per strategy, naive vs ours.
6. ``cli_startup``: wall time of ``sclft --help``, ``sclft train --help`` and ``sclft list strategies``
   (fresh processes) ÷ ``python -c "import torch"`` (goal ≤ 0.2: the CLI answers without importing torch).
7. ``predict``: ``sclft predict``'s loop ÷ a hand-written loop over the same model and PNG files, images/s
   (goal ≥ 0.9). ``export``: the exported ONNX file in onnxruntime ÷ the same network in PyTorch, CPU.

Each ratio is measured in one process, the two sides alternating (median of ``--repeats``), so load on
the machine affects both alike; peak memory is measured in fresh child processes (peak RSS above the
RSS after setup). Runs single-threaded by default (``--threads``): on a shared CPU that is what gives
stable ratios. Writes ``speed.json`` and ``README.md`` to ``--out``.

    python benchmarks/speed.py --out benchmarks/results/speed          # ~10 min on 2 CPU cores
    python benchmarks/speed.py --quick --out /tmp/speed                # ~1 min smoke run
    python benchmarks/speed.py --only cli_startup                      # reruns one row, keeps the others
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

import sclft
from sclft import nc
from sclft.backbones import create_backbone
from sclft.backbones.efficientnet_lite import create_lite_imagenet
from sclft.cache import build_cache, frozen_cache_key
from sclft.data import TransformedDataset, build_transforms, load_dataset
from sclft.io import atomic_write_json, atomic_write_text
from sclft.strategies import get_strategy
from sclft.training import train as sclft_train

MEASURES: dict[str, Callable[[argparse.Namespace], list[dict]]] = {}
NAIVE_MODELS: dict[str, Callable[[int], torch.nn.Module]] = {
    "efficientnet_lite0": lambda k: _with_classifier(create_lite_imagenet("efficientnet_lite0", pretrained=True), k),
    "resnet50": lambda k: timm.create_model("resnet50", pretrained=False, num_classes=k),
}
PRETRAINED = {"efficientnet_lite0": True, "resnet50": False}  # real weights offline / random weights


def measure(name: str):
    def deco(fn):
        MEASURES[name] = fn
        return fn

    return deco


def _with_classifier(model: torch.nn.Module, k: int) -> torch.nn.Module:
    model.reset_classifier(k)
    return model


def row(measure_name: str, what: str, naive: float, ours: float, unit: str, goal: str = "", **extra) -> dict:
    ratio = naive / ours if ours else float("nan")
    return {"measure": measure_name, "what": what, "naive": naive, "ours": ours, "unit": unit, "ratio": ratio,
            "goal": goal, **extra}


def side_by_side(naive: Callable[[], Any], ours: Callable[[], Any], repeats: int, warmup: bool = True
                 ) -> tuple[float, float]:
    """Median seconds of each, alternating the two so that load on the machine hits both alike."""
    if warmup:
        naive(), ours()
    times: dict[str, list[float]] = {"naive": [], "ours": []}
    for _ in range(repeats):
        for side, fn in (("naive", naive), ("ours", ours)):
            t = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - t)
    return statistics.median(times["naive"]), statistics.median(times["ours"])


# ------------------------------------------------------------------------------------------ data
@dataclass
class Data:
    train: TransformedDataset
    test: TransformedDataset
    splits: Any
    transform: Any
    num_classes: int


def digits(backbone, image_size: int, per_class: int | None) -> Data:
    splits = load_dataset("digits", train_per_class=per_class)
    _, tf = build_transforms(backbone.data_config, image_size)
    return Data(TransformedDataset(splits.train, tf), TransformedDataset(splits.test, tf), splits, tf,
                splits.num_classes)


def tensors(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def sgd_epoch(model_fn: Callable[[torch.Tensor], torch.Tensor], loader, opt) -> None:
    for x, y in loader:
        loss = F.cross_entropy(model_fn(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def accuracy(model_fn, loader) -> float:
    hits = total = 0
    for x, y in loader:
        hits += int((model_fn(x).argmax(1) == y).sum())
        total += len(y)
    return hits / max(total, 1)


def naive_model(name: str, k: int, trainable: list[str]) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """timm model with every parameter frozen except the named sub-modules (and the classifier).

    Same semantics as ours (frozen parts in eval mode, so BatchNorm statistics stay fixed); a naive
    ``model.train()`` would be no cheaper.
    """
    torch.manual_seed(0)
    model = NAIVE_MODELS[name](k)
    model.requires_grad_(False).eval()
    modules = [model.get_submodule(p) for p in trainable] + [model.get_classifier()]
    for m in modules:
        m.requires_grad_(True).train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


# ------------------------------------------------------------------------------------------ 1. probe
@measure("probe")
def measure_probe(args) -> list[dict]:
    name = "efficientnet_lite0"
    backbone = create_backbone(name, pretrained=True)
    x, y = tensors(digits(backbone, args.probe_size, None).train, args.probe_n)
    plain = create_lite_imagenet("efficientnet_lite0", pretrained=True).eval()

    def inference(images=x):
        with torch.no_grad():
            for i in range(0, len(images), 64):
                plain(images[i : i + 64])

    def probe(images=x, labels=y, one_pass=True, jackknife=0):
        return sclft.probe(backbone, (images, labels), batch_size=64, num_classes=10, progress=False,
                           one_pass=one_pass, jackknife=jackknife)

    passes = probe().passes
    naive_t, ours_t = side_by_side(inference, probe, args.probe_repeats)
    plain_probe_t, jackknife_t = side_by_side(probe, lambda: probe(jackknife=10), args.probe_repeats)
    few = len(x) // 4  # the per-layer way costs a pass per block: compared on a quarter of the images
    plain_few, per_layer_t = side_by_side(lambda: inference(x[:few]), lambda: probe(x[:few], y[:few], False),
                                          1, warmup=False)
    what = f"{name} (ImageNet weights), {len(backbone.blocks)} blocks + penultimate, {args.probe_size}px"
    # the goal is on ours ÷ plain, so these rows store the inverse ratio
    return [
        {**row("probe", f"all-layer NC1 probe ÷ one plain inference pass — {what}, N={len(x)}", naive_t, ours_t,
               "s", "≤ 1.15", passes=passes), "ratio": ours_t / naive_t, "ratio_is": "ours ÷ plain",
         "met": ours_t / naive_t <= 1.15},
        {**row("probe", f"per-layer probe (prefix recomputed per layer, one_pass=False) ÷ plain pass — {what}, "
               f"N={few}", plain_few, per_layer_t, "s"), "ratio": per_layer_t / plain_few,
         "ratio_is": "per-layer ÷ plain"},
        {**row("probe", f"all-layer probe with jackknife standard errors (jackknife=10, as the `profile` rule) ÷ "
               f"without — {what}, N={len(x)}", plain_probe_t, jackknife_t, "s"),
         "ratio": jackknife_t / plain_probe_t, "ratio_is": "jackknife ÷ without"},
    ]


# ------------------------------------------------------------------------------------------ 2. layer_ft
def layer_ft_epochs(args, name: str, layer: str) -> dict:
    backbone = create_backbone(name, pretrained=PRETRAINED[name])
    data = digits(backbone, args.ft_size, args.ft_per_class)
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(data.train, batch_size=args.batch_size, shuffle=True, generator=gen)
    naive, naive_opt = naive_model(name, data.num_classes, [layer])
    torch.manual_seed(0)
    ours = sclft.TransferModel(backbone, "layer_ft", data.num_classes, layer)
    ours_opt = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)
    key = frozen_cache_key(ours, data.splits.fingerprint("train"), data.transform)
    state: dict[str, Any] = {}

    def ours_epoch():
        if "cache" not in state:
            state["cache"] = build_cache(ours, data.train, key, storage="memory", progress=False)
        ours.train()
        cached = DataLoader(state["cache"], batch_size=args.batch_size, shuffle=True, generator=gen)
        sgd_epoch(lambda z: ours(z, from_frozen=True), cached, ours_opt)

    def naive_epoch():
        sgd_epoch(naive, loader, naive_opt)

    first = {side: _seconds(fn) for side, fn in (("naive", naive_epoch), ("ours", ours_epoch))}
    naive_t, ours_t = side_by_side(naive_epoch, ours_epoch, args.repeats, warmup=False)
    weights = "ImageNet weights" if PRETRAINED[name] else "random weights"
    return row("layer_ft", f"{name} ({weights}) @ {layer}, N={len(data.train)}, {args.ft_size}px, batch "
               f"{args.batch_size}: s/epoch after the first", naive_t, ours_t, "s/epoch", "≥ 3×",
               first_epoch={"naive": first["naive"], "ours_incl_cache": first["ours"]},
               cache_mib=state["cache"].nbytes / 2**20, met=naive_t / ours_t >= 3)


def _seconds(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@measure("layer_ft")
def measure_layer_ft(args) -> list[dict]:
    return [layer_ft_epochs(args, name, layer) for name, layer in args.ft_models]


# ------------------------------------------------------------------------------------------ 3. linear probe
@measure("linear_probe")
def measure_linear_probe(args) -> list[dict]:
    name, epochs = "efficientnet_lite0", 10
    backbone = create_backbone(name, pretrained=True)
    data = digits(backbone, args.lp_size, args.lp_per_class)
    out = Path(tempfile.mkdtemp(prefix="sclft-speed-"))

    def ours():
        with contextlib.redirect_stdout(io.StringIO()):
            return sclft_train(backbone=name, data="digits", strategy="linear_probe", epochs=epochs,
                                     image_size=args.lp_size, train_per_class=args.lp_per_class,
                                     batch_size=args.batch_size, cache="memory", out=str(out), progress=False)

    def naive(eval_every_epoch: bool):
        model, opt = naive_model(name, data.num_classes, [])
        gen = torch.Generator().manual_seed(0)
        train = DataLoader(data.train, batch_size=args.batch_size, shuffle=True, generator=gen)
        test = DataLoader(data.test, batch_size=64)
        for epoch in range(epochs):
            sgd_epoch(model, train, opt)
            if eval_every_epoch or epoch == epochs - 1:
                accuracy(model, test)

    naive_t, ours_t = side_by_side(lambda: naive(True), ours, args.lp_repeats, warmup=False)
    naive_end_t, _ = side_by_side(lambda: naive(False), lambda: None, args.lp_repeats, warmup=False)
    what = (f"{name} (ImageNet weights), digits N_train={len(data.train)}, N_test={len(data.test)}, "
            f"{args.lp_size}px, {epochs} epochs end to end")
    return [
        row("linear_probe", f"{what}; naive evaluates the test set every epoch, as sclft.train does",
            naive_t, ours_t, "s", "≥ 8×", met=naive_t / ours_t >= 8),
        row("linear_probe", f"{what}; naive evaluates the test set once, at the end", naive_end_t, ours_t, "s",
            "≥ 8×", met=naive_end_t / ours_t >= 8),
    ]


# ------------------------------------------------------------------------------------------ 4. NC1
def explicit_nc1(h: np.ndarray, y: np.ndarray, k: int) -> float:
    """The textbook way: D×D Σ_W and Σ_B in float64, then pinv."""
    h = h.astype(np.float64)
    means = np.stack([h[y == c].mean(0) for c in range(k)])
    centred = h - means[y]
    sigma_w = centred.T @ centred / len(h)
    m = (means - h.mean(0)).T
    return float(np.trace(sigma_w @ np.linalg.pinv(m @ m.T / k, hermitian=True)))


def synthetic(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    h = rng.standard_normal((n, d), dtype=np.float32)
    h += rng.standard_normal((k, d), dtype=np.float32)[y]
    return h, y


def nc1_job(way: str, n: int, d: int, k: int) -> Callable[[], Any]:
    h, y = synthetic(n, d, k)
    return {"explicit": lambda: explicit_nc1(h, y, k), "ours": lambda: nc.nc1(h, y, k)}[way]


FLAT_BUDGET = 48 << 20


def flatten_probe_job(n: int, size: int) -> Callable[[], Any]:
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    x, y = tensors(digits(backbone, size, None).train, n)
    return lambda: sclft.probe(backbone, (x, y), layers=["stem"], pooling="flatten", batch_size=32,
                               num_classes=10, progress=False, memory_budget=FLAT_BUDGET)


@measure("nc1")
def measure_nc1(args) -> list[dict]:
    n, d, k = args.nc_shape
    explicit, ours = nc1_job("explicit", n, d, k), nc1_job("ours", n, d, k)
    assert abs(explicit() / ours() - 1) < 1e-6, "the two NC1 computations disagree"
    naive_t, ours_t = side_by_side(explicit, ours, args.repeats, warmup=False)
    ways = ("explicit", "ours")
    mem = dict(zip(ways, child_peaks([("nc1_job", (way, n, d, k)) for way in ways])))
    rows = [
        row("nc1", f"NC1 time, D={d}, K={k}, N={n}: explicit D×D pinv ÷ ours (low-rank)", naive_t, ours_t, "s"),
        row("nc1", f"NC1 peak memory above the features, D={d}, K={k}, N={n}", mem["explicit"], mem["ours"], "MiB"),
    ]
    probe = flatten_probe_job(args.flat_n, args.flat_size)
    t = time.perf_counter()
    result = probe()
    flat_t = time.perf_counter() - t
    flat_mem = child_peaks([("flatten_probe_job", (args.flat_n, args.flat_size))])[0]
    dim = result["stem"]["dim"]
    rows.append({"measure": "nc1", "what": f"ours on flattened EfficientNet-Lite0 stem maps ({args.flat_size}px): "
                 f"D={dim:,}, K=10, N={result.num_samples}, streamed ({result.passes} passes, memory budget "
                 f"{FLAT_BUDGET >> 20} MiB); the explicit way would need D×D float64 = "
                 f"{dim * dim * 8 / 2**30:,.0f} GiB for Σ_W alone (computed, not run)", "naive": None,
                 "ours": flat_t, "unit": "s", "ratio": None, "goal": "", "ours_peak_mib": flat_mem, "dim": dim})
    return rows


# ------------------------------------------------------------------------------------------ 5. memory
STRATEGY_PARTS = {"linear_probe": [], "layer_ft": ["layer3.0"], "scl_ft": ["layer3.0"], "full_ft": [""]}


def step_job(way: str, strategy: str, size: int, batch: int) -> Callable[[], Any]:
    """One training step of ResNet-50 (random weights); ours starts from the cached activation.
    Measured after a warm-up step, so optimizer state already exists (the same for both sides)."""
    k = 10
    x, y = torch.randn(batch, 3, size, size), torch.arange(batch) % k
    if way == "naive":
        model, opt = naive_model("resnet50", k, STRATEGY_PARTS[strategy])
        forward = model
    else:
        layer = STRATEGY_PARTS[strategy][0] if get_strategy(strategy).uses_layer else None
        model = sclft.TransferModel(create_backbone("resnet50", pretrained=False), strategy, k, layer)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        if model.strategy.has_frozen_prefix:
            x = model.frozen_forward(x)  # what the cache holds for this batch
        forward = (lambda z: model(z, from_frozen=True)) if model.strategy.has_frozen_prefix else model

    def step():
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


@measure("memory")
def measure_memory(args) -> list[dict]:
    jobs = [(strategy, way) for strategy in STRATEGY_PARTS for way in ("naive", "ours")]
    peaks = dict(zip(jobs, child_peaks([("step_job", (way, strategy, args.mem_size, args.batch_size))
                                        for strategy, way in jobs])))
    rows = []
    for strategy in STRATEGY_PARTS:
        mem = {way: peaks[strategy, way] for way in ("naive", "ours")}
        cached = "cached activation" if strategy != "full_ft" else "no cache (nothing frozen)"
        rows.append(row("memory", f"{strategy}: ResNet-50 training step, batch {args.batch_size}, {args.mem_size}px; "
                        f"ours: {cached}", mem["naive"], mem["ours"], "MiB peak"))
    return rows


# ------------------------------------------------------------------------------------------ peak memory
def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peaks_in_child(jobs: list[tuple[str, tuple]], threads: int) -> list[float]:
    torch.set_num_threads(threads)
    peaks = []
    with threadpool_limits(threads):
        for job, job_args in jobs:
            fn = globals()[job](*job_args)
            fn()  # warm-up: lazy library buffers, and optimizer state for training steps
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
            before = _vm("VmRSS")
            fn()
            peaks.append((_vm("VmHWM") - before) / 2**20)
            del fn
            gc.collect()
    return peaks


def child_peaks(jobs: list[tuple[str, tuple]]) -> list[float]:
    """Peak RSS (MiB) that each ``job(*args)()`` adds after a warm-up call, in one fresh process where
    glibc returns freed blocks to the OS (``MALLOC_MMAP_THRESHOLD_``), so the peak mark tracks live memory."""
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 << 10)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_peaks_in_child, (jobs, torch.get_num_threads()))
    finally:
        os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)


# ------------------------------------------------------------------------------------------ report
SIZES = {  # full run / --quick
    "probe_size": (96, 64), "probe_n": (256, 64), "ft_size": (96, 64), "ft_per_class": (6, 3),
    "lp_size": (32, 32), "lp_per_class": (40, 3), "lp_repeats": (2, 1),
    "nc_shape": ((5000, 2048, 100), (1000, 512, 20)),
    "flat_size": (112, 112), "flat_n": (200, 160), "probe_repeats": (5, 1), "mem_size": (128, 64), "repeats": (3, 1),
    "cli_repeats": (7, 3),
    "predict_size": (96, 64), "predict_n": (256, 64),
    "ft_models": ((("resnet50", "layer3.0"), ("efficientnet_lite0", "blocks.3.0")), (("resnet50", "layer3.0"),)),
}


# ------------------------------------------------------------------------------------- predict / export
def _image_files(folder: Path, n: int) -> list[Path]:
    """The first ``n`` digits test images as PNG files (what `sclft predict` is pointed at)."""
    test = load_dataset("digits").test
    files = []
    for i in range(min(n, len(test))):
        files.append(folder / f"{i:04d}.png")
        test[i][0].save(files[-1])
    return files


@measure("predict")
def measure_predict(args) -> list[dict]:
    """``sclft predict``'s loop (``predict_files``: file list, DataLoader, autocast switch, top-k rows) vs a
    hand-written one over the same model and files: open, transform, stack, forward, softmax, top-k."""
    from PIL import Image

    from sclft.predict import predict_files

    model = sclft.wrap("efficientnet_lite0", "scl_ft", num_classes=10, layer="blocks.3.0",
                       image_size=args.predict_size, class_names=[str(k) for k in range(10)]).eval()
    with tempfile.TemporaryDirectory() as tmp:
        files = _image_files(Path(tmp), args.predict_n)
        bs = args.batch_size

        @torch.inference_mode()
        def by_hand():
            for i in range(0, len(files), bs):
                x = torch.stack([model.transform(Image.open(f).convert("RGB")) for f in files[i:i + bs]])
                probs, idx = model(x).softmax(dim=1).topk(5, dim=1)
                [(p, [model.class_names[j] for j in i]) for p, i in zip(probs.tolist(), idx.tolist())]

        def ours():
            predict_files(model, files, top_k=5, batch_size=bs, device="cpu", progress=False)

        naive, mine = side_by_side(by_hand, ours, args.repeats)
    n = len(files)
    return [{**row("predict", f"`sclft predict` loop vs a hand-written loop, EfficientNet-Lite0 @ {args.predict_size} "
                   f"px, {n} PNG files, batch {bs}", n / naive, n / mine, "images/s", goal="≥ 0.9"),
             "ratio": naive / mine, "ratio_is": "ours ÷ hand-written (images/s)", "met": naive / mine >= 0.9}]


@measure("export")
def measure_export(args) -> list[dict]:
    """The ONNX file of `sclft export` in onnxruntime (CPU) vs the same merged network in PyTorch (CPU)."""
    import onnxruntime as ort

    from sclft.export import Classifier, example_input, export_model, merged

    model = sclft.wrap("efficientnet_lite0", "scl_ft", num_classes=10, layer="blocks.3.0",
                       image_size=args.predict_size, class_names=[str(k) for k in range(10)]).eval()
    net = Classifier(merged(model)).eval()
    x = example_input(model, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, "onnx", Path(tmp) / "m.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}

        @torch.inference_mode()
        def pytorch():
            net(x)

        naive, mine = side_by_side(pytorch, lambda: session.run(None, feed), args.repeats)
    n = len(x)
    return [{**row("export", f"exported ONNX in onnxruntime vs PyTorch, CPU, EfficientNet-Lite0 @ {args.predict_size} "
                   f"px, batch {n}", n / naive, n / mine, "images/s"),
             "ratio": naive / mine, "ratio_is": "onnxruntime ÷ PyTorch (images/s)"}]


# ------------------------------------------------------------------------------------- CLI start-up
CLI_COMMANDS = (["--help"], ["train", "--help"], ["list", "strategies"])


def _run_seconds(cmd: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run():
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    return run


@measure("cli_startup")
def measure_cli_startup(args) -> list[dict]:
    """Each CLI command in a fresh process vs a fresh ``python -c "import torch"``, alternating."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's sclft
    torch_import = _run_seconds([sys.executable, "-c", "import torch"], env)
    rows = []
    for argv in CLI_COMMANDS:
        naive, ours = side_by_side(torch_import, _run_seconds([sys.executable, "-m", "sclft.cli", *argv], env),
                                   args.cli_repeats)
        rows.append({**row("cli_startup", f"`sclft {' '.join(argv)}` (fresh process) vs `python -c \"import torch\"`, "
                           f"median of {args.cli_repeats}", naive, ours, "s", goal="≤ 0.2"),
                     "ratio": ours / naive, "ratio_is": "sclft ÷ import torch", "met": ours / naive <= 0.2})
    return rows


def hardware() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "threads_used": torch.get_num_threads(),
            "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}


def fmt(v, unit="") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def markdown(report: dict) -> str:
    lines = [
        "# Speed benchmark (`benchmarks/speed.py`)", "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}  ",
        f"Hardware: {report['hardware']['cpu']}, {report['hardware']['cores']} cores "
        f"({report['hardware']['threads_used']} thread(s) used), torch {report['hardware']['torch']}, "
        f"load average at start {', '.join(f'{x:.1f}' for x in report['hardware']['load_average_at_start'])} "
        "(the machine was shared; each ratio is measured side by side, median of repeats)  ",
        f"Wall time: {report['seconds']:.0f} s", "",
        *[f"Rows of {', '.join(run['measures'])}: from the earlier run `{run['command']}` ({run['date']}, load and "
          "hardware as recorded then)." for run in report.get("earlier_runs", [])],
        *(["The rest from the command above.", ""] if report.get("earlier_runs") else []),
        "| # | measurement | naive | ours | unit | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(report["rows"], 1):
        ratio = fmt(r["ratio"]) + (f" ({r['ratio_is']})" if r.get("ratio_is") else "")
        met = {True: "yes", False: "**no**"}.get(r.get("met"), "")
        lines.append(f"| {i} | {r['what']} | {fmt(r['naive'])} | {fmt(r['ours'])} | {r['unit']} | {ratio} | "
                     f"{r.get('goal', '')} | {met} |")
    lines += ["", "ratio = naive ÷ ours unless stated. What each side does, and why a goal is missed: "
              "[docs/speed.md](../../../docs/speed.md).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/speed")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run, ~1 minute)")
    p.add_argument("--only", nargs="*", choices=sorted(MEASURES), help="run only these measurements")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    for key, (full, quick) in SIZES.items():
        setattr(args, key, quick if args.quick else full)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.time()
    rows = []
    with threadpool_limits(args.threads):
        for name in args.only or list(MEASURES):
            t = time.time()
            rows += MEASURES[name](args)
            print(f"[{name}] {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    report = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "hardware": hardware(),
              "quick": args.quick, "seconds": time.time() - start, "rows": rows}
    for r in rows:
        r["run"] = {"command": report["command"], "date": report["date"]}
    out = Path(args.out)
    if args.only and (out / "speed.json").is_file():  # keep the rows of the measurements not rerun
        earlier = json.loads((out / "speed.json").read_text())
        kept = [r for r in earlier["rows"] if r["measure"] not in args.only]
        for r in kept:  # rows written before rows carried their run: from the report's run or its one earlier run
            older = earlier.get("earlier") or {}
            r.setdefault("run", {k: (older if r["measure"] in older.get("measures", ()) else earlier)[k]
                                 for k in ("command", "date")})
        if kept:
            report["rows"] = kept + rows
            runs: dict[tuple[str, str], list[str]] = {}
            for r in kept:
                measures = runs.setdefault((r["run"]["command"], r["run"]["date"]), [])
                measures += [r["measure"]] if r["measure"] not in measures else []
            report["earlier_runs"] = [{"command": c, "date": d, "measures": sorted(m)} for (c, d), m in runs.items()]
    atomic_write_json(out / "speed.json", report)
    atomic_write_text(out / "README.md", markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()

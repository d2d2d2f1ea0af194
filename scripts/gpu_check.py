"""GPU check of the default path: the README's own `sclft train` commands, default flags, on one GPU.

Steps (each a real `sclft` subprocess, as a user runs it):

* ``vit_b32_bf16``     — ``sclft train --backbone vit_b32 --no-pretrained --data digits --precision bf16``
  (default strategy ``scl_ft`` and ``--layer auto``);
* ``clip_fp16``        — the same with ``clip_vit_b32`` and ``--precision fp16`` (GradScaler path);
* ``resume_fp16``      — ``vit_b32`` fp16 killed (SIGKILL) after its second epoch's checkpoint, then
  ``--resume``; compared tensor by tensor with ``resume_reference``, the same run uninterrupted;
* ``clip_zero_shot``   — ``--strategy zero_shot`` on ``clip_vit_b32`` (one evaluation, no training);
* ``lite0_fashion``    — real-weight EfficientNet-Lite0 on Fashion-MNIST with
  ``--config efficientnet_lite0_fashion_mnist`` (``sclft/configs/``) and its default ``--layer auto`` (needs the IDX
  files: ``--fashion-dir DIR``, else the Debian package's copy; skipped when neither exists).

Random-weight ViT/CLIP accuracies mean nothing; those steps check that the path runs on the device.
Writes ``OUT/gpu_check.log`` (every command and its output) and ``OUT/summary.json``.

``--dry-run`` runs every step on the CPU with tiny settings (the test suite does this).
Usage: ``bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--fashion-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# tiny settings appended in --dry-run (explicit flags win over the YAML config too)
DRY = ["--image-size", "32", "--train-per-class", "3", "--batch-size", "16", "--epochs", "2"]
RESUME_EPOCHS = 4
KILL_AFTER_EPOCH = 2


def sclft_cmd() -> list[str]:
    """The installed `sclft` entry point when there is one, else ``python -m sclft.cli``."""
    exe = shutil.which("sclft")
    return [exe] if exe else [sys.executable, "-m", "sclft.cli"]


class Checker:
    def __init__(self, out: Path, dry_run: bool):
        self.out, self.dry_run = out, dry_run
        self.log = (out / "gpu_check.log").open("a")
        self.steps: dict[str, dict] = {}

    def write(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def train_args(self, name: str, *args: str) -> list[str]:
        flags = ["train", *args, "--out", str(self.out / "runs" / name), "--no-progress"]
        return flags + (DRY if self.dry_run else [])

    def run(self, name: str, args: list[str], *, kill_after_epoch: int | None = None) -> dict:
        """Run one `sclft` command; optionally SIGKILL it once its checkpoint for that epoch is written."""
        cmd = sclft_cmd() + args
        self.write(f"\n$ {' '.join(cmd)}")
        tic = time.time()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        killed = False
        if kill_after_epoch is not None:
            pointer = Path(args[args.index("--out") + 1]) / "checkpoint" / "latest.json"
            while proc.poll() is None:
                try:
                    if json.loads(pointer.read_text()).get("epoch", 0) >= kill_after_epoch:
                        os.killpg(proc.pid, signal.SIGKILL)
                        killed = True
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)
        output, _ = proc.communicate()
        self.write(output.rstrip())
        result = {"command": " ".join(["sclft", *args]), "returncode": proc.returncode,
                  "seconds": round(time.time() - tic, 1), "killed": killed}
        metrics_file = Path(args[args.index("--out") + 1]) / "metrics.json"
        if not killed and metrics_file.is_file():
            m = json.loads(metrics_file.read_text())
            result.update({k: m.get(k) for k in ("backbone", "dataset", "strategy", "layer", "test_accuracy",
                                                 "trainable_percent", "epochs", "image_size")})
            result["layer_rule"] = (m.get("layer_selection") or {}).get("rule")
        self.write(f"[{name}] exit {proc.returncode}{' (killed as planned)' if killed else ''}, "
                   f"{result['seconds']} s")
        self.steps[name] = result
        return result

    def compare_runs(self, a: str, b: str) -> dict:
        from safetensors.torch import load_file

        wa = load_file(str(self.out / "runs" / a / "model.safetensors"))
        wb = load_file(str(self.out / "runs" / b / "model.safetensors"))
        same_keys = sorted(wa) == sorted(wb)
        diff = max(((wa[k].float() - wb[k].float()).abs().max().item() for k in wa if k in wb), default=float("nan"))
        return {"same_tensors": same_keys, "max_abs_diff": diff}


def environment() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    for pkg in ("timm", "open_clip", "accelerate", "sclft"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception as e:  # pragma: no cover - reported, not fatal
            info[pkg] = f"unavailable ({type(e).__name__})"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny settings on the CPU (for the test suite)")
    parser.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_check"), help="output folder")
    parser.add_argument("--fashion-dir", default=None, help="folder with the four Fashion-MNIST IDX files")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    if not args.dry_run and not env["cuda"]:
        print("gpu_check: no CUDA device; use --dry-run on a CPU", file=sys.stderr)
        return 2
    check = Checker(out, args.dry_run)
    check.write(f"gpu_check {'(dry run) ' if args.dry_run else ''}{json.dumps(env)}")
    dry_device = ["--precision", "no"] if args.dry_run else []  # fp16/bf16 autocast needs the GPU

    def precision(p: str) -> list[str]:
        return dry_device or ["--precision", p]

    check.run("vit_b32_bf16", check.train_args("vit_b32_bf16", "--backbone", "vit_b32", "--no-pretrained",
                                               "--data", "digits", *precision("bf16")))
    check.run("clip_fp16", check.train_args("clip_fp16", "--backbone", "clip_vit_b32", "--no-pretrained",
                                            "--data", "digits", *precision("fp16")))
    resume = ["--backbone", "vit_b32", "--no-pretrained", "--data", "digits", *precision("fp16"),
              "--epochs", str(RESUME_EPOCHS)]
    resume_args = _last_epochs(check.train_args("resume_fp16", *resume), RESUME_EPOCHS)
    check.run("resume_reference", _last_epochs(check.train_args("resume_reference", *resume), RESUME_EPOCHS))
    check.run("resume_fp16_killed", resume_args, kill_after_epoch=KILL_AFTER_EPOCH)
    check.run("resume_fp16", resume_args + ["--resume"])
    if check.steps["resume_fp16"]["returncode"] == 0 and check.steps["resume_reference"]["returncode"] == 0:
        check.steps["resume_fp16"]["vs_uninterrupted"] = check.compare_runs("resume_fp16", "resume_reference")
        check.write(f"[resume_fp16] vs uninterrupted: {check.steps['resume_fp16']['vs_uninterrupted']}")
    check.run("clip_zero_shot", check.train_args("clip_zero_shot", "--backbone", "clip_vit_b32", "--no-pretrained",
                                                 "--data", "digits", "--strategy", "zero_shot",
                                                 *precision("bf16")))
    fashion = args.fashion_dir or (str(FASHION_SYSTEM_DIR) if FASHION_SYSTEM_DIR.is_dir() else None)
    if args.dry_run:
        fashion = str(write_tiny_idx(out / "tiny_fashion_mnist"))  # same loader path, 20 images a split
    if fashion:
        check.run("lite0_fashion", check.train_args(
            "lite0_fashion", "--config", "efficientnet_lite0_fashion_mnist",
            "--data-dir", fashion, *precision("bf16")))
    else:
        check.write("[lite0_fashion] skipped: no Fashion-MNIST IDX files (--fashion-dir)")
        check.steps["lite0_fashion"] = {"skipped": "no Fashion-MNIST IDX files"}
    failed = [n for n, s in check.steps.items() if s.get("returncode") not in (0, None) and not s.get("killed")]
    resumed = check.steps["resume_fp16"].get("vs_uninterrupted", {})
    summary = {"environment": env, "dry_run": args.dry_run, "steps": check.steps, "failed": failed,
               "ok": not failed and bool(resumed.get("same_tensors"))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    check.write(f"\nsummary: {'OK' if summary['ok'] else 'FAILED ' + ', '.join(failed)} -> {out / 'summary.json'}")
    return 0 if summary["ok"] else 1


def write_tiny_idx(folder: Path, per_split: int = 20) -> Path:
    """Four gzipped IDX files of random 28x28 images (labels 0..9), laid out as Fashion-MNIST's."""
    import gzip

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for images, labels in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                           ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        x = rng.integers(0, 256, (per_split, 28, 28), dtype=np.uint8)
        y = (np.arange(per_split) % 10).astype(np.uint8)
        header_x = bytes([0, 0, 0x08, 3]) + np.array([per_split, 28, 28], ">u4").tobytes()
        header_y = bytes([0, 0, 0x08, 1]) + np.array([per_split], ">u4").tobytes()
        (folder / f"{images}.gz").write_bytes(gzip.compress(header_x + x.tobytes()))
        (folder / f"{labels}.gz").write_bytes(gzip.compress(header_y + y.tobytes()))
    return folder


def _last_epochs(args: list[str], epochs: int) -> list[str]:
    """Make ``--epochs`` appear once, with ``epochs`` (the dry-run defaults append their own)."""
    cleaned, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--epochs":
            skip = True
            continue
        cleaned.append(a)
    return cleaned + ["--epochs", str(epochs)]


if __name__ == "__main__":
    sys.exit(main())

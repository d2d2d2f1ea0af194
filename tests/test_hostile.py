"""Hostile input, table-driven: every case exits 2 (bad input) with a message naming the bad thing, prints
no traceback, and leaves every file that was there before untouched.

Each case runs in its own ``tmp_path`` (the placeholder ``{tmp}``) holding:

* ``{old}`` — an earlier finished run (``runs/old``: metrics, model, checkpoint), hashed before and after;
* ``{new}`` — a fresh ``--out`` (``runs/new``, not created);
* ``{file}`` — a regular file, for paths that lead through a file;
* ``{run}`` — with ``real=True``: a real finished run (``runs/real``, trained once per module with ``REAL``:
  weights, checkpoint, digests), for cases that edit run files;
* the case's own ``files`` (relative path → text or bytes), e.g. YAML configs.

To add a case, append a :class:`Case` to ``CASES``; ``setup`` may change the tmp folder further (e.g. damage
a file of ``{old}``), ``patch`` may monkeypatch (e.g. a write that fails with ENOSPC). ``subprocess=True``
runs the real ``python -m sclft.cli`` instead of ``main()``.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from _run_files import forge_digest
from safetensors.torch import load_file, save_file

from sclft.cli import main

# random-weight resnet18 on digits at 16 px: nothing here downloads or trains for long
TINY = ["--backbone", "resnet18", "--no-pretrained", "--data", "digits", "--image-size", "16",
        "--train-per-class", "5", "--epochs", "1", "--batch-size", "16", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    argv: list[str]  # placeholders: {tmp}, {old}, {new}, {file}
    says: tuple[str, ...]  # substrings of stderr (the bad key / flag / path, and what is valid)
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2
    setup: Callable[[Path], None] | None = None
    subprocess: bool = False
    not_in_stdout: tuple[str, ...] = ()  # e.g. proof that no heavy step ran before the error
    real: bool = False  # {run}: a real finished run is copied in first
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


def train(*flags: str, out: str = "{new}") -> list[str]:
    return ["train", *TINY, "--cache-dir", "{tmp}/cache", *flags, "--out", out]


def yaml_case(id: str, text: str, says: tuple[str, ...], *flags: str, **kw) -> Case:
    return Case(id, train("--config", "{tmp}/cfg.yaml", *flags, out=kw.pop("out", "{old}")), ("cfg.yaml", *says),
                files={"cfg.yaml": text}, **kw)


NO_SELECTION = ("layer auto (",)  # train() prints this once layer selection ran
REAL = [*TINY, "--strategy", "layer_ft", "--layer", "layer1.0", "--eval-every", "0"]  # the {run}
CKPT = "runs/real/checkpoint/epoch-0001"


def edit_json(rel: str, change: Callable[[dict], None], forge: bool = True, older: bool = False
              ) -> Callable[[Path], None]:
    """A setup that edits the JSON file ``rel`` (a file of ``{run}``); ``forge``: also record its new sha256 where
    the run records digests, as an attacker can (so the check under test is the field check, not the digest);
    ``older``: drop the digests an older sclft did not write (config.json model_sha256, manifest.json)."""
    def setup(tmp: Path) -> None:
        file = tmp / rel
        data = json.loads(file.read_text())
        change(data)
        if older:
            data.pop("model_sha256")
            (file.parent / "manifest.json").unlink()
        file.write_text(json.dumps(data))
        if forge:
            forge_digest(file)
    return setup


def damage(rel: str, write: Callable[[Path], None], forge: bool = True) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        write(tmp / rel)
        if forge:
            forge_digest(tmp / rel)
    return setup


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:40])


def another_runs_weights(tmp: Path) -> None:
    """``{run}``'s model.safetensors replaced by another run's (same architecture, other values)."""
    file = tmp / "runs/real/model.safetensors"
    state = load_file(str(file))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, str(file))
    (tmp / "runs/real/manifest.json").unlink()


def images(tmp: Path, names: dict[str, tuple[int, int]]) -> None:
    """``imgs/<split>/<class>/<name>`` images of the given (width, height)."""
    from PIL import Image

    for rel, size in names.items():
        path = tmp / "imgs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (len(rel) * 37 % 256, 0, 0)).save(path)


def disk_full(target: str, error: Callable[[], Exception]) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch: writing with ``target`` (module.save_file) fails as on a full disk."""
    module, name = target.rsplit(".", 1)

    def patch(mp: pytest.MonkeyPatch) -> None:
        def full(*args, **kwargs):
            raise error()
        mp.setattr(importlib.import_module(module), name, full)
    return patch


def enospc() -> Exception:
    return OSError(errno.ENOSPC, "No space left on device")


def storage_full() -> Exception:  # as safetensors reports ENOSPC
    return Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
                     'device" })')


EVAL_RUN = ["eval", "--checkpoint", "{run}", "--no-progress"]
RESUME_RUN = ["train", *REAL, "--cache-dir", "{tmp}/cache", "--out", "{run}", "--resume"]


def set_in(key: str, value) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


def checkpoint_outside(tmp: Path) -> None:
    """``{run}``'s config.json names ``{tmp}/weights.pt`` by absolute path, with that file's true sha256."""
    digest = hashlib.sha256((tmp / "weights.pt").read_bytes()).hexdigest()
    edit_json("runs/real/config.json", lambda d: d.update(checkpoint=str(tmp / "weights.pt"),
                                                          checkpoint_sha256=digest), older=True)(tmp)


def opened(path) -> str:
    raise AssertionError(f"{path} was opened")


PREDICT = ["predict", "--no-progress", "--checkpoint", "{run}", "{tmp}/imgs"]
EXPORT = ["export", "--checkpoint", "{run}", "--format", "safetensors"]
ONE_IMAGE = {"imgs/a.png": (16, 16)}
BENCH = {"bench/bench.json": "{}", "bench/experiments/.keep": "", "bench/table.csv": "the suite's table\n"}

CASES = [
    # ---- YAML configs (the earlier run is the --out: it must survive)
    yaml_case("yaml-syntax", "lr: [1\nepochs: 2\n", ("invalid YAML", "line 2")),
    yaml_case("yaml-not-a-mapping", "- lr\n- epochs\n", ("mapping",)),
    yaml_case("yaml-epochs-float", "epochs: 2.7\n", ("epochs", "integer", "2.7")),
    yaml_case("yaml-epochs-word", "epochs: two\n", ("epochs", "integer", "two")),
    yaml_case("yaml-lr-list", "lr: [0.1]\n", ("lr", "number")),
    yaml_case("yaml-epochs-null", "epochs:\n", ("epochs", "null")),
    yaml_case("yaml-precision-unquoted-no", "precision: no\n", ("precision", "quote")),
    yaml_case("yaml-unknown-key", "lrr: 0.1\n", ("lrr", "valid keys")),
    yaml_case("yaml-per-strategy-list", "per_strategy:\n  - lr: 0.1\n", ("per_strategy", "mapping")),
    yaml_case("yaml-per-strategy-entry-scalar", "per_strategy:\n  scl_ft: 3\n", ("per_strategy.scl_ft", "mapping")),
    yaml_case("yaml-per-strategy-unknown-strategy", "per_strategy:\n  scl: {lr: 0.1}\n", ("scl", "scl_ft")),
    yaml_case("yaml-per-strategy-unknown-key", "per_strategy:\n  layer_ft: {lrr: 0.1}\n",
              ("per_strategy.layer_ft", "lrr")),
    yaml_case("yaml-per-strategy-bad-type", "per_strategy:\n  full_ft: {epochs: 1.5}\n",
              ("per_strategy.full_ft", "epochs")),
    yaml_case("yaml-per-strategy-foreign-option", "per_strategy:\n  layer_ft: {fuse: concat}\n",
              ("per_strategy.layer_ft.fuse", "scl_ft"), "--strategy", "layer_ft", "--layer", "layer1.0"),
    yaml_case("yaml-extra-not-mapping", "extra: 3\n", ("extra", "mapping")),
    yaml_case("yaml-selection-unknown-option", "extra: {selection: {bogus: 1}}\n", ("bogus", "profile_per_class")),
    yaml_case("yaml-selection-bad-pick", "extra: {selection: {profile_pick: best}}\n", ("profile_pick", "min")),
    Case("yaml-selection-unknown-candidate", train("--config", "{tmp}/cfg.yaml"), ("layer9", "valid layers"),
         files={"cfg.yaml": "extra: {selection: {candidates: [layer9]}}\n"}, not_in_stdout=NO_SELECTION),
    Case("config-missing", train("--config", "{tmp}/nope.yaml"), ("nope.yaml", "no such file")),
    Case("config-is-a-folder", train("--config", "{tmp}/runs"), ("runs", "folder")),
    Case("config-binary", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml", "UTF-8"),
         files={"cfg.yaml": b"\xff\xfe\x00\x01"}),
    # ---- options: checked before any heavy step (layer selection, caching, training)
    Case("fuse-unknown", train("--fuse", "nope"), ("fuse", "add, concat"), not_in_stdout=NO_SELECTION),
    Case("match-unknown", train("--match", "nope"), ("match", "repeat")),
    Case("layer-unknown", train("--layer", "layer9"), ("layer9", "valid layers")),
    Case("layer-rule-unknown", train("--layer-rule", "nope"), ("layer_rule", "profile")),
    Case("fuse-with-layer-ft", train("--strategy", "layer_ft", "--layer", "layer1.0", "--fuse", "concat"),
         ("--fuse", "layer_ft", "scl_ft")),
    Case("layer-with-linear-probe", train("--strategy", "linear_probe", "--layer", "layer1.0"),
         ("--layer", "linear_probe")),
    Case("layer-with-full-ft", train("--strategy", "full_ft", "--layer", "layer1.0"), ("--layer", "full_ft")),
    Case("layer-rule-with-zero-shot", train("--strategy", "zero_shot", "--layer-rule", "trial"),
         ("--layer-rule", "zero_shot")),
    Case("zero-shot-without-clip", train("--strategy", "zero_shot"), ("zero_shot", "CLIP")),
    Case("strategy-unknown", train("--strategy", "prefix_tuning"), ("prefix_tuning", "valid strategies")),
    Case("weight-decay-negative", train("--weight-decay", "-1"), ("weight_decay", "-1")),
    Case("warmup-negative", train("--warmup-epochs", "-2"), ("warmup_epochs",)),
    Case("num-workers-negative", train("--num-workers", "-1"), ("num_workers",), not_in_stdout=NO_SELECTION),
    Case("momentum-negative", train("--momentum", "-0.5"), ("momentum",)),
    Case("lr-infinite", train("--lr", "inf"), ("lr=inf", "finite")),
    Case("lr-nan", train("--lr", "nan"), ("lr=nan", "finite")),
    Case("epochs-not-an-int", train("--epochs", "2.7"), ("--epochs", "2.7")),
    Case("out-under-a-file", train(out="{file}/run"), ("--out", "file")),
    # ---- eval / probe / the other sub-commands
    Case("eval-missing-run", ["eval", "--checkpoint", "{tmp}/MISSING"], ("MISSING", "no such run folder")),
    Case("eval-missing-run-subprocess", ["eval", "--checkpoint", "{tmp}/MISSING"], ("no such run folder",),
         subprocess=True),
    Case("eval-run-is-a-file", ["eval", "--checkpoint", "{file}"], ("file", "not a run folder")),
    Case("eval-not-a-run", ["eval", "--checkpoint", "{tmp}/runs"], ("runs", "config.json")),
    Case("eval-batch-size-0", ["eval", "--checkpoint", "{old}", "--batch-size", "0"], ("batch_size",)),
    Case("probe-unknown-layer", ["probe", *TINY[:9], "--layers", "nope", "--out", "{new}"], ("nope", "valid layers")),
    Case("probe-unknown-pooling", ["probe", *TINY[:9], "--pooling", "nope", "--out", "{new}"], ("nope", "avg2x2")),
    Case("probe-image-size-0", ["probe", *TINY[:5], "--image-size", "0", "--out", "{new}"], ("image_size",)),
    Case("probe-out-under-a-file", ["probe", *TINY[:9], "--out", "{file}/p"], ("--out", "file")),
    Case("list-unknown", ["list", "nope"], ("nope", "strategies")),
    Case("bench-unknown-suite", ["bench", "--suite", "nope", "--out", "{new}"], ("nope", "smoke")),
    Case("dln-unknown-flag", ["dln", "parsimony", "--out", "{new}", "--bad"], ("--bad",)),
    # ---- issue 29.2: paths inside run files are followed only inside the run or by their recorded digest (a run
    # of this sclft refuses any edit of config.json first: model_sha256; older runs have only this defence)
    Case("eval-config-checkpoint-etc-passwd", EVAL_RUN, ("config.json", "'checkpoint'", "/etc/passwd", "outside"),
         real=True, setup=edit_json("runs/real/config.json", set_in("checkpoint", "/etc/passwd"), older=True)),
    Case("eval-config-checkpoint-traversal", EVAL_RUN, ("config.json", "'checkpoint'", "../../../etc/hostname"),
         real=True,
         setup=edit_json("runs/real/config.json", set_in("checkpoint", "../../../etc/hostname"), older=True)),
    Case("eval-config-checkpoint-wrong-digest", EVAL_RUN, ("config.json", "'checkpoint'", "checkpoint_sha256"),
         real=True, files={"runs/real/weights.bin": b"not the weights"},
         setup=edit_json("runs/real/config.json", lambda d: d.update(checkpoint="weights.bin",
                                                                     checkpoint_sha256="0" * 64), older=True)),
    # issue 35: a file outside the run folder is never opened, even with its right sha256 recorded
    Case("eval-config-checkpoint-outside-with-its-digest", EVAL_RUN,
         ("config.json", "'checkpoint'", "outside the run folder", "not opened", "--backbone-weights"), real=True,
         files={"weights.pt": b"\x80\x04 a pickle somewhere else"}, setup=checkpoint_outside,
         patch=lambda mp: mp.setattr("sclft.run_folder.weights.file_digest", opened)),
    # ---- issue 29.3: every field of a run file checked (schema, tensors), edits detected as edits
    Case("resume-epoch-99", RESUME_RUN, ("training_state.json", "'epoch'", "99"), real=True,
         setup=edit_json(f"{CKPT}/training_state.json", set_in("epoch", 99))),
    Case("resume-epoch-negative", RESUME_RUN, ("training_state.json", "'epoch'", "-1"), real=True,
         setup=edit_json(f"{CKPT}/training_state.json", set_in("epoch", -1))),
    Case("resume-history-edited", RESUME_RUN, ("training_state.json", "sha256", "edited"), real=True,
         setup=edit_json(f"{CKPT}/training_state.json", lambda d: d["history"][0].update(train_loss=0.0), False)),
    Case("resume-history-short", RESUME_RUN, ("training_state.json", "'history'", "one record per epoch"), real=True,
         setup=edit_json(f"{CKPT}/training_state.json", set_in("history", []))),
    Case("resume-processes", RESUME_RUN, ("training_state.json", "'num_processes'", "rng_N"), real=True,
         setup=edit_json(f"{CKPT}/training_state.json", set_in("num_processes", 2))),
    Case("resume-optimizer-lr-text", RESUME_RUN, ("training_state.json", "param_groups[0].lr"), real=True,
         setup=edit_json(f"{CKPT}/training_state.json", lambda d: d["optimizer"]["param_groups"][0].update(lr="x"))),
    Case("resume-sampler-state", RESUME_RUN, ("sampler.safetensors", "torch.Generator"), real=True,
         setup=damage(f"{CKPT}/sampler.safetensors",
                      lambda f: save_file({"sampler": torch.zeros(3, dtype=torch.uint8)}, str(f)))),
    Case("resume-optimizer-shape", RESUME_RUN, ("optimizer.safetensors", "has shape [2, 2]"), real=True,
         setup=damage(f"{CKPT}/optimizer.safetensors", lambda f: save_file(
             {k: torch.zeros(2, 2) if k.endswith("exp_avg") else v for k, v in load_file(str(f)).items()}, str(f)))),
    Case("resume-rng-truncated", RESUME_RUN, ("rng_0.safetensors",), real=True,
         setup=damage(f"{CKPT}/rng_0.safetensors", truncate)),
    Case("resume-latest-files-traversal", RESUME_RUN, ("latest.json", "bad entries", "../../../etc/passwd"), real=True,
         setup=edit_json("runs/real/checkpoint/latest.json",
                         lambda d: d["files"].update({"../../../etc/passwd": "0" * 64}), forge=False)),
    Case("eval-manifest-traversal", EVAL_RUN, ("manifest.json", "'files'", "plain file name"), real=True,
         setup=edit_json("runs/real/manifest.json", lambda d: d["files"].update({"../../x": "0" * 64}), forge=False)),
    Case("resume-latest-old-format", RESUME_RUN, ("latest.json", "format", "pickled"), real=True,
         setup=edit_json("runs/real/checkpoint/latest.json", set_in("format", 2), forge=False)),
    Case("eval-config-layer", EVAL_RUN, ("config.json", "model_sha256", "edited"), real=True,
         setup=edit_json("runs/real/config.json", set_in("layer", "layer2.0"))),
    Case("eval-config-layer-older-run", EVAL_RUN, ("config.json", "does not fit", "layer 'layer2.0'", "layer1.0"),
         real=True, setup=edit_json("runs/real/config.json", set_in("layer", "layer2.0"), older=True)),
    Case("eval-config-num-classes-older-run", EVAL_RUN, ("config.json", "num_classes 7", "head.weight"), real=True,
         setup=edit_json("runs/real/config.json", lambda d: d.update(num_classes=7, class_names=None), older=True)),
    Case("eval-config-strategy", EVAL_RUN, ("config.json", "model_sha256"), real=True,
         setup=edit_json("runs/real/config.json", set_in("strategy", "scl_ft"))),
    Case("eval-config-strategy-older-run", EVAL_RUN, ("config.json", "train_config.json", "'strategy'", "scl_ft"),
         real=True, setup=edit_json("runs/real/config.json", set_in("strategy", "scl_ft"), older=True)),
    Case("eval-config-unknown-strategy", EVAL_RUN, ("config.json", "'strategy'", "linear_probe"), real=True,
         setup=edit_json("runs/real/config.json", set_in("strategy", "prefix_tuning"))),
    Case("eval-config-unknown-option-older-run", EVAL_RUN, ("config.json", "cannot be built", "bogus"), real=True,
         setup=edit_json("runs/real/config.json", lambda d: d["strategy_options"].update(bogus=1), older=True)),
    Case("eval-config-class-names", EVAL_RUN, ("config.json", "'class_names'", "10 names"), real=True,
         setup=edit_json("runs/real/config.json", set_in("class_names", ["a", "b"]))),
    Case("eval-config-edited", EVAL_RUN, ("config.json", "changed after the run finished", "manifest.json"), real=True,
         setup=edit_json("runs/real/config.json", set_in("layer", "layer2.0"), forge=False)),
    Case("eval-metrics-edited", EVAL_RUN, ("metrics.json", "changed after the run finished"), real=True,
         setup=edit_json("runs/real/metrics.json", set_in("test_accuracy", 0.99), forge=False)),
    Case("eval-weights-of-another-run", EVAL_RUN, ("model.safetensors", "model_sha256", "another run"), real=True,
         setup=another_runs_weights),
    # ---- issue 29.5: a full disk is an environment fault (exit 1) that names the device; nothing earlier is lost
    Case("disk-full-checkpoint", train(*REAL[len(TINY):]), ("no space left on", "needed ~", "MB"), code=1,
         patch=disk_full("sclft.training.checkpoint.save_file", enospc)),
    Case("disk-full-feature-cache", train(*REAL[len(TINY):], "--cache", "disk"),
         ("no space left on", ".partial", "MB free"), code=1, patch=disk_full("os.posix_fallocate", enospc)),
    Case("disk-full-overwrite-keeps-the-old-run", ["train", *REAL, "--cache-dir", "{tmp}/cache", "--out", "{run}",
         "--overwrite"], ("no space left on", "model.safetensors"), code=1, real=True,
         patch=disk_full("sclft.run_folder.weights.save_file", storage_full)),
    # ---- issue 29.8: messages name the thing
    Case("eval-config-truncated", EVAL_RUN, ("config.json", "not readable JSON"), real=True,
         setup=damage("runs/real/config.json", truncate)),
    Case("eval-train-config-truncated", EVAL_RUN, ("train_config.json", "not readable JSON"), real=True,
         setup=damage("runs/real/train_config.json", truncate)),
    Case("eval-config-binary", EVAL_RUN, ("config.json", "UTF-8"), real=True,
         setup=damage("runs/real/config.json", lambda f: f.write_bytes(b"\x80\x04\x95 not text"))),
    Case("imagefolder-non-utf8-name", train("--data", "imagefolder:{tmp}/imgs"), ("imgs/train/b", "not valid UTF-8"),
         setup=lambda tmp: images(tmp, {"train/a/1.png": (8, 8), "train/b/" + os.fsdecode(b"\xff.png"): (8, 8),
                                        "test/a/1.png": (8, 8), "test/b/1.png": (8, 8)})),
    Case("imagefolder-all-1x1", train("--data", "imagefolder:{tmp}/imgs"), ("1x1", "imgs/train"),
         setup=lambda tmp: images(tmp, {f"{s}/{c}/{i}.png": (1, 1) for s in ("train", "test") for c in "ab"
                                        for i in range(3)}), not_in_stdout=NO_SELECTION),
]

# ---- numbers that pass a bound check but are not numbers, divergence, options that would be ignored (issue 29
# items 6, 7: helper cfg's block)
CASES += [
    Case("lora-alpha-nan", train("--strategy", "lora", "--alpha", "nan"), ("--alpha", "alpha must be a finite")),
    Case("lora-alpha-inf", train("--strategy", "lora", "--alpha", "inf"), ("--alpha", "finite", "inf")),
    Case("lora-dropout-nan", train("--strategy", "lora", "--dropout", "nan"), ("--dropout", "finite")),
    Case("deep-lora-eps-nan", train("--strategy", "deep_lora", "--eps", "nan"), ("--eps", "finite")),
    Case("deep-lora-gamma-inf", train("--strategy", "deep_lora", "--gamma", "inf"), ("--gamma", "finite")),
    Case("deep-lora-gamma-nan", train("--strategy", "deep_lora", "--gamma", "nan"), ("--gamma", "finite")),
    Case("weight-decay-nan", train("--weight-decay", "nan"), ("weight_decay=nan", "finite")),
    Case("label-smoothing-nan", train("--label-smoothing", "nan"), ("label_smoothing=nan", "finite")),
    Case("max-params-inf", train("--max-params", "inf"), ("max_params=inf", "finite"), not_in_stdout=NO_SELECTION),
    yaml_case("yaml-lr-nan", "lr: .nan\n", ("lr=nan", "finite")),
    yaml_case("yaml-strategy-option-nan", "strategy: lora\nalpha: .inf\n", ("alpha", "finite")),
    yaml_case("yaml-per-strategy-option-nan", "per_strategy:\n  deep_lora: {eps: .nan}\n",
              ("per_strategy.deep_lora.eps", "finite"), "--strategy", "deep_lora"),
    yaml_case("yaml-selection-holdout-nan", "extra: {selection: {trial_holdout: .nan}}\n",
              ("trial_holdout", "(0, 1)")),
    Case("lr-diverges", train("--strategy", "linear_probe", "--lr", "1e6"), ("loss diverged", "--lr"), code=1),
    # ---- silently ignored input
    yaml_case("yaml-top-level-option-of-another-strategy", "r: 4\n", ("cfg.yaml: r", "lora", "linear_probe"),
              "--strategy", "linear_probe"),
    yaml_case("yaml-top-level-options-of-another-strategy", "strategy_options: {fuse: concat}\n",
              ("cfg.yaml: fuse", "scl_ft", "layer_ft"), "--strategy", "layer_ft", "--layer", "layer1.0"),
    yaml_case("yaml-selection-candidates-empty", "extra: {selection: {candidates: []}}\n",
              ("candidates", "non-empty"), not_in_stdout=NO_SELECTION),
    yaml_case("yaml-selection-fixed-pick-typo", "layer_rule: fixed\nextra: {selection: {fixed_pick: midle}}\n",
              ("fixed_pick", "middle"), not_in_stdout=NO_SELECTION),
    Case("probe-rank-with-pooling", ["probe", *TINY[:9], "--rank", "--pooling", "avg"], ("--pooling", "--rank")),
    Case("probe-rank-jackknife-with-fixed", ["probe", *TINY[:9], "--rank", "--layer-rule", "fixed", "--jackknife", "3"],
         ("--jackknife", "fixed")),
    Case("probe-rank-unknown-layer", ["probe", *TINY[:9], "--rank", "--layers", "layer9"], ("layer9", "valid layers")),
    Case("probe-jackknife-above-samples", ["probe", *TINY[:9], "--jackknife", "6", "--out", "{new}"],
         ("--jackknife 6", "at most 5")),
]

# ---- issue 35 "lost": an output path is checked before any work: never a special file, never a file of a run or
# bench folder, an existing file only with --overwrite (FIFOs and /dev/null: test_output_never_replaces_a_special_file)
CASES += [
    Case("predict-out-existing-file", [*PREDICT, "--out", "{tmp}/mine.csv"], ("mine.csv", "exists", "--overwrite"),
         real=True, files={"mine.csv": "the user's own table\n"}, setup=lambda tmp: images(tmp, ONE_IMAGE)),
    Case("predict-out-other-runs-metrics", [*PREDICT, "--out", "{old}/metrics.json"],
         ("runs/old/metrics.json", "run folder"), real=True, setup=lambda tmp: images(tmp, ONE_IMAGE)),
    Case("predict-out-other-runs-metrics-overwrite", [*PREDICT, "--out", "{old}/metrics.json", "--overwrite"],
         ("runs/old/metrics.json", "run folder"), real=True, setup=lambda tmp: images(tmp, ONE_IMAGE)),
    Case("predict-out-new-file-in-a-run", [*PREDICT, "--out", "{run}/checkpoint/preds.csv"],
         ("preds.csv", "run folder"), real=True, setup=lambda tmp: images(tmp, ONE_IMAGE)),
    Case("predict-out-bench-table", [*PREDICT, "--out", "{tmp}/bench/table.csv", "--overwrite"],
         ("bench/table.csv", "run folder"), real=True, files=BENCH, setup=lambda tmp: images(tmp, ONE_IMAGE)),
    Case("predict-out-a-folder", [*PREDICT, "--out", "{tmp}/imgs.csv"], ("imgs.csv", "a folder"), real=True,
         setup=lambda tmp: (images(tmp, ONE_IMAGE), (tmp / "imgs.csv").mkdir())),
    Case("export-out-the-runs-weights", [*EXPORT, "--out", "{run}/model.safetensors", "--overwrite"],
         ("runs/real/model.safetensors", "run folder"), real=True),
    Case("export-out-existing-file", [*EXPORT, "--format", "torchscript", "--out", "{file}"],
         ("file", "exists", "--overwrite"), real=True),
    Case("export-safetensors-out-a-file", [*EXPORT, "--out", "{file}"], ("file", "is a file", "folder"), real=True),
    Case("export-out-symlink-into-a-run", [*EXPORT, "--out", "{tmp}/link/model.safetensors"],
         ("link/model.safetensors", "run folder"), real=True,
         setup=lambda tmp: (tmp / "link").symlink_to(tmp / "runs" / "real")),
    Case("probe-out-a-run-folder", ["probe", *TINY[:9], "--out", "{old}"], ("runs/old", "run folder")),
    Case("rank-out-a-run-folder", ["rank", "--backbones", "resnet18", "--data", "digits", "--out", "{old}"],
         ("runs/old", "run folder")),
    Case("dln-out-inside-a-run-folder", ["dln", "parsimony", "--out", "{old}/dln"], ("runs/old/dln", "run folder")),
]


# ---- Silent (issue 35): the bench reports read every run through the run-folder owner. A bench folder of
# tiny.yaml's two runs, each a copy of {run} (a finished run, manifest and all) with the run's train_config.json.
TINY_SUITE = """name: tiny
description: two runs, copies of the hostile tests' real run
images_per_second: 150
backbones: [resnet18]
datasets: [digits]
defaults: {image_size: 16, epochs: 1, pretrained: false, batch_size: 16, eval_every: 0}
groups:
  table: {strategies: [layer_ft], seeds: [0, 1], train_per_class: [5], layers: [layer1.0]}
"""
RUN_ID = "resnet18-digits-layer_ft-layer1.0-n5-s0-"  # the first run's id without its hash (library versions)


def bench_of_real(folder: str = "bench", versions: dict | None = None) -> Callable[[Path], None]:
    """A setup: ``{tmp}/<folder>/experiments/<id>/`` for each run of tiny.yaml, a copy of ``{run}`` whose
    ``train_config.json`` is that run's config (its sha256 recorded as ``sclft train`` records it); with
    ``versions``: the ids and ``fingerprint.json`` of runs trained under those library versions."""
    def setup(tmp: Path) -> None:
        import dataclasses

        import sclft.versions
        from sclft import bench
        from sclft.config import TrainConfig

        installed = sclft.versions.library_versions
        sclft.versions.library_versions = (lambda: versions) if versions else installed
        try:
            runs = bench.expand_suite(bench.load_suite(str(tmp / "tiny.yaml")))
        finally:
            sclft.versions.library_versions = installed
        for run in runs:
            dest = tmp / folder / "experiments" / run.id
            shutil.copytree(tmp / "runs" / "real", dest, ignore=shutil.ignore_patterns("checkpoint"))
            cfg = TrainConfig.from_dict({**run.config, "out": str(dest)})
            (dest / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
            forge_digest(dest / "train_config.json")
            if versions:
                (dest / "fingerprint.json").write_text(json.dumps({"id": run.id,
                                                                   **bench.run_fingerprint(run.config, versions)}))
    return setup


def first_run(tmp: Path, folder: str = "bench") -> Path:
    return next(p for p in sorted((tmp / folder / "experiments").iterdir()) if p.name.startswith(RUN_ID))


def edit_metrics(folder: str = "bench", forge: bool = False, **values) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        file = first_run(tmp, folder) / "metrics.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), **values}))
        if forge:
            forge_digest(file)
    return setup


def unlist_metrics(tmp: Path) -> None:
    file = first_run(tmp) / "manifest.json"
    manifest = json.loads(file.read_text())
    del manifest["files"]["metrics.json"]
    file.write_text(json.dumps(manifest))


def then(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for step in setups:
            step(tmp)
    return setup


REPORT = ["bench", "--suite", "{tmp}/tiny.yaml", "--out", "{tmp}/bench"]
CASES += [
    Case("report-edited-metrics", [*REPORT, "--report-only"],
         (RUN_ID, "metrics.json was changed after the run finished", "manifest.json"), files={"tiny.yaml": TINY_SUITE},
         real=True, setup=then(bench_of_real(), edit_metrics(test_accuracy=0.52))),
    Case("report-metrics-unlisted-in-manifest", [*REPORT, "--report-only"],
         (RUN_ID, "manifest.json does not list metrics.json"), files={"tiny.yaml": TINY_SUITE}, real=True,
         setup=then(bench_of_real(), edit_metrics(test_accuracy=0.52), unlist_metrics)),
    Case("report-metrics-out-of-range", [*REPORT, "--report-only"],
         (RUN_ID, "metrics.json", "test_accuracy", "52", "[0, 1]"), files={"tiny.yaml": TINY_SUITE}, real=True,
         setup=then(bench_of_real(), edit_metrics(forge=True, test_accuracy=52))),
    Case("report-same-run-two-results", [*REPORT, "--report", "{tmp}/other"],
         (f"bench/experiments/{RUN_ID}", f"other/experiments/{RUN_ID}", "different results", "test_accuracy",
          "0.52"), files={"tiny.yaml": TINY_SUITE}, real=True,
         setup=then(bench_of_real(), bench_of_real("other"), edit_metrics("other", forge=True, test_accuracy=0.52))),
]


class _Planted:
    """A pickle whose loading would create ``pwned`` in the working folder (the case's tmp: the snapshot sees it)."""

    def __reduce__(self):
        return open, ("pwned", "w")


def _torch_pickle() -> bytes:
    buf = io.BytesIO()
    torch.save({"state": _Planted()}, buf)
    return buf.getvalue()


LAYER_SUITE = ("backbones: [resnet18]\ndatasets: [{name: digits, test_per_class: 4}]\n"
               "groups: {ablation: {strategies: [linear_probe, layer_ft], layers: [layer1.0, layer2.0]}}\n")
RANK = ["rank", "--backbones", "resnet18", "--data", "digits", "--train-per-class", "2"]

# ---- issue 35 "Tracebacks" and "Ignored" (helper errcfg): each a message and exit 2, nothing run or written
CASES += [
    Case("checkpoint-random-bytes", train("--checkpoint", "{tmp}/w.pth"), ("--checkpoint", "w.pth", "safely"),
         files={"w.pth": bytes(range(256)) * 8}),
    Case("checkpoint-pickle", train("--checkpoint", "{tmp}/w.pth"), ("--checkpoint", "w.pth", "safely"),
         files={"w.pth": pickle.dumps({"state": _Planted()})}),
    Case("checkpoint-torch-pickle", train("--checkpoint", "{tmp}/w.pth"), ("w.pth", "not weights sclft can load"),
         files={"w.pth": _torch_pickle()}),
    Case("rank-checkpoint-pickle", [*RANK, "--checkpoint", "{tmp}/w.pth"], ("--checkpoint", "w.pth", "safely"),
         files={"w.pth": _torch_pickle()}),
    Case("rank-checkpoint-random-bytes", [*RANK, "--checkpoint", "{tmp}/w.bin"], ("w.bin", "safely"),
         files={"w.bin": b"\x00garbage" * 100}),
    Case("predict-device-tpu", ["predict", "--checkpoint", "{old}", "--device", "tpu", "{file}"],
         ("--device tpu", "valid here: auto, cpu")),
    Case("rank-device-tpu", [*RANK, "--device", "tpu"], ("--device tpu", "valid here: auto, cpu")),
    Case("dln-completion-dim-too-large", ["dln", "completion", "--dim", "200000", "--out", "{new}"],
         ("--dim 200000", "GiB", "available")),
    Case("bench-layers-drop-blockless-strategies", ["bench", "--suite", "{tmp}/s.yaml", "--out", "{new}"],
         ("groups.ablation.layers", "linear_probe"), files={"s.yaml": LAYER_SUITE}),
    Case("bench-address-without-ray", ["bench", "--suite", "smoke", "--out", "{new}", "--address", "auto"],
         ("--address", "--launcher ray")),
    Case("bench-gpus-per-run-in-process", ["bench", "--suite", "smoke", "--out", "{new}", "--gpus-per-run", "0.5"],
         ("--gpus-per-run", "--launcher ray", "local")),
]
if not torch.cuda.is_available():
    CASES.append(Case("rank-device-cuda-without-gpu", [*RANK, "--device", "cuda"], ("--device cuda", "no such device")))


def fake_run(root: Path) -> None:
    """The files of a finished run (content is what matters here: it must not change)."""
    (root / "checkpoint" / "epoch-0001").mkdir(parents=True)
    save_file({"head.weight": torch.arange(20.0).reshape(2, 10), "head.bias": torch.zeros(2)},
              str(root / "model.safetensors"))
    for name in ("model.safetensors",):
        (root / "checkpoint" / "epoch-0001" / name).write_bytes((root / name).read_bytes())
    (root / "config.json").write_text(json.dumps({"backbone": "resnet18", "strategy": "linear_probe", "layer": None,
                                                  "num_classes": 10, "class_names": None, "strategy_options": {}}))
    (root / "train_config.json").write_text(json.dumps({"backbone": "resnet18", "data": "digits", "pretrained": False}))
    (root / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "epochs": 1}))
    (root / "checkpoint" / "latest.json").write_text(json.dumps({"epoch": 1, "path": "epoch-0001"}))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` → sha256 of its bytes (folders that hold no file do not count)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys, in_subprocess: bool) -> tuple[int, str, str]:
    if in_subprocess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        env.pop("SCLFT_DEBUG", None)
        done = subprocess.run([sys.executable, "-m", "sclft.cli", *argv], capture_output=True, text=True, env=env,
                              timeout=120)
        return done.returncode, done.stdout, done.stderr
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    assert main(["train", *REAL, "--cache-dir", str(root / "cache"), "--out", str(root / "real")]) == 0
    return root / "real"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path, capsys, monkeypatch, request):
    monkeypatch.delenv("SCLFT_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "runs" / "old")
    if case.real:
        shutil.copytree(request.getfixturevalue("real_run"), tmp_path / "runs" / "real")
    (tmp_path / "file").write_text("a regular file\n")
    for name, content in case.files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.write_bytes if isinstance(content, bytes) else target.write_text)(content)
    if case.setup:
        case.setup(tmp_path)
    places = {"tmp": tmp_path, "old": tmp_path / "runs" / "old", "new": tmp_path / "runs" / "new",
              "file": tmp_path / "file", "run": tmp_path / "runs" / "real"}
    argv = [a.format(**{k: str(v) for k, v in places.items()}) for a in case.argv]
    before = snapshot(tmp_path)
    if case.patch:
        case.patch(monkeypatch)

    code, out, err = run_cli(argv, capsys, case.subprocess)

    assert "Traceback" not in err + out
    assert code == case.code, f"exit {code}\nstdout: {out}\nstderr: {err}"
    for text in case.says:
        assert text in err, f"{text!r} not in stderr: {err}"
    for text in case.not_in_stdout:
        assert text not in out, f"{text!r} printed before the error: {out}"
    assert snapshot(tmp_path) == before  # nothing written, nothing earlier changed


@pytest.mark.parametrize("num_classes", [None, 1, 2.5, True, "10"])
def test_wrap_names_a_bad_num_classes(num_classes):
    import sclft

    with pytest.raises(ValueError, match=f"num_classes must be an integer >= 2.*got {num_classes!r}"):
        sclft.wrap("resnet18", strategy="linear_probe", num_classes=num_classes, pretrained=False)


@pytest.mark.parametrize("older", [False, True], ids=["edit-refused-as-edit", "older-run-tensor-check"])
def test_load_refuses_a_config_whose_lora_rank_was_changed(tmp_path, older):
    """issue 29.3: ``r`` edited in config.json is never silently another model: the digest refuses the edit, and
    without it (a run of an older sclft) the adapter tensors' shapes do."""
    from sclft import wrap
    from sclft.run_folder import RunFolderError, load, save_model

    save_model(wrap("resnet18", strategy="lora", num_classes=3, pretrained=False, r=2), tmp_path,
               {"pretrained": False, "seed": 0})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["strategy_options"]["r"] == 2
    config["strategy_options"]["r"] = 4
    if older:
        del config["model_sha256"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunFolderError, match="model_sha256" if not older else r"lora_A.* \[2, .*needs \[4, "):
        load(tmp_path)


# ------------------------------------------------------------------------------------------ issue 35
def test_output_never_replaces_a_special_file(tmp_path, real_run, capsys):
    """A FIFO given as --out stays a FIFO (predict and export refuse it before any work); /dev/null is checked
    through the library's check alone (as root a regression would turn the device node into a regular file)."""
    import stat

    from sclft.io import OutputPathError, atomic_write_text
    from sclft.run_folder import check_out_file

    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    images(tmp_path, ONE_IMAGE)
    for argv in (["predict", "--no-progress", "--checkpoint", str(real_run), str(tmp_path / "imgs")],
                 ["export", "--checkpoint", str(real_run), "--format", "onnx"]):
        for overwrite in ([], ["--overwrite"]):
            code, _, err = run_cli([*argv, "--out", str(fifo), *overwrite], capsys, False)
            assert code == 2 and str(fifo) in err and "FIFO" in err and "Traceback" not in err
            assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(OutputPathError, match="/dev/null.*character device"):
        check_out_file("/dev/null", overwrite=True)
    with pytest.raises(OutputPathError, match="FIFO"):  # every atomic write refuses one too
        atomic_write_text(fifo, "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_overwrite_replaces_the_users_file_and_only_then(tmp_path, real_run, capsys):
    images(tmp_path, ONE_IMAGE)
    out = tmp_path / "preds.json"
    out.write_text("mine\n")
    argv = ["predict", "--no-progress", "--checkpoint", str(real_run), str(tmp_path / "imgs"), "--out", str(out)]
    assert run_cli(argv, capsys, False)[0] == 2 and out.read_text() == "mine\n"
    assert run_cli([*argv, "--overwrite"], capsys, False)[0] == 0
    rows = json.loads(out.read_text())
    assert [Path(r["filename"]).name for r in rows] == ["a.png"] and len(rows[0]["prob"]) == 5


def test_predict_refuses_tensors_of_another_size_and_nan(real_run):
    from sclft.run_folder import load

    model = load(real_run)
    assert model.backbone.data_config["input_size"] == (3, 16, 16)  # the run's --image-size
    good = torch.zeros(3, 16, 16)
    assert len(model.predict(good)) == 1 and len(model.predict(torch.stack([good, good]))) == 2
    with pytest.raises(ValueError, match=r"input size \(3, 16, 16\).*got \(3, 7, 7\)"):
        model.predict(torch.zeros(3, 7, 7))
    with pytest.raises(ValueError, match=r"got \(16, 16\)"):
        model.predict(torch.zeros(16, 16))
    for bad in (torch.full((3, 16, 16), float("nan")), good.clone().index_fill_(1, torch.tensor([3]), float("inf"))):
        with pytest.raises(ValueError, match="NaN or infinite"):
            model.predict(bad)
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        model.predict(torch.zeros(3, 16, 16, dtype=torch.uint8))


def test_a_backbone_weights_file_outside_the_run_is_read_only_when_passed(tmp_path, capsys):
    """A run trained with ``--checkpoint FILE`` names FILE in config.json; load() does not follow it (it is outside
    the run folder) and ``--backbone-weights FILE`` / ``checkpoint=`` rebuilds the model, checked by its digest."""
    import timm

    from sclft.run_folder import RunFolderError, load

    weights = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    run = tmp_path / "run"
    assert main(["train", *REAL, "--pretrained", "--checkpoint", str(weights), "--cache-dir", str(tmp_path / "c"),
                 "--out", str(run)]) == 0
    with pytest.raises(RunFolderError, match="outside the run folder.*--backbone-weights"):
        load(run)
    assert load(run, checkpoint=str(weights)).num_classes == 10
    capsys.readouterr()
    code, out, err = run_cli(["eval", "--checkpoint", str(run), "--no-progress"], capsys, False)
    assert code == 2 and "outside the run folder" in err and "Traceback" not in err
    code, out, err = run_cli(["eval", "--checkpoint", str(run), "--no-progress", "--backbone-weights", str(weights)],
                             capsys, False)
    assert code == 0 and json.loads(out)["num_samples"] > 0


def test_a_safetensors_export_folder_is_replaced_with_overwrite_and_is_not_a_run(tmp_path, real_run, capsys):
    """An export folder (config.json + model.safetensors + preprocessor_config.json) is the user's output, not a run
    folder: exporting again needs --overwrite, then works."""
    out = tmp_path / "export"
    argv = ["export", "--checkpoint", str(real_run), "--format", "safetensors", "--out", str(out)]
    assert run_cli(argv, capsys, False)[0] == 0 and (out / "preprocessor_config.json").is_file()
    before = snapshot(out)
    code, _, err = run_cli(argv, capsys, False)
    assert code == 2 and "not empty" in err and snapshot(out) == before
    assert run_cli([*argv, "--overwrite"], capsys, False)[0] == 0


def _report(tmp: Path, capsys, *flags: str) -> tuple[int, str]:
    code, _, err = run_cli([a.replace("{tmp}", str(tmp)) for a in [*REPORT, *flags]], capsys, False)
    assert "Traceback" not in err
    return code, err


def test_report_counts_a_run_that_lost_its_manifest_as_unfinished(real_run, tmp_path, capsys):
    """Issue 35: with manifest.json deleted, an edited metrics.json is not believed either: the run (weights, no
    manifest) is a missing run, named with its reason in runs.md and the note; its files stay as they were."""
    shutil.copytree(real_run, tmp_path / "runs" / "real")
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    bench_of_real()(tmp_path)
    edit_metrics(test_accuracy=0.52)(tmp_path)
    damaged = first_run(tmp_path)
    (damaged / "manifest.json").unlink()
    before = snapshot(tmp_path / "bench" / "experiments")
    code, err = _report(tmp_path, capsys, "--report-only")
    assert code == 0 and "Runs: 1 of 2 found (1 missing)" in err, err
    table = (tmp_path / "bench" / "table.md").read_text()
    assert "52.00" not in table and "Runs: 1 of 2 found (1 missing); see runs.md." in table
    listing = (tmp_path / "bench" / "runs.md").read_text()
    assert f"| {damaged.name} | unfinished or damaged (bench/experiments/{damaged.name}: model.safetensors but no " \
           "manifest.json" in listing
    assert snapshot(tmp_path / "bench" / "experiments") == before


def test_report_of_runs_of_other_library_versions_says_so(real_run, tmp_path, capsys):
    """Issue 35: a report built only from runs of other library versions carries the note and runs.md; the same
    run given twice with the same results (a copied folder) is no conflict."""
    import sclft.versions

    installed = sclft.versions.library_versions()
    other = {**installed, "timm": "0.0.1"}
    shutil.copytree(real_run, tmp_path / "runs" / "real")
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    bench_of_real(versions=other)(tmp_path)
    shutil.copytree(tmp_path / "bench", tmp_path / "copy")
    code, err = _report(tmp_path, capsys, "--report", "{tmp}/copy")
    note = f"Runs: 2 of 2 found, all trained with timm 0.0.1 (installed {installed['timm']}); see runs.md."
    assert code == 0 and note in err, err
    assert note in (tmp_path / "bench" / "table.md").read_text()
    listing = (tmp_path / "bench" / "runs.md").read_text()
    assert "2 of 2 runs found" in listing and f"* 2 run(s): timm 0.0.1 (installed {installed['timm']})" in listing
    metrics = json.loads((first_run(tmp_path) / "metrics.json").read_text())
    assert f"{100 * metrics['test_accuracy']:.2f}" in (tmp_path / "bench" / "table.md").read_text()


def test_overwrite_never_replaces_a_readme_of_the_users_own(real_run, tmp_path, caplog):
    """Issue 35 (lost): ``train --overwrite`` keeps the user's own README.md (the new run writes no card over it),
    and when the old README.md is sclft's card, the warning that lists the replaced files names it."""
    import logging

    out = tmp_path / "run"
    shutil.copytree(real_run, out)
    card = (out / "README.md").read_text()
    assert "library_name: sclft" in card
    (out / "README.md").write_text("# my notes\n")
    argv = ["train", *REAL, "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--overwrite"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert (out / "README.md").read_text() == "# my notes\n"
    assert f"{out / 'README.md'} exists and is not a sclft model card: left as it is" in caplog.text
    replaced = next(r.getMessage() for r in caplog.records if "--overwrite: replaced" in r.getMessage())
    assert "metrics.json" in replaced and "README.md" not in replaced
    assert not (out / ".sclft-overwrite").exists() and not (out / ".sclft-replaced").exists()

    (out / "README.md").write_text(card)  # sclft's card of the old run: replaced, and said so
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    replaced = next(r.getMessage() for r in caplog.records if "--overwrite: replaced" in r.getMessage())
    for name in ("metrics.json", "model.safetensors", "config.json", "train_config.json", "manifest.json",
                 "checkpoint", "README.md"):
        assert name in replaced, (name, replaced)
    assert "library_name: sclft" in (out / "README.md").read_text()

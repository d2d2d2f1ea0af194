"""Nothing lost, nothing silently wrong: resume, run folders and run files under faults and bad input (issue 13)."""

import importlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from _run_files import forge_digest
from safetensors.torch import load_file, save_file

from sclft.cli import main as cli_main
from sclft.io import atomic_write_json

train_mod = importlib.import_module("sclft.training.loop")
from sclft.training import LOCK_FILE, NonFiniteLossError, RunFolderError, TrainConfig, latest_checkpoint, load, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(backbone="resnet18", pretrained=False, data="digits", strategy="layer_ft", layer="layer3.0", image_size=16,
            train_per_class=5, epochs=2, batch_size=16, lr=3e-3, progress=False, eval_every=0)


def tiny(tmp_path, name="run", **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / name), **kw})


def flags(cfg: TrainConfig) -> list[str]:
    """The `sclft train` flags of ``cfg`` (only fields that differ from the defaults)."""
    out, default = [], TrainConfig()
    for k, v in cfg.__dict__.items():
        if k == "extra" or v == getattr(default, k):
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag if v else "--no-" + flag[2:]] if isinstance(v, bool) else [flag, str(v)]
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupt_after(monkeypatch, epoch: int):
    """The process dies right after the checkpoint of ``epoch`` is complete."""
    original = train_mod.save_checkpoint

    def save_then_die(accelerator, out, model, e, *args):
        path = original(accelerator, out, model, e, *args)
        if e == epoch:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    return original


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A 2-epoch run (layer chosen by NC1) killed after its epoch-1 checkpoint; tests copy it."""
    tmp = tmp_path_factory.mktemp("interrupted")
    cfg = tiny(tmp, layer="auto", layer_rule="profile")
    with pytest.MonkeyPatch.context() as mp:
        interrupt_after(mp, 1)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    return cfg


def copy_run(cfg: TrainConfig, tmp_path, name="run") -> TrainConfig:
    shutil.copytree(cfg.out, tmp_path / name)
    return TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / name), "cache_dir": cfg.cache_dir})


def run_cli(args, capsys) -> tuple[int, str]:
    code = cli_main(["train", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# ------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("change", [{"lr": 0.01}, {"strategy": "scl_ft"}, {"layer": "layer2.0"},
                                    {"train_per_class": 6}, {"epochs": 3}, {"cache": "off"}])
def test_resume_refuses_a_changed_run_naming_each_field(interrupted, tmp_path, capsys, change):
    cfg = copy_run(interrupted, tmp_path)
    before = snapshot(Path(cfg.out))
    changed = TrainConfig(**{**cfg.__dict__, **change, "resume": True})
    code, err = run_cli(flags(changed), capsys)
    assert code == 2
    for key, new in change.items():
        old = getattr(cfg, key)
        old = "on" if key == "cache" else old
        assert f"{key}: {old!r} in the checkpoint, {new!r} now" in err, err
    assert snapshot(Path(cfg.out)) == before


def test_resume_continues_with_harmless_changes_and_keeps_seconds_and_layer_selection(interrupted, tmp_path):
    cfg = copy_run(interrupted, tmp_path)
    state_file = latest_checkpoint(cfg.out) / "training_state.json"
    state = json.loads(state_file.read_text())
    assert state["layer_selection"]["layer"] == state["layer"]
    atomic_write_json(state_file, {**state, "seconds": 1000.0})  # as if the first part took 1000 s
    forge_digest(state_file)
    metrics = train(cfg, resume=True, progress=True, num_workers=0, eval_every=1,
                    cache_dir=str(tmp_path / "other_cache"))
    assert metrics["seconds"] >= 1000.0
    assert metrics["layer_selection"] == state["layer_selection"] and metrics["layer"] == state["layer"]
    assert json.loads((Path(cfg.out) / "metrics.json").read_text())["layer_selection"] == state["layer_selection"]


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    cfg = tiny(tmp_path, resume=True)
    code, err = run_cli(flags(cfg), capsys)
    assert code == 2 and "no checkpoint to resume" in err and str(tmp_path / "run") in err
    assert not (tmp_path / "run" / "metrics.json").exists()


# ------------------------------------------------------------------------------------------ run folder
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    cfg = tiny(tmp, strategy="linear_probe", layer="auto", epochs=1)
    train(cfg)
    return cfg


def test_a_finished_run_is_not_overwritten(finished, tmp_path, capsys):
    cfg = copy_run(finished, tmp_path)
    before = snapshot(Path(cfg.out))
    code, err = run_cli(flags(TrainConfig(**{**cfg.__dict__, "lr": 0.01})), capsys)
    assert code == 2 and "--overwrite" in err and "metrics.json" in err
    assert snapshot(Path(cfg.out)) == before


def test_overwrite_replaces_a_finished_run_only_when_the_new_one_finished(finished, tmp_path, monkeypatch):
    cfg = copy_run(finished, tmp_path)
    out = Path(cfg.out)
    before = snapshot(out)
    original = interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):  # the new run dies after its first checkpoint
        train(cfg, epochs=2, overwrite=True)
    assert snapshot(out) == before  # the old run is intact, and the failed new one left nothing behind
    monkeypatch.setattr(train_mod, "save_checkpoint", original)
    metrics = train(cfg, epochs=2, overwrite=True)
    assert json.loads((out / "metrics.json").read_text()) == metrics and metrics["epochs"] == 2
    assert latest_checkpoint(out).name == "epoch-0002" and sorted(p.name for p in out.iterdir() if
                                                                   p.name.startswith(".")) == []
    load(out)  # its manifest and digests describe the new files


def test_one_writer_per_out_and_a_stale_lock_is_taken_over(tmp_path, capsys, caplog):
    cfg = tiny(tmp_path, strategy="linear_probe", layer="auto", epochs=1)
    out = Path(cfg.out)
    with train_mod.run_lock(out):  # another run holds the folder
        code, err = run_cli(flags(cfg), capsys)
    assert code == 2 and f"pid {os.getpid()}" in err and socket.gethostname() in err
    assert not (out / "metrics.json").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                       "started": "2020-01-01T00:00:00+00:00"}))
    with caplog.at_level("WARNING", logger="sclft.train"):
        train(cfg)
    assert f"pid {dead.pid}" in caplog.text and "taking over" in caplog.text
    assert (out / "metrics.json").is_file() and not (out / LOCK_FILE).exists()


def _poison_optimizer(monkeypatch, at_step: int):
    """After optimizer step ``at_step`` one head weight becomes inf (the loss of that step was finite)."""
    real = train_mod.build_optimizer

    def build(model, cfg):
        opt = real(model, cfg)
        step, calls = opt.step, [0]

        def poisoned(self, *a, **k):  # a bound method, as torch's LR scheduler expects
            result = step(*a, **k)
            calls[0] += 1
            if calls[0] == at_step:
                with torch.no_grad():
                    model.head.weight[0, 0] = float("inf")
            return result

        opt.step = types.MethodType(poisoned, opt)
        return opt

    monkeypatch.setattr(train_mod, "build_optimizer", build)


def test_after_non_finite_weights_the_last_good_checkpoint_is_finite(tmp_path, monkeypatch):
    _poison_optimizer(monkeypatch, at_step=8)  # the last step of epoch 2 (50 images / 16 per batch = 4 steps)
    with pytest.raises(NonFiniteLossError, match="epoch-0001"):
        train(tiny(tmp_path, epochs=3))
    good = latest_checkpoint(tmp_path / "run")
    assert good.name == "epoch-0001"
    assert all(torch.isfinite(t).all() for t in load_file(str(good / "model.safetensors")).values())


def test_the_last_good_checkpoint_named_is_from_this_run(finished, tmp_path, monkeypatch):
    cfg = copy_run(finished, tmp_path)
    _poison_optimizer(monkeypatch, at_step=2)
    with pytest.raises(NonFiniteLossError, match="none yet"):
        train(cfg, epochs=2, overwrite=True)


# ------------------------------------------------------------------------------------------ run files
@pytest.mark.parametrize("pointer", [{"path": "../../elsewhere/checkpoint/epoch-0001"}, {"path": "/tmp"},
                                     {"path": "epoch-0009"}, {"epoch": 1}, "not json"])
def test_a_bad_latest_pointer_is_an_error_that_deletes_nothing(interrupted, tmp_path, capsys, pointer):
    cfg = copy_run(interrupted, tmp_path)
    latest = Path(cfg.out) / "checkpoint" / "latest.json"
    latest.write_text(pointer if isinstance(pointer, str) else json.dumps(pointer))
    before = snapshot(Path(cfg.out))
    code, err = run_cli(flags(TrainConfig(**{**cfg.__dict__, "resume": True})), capsys)
    assert code == 2 and str(latest) in err and ("nothing was deleted" in err or "not readable JSON" in err)
    assert snapshot(Path(cfg.out)) == before


@pytest.mark.parametrize("damage", ["truncated_model", "empty_state"])
def test_damaged_run_files_are_named(interrupted, tmp_path, capsys, damage):
    cfg = copy_run(interrupted, tmp_path)
    ckpt = latest_checkpoint(cfg.out)
    if damage == "truncated_model":
        bad = ckpt / "model.safetensors"
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad = ckpt / "training_state.json"
        bad.write_text("{}")
    code, err = run_cli(flags(TrainConfig(**{**cfg.__dict__, "resume": True})), capsys)
    assert code == 2 and str(bad) in err


def test_load_names_a_truncated_model_file(finished, tmp_path):
    cfg = copy_run(finished, tmp_path)
    bad = Path(cfg.out) / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(RunFolderError, match=str(bad)):
        load(cfg.out)


# ------------------------------------------------------------------------------------------ rebuild
def test_an_exported_model_is_rebuilt_with_its_seed_and_random_init(tmp_path):
    train(tiny(tmp_path, strategy="linear_probe", layer="auto", epochs=1, seed=3))
    export = tmp_path / "export"
    export.mkdir()
    for name in ("model.safetensors", "config.json"):  # what a user copies; no train_config.json
        shutil.copy(tmp_path / "run" / name, export / name)
    model = load(export)
    torch.manual_seed(3)
    import timm

    reference = timm.create_model("resnet18.tv_in1k", pretrained=False, num_classes=0)
    torch.testing.assert_close(model.backbone.model.conv1.weight, reference.conv1.weight, rtol=0, atol=0)


def test_load_refuses_a_changed_backbone_weights_file(tmp_path):
    import timm

    weights = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    train(tiny(tmp_path, strategy="linear_probe", layer="auto", epochs=1, pretrained=True, checkpoint=str(weights)))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["checkpoint"] == str(weights) and len(config["checkpoint_sha256"]) == 64
    load(tmp_path / "run", checkpoint=str(weights))  # unchanged: loads (given by the caller: issue 35, a run folder
    torch.manual_seed(1)                               # never leads outside itself)
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    with pytest.raises(ValueError, match="changed since training"):
        load(tmp_path / "run", checkpoint=str(weights))


# ------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_output_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------------------------------ processes
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def launch(args, n: int = 2, script: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch` with ``n`` CPU processes (one gloo group; `--cpu` would start only one process)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + os.getpid() % 500)]
    cmd += [script] if script else ["-m", "sclft.cli"]
    return subprocess.run([*cmd, "train", *args], env={**_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


TWO = dict(TINY, strategy="layer_ft", epochs=3)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    cfg = TrainConfig(**{**TWO, "cache_dir": str(tmp / "cache"), "out": str(tmp / "straight")})
    done = launch(flags(cfg))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1 and done.stdout.count("test accuracy") == 1, done.stdout  # main only
    return cfg


@pytest.mark.slow
def test_two_processes_follow_the_one_process_schedule(two_process_run):
    metrics = json.loads((Path(two_process_run.out) / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    # 50 images in batches of 16: 4 steps per epoch in one process (2 per process with two); warm-up 1 epoch
    # (2 updates), then cosine over 6 - 2 + 1 = 5 updates: the lr of the next update after epoch e is
    # lr * (1 + cos(pi k / 5)) / 2 with k = 1, 3, 5
    expected = [3e-3 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in (1, 3, 5)]
    assert [h["lr"] for h in metrics["history"]] == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_two_process_resume_equals_the_uninterrupted_run(two_process_run, tmp_path):
    cfg = TrainConfig(**{**two_process_run.__dict__, "out": str(tmp_path / "resumed")})
    died = launch(flags(cfg), script="tests/_die_after_epoch.py", env={"SCLFT_TEST_DIE_AFTER_EPOCH": "1"})
    assert died.returncode != 0 and latest_checkpoint(cfg.out).name == "epoch-0001"
    assert {p.name for p in latest_checkpoint(cfg.out).glob("rng_*")} == \
        {"rng_0.safetensors", "rng_1.safetensors"}  # every process's RNG
    resumed = launch([*flags(cfg), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(str(Path(two_process_run.out) / "model.safetensors"))
    b = load_file(str(Path(cfg.out) / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.fixture
def cpu_fp16(monkeypatch):
    """Accelerate runs ``fp16`` on CPU as float32 (no autocast, no GradScaler); torch has both on CPU, so this
    gives the Accelerator a CPU GradScaler that grows 16x per good step (and halves on overflow): steps are
    skipped and the scale moves, so a resume that forgets the scaler's state trains differently."""
    import accelerate

    real_init = accelerate.Accelerator.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if self.state.mixed_precision == "fp16" and self.scaler is None:
            self.native_amp = True
            self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_factor=16.0, growth_interval=1)

    monkeypatch.setattr(accelerate.Accelerator, "__init__", init)


def test_fp16_resume_restores_the_grad_scaler(tmp_path, monkeypatch, cpu_fp16):
    train(tiny(tmp_path, "straight", precision="fp16"))
    original = interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, "resumed", precision="fp16"))
    scaler = json.loads((latest_checkpoint(tmp_path / "resumed") / "training_state.json").read_text())["scaler"]
    assert scaler["scale"] < 2.0**16 * 16**4  # some of the 4 steps of epoch 1 overflowed and were skipped
    monkeypatch.setattr(train_mod, "save_checkpoint", original)
    train(tiny(tmp_path, "resumed", precision="fp16", resume=True))
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("straight", "resumed"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_kill_at_random_instants_then_resume_equals_the_uninterrupted_run(tmp_path):
    """SIGKILL `sclft train` at seeded instants (during an epoch or a checkpoint write), --resume each time
    (or start again when no checkpoint was complete): the result equals the run that was never killed."""
    import random
    import signal
    import time

    cfg = tiny(tmp_path, "killed", epochs=4)
    reference = tiny(tmp_path, "straight", epochs=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same float rounding
    try:
        train(reference)
    finally:
        torch.set_num_threads(threads)
    rng = random.Random(13)
    env = {**_env(), "PYTHONUNBUFFERED": "1"}
    for attempt in range(3):
        resume = (Path(cfg.out) / "checkpoint" / "latest.json").is_file()
        cmd = [sys.executable, "-m", "sclft.cli", "train", *flags(cfg), *(["--resume"] if resume else [])]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if attempt < 2:  # killed: somewhere in the first ~1.5 s after an epoch ends (its checkpoint is written then)
            for line in proc.stdout:
                if line.startswith("epoch "):
                    break
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=300)[0]
        assert attempt < 2 or proc.returncode == 0, output[-3000:]
    a = load_file(str(Path(reference.out) / "model.safetensors"))
    b = load_file(str(Path(cfg.out) / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    history = json.loads((Path(cfg.out) / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]

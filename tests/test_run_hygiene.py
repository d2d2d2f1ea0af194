"""Small things a user meets around a run: file modes a colleague can read, progress bars that do not flood a
redirected log, no scheduler warning for a deliberate all-warm-up schedule, and an interruption hint that
suggests ``--resume`` only when there is a checkpoint to resume."""

from __future__ import annotations

import importlib
import io
import logging
import os
import stat

import pytest
import torch

from sclft.cli import main

TINY = ["train", "--no-pretrained", "--data", "test_subset:5:digits", "--strategy", "linear_probe", "--image-size",
        "16", "--train-per-class", "2", "--epochs", "2", "--batch-size", "16", "--no-progress", "--cache", "off"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_interrupted_train_suggests_resume_only_with_a_checkpoint(when, tmp_path, capsys, monkeypatch, umask_022):
    loop = importlib.import_module("sclft.training.loop")

    real = loop.save_checkpoint

    def ctrl_c(*args, **kwargs):  # Ctrl-C at the end of the first epoch, before or after its checkpoint
        if when == "after" and not (out / "metrics.json").exists():
            real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", ctrl_c)
    out = tmp_path / "run"
    assert main([*TINY, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert ("--resume" in err) is (when == "after"), err
    if when == "before":
        assert "before the first checkpoint" in err
        return
    monkeypatch.setattr(loop, "save_checkpoint", real)
    assert main([*TINY, "--out", str(out), "--resume"]) == 0  # what the hint said works
    # every file of the run (weights written by safetensors included) is readable by others: 0644 under umask 022
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert "model.safetensors" in modes and any(n.endswith("optimizer.safetensors") for n in modes)
    assert {n: m for n, m in modes.items() if m != 0o644} == {}
    # a finished run, replaced with --overwrite and interrupted: the old run stays, no --resume is suggested
    monkeypatch.setattr(loop, "save_checkpoint", ctrl_c)
    assert main([*TINY, "--out", str(out), "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert "previous run" in err and "unchanged" in err and "--resume" not in err


def test_a_one_epoch_all_warm_up_schedule_does_not_warn_and_is_timms(caplog):
    from timm.scheduler import CosineLRScheduler

    from sclft.optim import WarmupCosine

    def sgd():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    with caplog.at_level(logging.WARNING):
        ours = WarmupCosine(sgd(), total_steps=4, warmup_steps=4)
    assert not [r for r in caplog.records if r.name.startswith("timm")]
    reference_opt = sgd()  # timm itself, as configured by hand (it warns; the schedule is the same)
    reference = CosineLRScheduler(reference_opt, t_initial=1, lr_min=0.0, warmup_t=4, warmup_lr_init=0.0,
                                  warmup_prefix=True, t_in_epochs=False)
    for step in range(1, 6):
        reference.step_update(step)
        assert ours.get_last_lr()[0] == pytest.approx(reference_opt.param_groups[0]["lr"])
        ours.step()
    assert logging.getLogger("timm.scheduler.cosine_lr").level == logging.NOTSET  # left as it was


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_do_not_flood_a_redirected_log(terminal, monkeypatch):
    from sclft.progress import progress_bar

    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    for _ in progress_bar(range(3000), desc="epoch", mininterval=0):  # transient, redrawn at every step
        pass
    transient = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    for _ in progress_bar(range(3000), desc="dln", leave=True, mininterval=0):
        pass
    kept = stream.getvalue()
    if terminal:
        assert transient.count("\r") > 100 and "3000/3000" in kept
    else:
        assert transient == ""  # no bar at all in a log
        assert kept.count("\r") <= 3 and "3000/3000" in kept  # first and last state only
    stream.seek(0)
    stream.truncate()
    for _ in progress_bar(range(10), progress=False, leave=True):
        pass
    assert stream.getvalue() == ""

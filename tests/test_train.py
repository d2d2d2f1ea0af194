import copy
import importlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from sclft.training import NonFiniteLossError, TrainConfig, latest_checkpoint, load, train

train_mod = importlib.import_module("sclft.training.loop")
writer = importlib.import_module("sclft.run_folder.writing")  # where train() hands the model to save_model

METRIC_KEYS = {
    "backbone", "dataset", "strategy", "layer", "num_classes", "test_accuracy", "train_accuracy", "nc1_train",
    "nc1_test", "trainable_params", "total_params", "trainable_percent", "epochs", "seconds",
}


def tiny(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(backbone="resnet18", pretrained=False, data="digits", strategy="scl_ft", layer="layer3.0",
                image_size=16, train_per_class=5, epochs=2, batch_size=16, lr=3e-3, progress=False,
                cache_dir=str(tmp_path / "cache"), out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


@pytest.fixture
def trained_models(monkeypatch) -> list:
    """Deep copies of the in-memory models ``train()`` hands to ``save_model`` (the trained model itself, the
    reference a reloaded model must reproduce), in eval mode, one per finished run."""
    models = []
    real_save = writer.save_model

    def save_and_keep(model, out, *args, **kwargs):
        models.append(copy.deepcopy(model).eval())
        return real_save(model, out, *args, **kwargs)

    monkeypatch.setattr(writer, "save_model", save_and_keep)
    return models


def test_metrics_schema_and_outputs(tmp_path, trained_models):
    metrics = train(tiny(tmp_path))
    assert METRIC_KEYS <= set(metrics)
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert METRIC_KEYS <= set(on_disk) and on_disk["layer"] == "layer3.0" and on_disk["num_classes"] == 10
    assert 0.0 <= on_disk["test_accuracy"] <= 1.0 and on_disk["nc1_train"] > 0
    assert on_disk["trainable_params"] == 919_040 + 512 * 10 + 10  # resnet18 layer3.0 + head
    assert len(on_disk["history"]) == 2 and on_disk["cached"] is True
    # only what trained is stored; load() rebuilds the model that was trained (frozen weights from the seed,
    # trained tensors from the file): same logits, bit for bit
    state = _weights(tmp_path / "run")
    assert all(k.startswith(("head.", "backbone.model.layer3.0.")) for k in state)
    (trained,) = trained_models
    model = load(tmp_path / "run")
    assert not model.training
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = trained(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    train(tiny(tmp_path, "straight", epochs=2, strategy="layer_ft", eval_every=0))
    original = train_mod.save_checkpoint

    def killed_after_epoch_1(accelerator, out, model, epoch, *args):
        path = original(accelerator, out, model, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt  # the process dies right after the epoch-1 checkpoint
        return path

    monkeypatch.setattr(train_mod, "save_checkpoint", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, "interrupted", epochs=2, strategy="layer_ft", eval_every=0))
    assert not (tmp_path / "interrupted" / "metrics.json").exists()
    monkeypatch.setattr(train_mod, "save_checkpoint", original)
    metrics = train(tiny(tmp_path, "interrupted", epochs=2, strategy="layer_ft", eval_every=0, resume=True))
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "interrupted")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    losses = [h["train_loss"] for h in straight["history"]]
    assert [h["train_loss"] for h in metrics["history"]] == pytest.approx(losses)


def test_kill_mid_checkpoint_keeps_previous_readable(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=2)
    original = train_mod.save_checkpoint

    def stops_after_epoch_1(*args):
        original(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", stops_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(train_mod, "save_checkpoint", original)
    good = latest_checkpoint(cfg.out)
    assert good is not None and good.name == "epoch-0001"
    ckpt_mod = importlib.import_module("sclft.training.checkpoint")
    real_save = ckpt_mod.save_file

    def dies_mid_write(tensors, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod, "save_file", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, epochs=2, resume=True))
    monkeypatch.setattr(ckpt_mod, "save_file", real_save)
    assert latest_checkpoint(cfg.out) == good
    state = load_file(str(good / "model.safetensors"))
    assert "head.weight" in state


def test_non_finite_loss_stops_and_names_last_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_ce = torch.nn.functional.cross_entropy

    def ce(logits, y, **kw):
        calls["n"] += 1
        loss = real_ce(logits, y, **kw)
        return loss * float("nan") if calls["n"] > 4 else loss  # 4 steps = epoch 1 (50 images / 16)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", ce)
    with pytest.raises(NonFiniteLossError, match="epoch-0001"):
        train(tiny(tmp_path, epochs=3))
    assert latest_checkpoint(tmp_path / "run").name == "epoch-0001"


@pytest.mark.slow
def test_uncached_linear_probe_and_full_ft(tmp_path):
    lp = train(tiny(tmp_path, "lp", strategy="linear_probe", cache="off", epochs=1))
    assert lp["cached"] is False and lp["layer"] is None
    full = train(tiny(tmp_path, "full", strategy="full_ft", epochs=1))
    assert full["cached"] is False and full["trainable_percent"] == 100.0


def test_config_validation():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8").validate()
    with pytest.raises(ValueError, match="unknown config keys: lr_max"):
        TrainConfig.from_dict({"lr_max": 1})


def test_warmup_cosine_schedule_per_update_with_lr_scales_and_resume():
    from sclft.optim import WarmupCosine

    w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.1, "lr_scale": 0.5}], lr=0.1)
    sched = WarmupCosine(opt, total_steps=10, warmup_steps=2)
    used = []
    for _ in range(10):
        used.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # update j (0-based): warm-up (j+1)/2 of the peak, then cosine over 9 updates starting at the peak
    expected = [0.1 * ((j + 1) / 2 if j < 2 else 0.5 * (1 + math.cos(math.pi * (j - 1) / 9))) for j in range(10)]
    assert [u[0] for u in used] == pytest.approx(expected, abs=1e-12)
    assert [u[1] for u in used] == pytest.approx([0.5 * e for e in expected], abs=1e-12)  # lr_scale
    assert expected[-1] > 0  # the last update still learns
    resumed = WarmupCosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 10, 2)
    resumed.load_state_dict({**sched.state_dict(), "updates": 5})
    assert resumed.get_last_lr()[0] == pytest.approx(expected[5], abs=1e-12)


def test_runs_with_different_precision_in_one_process(tmp_path):
    bf16 = train(tiny(tmp_path, "bf16", strategy="linear_probe", precision="bf16", epochs=1, eval_every=0))
    fp32 = train(tiny(tmp_path, "fp32", strategy="linear_probe", precision="no", epochs=1))
    assert bf16["history"][0].keys() == {"epoch", "train_loss", "lr"}  # eval_every=0: only the final eval
    assert "test_accuracy" in fp32["history"][0]


@pytest.mark.slow
@pytest.mark.parametrize("backbone,layer", [("vit_b32", "blocks.5"), ("clip_vit_b32", "transformer.resblocks.5")])
def test_transformers_train_at_any_image_size_and_load_back(tmp_path, tiny_imagefolder, monkeypatch, backbone, layer):
    """`--image-size 64` on a ViT died with "Input height (64) doesn't match model (224)"."""
    x = torch.randn(2, 3, 32, 32)
    trained = {}
    real_save = writer.save_model

    def save_and_remember(model, out, *args, **kwargs):
        with torch.no_grad():
            trained["logits"] = model.eval()(x)  # the in-memory trained model, before anything is reloaded
        return real_save(model, out, *args, **kwargs)

    monkeypatch.setattr(writer, "save_model", save_and_remember)
    metrics = train(tiny(tmp_path, backbone=backbone, layer=layer, data=tiny_imagefolder, image_size=32, epochs=1,
                         train_per_class=None, eval_every=0))
    assert metrics["image_size"] == 32
    assert json.loads((tmp_path / "run" / "config.json").read_text())["image_size"] == 32
    model = load(tmp_path / "run")
    assert model.backbone.data_config["input_size"] == (3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained["logits"], rtol=0, atol=0)


@pytest.mark.slow
def test_load_refuses_a_file_missing_trained_tensors(tmp_path):
    from safetensors.torch import save_file

    train(tiny(tmp_path, epochs=1, eval_every=0))
    state = _weights(tmp_path / "run")
    del state["head.weight"], state["backbone.model.layer3.0.bn1.running_mean"]
    save_file(state, str(tmp_path / "run" / "model.safetensors"))
    # as an older run without digests (with them, the edit itself is refused first: tests/test_hostile.py)
    (tmp_path / "run" / "manifest.json").unlink()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    del config["model_sha256"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="head.weight") as err:
        load(tmp_path / "run")
    assert str(tmp_path / "run") in str(err.value) and "layer3.0.bn1.running_mean" in str(err.value)


def test_zero_shot_run_is_one_evaluation(tmp_path, tiny_imagefolder, monkeypatch):
    """`--strategy zero_shot` ran `epochs` evaluation passes of nothing."""
    calls = []
    real_evaluate = train_mod.evaluate

    def counting(model, loader, *a, **k):
        calls.append(loader)
        return real_evaluate(model, loader, *a, **k)

    monkeypatch.setattr(train_mod, "evaluate", counting)
    metrics = train(tiny(tmp_path, backbone="clip_vit_b32", strategy="zero_shot", layer="auto", data=tiny_imagefolder,
                         image_size=32, epochs=3, train_per_class=None))
    assert len(calls) == 2  # test and train, once each
    assert metrics["epochs"] == 0 and metrics["trainable_params"] == 0
    assert metrics["history"] == [{"epoch": 0, "test_accuracy": metrics["test_accuracy"]}]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    from sclft.data.prompts import GENERIC_TEMPLATES

    assert config["strategy_options"]["templates"] == list(GENERIC_TEMPLATES)  # recorded for load()
    assert load(tmp_path / "run").head.weight.shape == (2, 512)

"""``sclft predict``, ``TransferModel.predict`` / ``.transform`` / ``.class_names`` on ``load()``, the model card
and ``sclft export`` of a trained run; one tiny trained run folder shared by the module."""

import csv
import json
from pathlib import Path

import pytest
import torch

from sclft.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """A finished run (random timm test_resnet, digits at 16 px) and the digits test split written as PNG files, in
    class folders, in the order of the split."""
    from sclft.data import load_dataset
    from sclft.training import TrainConfig, train

    root = tmp_path_factory.mktemp("predict")
    cfg = TrainConfig(backbone="timm:test_resnet", pretrained=False, data="digits", strategy="scl_ft", layer="layer3.0",
                      image_size=16, train_per_class=10, epochs=2, batch_size=32, lr=3e-3, progress=False,
                      cache_dir=str(root / "cache"), out=str(root / "run"))
    train(cfg)
    test = load_dataset("digits").test
    images = root / "images"
    for i in range(len(test)):
        image, label = test[i]
        (images / str(label)).mkdir(parents=True, exist_ok=True)
        image.save(images / str(label) / f"{i:04d}.png")
    return root / "run", images


def _predict(capsys, *args):
    code = main(["predict", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_predict_on_the_test_images_gives_the_accuracy_eval_reports(run, capsys, tmp_path):
    run_dir, images = run
    assert main(["eval", "--checkpoint", str(run_dir), "--no-progress"]) == 0
    reported = json.loads(capsys.readouterr().out)
    code, _, _ = _predict(capsys, "--checkpoint", run_dir, images, "--top-k", 3, "--out", tmp_path / "p.csv")
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == reported["num_samples"]
    correct = sum(Path(r["filename"]).parent.name == r["label_0"] for r in rows)
    assert correct / len(rows) == reported["accuracy"]
    assert {"label_2", "prob_2", "index_2"} <= set(rows[0]) and "label_3" not in rows[0]
    assert all(float(r["prob_0"]) >= float(r["prob_1"]) >= float(r["prob_2"]) for r in rows)


def test_loaded_model_carries_names_transform_and_predict(run):
    from PIL import Image

    from sclft.run_folder import load

    run_dir, images = run
    model = load(run_dir)
    assert model.class_names == [str(d) for d in range(10)]
    assert json.loads((run_dir / "config.json").read_text())["class_names"] == model.class_names
    files = sorted(images.rglob("*.png"))[:5]
    pil = Image.open(files[0]).convert("RGB")
    rows = model.predict([pil, str(files[1]), model.transform(Image.open(files[2]).convert("RGB"))], top_k=4)
    by_hand = []
    for f in files[:3]:
        x = model.transform(Image.open(f).convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0]
        order = sorted(range(10), key=lambda k: -float(probs[k]))[:4]
        by_hand.append(([str(k) for k in order], [float(probs[k]) for k in order]))
    for row, (labels, probs) in zip(rows, by_hand):
        assert row["label"] == labels
        assert row["prob"] == pytest.approx(probs, rel=1e-5)
    batch = torch.stack([model.transform(Image.open(f).convert("RGB")) for f in files])
    assert [r["label"][0] for r in model.predict(batch, top_k=1)] == [r["label"][0] for r in model.predict(files)]


def test_predict_json_from_a_list_file_and_stdout_csv(run, capsys, tmp_path):
    run_dir, images = run
    files = sorted(images.rglob("*.png"))[:3]
    listing = tmp_path / "list.txt"
    listing.write_text("# three images\n" + "\n".join(str(f) for f in files) + "\n\n")
    code, _, _ = _predict(capsys, "--checkpoint", run_dir, listing, "--top-k", 2, "--out", tmp_path / "p.json")
    assert code == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [r["filename"] for r in rows] == [str(f) for f in files]
    assert all(len(r["label"]) == len(r["prob"]) == 2 for r in rows)
    code, out, _ = _predict(capsys, "--checkpoint", run_dir, files[0], "--top-k", 1)
    assert code == 0 and out.splitlines()[0] == "filename,label_0,prob_0,index_0"
    assert out.splitlines()[1].split(",")[1] == rows[0]["label"][0]
    code, out, _ = _predict(capsys, "--checkpoint", run_dir, files[0], "--precision", "bf16", "--batch-size", 1)
    assert code == 0 and 0 < float(out.splitlines()[1].split(",")[6]) <= 1  # prob_0 under bf16 autocast


def test_hostile_images_are_listed_and_skipped(run, capsys, tmp_path):
    run_dir, images = run
    good = sorted(images.rglob("*.png"))[0]
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "good.png").write_bytes(good.read_bytes())
    (folder / "notes.jpg").write_text("not an image")
    data = good.read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    code, _, err = _predict(capsys, "--checkpoint", run_dir, folder, "--out", tmp_path / "p.csv")
    assert code == 0
    assert "skipped 2 of 3" in err and "notes.jpg" in err and "cut.png" in err
    assert [r["filename"] for r in csv.DictReader((tmp_path / "p.csv").open())] == [str(folder / "sub" / "good.png")]
    code, _, err = _predict(capsys, "--checkpoint", run_dir, folder, "--strict", "--out", tmp_path / "strict.csv")
    assert code == 2 and "--strict" in err and "notes.jpg" in err and not (tmp_path / "strict.csv").exists()
    code, _, err = _predict(capsys, "--checkpoint", run_dir, folder / "notes.jpg")
    assert code == 2 and "none of the 1 file" in err


@pytest.mark.parametrize("case", ["empty_dir", "missing", "bad_out", "not_a_run", "other_tool", "unfinished"])
def test_bad_inputs_exit_2_with_a_message(run, capsys, tmp_path, case):
    run_dir, images = run
    checkpoint, inputs, extra, expect = run_dir, [images], [], ""
    if case == "empty_dir":
        (tmp_path / "empty" / "deeper").mkdir(parents=True)
        (tmp_path / "empty" / "readme.txt").write_text("no images here")
        inputs, expect = [tmp_path / "empty"], "no image to predict"
    elif case == "missing":
        inputs, expect = [tmp_path / "nope.png"], "no such file or folder"
    elif case == "bad_out":
        extra, expect = ["--out", tmp_path / "p.parquet"], "valid: .csv, .json"
    elif case == "not_a_run":
        checkpoint, expect = images, "not a sclft run folder"
    elif case == "other_tool":  # a Hugging Face transformers model folder
        checkpoint = tmp_path / "hf_model"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text(json.dumps({"architectures": ["ViTForImageClassification"],
                                                            "model_type": "vit"}))
        (checkpoint / "model.safetensors").write_bytes(b"\0" * 16)
        expect = "another tool"
    elif case == "unfinished":
        checkpoint = tmp_path / "unfinished"
        (checkpoint / "checkpoint").mkdir(parents=True)
        (checkpoint / "checkpoint" / "latest.json").write_text('{"epoch": 1, "path": "epoch-0001"}')
        expect = "unfinished"
    code, _, err = _predict(capsys, "--checkpoint", checkpoint, *inputs, *extra)
    assert code == 2
    assert expect in err


def test_export_cli_onnx_runs_in_onnxruntime_like_pytorch(run, capsys, tmp_path):
    import onnx

    from sclft.export import RTOL, load_exported, max_relative_error
    from sclft.run_folder import load

    run_dir, _ = run
    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert "checked against PyTorch" in capsys.readouterr().out
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["class_names"] == [str(d) for d in range(10)] and meta["input_size"] == [3, 16, 16]
    model = load(run_dir)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    assert max_relative_error(load_exported(tmp_path / "m.onnx", "onnx")(x), ref) <= RTOL
    code = main(["export", "--checkpoint", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    assert code == 2 and "not a sclft run" in capsys.readouterr().err


def test_the_run_writes_a_model_card_from_its_metrics(run, tmp_path):
    import shlex

    from huggingface_hub import ModelCard

    from sclft.card import model_card
    from sclft.cli import build_parser, config_from_args
    from sclft.run_folder import load

    run_dir, _ = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    card = ModelCard.load(run_dir / "README.md")
    assert card.data.library_name == "sclft" and card.data.datasets is None  # digits is not a Hub dataset
    assert card.data.base_model is None  # random weights: no base model
    result = card.data.eval_results[0]
    assert (result.metric_type, result.dataset_split, result.metric_value) == ("accuracy", "test",
                                                                               metrics["test_accuracy"])
    assert f"{100 * metrics['test_accuracy']:.2f} %" in card.text and f"{metrics['nc1_test']:.4g}" in card.text
    assert f"{metrics['trainable_params']:,}" in card.text and "`layer3.0`, given with `--layer`" in card.text
    # the command in the card parses into the config the run was trained with
    command = card.text.split("## Reproduce")[1].split("```bash\n")[1].split("\n```")[0]
    argv = shlex.split(command)[1:]
    cfg = config_from_args(build_parser(argv).parse_args(argv))
    trained = json.loads((run_dir / "train_config.json").read_text())
    for key in ("backbone", "data", "strategy", "layer", "image_size", "train_per_class", "epochs", "batch_size", "lr",
                "pretrained", "seed", "strategy_options"):
        assert getattr(cfg, key) == trained[key], key
    # pretrained timm weights: the card names the hub id and the licence timm records for them
    other = tmp_path / "pretrained_run"
    other.mkdir()
    for name in ("metrics.json", "config.json"):
        (other / name).write_text((run_dir / name).read_text())
    (other / "train_config.json").write_text(json.dumps({**trained, "pretrained": True}))
    text = model_card(other, load(run_dir))
    assert "base_model: timm/test_resnet.r160_in1k" in text and "license: apache-2.0" in text


def test_a_readme_of_the_users_own_is_left_alone(run, tmp_path):
    from sclft.card import write_model_card

    run_dir, _ = run
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("metrics.json", "config.json", "train_config.json"):
        (folder / name).write_text((run_dir / name).read_text())
    (folder / "README.md").write_text("# my notes\n")
    assert write_model_card(folder, model=None) is None
    assert (folder / "README.md").read_text() == "# my notes\n"


def test_trained_run_through_the_cli_and_a_torch_free_deployer_agree(run, capsys, tmp_path):
    """The issue's case: 8-px digits (smaller than the 16-px input) through `sclft export` + onnxruntime + the
    numpy / Pillow preprocessing, in a process that cannot import torch, give `sclft predict`'s probabilities."""
    from test_deploy import BY_PACKAGE, ONNX_RUN, deploy

    run_dir, images = run
    files = sorted(images.rglob("*.png"))[:40]
    code, _, _ = _predict(capsys, "--checkpoint", run_dir, *files, "--top-k", 10, "--out", tmp_path / "p.json")
    assert code == 0
    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--no-dynamo", "--out",
                 str(tmp_path / "m.onnx")]) == 0
    probs = {}
    for row in json.loads((tmp_path / "p.json").read_text()):
        probs[Path(row["filename"]).name] = [dict(zip(row["index"], row["prob"]))[k] for k in range(10)]
    assert len(probs) == len(files)  # names unique across the class folders
    (tmp_path / "cases.json").write_text(json.dumps({"images": [str(f) for f in files], "cases": {
        "run": {"onnx": str(tmp_path / "m.onnx"), "probs": probs}}}))
    result = deploy(tmp_path, ["torch", "torchvision", "timm"], BY_PACKAGE, ONNX_RUN)
    assert result["modules"] == [] and result["worst"]["run"] <= 1e-4, result

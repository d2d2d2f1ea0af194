"""LoRA through Hugging Face ``peft``: ``LoraConfig`` + ``inject_adapter_in_model`` on the backbone's model.

The adapters are peft's own layers (``peft.tuners.lora``: Linear, Conv2d, and MultiheadAttention for
open_clip). The explicit list of adapted layers is given to peft as ``target_modules``, so the saved
``adapter_config.json`` + ``adapter_model.safetensors`` load with ``PeftModel.from_pretrained`` on the same
timm / open_clip model. For a timm model the trained head is saved too, as peft saves a classifier in
``modules_to_save`` (peft's "custom models" guide for timm): ``PeftModel.from_pretrained`` on
``timm.create_model(architecture, num_classes=K)`` with the frozen weights is then the whole trained model.
``task_type`` stays null: peft's task types are text tasks whose wrappers call the model with ``input_ids``.
"""

from __future__ import annotations

import copy
from pathlib import Path

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from ...errors import UsageError
from ...io import atomic_path
from .._adapters import AdapterStrategy, replace_module
from .config import DEFAULT_TARGETS, LoRAConfig

ADAPTER_NAME = "default"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names the keys


class LoRA(AdapterStrategy):
    config_class = LoRAConfig
    default_targets = DEFAULT_TARGETS
    target_kinds = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)

    def peft_config(self):
        c = self.config
        return LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=sorted(self.targets),
                          bias="none")

    def attach(self, backbone):
        inject_adapter_in_model(self.peft_config(), backbone.model, adapter_name=ADAPTER_NAME)

    def _lora_layers(self, backbone):
        return [m for m in backbone.model.modules() if isinstance(m, LoraLayer)]

    def trainable_backbone_parameters(self, backbone):
        return [p for n, p in backbone.model.named_parameters() if "lora_" in n]

    def trainable_backbone_modules(self, backbone):
        return [m.lora_dropout for m in self._lora_layers(backbone)]  # dropout active while training

    def merge(self, backbone):
        """peft's own merge, layer by layer (what ``merge_and_unload`` does): ``W += α/r·BA`` in each LoRA layer
        (``LoraLayer.merge``), which is then replaced by its base layer (``get_base_layer``)."""
        for path, layer in [(n, m) for n, m in backbone.model.named_modules() if isinstance(m, LoraLayer)]:
            layer.merge(adapter_names=[ADAPTER_NAME])
            replace_module(backbone.model, path, layer.get_base_layer())
        backbone.model.__dict__.pop("peft_config", None)  # set by inject_adapter_in_model; no adapter is left
        self.targets = {}

    def export(self, backbone, directory, head=None, base_model=None):
        save_adapter(backbone, directory, head=head, base_model=base_model)
        return [ADAPTER_WEIGHTS, ADAPTER_CONFIG]


def classifier_name(backbone) -> str | None:
    """The path of the classifier a peft user's ``timm.create_model(architecture, num_classes=K)`` has
    (timm's ``pretrained_cfg["classifier"]``: ``classifier``, ``fc``, ``head``), whose input is the feature our
    head reads; None for a model that is not timm's (open_clip: the head is only in ``model.safetensors``)."""
    model = backbone.model
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if not isinstance(name, str) or not hasattr(model, "reset_classifier"):
        return None
    try:
        model.get_submodule(name)
    except AttributeError:
        return None
    return name


def adapter_state_dict(backbone) -> dict:
    """The adapter's tensors under the keys ``PeftModel.save_pretrained`` writes."""
    state = get_peft_model_state_dict(backbone.model, adapter_name=ADAPTER_NAME)
    return {PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_adapter(model, directory: str | Path, head: nn.Module | None = None, base_model: str | None = None) -> Path:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` (peft ``save_pretrained`` layout) for a
    ``TransferModel`` (or its backbone and ``head``) with the ``lora`` strategy: the head as the timm
    classifier in ``modules_to_save`` (see :func:`classifier_name`), ``base_model`` as
    ``base_model_name_or_path``."""
    backbone = getattr(model, "backbone", model)
    head = head if head is not None else getattr(model, "head", None)
    config = getattr(backbone.model, "peft_config", {}).get(ADAPTER_NAME)
    if config is None:
        raise UsageError("save_adapter needs a model built with strategy='lora' (no peft adapter found)")
    config = copy.deepcopy(config)  # the model's own config stays as injected
    state = adapter_state_dict(backbone)
    classifier = classifier_name(backbone) if head is not None else None
    if classifier:
        config.modules_to_save = [classifier]
        state.update({f"{PEFT_PREFIX}{classifier}.{k}": v.detach().cpu().contiguous()
                      for k, v in head.state_dict().items()})
    config.base_model_name_or_path = base_model
    config.inference_mode = True  # as PeftModel.save_pretrained writes a trained adapter
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / ADAPTER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    config.save_pretrained(str(directory))  # peft's own adapter_config.json
    return directory


def load_adapter(model, directory: str | Path) -> None:
    """Load ``adapter_model.safetensors`` written by :func:`save_adapter` (or peft) into a ``lora`` model."""
    backbone = getattr(model, "backbone", model)
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(str(Path(directory) / ADAPTER_WEIGHTS)).items()}
    classifier = classifier_name(backbone)
    saved_head = {k[len(classifier) + 1:]: state.pop(k) for k in list(state)
                  if classifier and k.startswith(classifier + ".")}
    if saved_head and getattr(model, "head", None) is not None:
        model.head.load_state_dict(saved_head)
    result = set_peft_model_state_dict(backbone.model, state, adapter_name=ADAPTER_NAME)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise UsageError(f"adapter in {directory} does not fit this model (unexpected keys: {unexpected[:3]} ...)")

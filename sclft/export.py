"""Export a trained model as one self-contained network: ONNX, TorchScript or safetensors.

The network is the whole forward pass — frozen backbone, tuned block, the SCL-FT skip, the head — with adapter
updates merged into the weights (``Strategy.merge``: LoRA through peft's ``merge_and_unload``, Deep LoRA's
``W₀ + ΔW``). It takes ``(N, 3, S, S)`` float32 images preprocessed as the ``preprocessing`` metadata says
(:mod:`sclft.preprocess` implements it with numpy and Pillow) and returns logits; the preprocessing, class names
and origin travel in the file's metadata (ONNX ``metadata_props``, TorchScript ``_extra_files["sclft.json"]``,
safetensors ``__metadata__``), each a JSON string under the keys of :func:`export_metadata`.

``safetensors`` writes a folder in timm's Hub layout: ``model.safetensors``, ``config.json`` and
``preprocessor_config.json``. Where the merged model is a plain timm architecture (its classifier the trained
head: linear probe, Layer FT, full FT, BitFit, merged LoRA / Deep LoRA on a timm backbone) the weights carry
timm's own names and ``config.json`` is timm's (``architecture``, ``num_classes``, ``pretrained_cfg``), so
``timm.create_model("local-dir:FOLDER", pretrained=True)`` rebuilds it. Otherwise (the SCL-FT skip, a text head,
a backbone timm does not build) every tensor name starts with ``sclft.``, so no foreign model loads them
strictly, and ``config.json`` names the sclft model; :func:`load_safetensors_export` rebuilds it.

>>> export_model(sclft.load("runs/demo"), "onnx", "model.onnx")
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.constants import CONFIG_NAME, SAFETENSORS_SINGLE_FILE
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from . import __version__
from .data.transforms import eval_settings
from .errors import UsageError
from .io import OutputPathError, atomic_path, read_json_object
from .model import wrap
from .preprocess import describe, preprocessor_config
from .run_folder import check_out_file, check_out_folder

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ""}  # safetensors: a folder
EXTRA_FILE = "sclft.json"  # TorchScript: the metadata as one JSON file inside the archive
RTOL = 1e-4  # exported logits vs PyTorch: max |a - b| <= RTOL * max |b|
# a safetensors export: a Hugging Face model folder (the Hub's names, as timm's save_for_hf writes them)
WEIGHTS, CONFIG, PREPROCESSOR = SAFETENSORS_SINGLE_FILE, CONFIG_NAME, "preprocessor_config.json"
PREFIX = "sclft."  # tensor names of a safetensors export that is not a timm graph


class ExportError(UsageError):
    """The model cannot be exported in the asked format (the message says why)."""


class Classifier(nn.Module):
    """A :class:`~sclft.model.TransferModel` as one plain module: normalised images → logits (no ``no_grad``
    blocks or cache switches inside, so tracers see one graph)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        z = m.strategy.frozen_forward(m.backbone, x) if m.strategy.has_frozen_prefix else x
        return m.head(m.strategy.tail_forward(m.backbone, z))


def merged(model):
    """An independent copy of ``model`` in eval mode whose adapters are merged into the backbone's weights
    (``Strategy.merge``); its logits equal ``model``'s up to rounding. Strategies without adapters: a copy."""
    copied = copy.deepcopy(model).eval()
    copied.strategy.merge(copied.backbone)
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied


def preprocessing(model) -> dict[str, Any]:
    """The model's eval transform as data (:func:`sclft.preprocess.describe`, versioned): what
    :func:`sclft.preprocess.preprocess` (numpy + Pillow) follows to give the exported network its input."""
    s = eval_settings(model.backbone.data_config)
    return describe(s["input_size"], s["interpolation"], s["mean"], s["std"], s["crop_pct"])


def export_metadata(model) -> dict[str, str]:
    """What a runtime needs besides the graph, every value a JSON string: ``preprocessing`` (the complete,
    versioned image → input recipe; :mod:`sclft.preprocess` implements it), ``preprocessor_config`` (what Hugging
    Face's image-processor format can say of it), ``input_size`` ``[3, S, S]``, ``mean``, ``std`` (of
    ``(x / 255 − mean) / std``), ``interpolation``, ``crop_pct``, ``class_names``, and what it was (``backbone``,
    ``strategy``, ``layer``, ``num_classes``, ``sclft_version``)."""
    spec = preprocessing(model)
    values: dict[str, Any] = {
        "preprocessing": spec, "preprocessor_config": preprocessor_config(spec),
        "input_size": spec["input_size"], "mean": spec["mean"], "std": spec["std"],
        "interpolation": spec["interpolation"], "crop_pct": spec["crop_pct"],
        "class_names": model.class_names or [str(k) for k in range(model.num_classes)],
        "num_classes": model.num_classes, "backbone": model.backbone.name, "strategy": model.strategy_name,
        "layer": model.layer, "input": "float32 NCHW (N, 3, S, S): images through `preprocessing`",
        "output": "logits (softmax over the last axis gives sclft predict's probabilities)",
        "sclft_version": __version__,
    }
    return {k: json.dumps(v) for k, v in values.items()}


def example_input(model, batch: int = 2) -> torch.Tensor:
    size = tuple(model.backbone.data_config.get("input_size", (3, 224, 224)))
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))


def export_model(model, fmt: str, out: str | Path, verify: bool = True, dynamo: bool = True,
                 overwrite: bool = False) -> Path:
    """Write ``model`` (merged, in eval mode) to ``out`` as ``fmt`` (``onnx`` | ``torchscript`` | ``safetensors``,
    a folder); ONNX and TorchScript files are checked against PyTorch at two batch sizes (``verify``), a
    safetensors folder by loading it back the way its ``config.json`` says (timm or sclft).
    ``dynamo=False``: torch's older TorchScript-based ONNX exporter (deprecated by torch, faster). A safetensors
    folder that exists and is not empty is replaced only with ``overwrite``; ``out`` is never a device or a file of a
    run folder (:func:`check_export_out`)."""
    out = check_export_out(out, fmt, overwrite)
    plain = merged(model).cpu().float()
    net = Classifier(plain).eval()
    meta = export_metadata(plain)
    if fmt == "safetensors":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:  # written and checked beside ``out``, then moved in: a failed export leaves nothing
            try:
                _safetensors_folder(net, tmp, meta)
            except Exception as e:  # timm's config writer and safetensors raise many types
                raise ExportError(f"cannot export {plain.backbone.name} / {plain.strategy_name} to safetensors: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            if verify:
                check_safetensors_export(tmp, net)
            out.mkdir(exist_ok=True)
            for name in (WEIGHTS, CONFIG, PREPROCESSOR):
                os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out
    with atomic_path(out) as tmp:
        try:
            if fmt == "onnx":
                _onnx(net, tmp, meta, dynamo)
            else:
                _torchscript(net, tmp, meta)
        except ExportError:
            raise
        except Exception as e:  # the exporters raise many types; name the model and the format
            raise ExportError(f"cannot export {plain.backbone.name} / {plain.strategy_name} to {fmt}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        if verify:
            check_export(tmp, fmt, net)
    return out


def _onnx(net: Classifier, path: Path, meta: dict[str, str], dynamo: bool = True) -> None:
    import onnx  # optional dependency (the export extra)

    x = example_input(net.model)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation and progress notes
        if dynamo:
            program = torch.onnx.export(net, (x,), dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                        verbose=False, **names)
            proto = program.model_proto
        else:
            torch.onnx.export(net, (x,), str(path), dynamo=False, dynamic_axes={"input": {0: "batch"},
                              "logits": {0: "batch"}}, **names)
            proto = onnx.load(str(path))
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _torchscript(net: Classifier, path: Path, meta: dict[str, str]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # trace: deprecation and "converting a tensor to a Python value" notes
        traced = torch.jit.trace(net, example_input(net.model), check_trace=False)
        extra = {EXTRA_FILE: json.dumps({k: json.loads(v) for k, v in meta.items()})}
        torch.jit.save(traced, str(path), _extra_files=extra)


def timm_classifier(net: Classifier) -> nn.Module | None:
    """The merged model as one timm model of its architecture, timm's classifier holding the trained head, when
    that graph computes ``net``'s logits (to :data:`RTOL`); None where it does not (the SCL-FT skip, a text head,
    a backbone timm does not build)."""
    import timm  # slow to import; only the safetensors export needs it

    plain = net.model
    inner = plain.backbone.model
    arch = (getattr(inner, "pretrained_cfg", None) or {}).get("architecture")
    if not (arch and timm.is_model(arch) and type(plain.head) is nn.Linear and hasattr(inner, "reset_classifier")):
        return None
    model = copy.deepcopy(inner).eval()
    model.reset_classifier(plain.num_classes)
    classifier = model.get_classifier()
    if type(classifier) is not nn.Linear or classifier.weight.shape != plain.head.weight.shape:
        return None
    classifier.load_state_dict(plain.head.state_dict())
    x = example_input(plain, 2)
    with torch.no_grad():
        same = max_relative_error(model(x), net(x)) <= RTOL
    return model if same else None


def check_export_out(out: str | Path, fmt: str, overwrite: bool = False) -> Path:
    """Check ``--out`` of an export before any work: a file (ONNX, TorchScript) or a folder (safetensors) that is
    never a device or inside a run folder, replacing what exists only with ``overwrite``."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: valid: {', '.join(FORMATS)}")
    if fmt != "safetensors":
        return check_out_file(out, "--out", overwrite)
    try:
        folder = check_out_folder(out, (WEIGHTS, CONFIG, PREPROCESSOR))
    except OutputPathError:  # a device, or inside a run folder
        raise
    except ValueError:
        _check_folder(Path(out), overwrite)  # a file given as the folder: say what the export is
        raise
    _check_folder(folder, overwrite)
    return folder


def _check_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a safetensors export is a folder ({WEIGHTS}, {CONFIG}, {PREPROCESSOR}, "
                         "timm's Hub layout) and this is a file; pass a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out}: the folder exists and is not empty; pass a new folder or empty this one (a "
                         f"safetensors export writes {WEIGHTS}, {CONFIG} and {PREPROCESSOR} into it)")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _safetensors_folder(net: Classifier, out: Path, meta: dict[str, str]) -> None:
    plain = net.model
    spec = json.loads(meta["preprocessing"])
    timm_model = timm_classifier(net)
    out.mkdir(parents=True, exist_ok=True)
    if timm_model is not None:
        from timm.models._hub import save_config_for_hf  # timm's own config.json writer (save_for_hf's half)

        arch = timm_model.pretrained_cfg["architecture"]
        how = (f"timm.create_model('local-dir:FOLDER', pretrained=True), or timm.create_model({arch!r}, "
               f"**{CONFIG}['model_args']) and load_state_dict(safetensors.torch.load_file('FOLDER/{WEIGHTS}'))")
        tensors_meta = {**meta, "format": "pt", "timm_architecture": json.dumps(arch), "rebuild": json.dumps(how)}
        data_config = {k: spec[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct")}
        with atomic_path(out / WEIGHTS) as tmp:
            save_model(timm_model, str(tmp), metadata=tensors_meta)
        with atomic_path(out / CONFIG) as tmp:
            save_config_for_hf(timm_model, str(tmp), data_config={**data_config, "crop_mode": "center"},
                               model_config={"label_names": json.loads(meta["class_names"]),
                                             "sclft": {k: json.loads(v) for k, v in meta.items()}})
    else:
        how = (f"sclft.export.load_safetensors_export('FOLDER') (pip install sclft=={__version__}): the "
               f"{plain.strategy_name} graph on {plain.backbone.name} is not a timm model")
        tensors_meta = {**meta, "format": "pt", "timm_architecture": json.dumps(None), "rebuild": json.dumps(how)}
        with atomic_path(out / WEIGHTS) as tmp:
            save_model(nn.ModuleDict({PREFIX.rstrip("."): plain}), str(tmp), metadata=tensors_meta)
        config = {"library_name": "sclft", "sclft_version": __version__, "timm_compatible": False,
                  "rebuild": how, **plain.config(), "preprocessing": spec}
        with atomic_path(out / CONFIG) as tmp:
            _write_json(tmp, config)
    with atomic_path(out / PREPROCESSOR) as tmp:
        _write_json(tmp, json.loads(meta["preprocessor_config"]))


def load_safetensors_export(folder: str | Path) -> nn.Module:
    """The network of a ``sclft export --format safetensors`` folder, in eval mode: built by timm where its
    ``config.json`` is timm's, else rebuilt by sclft (backbone, strategy and head as exported, adapters merged)."""
    folder = Path(folder)
    config = read_json_object(folder / CONFIG)
    if "architecture" in config:
        import timm  # slow to import

        return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    if config.get("library_name") != "sclft":
        raise UsageError(f"{folder / CONFIG}: neither timm's config (no 'architecture') nor an sclft export")
    options = {k: v for k, v in (config.get("strategy_options") or {}).items() if v is not None}
    model = wrap(config["backbone"], config["strategy"], config["num_classes"], config["layer"], pretrained=False,
                 class_names=config.get("class_names"), image_size=config.get("image_size"), **options)
    plain = merged(model)
    tensors = load_file(str(folder / WEIGHTS))
    plain.load_state_dict({k.removeprefix(PREFIX): v for k, v in tensors.items()}, strict=True)
    return Classifier(plain).eval()


def check_safetensors_export(folder: str | Path, net: nn.Module) -> float:
    """The folder's network, loaded as its ``config.json`` says, against ``net`` on random inputs: an
    :class:`ExportError` beyond :data:`RTOL`; returns the relative error."""
    loaded = load_safetensors_export(folder)
    x = example_input(getattr(net, "model", net), 3)
    with torch.no_grad():
        worst = max_relative_error(loaded(x), net(x))
    if worst > RTOL:
        raise ExportError(f"the safetensors export in {folder} differs from PyTorch by {worst:.2e} (relative; limit "
                          f"{RTOL:g})")
    return worst


def load_exported(path: str | Path, fmt: str):
    """A function: batch ``x`` → logits of an exported ONNX (onnxruntime, CPU) or TorchScript file."""
    if fmt == "onnx":
        import onnxruntime as ort  # optional dependency

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        module = torch.jit.load(str(path))

    def run(x):
        with torch.no_grad():
            return module(x)

    return run


def read_metadata(path: str | Path, fmt: str) -> dict[str, Any]:
    """The metadata an exported file carries (decoded from JSON); safetensors: the folder's weights file."""
    if fmt == "onnx":
        import onnx  # optional dependency (sclft[export])

        return {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if fmt == "torchscript":
        files = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), _extra_files=files)
        return json.loads(files[EXTRA_FILE])
    path = Path(path)
    with safe_open(str(path / WEIGHTS if path.is_dir() else path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k != "format"}


def max_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a − b| / max |b|`` (``b`` the reference)."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def check_export(path: str | Path, fmt: str, net: nn.Module, batches: tuple[int, ...] = (1, 3)) -> float:
    """The exported file's logits against ``net``'s on random inputs of each batch size: an
    :class:`ExportError` beyond :data:`RTOL`; returns the largest relative error."""
    worst = 0.0
    model = getattr(net, "model", net)
    run = load_exported(path, fmt)
    for n in batches:
        x = example_input(model, n)
        with torch.no_grad():
            ref = net(x)
        got = run(x)
        if got.shape != ref.shape:
            raise ExportError(f"{fmt} export gives logits of shape {tuple(got.shape)} for a batch of {n}, "
                              f"PyTorch {tuple(ref.shape)}")
        worst = max(worst, max_relative_error(got, ref))
        if worst > RTOL:
            raise ExportError(f"{fmt} export differs from PyTorch by {worst:.2e} (relative; limit {RTOL:g}) "
                              f"at batch {n}")
    return worst

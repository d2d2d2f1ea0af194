"""Export a trained model as one self-contained network: ONNX, TorchScript or safetensors.

The network is the whole forward pass — frozen backbone, tuned block, the SCL-FT skip, the head — with adapter
updates merged into the weights (``Strategy.merge``: LoRA through peft's ``merge_and_unload``, Deep LoRA's
``W₀ + ΔW``). It takes normalised ``(N, 3, S, S)`` float images (``N`` free) and returns logits; the input
size, normalisation and class names travel in the file's metadata (ONNX ``metadata_props``, TorchScript
``_extra_files["sclft.json"]``, safetensors ``__metadata__``), each a JSON string under the keys of
:func:`export_metadata`.

>>> export_model(sclft.load("runs/demo"), "onnx", "model.onnx")
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_model
from torch import nn

from . import __version__
from .io import atomic_path, check_out_file

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
EXTRA_FILE = "sclft.json"  # TorchScript: the metadata as one JSON file inside the archive
RTOL = 1e-4  # exported logits vs PyTorch: max |a - b| <= RTOL * max |b|


class ExportError(ValueError):
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


def export_metadata(model) -> dict[str, str]:
    """What a runtime needs besides the graph, every value a JSON string: ``input_size`` ``[3, S, S]``, ``mean``,
    ``std`` (of ``(x / 255 − mean) / std``), ``interpolation``, ``crop_pct``, ``class_names``, and what it
    was (``backbone``, ``strategy``, ``layer``, ``num_classes``, ``sclft_version``)."""
    dc = model.backbone.data_config
    values: dict[str, Any] = {
        "input_size": list(dc.get("input_size", (3, 224, 224))), "mean": list(dc.get("mean", ())),
        "std": list(dc.get("std", ())), "interpolation": dc.get("interpolation"), "crop_pct": dc.get("crop_pct"),
        "class_names": model.class_names or [str(k) for k in range(model.num_classes)],
        "num_classes": model.num_classes, "backbone": model.backbone.name, "strategy": model.strategy_name,
        "layer": model.layer, "input": "float32 NCHW, normalised", "output": "logits", "sclft_version": __version__,
    }
    return {k: json.dumps(v) for k, v in values.items()}


def example_input(model, batch: int = 2) -> torch.Tensor:
    size = tuple(model.backbone.data_config.get("input_size", (3, 224, 224)))
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))


def export_model(model, fmt: str, out: str | Path, verify: bool = True, dynamo: bool = True,
                 overwrite: bool = True) -> Path:
    """Write ``model`` (merged, in eval mode) to ``out`` as ``fmt`` (``onnx`` | ``torchscript`` |
    ``safetensors``); ONNX and TorchScript files are checked against PyTorch at two batch sizes (``verify``).
    ``dynamo=False``: torch's older TorchScript-based ONNX exporter (deprecated by torch, faster). ``out`` is
    never a device or a file of a run folder, and an existing file is replaced only with ``overwrite``
    (:func:`sclft.io.check_out_file`)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: valid: {', '.join(FORMATS)}")
    out = check_out_file(out, "out", overwrite)
    plain = merged(model).cpu().float()
    net = Classifier(plain).eval()
    meta = export_metadata(plain)
    with atomic_path(out) as tmp:
        try:
            if fmt == "onnx":
                _onnx(net, tmp, meta, dynamo)
            else:
                {"torchscript": _torchscript, "safetensors": _safetensors}[fmt](net, tmp, meta)
        except ExportError:
            raise
        except Exception as e:  # the exporters raise many types; name the model and the format
            raise ExportError(f"cannot export {plain.backbone.name} / {plain.strategy_name} to {fmt}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        if verify and fmt != "safetensors":
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


def _safetensors(net: Classifier, path: Path, meta: dict[str, str]) -> None:
    save_model(net.model, str(path), metadata={**meta, "format": "pt"})


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
    """The metadata an exported file carries (decoded from JSON)."""
    if fmt == "onnx":
        import onnx  # optional dependency (sclft[export])

        return {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if fmt == "torchscript":
        files = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), _extra_files=files)
        return json.loads(files[EXTRA_FILE])
    with safe_open(str(path), framework="pt") as f:
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

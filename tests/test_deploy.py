"""An export run where sclft is not: onnxruntime + :mod:`sclft.preprocess` in a process that cannot import torch,
and TorchScript in one that cannot import sclft, reproduce ``sclft predict``'s probabilities on awkward images
(smaller and larger than the input, grey, RGBA, palette, 16-bit, EXIF-rotated), for every trainable strategy.
EXIF orientation wherever sclft opens an image. Random-weight tiny ViTs at 32 px, exported once per module."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sclft.export import export_model
from sclft.model import TransferModel
from sclft.predict import gather_images, predict_files, read_image

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ["scl_ft", "layer_ft", "linear_probe", "lora", "deep_lora", "full_ft", "bitfit"]  # zero_shot: CLIP only
TOL = 1e-4  # probabilities, absolute


def _gradient(w, h, seed=0):
    """A smooth RGB image with distinct corners (orientation mistakes show; JPEG keeps it close)."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([255 * xx / (w - 1), 255 * yy / (h - 1), 255 * (xx + yy) / (w + h - 2)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def _rotated_jpeg(path, image):
    """``image`` stored turned a quarter (as a phone does) with EXIF Orientation 6 (display: rotate back)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, subsampling=0, exif=exif)


def _write_images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir()

    def noise(w, h):
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    images = {
        "tiny.png": noise(8, 8),                     # smaller than the input: no crop zoom
        "small.png": noise(20, 14),
        "large.png": noise(45, 37),                  # resized to 33 px, crop offset 0.5 → 0 (half to even)
        "big.jpg": noise(100, 70),
        "grey.png": noise(50, 40).convert("L"),
        "rgba.png": noise(30, 36).convert("RGBA"),
        "palette.png": noise(60, 44).convert("P"),
        "sixteen.png": Image.fromarray(rng.integers(0, 65536, (40, 52), dtype=np.uint16)),  # I;16
    }
    for name, image in images.items():
        image.save(folder / name)
    _rotated_jpeg(folder / "rotated.jpg", _gradient(48, 36))
    assert Image.open(folder / "sixteen.png").mode.startswith("I")
    return sorted(folder.iterdir())


def _model(strategy):
    from sclft.backbones import create_backbone
    from sclft.strategies import get_strategy_config

    torch.manual_seed(0)
    backbone = create_backbone("timm:test_vit", pretrained=False, image_size=SIZE)
    layer = "blocks.3" if get_strategy_config(strategy).uses_layer else None
    model = TransferModel(backbone, strategy, 3, layer, class_names=["ant", "bee", "cat"])
    gen = torch.Generator().manual_seed(1)
    model.eval()
    with torch.no_grad():  # move every trainable tensor off its init (LoRA's B starts at zero)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
        # then set the head's scale so that logits vary by about 2 around 0 across inputs: probabilities far
        # from 0 and 1, where a preprocessing slip shows
        z = model(torch.randn(16, 3, SIZE, SIZE, generator=gen))
        scale = 2.0 / z.std(dim=0).mean()
        model.head.weight.mul_(scale)
        model.head.bias.mul_(scale).sub_(scale * z.mean(dim=0))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_thread):
    """Per strategy: ONNX and TorchScript exports and the probabilities ``sclft predict`` gives each image."""
    root = tmp_path_factory.mktemp("deploy")
    files = _write_images(root / "images")
    cases = {}
    for strategy in STRATEGIES:
        model = _model(strategy)
        rows, skipped = predict_files(model, gather_images([root / "images"]), top_k=3, progress=False)
        assert not skipped
        probs = {}
        for r in rows:
            p = [0.0] * 3
            for i, v in zip(r["index"], r["prob"]):
                p[i] = v
            probs[Path(r["filename"]).name] = p
        onnx = export_model(model, "onnx", root / f"{strategy}.onnx", verify=False, dynamo=False)
        script = export_model(model, "torchscript", root / f"{strategy}.pt", verify=False)
        cases[strategy] = {"onnx": str(onnx), "torchscript": str(script), "probs": probs}
    (root / "cases.json").write_text(json.dumps({"images": [str(f) for f in files], "cases": cases}))
    return root


# A meta-path finder that refuses the named top-level packages, installed by sitecustomize before the script runs.
BLOCKER = """
import sys
BLOCKED = {blocked!r}
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this environment")
sys.meta_path.insert(0, _Block())
"""

DEPLOYER = """
import json, sys
import numpy as np
for name in {blocked!r}:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the block is not real: {{name}} imported")
{load_preprocess}
cases = json.load(open(sys.argv[1]))
worst = {{}}
for strategy, case in cases["cases"].items():
{run}
    x = np.stack([preprocess(load_image(f), spec) for f in cases["images"]])
    logits = run(x)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ref = np.array([case["probs"][f.rsplit("/", 1)[-1]] for f in cases["images"]])
    worst[strategy] = float(np.abs(p - ref).max())
print(json.dumps({{"worst": worst, "modules": sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r})}}))
"""

ONNX_RUN = """
    import onnxruntime as ort
    session = ort.InferenceSession(case["onnx"], providers=["CPUExecutionProvider"])
    spec = json.loads(session.get_modelmeta().custom_metadata_map["preprocessing"])
    run = lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]
"""

TORCHSCRIPT_RUN = """
    import torch
    extra = {"sclft.json": ""}
    module = torch.jit.load(case["torchscript"], _extra_files=extra)
    spec = json.loads(extra["sclft.json"])["preprocessing"]
    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy().astype(np.float64)
"""

BY_PACKAGE = "from sclft.preprocess import load_image, preprocess"
BY_FILE = f"""
import importlib.util
_spec = importlib.util.spec_from_file_location("preprocess", {str(ROOT / "sclft" / "preprocess.py")!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
load_image, preprocess = _module.load_image, _module.preprocess
"""


def deploy(root: Path, blocked: list[str], load_preprocess: str, run: str) -> dict:
    site = root / f"site-{'-'.join(blocked)}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=blocked))
    script = DEPLOYER.format(blocked=blocked, load_preprocess=load_preprocess,
                             run=textwrap.indent(textwrap.dedent(run), "    "))
    env = {"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(root / "cases.json")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_onnxruntime_and_numpy_pillow_preprocessing_reproduce_predict_without_torch(exported):
    result = deploy(exported, ["torch", "torchvision", "timm"], BY_PACKAGE, ONNX_RUN)
    assert result["modules"] == []  # nothing of torch was loaded
    assert set(result["worst"]) == set(STRATEGIES)
    assert all(v <= TOL for v in result["worst"].values()), result["worst"]


def test_torchscript_with_the_copied_preprocess_file_reproduces_predict_without_sclft(exported):
    result = deploy(exported, ["sclft", "timm", "torchvision"], BY_FILE, TORCHSCRIPT_RUN)
    assert result["modules"] == []
    assert set(result["worst"]) == set(STRATEGIES)
    assert all(v <= TOL for v in result["worst"].values()), result["worst"]


def test_the_probabilities_compared_are_not_saturated(exported):
    """The agreement above is between probabilities that a preprocessing slip would move: away from 0 and 1,
    and different across the images, for every strategy."""
    for strategy, case in json.loads((exported / "cases.json").read_text())["cases"].items():
        values = np.array(list(case["probs"].values()))
        assert values.max() < 0.99 and values.std(axis=0).max() > 0.02, (strategy, values.round(3))


def test_metadata_describes_the_small_image_rule_and_hf_config(exported):
    import onnxruntime as ort

    meta = ort.InferenceSession(str(exported / "lora.onnx"), providers=["CPUExecutionProvider"]).get_modelmeta()
    spec = json.loads(meta.custom_metadata_map["preprocessing"])
    assert spec["version"] == 1 and spec["input_size"] == [3, SIZE, SIZE] and spec["crop_pct"] == 0.95
    assert "< S" in spec["small_image_rule"] and "exif_transpose" in spec["decode"]
    hf = json.loads(meta.custom_metadata_map["preprocessor_config"])
    assert hf["size"] == {"shortest_edge": 33} and hf["crop_size"] == {"height": SIZE, "width": SIZE}
    assert hf["resample"] == int(Image.Resampling.BICUBIC) and hf["image_mean"] == [0.5, 0.5, 0.5]


# ------------------------------------------------------------------------------------------------ EXIF
def test_predict_reads_a_rotated_jpeg_upright(tmp_path):
    upright = _gradient(48, 36)
    _rotated_jpeg(tmp_path / "phone.jpg", upright)
    assert Image.open(tmp_path / "phone.jpg").size == (36, 48)  # stored turned
    image = read_image(tmp_path / "phone.jpg")
    assert image.size == (48, 36)
    diff = np.abs(np.asarray(image, dtype=float) - np.asarray(upright, dtype=float)).mean()
    assert diff < 3.0  # JPEG rounding only; the image stored as turned is not comparable at all


def test_predict_gives_a_rotated_photo_the_probabilities_of_its_upright_copy(tmp_path):
    upright = _gradient(48, 36)
    upright.save(tmp_path / "upright.png")
    _rotated_jpeg(tmp_path / "phone.jpg", upright)
    model = _model("linear_probe")
    rows, _ = predict_files(model, [tmp_path / "upright.png", tmp_path / "phone.jpg"], top_k=3, progress=False)
    probs = [dict(zip(r["index"], r["prob"])) for r in rows]
    assert max(abs(probs[0][k] - probs[1][k]) for k in range(3)) < 0.02
    # and a PIL image opened by the caller is turned too
    with Image.open(tmp_path / "phone.jpg") as opened:
        row = model.predict(opened, top_k=3)[0]
    assert max(abs(dict(zip(row["index"], row["prob"]))[k] - probs[1][k]) for k in range(3)) < 1e-6


def test_image_folder_training_data_is_read_upright(tmp_path):
    from sclft.data import load_dataset

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            _rotated_jpeg(tmp_path / split / cls / "phone.jpg", _gradient(48, 36))
    splits = load_dataset(f"imagefolder:{tmp_path}")
    image, _ = splits.train[0]
    assert image.size == (48, 36) and splits.test[0][0].size == (48, 36)


def test_preprocessor_config_loads_in_transformers_and_agrees_on_large_images(exported, tmp_path):
    """Hugging Face's image processor, configured by the export's ``preprocessor_config``, gives the pixels of
    ``sclft.preprocess`` for images at least the input size whose crop offsets are whole (its fields cannot say
    the small-image rule, and it rounds a half-pixel offset down)."""
    import onnxruntime as ort
    from transformers import AutoImageProcessor

    from sclft.preprocess import preprocess

    meta = ort.InferenceSession(str(exported / "scl_ft.onnx"), providers=["CPUExecutionProvider"]).get_modelmeta()
    (tmp_path / "preprocessor_config.json").write_text(meta.custom_metadata_map["preprocessor_config"])
    spec = json.loads(meta.custom_metadata_map["preprocessing"])
    processor = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    rng = np.random.default_rng(0)
    for w, h in [(66, 33), (45, 37), (40, 90)]:  # (left, top): (17, 0), (4, 0 from 0.5), (0 from 0.5, 21)
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        theirs = processor(image, return_tensors="np")["pixel_values"][0]
        assert np.abs(theirs - preprocess(image, spec)).max() < 1e-6, (w, h)

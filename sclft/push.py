"""``sclft push``: a finished run folder uploaded to the Hugging Face Hub as a model repository, with
huggingface_hub's ``create_repo`` + ``upload_folder`` (one commit).

Uploaded: the model card ``README.md`` (written from the run's files when the folder has none; the folder is
never changed), ``config.json``, ``model.safetensors``, ``train_config.json``, ``metrics.json``,
``manifest.json``, the strategy's own files (lora: the peft adapter) and, with ``--exports``, each export
under ``exports/<format>/``. Not uploaded: ``checkpoint/`` (training state) and anything else in the folder.
Everything is staged in a temporary folder first, so ``--dry-run`` lists exactly what would be sent.

>>> push("runs/demo", "me/demo", exports=["onnx"], dry_run=True)   # [(path in the repo, bytes), ...]
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .card import CARD_FILE, model_card
from .errors import UnavailableError, UsageError
from .export import export_model
from .run_folder import (
    CONFIG_FILE,
    EXPORTS_KEY,
    MANIFEST_FILE,
    METRICS_FILE,
    TRAIN_CONFIG_FILE,
    WEIGHTS_FILE,
    check_manifest,
    check_run,
    load,
    read_config,
)

# format -> its file in exports/<format>/ (safetensors: sclft export writes a folder, timm's Hub layout)
EXPORT_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": None}
EXPORTS_DIR = "exports"


class PushError(UnavailableError, OSError):
    """The Hub refused or could not be reached: the upload failed (exit 1), nothing in the run folder changed."""


def parse_exports(text: str | Sequence[str] | None) -> list[str]:
    """``"onnx,safetensors"`` → ``["onnx", "safetensors"]``; an unknown format names the valid ones."""
    if not text:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip() for s in items if s.strip()]
    bad = [n for n in names if n not in EXPORT_FILES]
    if bad or not names:
        raise UsageError(f"--exports {text!r}: unknown format {', '.join(bad) or '(none)'}; valid: a comma-separated "
                         f"list of {', '.join(EXPORT_FILES)}")
    return list(dict.fromkeys(names))


def check_repo_id(repo_id: str) -> str:
    """``NAME`` or ``OWNER/NAME`` as the Hub accepts it (huggingface_hub's ``validate_repo_id``)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UsageError(f"--repo-id {repo_id!r} is not a Hub repository id ({str(e).splitlines()[0]}); "
                         "valid: NAME or OWNER/NAME of letters, digits, '-', '_', '.'") from None
    return repo_id


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # no copy of large weights where the temporary folder is on the same file system
    except OSError:
        shutil.copy2(src, dst)


@contextmanager
def staged(run: str | Path, exports: Sequence[str] = ()) -> Iterator[Path]:
    """A temporary folder holding what ``push`` uploads (see the module docstring); removed afterwards."""
    run = check_run(run)
    found = check_manifest(run)  # an edited run file is refused here, before anything is sent
    config = read_config(run)
    if found:  # the run's own list of its files (written last), and the list itself
        names = [*found, MANIFEST_FILE]
    else:  # a run written before manifests: the files sclft writes, where present
        names = [n for n in (CONFIG_FILE, WEIGHTS_FILE, TRAIN_CONFIG_FILE, METRICS_FILE, *config.get(EXPORTS_KEY, []))
                 if (run / n).is_file()]
    with tempfile.TemporaryDirectory(prefix="sclft-push-") as tmp:
        stage, made = Path(tmp) / "repo", Path(tmp) / "exports"
        (stage / EXPORTS_DIR).mkdir(parents=True)
        for name in names:
            _place(run / name, stage / name)
        model = None
        if not (run / CARD_FILE).is_file() or exports:
            model = load(run)
        if (run / CARD_FILE).is_file():
            _place(run / CARD_FILE, stage / CARD_FILE)
        else:
            (stage / CARD_FILE).write_text(model_card(run, model))
        for fmt in exports:  # written outside the staged copy of the run (sclft never writes into a run folder)
            folder = made / fmt
            export_model(model, fmt, folder / EXPORT_FILES[fmt] if EXPORT_FILES[fmt] else folder)
            shutil.move(folder, stage / EXPORTS_DIR / fmt)
        yield stage


def listing(stage: Path) -> list[tuple[str, int]]:
    """``(path in the repository, bytes)`` of every file under ``stage``, sorted."""
    return sorted((p.relative_to(stage).as_posix(), p.stat().st_size) for p in stage.rglob("*") if p.is_file())


def push(run: str | Path, repo_id: str, private: bool = False, exports: Sequence[str] = (), dry_run: bool = False,
         message: str | None = None) -> tuple[list[tuple[str, int]], str | None]:
    """Upload ``run`` to the Hub model repository ``repo_id`` (created if missing; ``private`` for a new one);
    returns the files (path, bytes) and the commit URL (None with ``dry_run``: nothing is sent)."""
    check_repo_id(repo_id)
    exports = parse_exports(exports)
    if not dry_run and constants.HF_HUB_OFFLINE:
        raise UsageError("HF_HUB_OFFLINE is set: nothing can be uploaded; unset it, or list the files with --dry-run")
    with staged(run, exports) as stage:
        files = listing(stage)
        if dry_run:
            return files, None
        api = HfApi()
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            commit = api.upload_folder(folder_path=stage, repo_id=repo_id, repo_type="model",
                                       commit_message=message or f"sclft run {Path(run).name}")
        except HfHubHTTPError as e:
            raise PushError(f"upload of {run} to {constants.ENDPOINT}/{repo_id} failed: "
                            f"{_first_line(e)}") from None
        except OSError as e:  # connection refused, DNS, timeouts (httpx errors are not OSErrors: below)
            raise PushError(f"cannot reach {constants.ENDPOINT} to upload {run}: {_first_line(e)}") from None
        except Exception as e:
            if type(e).__module__.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3"):
                raise PushError(f"cannot reach {constants.ENDPOINT} to upload {run}: {_first_line(e)}") from None
            raise
    return files, commit.commit_url


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return re.split(r"\n", text, maxsplit=1)[0] if text else type(e).__name__

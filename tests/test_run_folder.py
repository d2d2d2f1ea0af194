"""The run folder has one owner, :mod:`sclft.run_folder` (issue 32.1): no other module of ``sclft`` names a file of
a run folder as a string literal (docstrings aside), so a reader or writer that bypasses the owner's checks
(manifest, schemas) cannot be written by accident."""

import ast
import re
from pathlib import Path

from sclft import run_folder

PACKAGE = Path(__file__).resolve().parents[1] / "sclft"
OWNER = PACKAGE / "run_folder"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def literal_names(source: str, names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, name) of each run-file name inside a string literal of ``source`` (f-string parts included), as a
    whole name (``adapter_config.json`` is not ``config.json``); docstrings are prose and left out."""
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, names)) + r")(?![\w.-])")
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [(node.lineno, m.group(1)) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            for m in pattern.finditer(node.value)]


def test_the_pattern_finds_what_it_must():
    names = run_folder.FILE_NAMES
    found = literal_names('"""manifest.json in prose"""\na = "config.json"\nb = f"{x}/metrics.json: bad"\n'
                          'c = "adapter_config.json"\nd = "my-model.safetensors"\ne = "checkpoint/latest.json"\n'
                          'def f():\n    "README.md in a docstring"\n    return "README.md"\n', names)
    assert sorted(found) == [(2, "config.json"), (3, "metrics.json"), (6, "latest.json"), (9, "README.md")]


def test_run_file_names_are_literals_only_in_their_owner():
    assert {"config.json", "train_config.json", "metrics.json", "model.safetensors", "manifest.json", "README.md",
            "latest.json"} <= set(run_folder.FILE_NAMES)
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if OWNER in path.parents:
            continue
        hits = literal_names(path.read_text(), run_folder.FILE_NAMES)
        if hits:
            found[str(path.relative_to(PACKAGE))] = hits
    assert found == {}, "name run files through sclft.run_folder's constants: " + repr(found)

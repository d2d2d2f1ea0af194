"""The library (everything in ``sclft/`` but the trainer ``sclft/train/``, the bench ``sclft/bench/`` and the CLI)
imports neither the trainer nor the bench, at module level or inside functions (open_clip's library /
training split)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sclft"
APPLICATIONS = ("train", "bench")


def imported_modules(path: Path) -> set[str]:
    """Absolute names (``sclft.x.y``) of every module that ``path`` imports, relative imports resolved."""
    package = ["sclft", *path.relative_to(PACKAGE).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}  # `from . import train`
    return found


def library_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py")
            if p.relative_to(PACKAGE).parts[0] not in (*APPLICATIONS, "cli.py")]


def test_import_resolution_sees_relative_and_function_level_imports(tmp_path):
    probe = PACKAGE / "strategies" / "scl_ft" / "_layout_probe.py"
    probe.write_text("def f():\n    from ...train import train\n    from ... import bench\n")
    try:
        assert {"sclft.train", "sclft.bench"} <= imported_modules(probe)
    finally:
        probe.unlink()


def test_the_library_imports_neither_the_trainer_nor_the_bench():
    assert len(library_files()) > 30
    offending = {str(p.relative_to(PACKAGE)): sorted(m for m in imported_modules(p)
                                                    if m.split(".")[:2] in (["sclft", a] for a in APPLICATIONS))
                 for p in library_files()}
    assert {k: v for k, v in offending.items() if v} == {}

"""The import layout: the library (everything in ``sclft/`` but the trainer ``sclft/training/``, the bench
``sclft/bench/`` and the CLI) imports neither the trainer nor the bench (open_clip's library / training split),
no ``sclft`` module imports itself through others (both count imports inside functions), and an import left
inside a function says why (keeps ``--help`` light, an optional dependency, a slow import one feature needs)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sclft"
APPLICATIONS = ("training", "bench")


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> set[str]:
    """Absolute names (``sclft.x.y``) of every module that ``path`` imports, relative imports resolved."""
    package = [package_dir.name, *path.relative_to(package_dir).parent.parts]
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


def module_name(path: Path, package_dir: Path = PACKAGE) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports (a package counts as its ``__init__``)."""
    files = {module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
    return {m: {x for x in imported_modules(p, package_dir) if x in files and x != m} for m, p in files.items()}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. every import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or w != v:
                w = stack.pop()
                component.add(w)
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def library_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py")
            if p.relative_to(PACKAGE).parts[0] not in (*APPLICATIONS, "cli.py")]


def test_import_resolution_sees_relative_and_function_level_imports(tmp_path):
    probe = tmp_path / "sclft" / "strategies" / "scl_ft" / "_layout_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ...training import train\n    from ... import bench\n")
    assert {"sclft.training", "sclft.bench"} <= imported_modules(probe, tmp_path / "sclft")


def test_the_library_imports_neither_the_trainer_nor_the_bench():
    assert len(library_files()) > 30
    offending = {str(p.relative_to(PACKAGE)): sorted(m for m in imported_modules(p)
                                                    if m.split(".")[:2] in (["sclft", a] for a in APPLICATIONS))
                 for p in library_files()}
    assert {k: v for k, v in offending.items() if v} == {}


def test_circles_are_found_through_function_level_and_package_imports(tmp_path):
    files = {"__init__.py": "", "config.py": "from .sel import pick\n",
             "sel.py": "import math\n\ndef rule():\n    from . import opt\n",
             "opt.py": "def build():\n    from .config import Config\n",  # config → sel → opt → config
             "pkg/__init__.py": "from .a import x\n", "pkg/a.py": "from .. import config\n",
             "leaf.py": "from .pkg import a\n"}
    for name, text in files.items():
        (tmp_path / "sclft" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sclft" / name).write_text(text)
    graph = import_graph(tmp_path / "sclft")
    assert graph["sclft.opt"] == {"sclft.config"} and graph["sclft.leaf"] == {"sclft.pkg", "sclft.pkg.a"}
    assert circles(graph) == [{"sclft.config", "sclft.sel", "sclft.opt"}]
    (tmp_path / "sclft" / "opt.py").write_text("import math\n")
    assert circles(import_graph(tmp_path / "sclft")) == []


def test_no_import_circle_among_sclft_modules():
    graph = import_graph()
    assert "sclft.config" in graph and "sclft.selection" in graph["sclft.training.loop"]
    assert circles(graph) == []


def deferred_imports_without_reason(path: Path) -> list[int]:
    """Lines of the imports inside functions of ``path`` that give no reason: no comment on any line of its run of
    consecutive import statements, nor on the line above the run."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    nodes = sorted({(n.lineno, n.end_lineno) for f in functions for n in ast.walk(f)
                    if isinstance(n, ast.Import | ast.ImportFrom)})
    runs: list[list[tuple[int, int]]] = []
    for node in nodes:
        if runs and node[0] == runs[-1][-1][1] + 1:
            runs[-1].append(node)
        else:
            runs.append([node])
    missing = []
    for run in runs:
        first, last = run[0][0], run[-1][1]
        if not any("#" in text for text in lines[first - 2:last]):  # the run, or the line above it
            missing += [start for start, _ in run]
    return missing


def test_deferred_imports_say_why(tmp_path):
    probe = tmp_path / "mod.py"
    probe.write_text("def f():\n    import torch  # torch: keeps --help light\n    import numpy\n\n"
                     "def g():\n    # optional dependency\n    import ray\n\ndef h():\n    import yaml\n")
    assert deferred_imports_without_reason(probe) == [10]
    missing = {str(p.relative_to(PACKAGE)): deferred_imports_without_reason(p) for p in sorted(PACKAGE.rglob("*.py"))}
    assert {k: v for k, v in missing.items() if v} == {}


def test_a_public_function_has_no_module_of_its_name():
    """``sclft.train`` / ``probe`` / ``rank`` are functions; ``import sclft.train`` must not find a module instead."""
    import sclft

    functions = [n for n in sclft.__all__ if sclft._EXPORTS.get(n)]  # None: the export is a module (``sclft.nc``)
    assert {"train", "probe", "rank"} <= set(functions)
    clashing = [n for n in functions if (PACKAGE / f"{n}.py").exists() or (PACKAGE / n).is_dir()]
    assert clashing == []
    assert type(sclft) is type(ast)  # a plain module: no __class__ swap hides the submodules

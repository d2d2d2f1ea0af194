"""No module of ``sclft/`` outside ``sclft/strategies/`` decides anything by a strategy's name.

Rule: a string constant equal to a registered strategy name may appear outside ``sclft/strategies/`` only as
the default value of a function parameter (``strategy: str = "scl_ft"``) or of an annotated class attribute
(a dataclass field such as ``TrainConfig.strategy``, also when declared with its metadata: ``_field("scl_ft", ...)``,
``field(default="scl_ft", ...)``). Everywhere else — comparisons (``==``, ``!=``, ``in``,
including tuple/list/set literals compared against), dict keys and values, subscripts, call arguments,
assignments — it is an error: ask the strategy's config instead (``uses_layer``, ``cache_scope``,
``display_name``, ``cost``, ``default_block_strategy()``). Docstrings and help texts mention names inside
longer strings and are not matched.
"""

import ast
from pathlib import Path

from sclft.strategies import list_strategies

PACKAGE = Path(__file__).resolve().parents[1] / "sclft"


def _allowed_constants(tree: ast.AST) -> set[int]:
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            allowed |= {id(d) for d in [*node.args.defaults, *node.args.kw_defaults] if d is not None}
        elif isinstance(node, ast.ClassDef):
            for s in node.body:
                if not isinstance(s, ast.AnnAssign) or s.value is None:
                    continue
                allowed.add(id(s.value))
                if isinstance(s.value, ast.Call):  # a field declared with its metadata: _field(DEFAULT, help=...)
                    allowed |= {id(a) for a in s.value.args[:1]}
                    allowed |= {id(k.value) for k in s.value.keywords if k.arg == "default"}
    return allowed


def find_strategy_names(source: str, names: set[str]) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    allowed = _allowed_constants(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in allowed]


def test_rule_catches_comparisons_keys_and_tuples():
    names = {"scl_ft", "layer_ft"}
    bad = ('if s == "scl_ft": pass\nx = s in ("layer_ft", "scl_ft")\nd = {"scl_ft": 1}\nf(strategy="scl_ft")\n')
    assert sorted(line for line, _ in find_strategy_names(bad, names)) == [1, 2, 2, 3, 4]
    ok = ('def f(strategy: str = "scl_ft", *, s="layer_ft"): pass\n'
          'class C:\n    strategy: str = "scl_ft"\n    """uses scl_ft"""\n'
          'class D:\n    a: str = _field("scl_ft", help="x")\n    b: str = field(default="layer_ft")\n')
    assert find_strategy_names(ok, names) == []
    assert [line for line, _ in find_strategy_names('class D:\n    a: str = _field("x", "scl_ft")\n', names)] == [2]


def test_no_strategy_names_outside_strategies():
    names = set(list_strategies())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "strategies" in path.relative_to(PACKAGE).parts:
            continue
        found += [f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
                  for line, value in find_strategy_names(path.read_text(), names)]
    assert not found, "strategy names compared outside sclft/strategies/:\n" + "\n".join(found)

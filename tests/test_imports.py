"""The package's import graph: acyclic, every internal import at module level, no private names shared."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mirai"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from X import ...` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def internal_imports(path: Path):
    """(imported module, names, line, at module level?) for every import of a mirai module in `path`."""
    module, is_package = module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    modules = {module_name(p) for p in SRC.rglob("*.py")}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(node, module, is_package)
            for alias in node.names:  # `from . import x` imports the module x
                sub = f"{target}.{alias.name}"
                name = sub if sub in modules else target
                if name.split(".")[0] == "mirai":
                    yield name, [] if sub in modules else [alias.name], node.lineno, id(node) in top_level
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mirai":
                    yield alias.name, [], node.lineno, id(node) in top_level


def graph() -> dict[str, set[str]]:
    edges = {}
    for path in SRC.rglob("*.py"):
        deps = set()
        for target, _, _, _ in internal_imports(path):
            deps.add(target)
            parts = target.split(".")  # importing a.b.c runs a/__init__ and a/b/__init__ first
            deps.update(".".join(parts[:i]) for i in range(2, len(parts)))
        # ... except the module's own packages: they have started importing before the module runs, so a package
        # whose __init__ re-exports its modules (mirai.config) is not a cycle with them
        name = module_name(path)
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges[name] = deps - {name} - own
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


LAZY = {"cli.py"}  # the command layer imports each command's modules when it runs, so `mirai --help` needs no torch


def test_internal_imports_are_at_module_level():
    inside = [f"{p.relative_to(SRC)}:{line} imports {t}" for p in SRC.rglob("*.py") if str(p.relative_to(SRC)) not in LAZY
              for t, _, line, top in internal_imports(p) if not top]
    assert not inside, "imports inside functions (hiding a cycle?): " + "; ".join(inside)


def test_no_private_name_is_imported_across_modules():
    private = [f"{p.relative_to(SRC)}:{line} imports {t}.{n}" for p in SRC.rglob("*.py")
               for t, names, line, _ in internal_imports(p) for n in names if n.startswith("_")]
    assert not private, "; ".join(private)


@pytest.mark.parametrize("path", sorted(p.relative_to(SRC) for p in SRC.rglob("__init__.py")))
def test_every_subpackage_says_what_it_holds(path):
    doc = ast.get_docstring(ast.parse((SRC / path).read_text()))
    assert doc and len(doc) > 40, f"{path} needs a docstring saying what the subpackage holds"

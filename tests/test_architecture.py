"""The layout stays as DESIGN.md and STYLE.md draw it: parts behind narrow interfaces.

Read as text (ast), never imported: a module that reaches behind another's
back, or a storage part that imports the façade it serves, fails here before
it becomes a habit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "leadtrail.storage": ROOT / "storage/leadtrail/storage",
    "leadtrail.server": ROOT / "server/leadtrail/server",
    "leadtrail.client": ROOT / "client/leadtrail/client",
}
# Private names that belong to the language or to a foreign library's typing,
# not to one of our modules.
FOREIGN_PRIVATE = {"_replace", "_asdict", "_fields", "_make", "_exit", "_Database", "_value_", "_name_"}


def _modules(package: str) -> dict[str, tuple[ast.Module, bool]]:
    """Module name -> (its syntax tree, whether it is a package's ``__init__``)."""
    folder = PACKAGES[package]
    out = {}
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(folder).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        name = ".".join([package, *parts])
        out[name] = (ast.parse(path.read_text(), filename=str(path)), path.name == "__init__.py")
    return out


def _imports(name: str, tree: ast.Module, is_package: bool) -> set[str]:
    """Absolute names of our modules that ``name`` imports (relative imports resolved)."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _private_reaches(tree: ast.Module) -> list[str]:
    reaches = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in FOREIGN_PRIVATE:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        reaches.append(f"line {node.lineno}: {ast.unparse(node)}")
    return reaches


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_uses_another_objects_private_members(package: str) -> None:
    offenders = {
        name: reaches for name, (tree, _) in _modules(package).items() if (reaches := _private_reaches(tree))
    }
    assert offenders == {}


def test_storage_parts_do_not_import_the_facade() -> None:
    modules = _modules("leadtrail.storage")
    facade = "leadtrail.storage.log"
    assert facade in modules
    importers = sorted(
        name
        for name, (tree, is_package) in modules.items()
        if name not in (facade, "leadtrail.storage") and facade in _imports(name, tree, is_package)
    )
    assert importers == []


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles_between_modules_of_a_package(package: str) -> None:
    modules = _modules(package)
    # A package's __init__ re-exports its modules: edges into it are not cycles.
    graph = {
        name: {
            other
            for other in _imports(name, tree, is_package)
            if other in modules and other != name and not modules[other][1]
        }
        for name, (tree, is_package) in modules.items()
        if not is_package
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_every_package_folder_is_installed() -> None:
    """A subpackage missing from pyproject's list works in an editable install and is absent
    from a real one: every folder with an ``__init__.py`` must be listed."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in PACKAGES.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join([package, *parts]))
    assert found - listed == set()

"""The package's shape: stages import downwards only, and modules stay small enough to read.

Layers, low to high (a module may import its own layer or lower):

    errors, models, results  <  wechat  <  sandbox  <  intake  <  ledger  <  engine  <  output
        <  flows (export < segments < plan, verify < run < rollback)  <  api
        <  cli, console, the package

plus three rules the layers alone do not say: the runner never imports the ledger (results
leave it through callbacks), intake and output never import the runner (they never call the
API), and `batchmove.dev` imports nothing of batchmove (it must run before anything is
installed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "batchmove"
LAYERS: list[tuple[str, ...]] = [
    ("batchmove.errors", "batchmove.models", "batchmove.results"),
    ("batchmove.wechat",),
    ("batchmove.sandbox",),
    ("batchmove.intake",),
    ("batchmove.ledger", "batchmove.registry"),
    ("batchmove.engine",),
    ("batchmove.output",),
    ("batchmove.flows.export", "batchmove.flows"),  # export: the listing segment jobs share
    ("batchmove.flows.segments",),
    ("batchmove.flows.plan", "batchmove.flows.verify"),
    ("batchmove.flows.run",),
    ("batchmove.flows.rollback",),  # the undo: rollback.csv run as a run
    ("batchmove.flows.rehearse",),  # plan, run, verify and rollback on a copy of the account
    ("batchmove.api",),
    ("batchmove.cli", "batchmove.console", "batchmove.__main__", "batchmove"),
]
FORBIDDEN = {
    "batchmove.engine.runner": ("batchmove.ledger", "batchmove.registry"),
    "batchmove.intake": ("batchmove.engine.runner",),
    "batchmove.output": ("batchmove.engine.runner",),
    "batchmove.dev": ("batchmove",),
}
#: all the web console may import of batchmove: it is a client of the public API, like the CLI
CONSOLE_MAY_IMPORT = ("batchmove.api", "batchmove.results", "batchmove.errors",
                      "batchmove.models", "batchmove.console")
MAX_LINES = 400
MAX_FUNCTION_LINES = 50


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(name: str) -> int:
    """The layer of a module: its longest matching prefix in LAYERS."""
    best, found = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    if found is None:
        raise AssertionError(f"{name} has no layer: add it to LAYERS in {__file__}")
    return found


def imports(path: Path) -> set[str]:
    """Every batchmove module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n if n in MODULES else node.module for n in names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n for n in found if n == "batchmove" or n.startswith("batchmove.")}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("name", [n for n in MODULES if not under(n, "batchmove.dev")])
def test_stages_import_downwards_only(name: str) -> None:
    upward = [target for target in imports(MODULES[name]) if layer(target) > layer(name)]
    assert not upward, f"{name} (layer {layer(name)}) imports from above: {upward}"


@pytest.mark.parametrize(("owner", "banned"), [(o, b) for o, bs in FORBIDDEN.items() for b in bs])
def test_forbidden_imports(owner: str, banned: str) -> None:
    for name, path in MODULES.items():
        if under(name, owner):
            hits = [t for t in imports(path) if under(t, banned)]
            assert not hits, f"{name} must not import {banned}: {hits}"


@pytest.mark.parametrize("name", [n for n in MODULES if under(n, "batchmove.console")])
def test_the_console_uses_only_the_public_api(name: str) -> None:
    inner = [t for t in imports(MODULES[name])
             if t != "batchmove" and not any(under(t, ok) for ok in CONSOLE_MAY_IMPORT)]
    assert not inner, f"{name} reaches into {inner}: give the public API what it needs"


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_fit_in_a_head(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (split it by role)"


def test_the_layers_cover_every_module() -> None:
    for name in MODULES:
        if not under(name, "batchmove.dev"):
            layer(name)


def test_functions_fit_on_a_screen() -> None:
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long


def test_repository_tooling_stays_out_of_the_wheel() -> None:
    """`batchmove.dev` resolves paths in a checkout: pyproject.toml keeps it out of the wheel."""
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    found = config["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(PACKAGE.parent, include=found["include"],
                                exclude=found["exclude"]))
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert shipped == {p for p in packages if not under(p, "batchmove.dev")}


# --- one fact, one home: row statuses live in models.RowStatus, exit codes in errors.py -------

def _calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _is_int(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def test_counts_name_every_status_in_order() -> None:
    """`Counts` (the typed view reports and the console read) is `RowStatus`, key for key."""
    from batchmove.models import STATUSES
    from batchmove.results import Counts

    assert tuple(Counts.__annotations__) == STATUSES


def test_statuses_are_looked_up_by_rowstatus() -> None:
    """A plain mapping of counts is read with `RowStatus.X`, never a bare "pending" string
    (a `Counts` TypedDict has every key, so `.get` on one is never needed)."""
    from batchmove.models import STATUSES

    bare = [f"{name}:{call.lineno}" for name, path in MODULES.items() for call in _calls(path)
            if isinstance(call.func, ast.Attribute) and call.func.attr == "get" and call.args
            and isinstance(call.args[0], ast.Constant) and call.args[0].value in STATUSES]
    assert not bare, f"bare status strings (use RowStatus): {bare}"


def test_exit_codes_are_named() -> None:
    """No `sys.exit(2)`, `exit_code=0`, `.get("exit_code", 2)` or `exit_code != 0`: the codes
    are errors.EXIT_*. `batchmove.dev` imports nothing of batchmove, so it is left out."""
    bare = []
    for name, path in MODULES.items():
        if under(name, "batchmove.dev") or name == "batchmove.errors":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            hit = (isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "exit"
                 and any(map(_is_int, node.args)))
                or any(k.arg == "exit_code" and _is_int(k.value) for k in node.keywords)
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == "exit_code" and _is_int(node.args[1])))
            ) or (isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute)
                  and node.left.attr == "exit_code" and any(map(_is_int, node.comparators)))
            if hit:
                bare.append(f"{name}:{getattr(node, 'lineno', '?')}")
    assert not bare, f"bare exit codes (use errors.EXIT_*): {bare}"

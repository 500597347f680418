"""The package seams hold: who may import whom, and where wire shapes and states are spelled.

Run with the rest of the suite (``make test``, via ``make lint``'s sibling): a cycle
between packages, a core package importing the web app, an agent importing the
controller, or a job state spelled as a bare string somewhere new fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sandbox", "authz", "containers", "compute", "ledger")
# Who may import whom. ``ledger`` stands alone (its verifier needs only the standard
# library and ``cryptography``); ``compute`` is the base the others build on.
ALLOWED: dict[str, set[str]] = {
    "ledger": set(),
    "compute": set(),
    "authz": {"compute", "ledger"},
    "containers": {"compute", "authz"},  # authz: the wire types and states only
    "sandbox": {"authz", "compute", "containers", "ledger"},
}
# What the agent side may take from the controller's domain: pure modules, no database.
AGENT_MAY_IMPORT_FROM_AUTHZ = {"authz.wire", "authz.states", "authz.validate"}
JOB_STATES = ("queued", "dispatched", "running", "checking", "released", "blocked",
              "failed", "cancelled", "combined", "awaiting_witnesses")


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py")
                  if "migrations" not in p.parts)


def _imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(module imported, statement, inside a function?) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, ast.stmt, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, child, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child, nested))
            visit(child, inner)

    visit(tree, False)
    return found


def test_packages_import_only_what_the_layering_allows() -> None:
    wrong = []
    for pkg in PACKAGES:
        for path in _modules(pkg):
            for mod, node, _ in _imports(path):
                top = mod.split(".")[0]
                if top in PACKAGES and top != pkg and top not in ALLOWED[pkg]:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_no_two_packages_import_each_other() -> None:
    deps: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for pkg in PACKAGES:
        for path in _modules(pkg):
            deps[pkg] |= {m.split(".")[0] for m, _, _ in _imports(path)} & set(PACKAGES)
    cycles = [(a, b) for a in PACKAGES for b in PACKAGES
              if a < b and b in deps[a] and a in deps[b]]
    assert not cycles


def test_the_agent_takes_only_pure_modules_from_the_controllers_domain() -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {mod}"
             for path in _modules("containers") for mod, _, _ in _imports(path)
             if mod.startswith("authz") and mod not in AGENT_MAY_IMPORT_FROM_AUTHZ]
    assert not wrong, "\n".join(wrong)


def test_function_local_imports_of_product_modules_say_why() -> None:
    """Allowed for an optional dependency or the CLI's start-up time, with a comment."""
    silent = []
    for pkg in PACKAGES:
        for path in _modules(pkg):
            lines = path.read_text().splitlines()
            for mod, node, nested in _imports(path):
                if not nested or mod.split(".")[0] not in PACKAGES:
                    continue
                # A comment on the import, or above the run of imports it belongs to.
                i = node.lineno - 1
                while i > 0 and "#" not in lines[i] and (
                        lines[i].strip().startswith(("from ", "import "))
                        or re.fullmatch(r"[\w\s,()]*", lines[i])):  # a wrapped import
                    i -= 1
                if "#" not in lines[i]:
                    silent.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not silent, "function-local imports without a reason: " + ", ".join(silent)


@pytest.mark.parametrize("package", ["sandbox", "authz", "containers", "compute"])
def test_job_states_are_spelled_only_in_the_state_module(package: str) -> None:
    found = []
    for path in _modules(package):
        if path == ROOT / "authz" / "states.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                for side in [*sides, *(e for c in sides if isinstance(c, ast.Tuple | ast.List
                                                                        | ast.Set)
                                        for e in c.elts)]:
                    if isinstance(side, ast.Constant) and side.value in JOB_STATES:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "compare against authz.states enums instead: " + ", ".join(found)


def test_task_fields_are_read_only_through_the_wire_types() -> None:
    found = [f"{path.relative_to(ROOT)}:{i}"
             for pkg in PACKAGES for path in _modules(pkg)
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\btask\[\s*['\"]", line)]
    assert not found, ", ".join(found)


# The requester installs these without the server: no web framework, no database layer.
CLIENT_MODULES = ("sandbox.client", "sandbox.sdk", "sandbox.sdk_statistics")
SERVER_ONLY = {"flask", "sqlalchemy", "werkzeug", "alembic", "psycopg"}


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _loaded_with(name: str) -> set[str]:
    """Every module importing ``name`` loads: its packages' and its own module-level
    imports, transitively through the product's modules (imports inside functions and
    under ``if TYPE_CHECKING:`` do not run at import)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            seen.add(prefix)
            path = _module_file(prefix)
            if path is not None:
                todo.extend(_top_level_imports(ast.parse(path.read_text())))
    return seen


def _top_level_imports(node: ast.AST) -> list[str]:
    found: list[str] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            found.extend(_top_level_imports(ast.Module(body=child.orelse, type_ignores=[])))
            continue
        if isinstance(child, ast.Import):
            found.extend(a.name for a in child.names)
        elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
            found.append(child.module)
            found.extend(f"{child.module}.{a.name}" for a in child.names
                         if _module_file(f"{child.module}.{a.name}") is not None)
        else:
            found.extend(_top_level_imports(child))
    return found


@pytest.mark.parametrize("module", CLIENT_MODULES)
def test_the_client_and_sdk_import_neither_the_web_framework_nor_the_database(
        module: str) -> None:
    loaded = {m.split(".")[0] for m in _loaded_with(module)}
    assert not loaded & SERVER_ONLY, f"{module} loads {sorted(loaded & SERVER_ONLY)}"

"""The structure of src/mmrag, enforced: the import graph is read with ``ast`` (nothing is imported).

Issue #13 ("one job per room") names what must hold: no import cycles, the store knows vector specs
but not models, rerank is inference only (neither store nor retriever), no module over 400 lines, and
each folder imports only the folders below it. ``RULES`` below is that layering rule, the one table
docs/architecture.md reproduces row for row (``test_docs_table_matches_rules`` keeps them in step).

Edges counted: module-level and function-level ``import`` / ``from ... import`` of ``mmrag.*``
(relative imports resolved; ``from mmrag.x import y`` counts as importing ``mmrag.x.y`` when ``y`` is
a submodule) and ``importlib.import_module("mmrag...")`` with a literal name. Imports under
``if TYPE_CHECKING:`` are skipped: annotations may name any layer without loading it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
SRC: Final = REPO / "src"
PACKAGE: Final = "mmrag"
MAX_LINES: Final = 400

# The layering rule: (folders, what each may import). A "folder" is a subpackage of mmrag or a
# top-level module by its name (`cli` is the same folder as module or package); `mmrag` is the
# package's own __init__. `base` stands for the folders of the first row. A folder may always import
# within itself; folders sharing a row may import each other only when the row lists them (the base
# row does through `base`; api, ui and langchain never import another face; the CLI launches api
# and ui).
RULES: Final[tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = (
    (("mmrag", "types", "errors", "config", "_lazy", "tenancy", "tracing"), ("base",)),
    (("encoders",), ("base",)),
    (("store",), ("base",)),
    (("ingest",), ("base", "encoders", "store")),
    (("rerank",), ("base", "encoders")),
    (("retriever",), ("base", "encoders", "store")),
    (("eval",), ("base", "encoders", "store", "ingest", "retriever", "rerank")),
    (("train",), ("base", "encoders", "store", "ingest", "retriever", "rerank", "eval")),
    (("wiring",), ("base", "encoders", "store", "ingest", "retriever", "rerank", "eval", "train")),
    (
        ("api", "ui", "langchain"),
        ("base", "encoders", "store", "ingest", "retriever", "rerank", "eval", "train", "wiring"),
    ),
    # The CLI is also the launcher of the other two faces (`mmrag serve`, `mmrag ui`); they never
    # import it or each other.
    (
        ("cli",),
        (
            "base",
            "encoders",
            "store",
            "ingest",
            "retriever",
            "rerank",
            "eval",
            "train",
            "wiring",
            "api",
            "ui",
        ),
    ),
)
BASE: Final = RULES[0][0]
# What the store and rerank must never import (the "must show" list, checked on its own so a
# failure names the knot directly even where the layering test also fails).
STORE_FORBIDDEN: Final = ("encoders", "ingest", "retriever", "rerank", "eval", "train", "wiring")
STORE_FORBIDDEN_FACES: Final = ("cli", "api", "ui")
RERANK_FORBIDDEN: Final = ("store", "retriever")


def allowed_imports() -> dict[str, frozenset[str]]:
    """Folder -> the folders it may import (itself included), ``base`` expanded."""
    allowed: dict[str, frozenset[str]] = {}
    for folders, may in RULES:
        expanded = {f for name in may for f in (BASE if name == "base" else (name,))}
        for folder in folders:
            allowed[folder] = frozenset(expanded | {folder})
    return allowed


# --- reading the import graph ---------------------------------------------------------------------


def module_name(path: Path, src: Path = SRC) -> str:
    """``src/mmrag/store/edge.py`` -> ``mmrag.store.edge``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def folder_of(module: str) -> str:
    """The folder (rule-table key) a module belongs to: ``mmrag.store.edge`` -> ``store``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:`` (their ``else`` stays)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk_runtime(other)
            continue
        yield child
        yield from _walk_runtime(child)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from {'.' * level}{name} import ...`` written in ``module``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, name] if name else base)


def imports_of(source: str, module: str, is_package: bool, known: frozenset[str]) -> set[str]:
    """The ``mmrag.*`` modules ``source`` (the text of ``module``) imports at run time."""
    found: set[str] = set()
    for node in _walk_runtime(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = (
                _resolve_relative(module, is_package, node.level, node.module) if node.level else node.module
            )
            if target is None:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")} - {module}


@cache
def modules() -> dict[str, Path]:
    """Every module of src/mmrag by dotted name."""
    return {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


@cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the mmrag modules it imports."""
    known = frozenset(modules())
    return {
        name: frozenset(imports_of(path.read_text(), name, path.name == "__init__.py", known))
        for name, path in modules().items()
    }


def strongly_connected(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _edges_into(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} -> {target}"
        for name, targets in graph().items()
        if folder_of(name) == folder
        for target in targets
        if folder_of(target) in forbidden
    )


def _listing(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)


# --- the rules ------------------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    cycles = strongly_connected(dict(graph()))
    described = []
    for component in cycles:
        members = set(component)
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph()[a]) if b in members]
        described.append(" <-> ".join(component) + "  [" + "; ".join(edges) + "]")
    assert not cycles, _listing("import cycles (modules, then the edges inside each)", described)


def test_store_imports_no_upper_layer() -> None:
    edges = _edges_into("store", STORE_FORBIDDEN + STORE_FORBIDDEN_FACES)
    assert not edges, _listing(
        "store imports a layer above it (it should know VectorSpec, not models)", edges
    )


def test_rerank_imports_neither_store_nor_retriever() -> None:
    edges = _edges_into("rerank", RERANK_FORBIDDEN)
    assert not edges, _listing("rerank (inference only) imports store/retriever", edges)


def test_no_module_over_400_lines() -> None:
    long = sorted(
        (len(path.read_text().splitlines()), str(path.relative_to(REPO))) for path in modules().values()
    )
    over = [f"{path}: {n} lines" for n, path in reversed(long) if n > MAX_LINES]
    assert not over, _listing(f"modules over {MAX_LINES} lines", over)


def test_every_folder_has_a_rule() -> None:
    # A new folder must take a place in the table (and so in docs/architecture.md) before it lands.
    unplaced = sorted({folder_of(name) for name in modules()} - set(allowed_imports()))
    assert not unplaced, f"folders missing from RULES in {Path(__file__).name}: {unplaced}"


def test_layering_rule() -> None:
    allowed = allowed_imports()
    bad = sorted(
        f"{name} -> {target}   ({folder_of(name)} may not import {folder_of(target)})"
        for name, targets in graph().items()
        for target in targets
        if folder_of(name) in allowed and folder_of(target) not in allowed[folder_of(name)]
    )
    assert not bad, _listing("imports against the layering rule", bad)


def rule_rows() -> list[str]:
    """The rule table as the markdown rows docs/architecture.md must contain, in order."""
    return [
        "| " + ", ".join(f"`{f}`" for f in folders) + " | " + ", ".join(f"`{m}`" for m in may) + " |"
        for folders, may in RULES
    ]


def test_docs_table_matches_rules() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    # the rule table sits between two markers so other tables on the page are never mistaken for it
    block = re.search(r"<!-- rules:begin[^>]*-->\n(.*?)<!-- rules:end -->", doc, re.DOTALL)
    assert block, "docs/architecture.md lacks the <!-- rules:begin --> ... <!-- rules:end --> block"
    rows = [line.strip() for line in block.group(1).splitlines() if line.strip().startswith("| `")]
    assert rows == rule_rows(), (
        "docs/architecture.md's rule table differs from RULES; paste these rows:\n" + "\n".join(rule_rows())
    )


# --- the reader itself (these pass today; they keep the checks above honest) ----------------------


def test_reader_counts_function_level_and_skips_type_checking() -> None:
    known = frozenset(
        {"mmrag.store", "mmrag.store.sparse", "mmrag.types", "mmrag.encoders", "mmrag.rerank.base"}
    )
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from mmrag.store import sparse, QdrantStore\n"
        "if TYPE_CHECKING:\n"
        "    from mmrag.encoders import DualEncoder\n"
        "else:\n"
        "    import mmrag.types\n"
        "def f():\n"
        "    from ..rerank import base\n"
        "    importlib.import_module('mmrag.encoders')\n"
    )
    found = imports_of(source, "mmrag.retriever.core", is_package=False, known=known)
    assert found == {
        "mmrag.store",
        "mmrag.store.sparse",
        "mmrag.types",
        "mmrag.rerank.base",
        "mmrag.encoders",
    }
    assert imports_of("from . import sparse\n", "mmrag.store", is_package=True, known=known) == {
        "mmrag.store.sparse"
    }


def test_reader_finds_cycles() -> None:
    edges = {
        "a": frozenset({"b"}),
        "b": frozenset({"c"}),
        "c": frozenset({"a"}),
        "d": frozenset({"a"}),
        "e": frozenset(),
    }
    assert strongly_connected(edges) == [["a", "b", "c"]]
    assert folder_of("mmrag.store.edge") == "store" and folder_of("mmrag") == "mmrag"
    assert allowed_imports()["api"] >= {"wiring", "types"} and "ui" not in allowed_imports()["api"]

"""Imports run one way: a static (AST) check of the code base's layering.

Every `.py` file of `keras_attn/`, `export/`, `recipes/` and `benchmarks/`
is parsed, and each import in it (module level or inside a function, and
`importlib.import_module` of a literal or f-string prefix) becomes an edge
between two nodes of `ORDER`: the sub-packages of `keras_attn`, the
`keras_attn` package itself (its `__init__`, which re-exports), and
`benchmarks`. Modules are named as installed: the `export/` and `recipes/`
folders are `keras_attn.export` and `keras_attn.recipes` (setup.cfg's
`package_dir`, read by `tests/layout.py`). The checks:

- every file belongs to a declared node (a new sub-package must be placed
  in `ORDER` before it can import anything);
- no cycle between nodes;
- no backward edge: a node imports only nodes of a LOWER tier, never a
  higher one nor another node of its own tier;
- nothing of ours imports `tests` (benchmarks own their fixtures);
- nothing of ours imports `export` or `recipes` by their checkout names
  (`from export import ...`), which are not installed: `keras_attn.export`,
  `keras_attn.recipes`, or a relative import inside the package (an import
  by the checkout name is still placed in its node for the checks above);
- no module uses another module's private name: `from M import _x`,
  `import M._x` or `M._x` (on a name bound to a module of ours) is refused,
  except where `M._x` is itself a private MODULE and the importer lives in
  the package holding it (`from benchmarks import _localization` inside
  `benchmarks`, `from keras_attn.layers import _numerics` inside
  `keras_attn.layers`). Dunder names (`__version__`) are public;
- `keras_attn.utils`, the bottom tier, imports only the standard library,
  Keras and NumPy.

Only OUR packages are checked: imports of third-party code, private parts
included (`keras.src...` in `recipes/_multiworker.py`, `tensorflow.python`
in `export`), are out of scope, as is `tests/`, which may import anything.
"""

from __future__ import annotations

import ast
import collections
import pathlib
import sys

import pytest

from tests.layout import FOLDER_PACKAGE
from tests.layout import module_base
from tests.layout import module_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKED = ("keras_attn", "export", "recipes", "benchmarks")  # folders
OURS = (*CHECKED, "tests")  # first names of imports of our code

# Lowest tier first. A node may import nodes of lower tiers only.
ORDER = (
    ("keras_attn.utils",),
    ("keras_attn.ops", "keras_attn.data"),
    ("keras_attn.layers",),
    ("keras_attn.models",),
    ("keras_attn.ram", "keras_attn.viz"),
    ("keras_attn",),
    ("keras_attn.export",),
    ("keras_attn.recipes",),
    ("benchmarks",),
    ("tests",),
)
TIER = {node: tier for tier, nodes in enumerate(ORDER) for node in nodes}
UTILS_MAY_IMPORT = {"__future__", "keras", "numpy"}

Import = collections.namedtuple("Import", "source target line names")


def _module_name(path):
    return module_name(path)


def _installed(dotted):
    """`dotted` with a checkout name (`export.pipeline`) made the installed
    one (`keras_attn.export.pipeline`)."""
    first, _, rest = dotted.partition(".")
    if first in FOLDER_PACKAGE:
        return ".".join(filter(None, (FOLDER_PACKAGE[first], rest)))
    return dotted


def _is_module(dotted):
    """Whether `dotted` names a module or package of this repository."""
    base = module_base(_installed(dotted))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _node_of(module):
    """The `ORDER` node holding `module` (`None`: not declared)."""
    parts = _installed(module).split(".")
    if parts[0] != "keras_attn":
        return parts[0]
    if len(parts) == 1:
        return "keras_attn"
    node = ".".join(parts[:2])
    return node if node in TIER else None


def _is_private(name):
    return name.startswith("_") and not (
        name.startswith("__") and name.endswith("__")
    )


def _package_of(path):
    """The package a file lives in (`keras_attn.layers` for
    `keras_attn/layers/cbam.py` and for `keras_attn/layers/__init__.py`)."""
    return _module_name(path.parent / "__init__.py")


class _Scanner(ast.NodeVisitor):
    """Imports and private-name uses of one file."""

    def __init__(self, path):
        self.path = path
        self.module = _module_name(path)
        self.package = _package_of(path)
        self.imports = []  # (target module, line, imported names)
        self.privates = []  # (line, dotted name used)
        self.bound = {}  # local name -> module of ours it is bound to

    def _resolve(self, node):
        if not node.level:
            return node.module
        base = self.package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.split(".")[0] not in OURS:
                continue
            self.imports.append((alias.name, node.lineno, ()))
            if alias.asname:
                self.bound[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.bound[top] = top

    def visit_ImportFrom(self, node):
        module = self._resolve(node)
        if module.split(".")[0] not in OURS:
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if _is_module(full):
                self.imports.append((full, node.lineno, ()))
                self.bound[alias.asname or alias.name] = full
            else:
                self.imports.append((module, node.lineno, (alias.name,)))

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(
            func, "id", None)
        if name == "import_module" and node.args:
            arg = node.args[0]
            text = None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                text = arg.value
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(
                arg.values[0], ast.Constant
            ):
                text = arg.values[0].value.rstrip(".")
            if text and text.split(".")[0] in OURS:
                self.imports.append((text, node.lineno, ()))
        self.generic_visit(node)

    def _dotted(self, node):
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            if base is not None and _is_module(base):
                return f"{base}.{node.attr}"
        return None

    def visit_Attribute(self, node):
        base = self._dotted(node.value)
        if base is not None and _is_module(base) and _is_private(node.attr):
            self.privates.append((node.lineno, f"{base}.{node.attr}"))
        self.generic_visit(node)


def _files():
    for top in CHECKED:
        yield from sorted((ROOT / top).rglob("*.py"))


def _scan():
    scanners = []
    for path in _files():
        scanner = _Scanner(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        # Bindings first, so that uses above a function-level import of the
        # same name are still recognised.
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                scanner.visit(node)
        scanner.imports = []
        scanner.visit(tree)
        scanners.append(scanner)
    return scanners


SCANNERS = _scan()


def _where(scanner, line):
    return f"{scanner.path.relative_to(ROOT)}:{line}"


def _edges():
    """`{(source node, target node): [where, ...]}`, self-edges left out."""
    edges = collections.defaultdict(list)
    for scanner in SCANNERS:
        source = _node_of(scanner.module)
        for target, line, _ in scanner.imports:
            target = _node_of(target)
            if source and target and source != target:
                edges[source, target].append(_where(scanner, line))
    return edges


def _private_uses(scanner):
    """`(line, dotted, why)` for each private name `scanner` may not use."""
    found = []
    uses = [(line, f"{module}.{name}")
            for module, line, names in scanner.imports for name in names]
    uses += [(line, module) for module, line, names in scanner.imports
             if not names]
    uses += scanner.privates
    for line, dotted in uses:
        parts = _installed(dotted).split(".")
        for i, part in enumerate(parts[1:], start=1):
            if not _is_private(part):
                continue
            owner = ".".join(parts[:i])
            prefix = ".".join(parts[: i + 1])
            if _is_module(prefix):
                inside = scanner.package == owner or scanner.package.startswith(
                    owner + ".")
                if not inside:
                    found.append((line, dotted,
                                  f"private module {prefix} of {owner}"))
            else:
                found.append((line, dotted, f"private name of {owner}"))
            break
    return found


def test_the_scan_sees_the_code_base():
    # Guards the guard: an empty scan would pass every check below.
    assert len(SCANNERS) > 50
    assert any(s.module == "keras_attn.layers.cbam" for s in SCANNERS)
    assert ("keras_attn.layers", "keras_attn.ops") in _edges()
    # The export/ and recipes/ folders under their installed names.
    assert any(s.module == "keras_attn.export.pipeline" for s in SCANNERS)
    assert ("keras_attn.recipes", "keras_attn.export") in _edges()


def test_every_module_sits_in_a_declared_node():
    undeclared = sorted(
        str(s.path.relative_to(ROOT)) for s in SCANNERS
        if _node_of(s.module) not in TIER
    )
    assert not undeclared, (
        "modules outside every node of ORDER (place the sub-package in "
        "tests/test_import_layers.py ORDER):\n  " + "\n  ".join(undeclared)
    )


def _cycles(edges):
    graph = collections.defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle_between_packages():
    edges = _edges()
    lines = []
    for cycle in _cycles(edges):
        lines.append(" -> ".join(cycle))
        for source, target in zip(cycle, cycle[1:], strict=False):
            lines.append(f"    {source} -> {target}: "
                         + ", ".join(edges[source, target]))
    assert not lines, "import cycles between packages:\n  " + "\n  ".join(
        lines)


def test_imports_only_go_down_the_layers():
    order = " < ".join("/".join(nodes) for nodes in ORDER)
    lines = []
    for (source, target), where in sorted(_edges().items()):
        if target == "tests" or source not in TIER or target not in TIER:
            continue  # reported by their own tests
        if TIER[target] > TIER[source]:
            why = "a higher layer"
        elif TIER[target] == TIER[source]:
            why = "the same layer (side by side: neither imports the other)"
        else:
            continue
        lines.append(f"{source} imports {target}, {why}: {', '.join(where)}")
    assert not lines, (
        f"backward imports (allowed order: {order}):\n  " + "\n  ".join(lines)
    )


def test_nothing_imports_tests():
    lines = [f"{source}: {', '.join(where)}"
             for (source, target), where in sorted(_edges().items())
             if target == "tests"]
    assert not lines, (
        "shipped code and benchmarks import `tests` (move the fixture next "
        "to its user):\n  " + "\n  ".join(lines)
    )


def test_nothing_imports_export_or_recipes_by_their_checkout_names():
    lines = []
    for scanner in SCANNERS:
        for target, line, _ in scanner.imports:
            if target.split(".")[0] not in FOLDER_PACKAGE:
                continue
            lines.append(f"{_where(scanner, line)}: {target} (import "
                         f"{_installed(target)}, or relatively inside "
                         f"{_installed(target.split('.')[0])})")
    assert not lines, (
        "imports by checkout names, which are not installed:\n  "
        + "\n  ".join(lines))


def test_no_module_uses_another_modules_private_names():
    lines = [
        f"{_where(scanner, line)}: {dotted} ({why})"
        for scanner in SCANNERS
        for line, dotted, why in sorted(_private_uses(scanner))
    ]
    assert not lines, (
        "private names used across modules (make the helper public where "
        "it lives, or move it to a lower module):\n  " + "\n  ".join(lines)
    )


def _third_party_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.module.split(".")[0]


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "keras_attn" / "utils").glob("*.py")),
    ids=lambda p: p.name,
)
def test_utils_imports_only_stdlib_keras_and_numpy(path):
    foreign = {
        root for root in _third_party_roots(path)
        if root not in UTILS_MAY_IMPORT and root not in sys.stdlib_module_names
    }
    assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"

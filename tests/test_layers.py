"""The layers import one way: world → data → models → train / eval (diffusion beside eval) → compress /
adapt → sweep → cli / serve (the web app beside the command line). Every module under ``src/explore`` is parsed
with ``ast`` (nothing is imported), and

- no module-level import goes against that order (a layer imports itself and the layers below it);
- evaluation never imports the diffusion package (they are neighbours, not stacked);
- the module-level imports have no cycle;
- no ``explore.*`` import is hidden inside a function, except the allowlisted ones below, each with its reason
  (a local import "because the other module builds on this one" means the shared piece wants its own module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import modules of its own layer and of the layers before it.
LAYERS: list[tuple[str, ...]] = [
    # what every layer uses: errors, atomic writes and run folders, the shipped folders, the config base,
    # and the one record type every layer passes around (an Example and how its image is decoded)
    ("explore", "explore.errors", "explore.runs", "explore.packaged",
     "explore.config", "explore.data.example", "explore.data.images"),
    ("explore.world",),
    ("explore.data",),
    ("explore.models",),
    ("explore.train", "explore.eval", "explore.diffusion", "explore.infer"),
    ("explore.compress", "explore.adapt"),
    ("explore.sweep",),
    ("explore.cli", "explore.__main__", "explore.serve"),  # `python -m explore` is the command line; serve: the web app
]  # fmt: skip

# Neighbours in one layer that must still not import each other: (importer prefix, imported prefix): why.
FORBIDDEN = {
    ("explore.eval", "explore.diffusion"): "evaluation never imports the diffusion package (shared pieces go below "
    "both, e.g. explore.models.features)",
}

# Function-level explore imports that stay, with the reason. (importer prefix, imported prefix): why.
FUNCTION_LEVEL_ALLOWED = {
    ("explore.cli", "explore"): "the CLI imports a command's layer when that command runs, so `explore --help` and "
    "usage errors answer without loading torch / transformers",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    # explore/embedded holds model folders, not modules: a diffusion folder's pipeline_world.py is the file
    # DiffusionPipeline.from_pretrained(folder, trust_remote_code=True) runs (explore.diffusion.pipeline)
    embedded = SRC / "explore" / "embedded"
    return {module_name(path): path for path in sorted((SRC / "explore").rglob("*.py"))
            if not path.is_relative_to(embedded)}  # fmt: skip


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules a ``from X import a, b`` reaches: ``X.a`` where that is a module, else ``X``."""
    base = node.module or ""
    if node.level:  # relative import
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    targets = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    return targets or [base]


def explore_imports(source: str, importer: str, is_package: bool, known: set[str]) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every ``explore`` import in ``source``."""
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((alias.name, inside, child.lineno) for alias in child.names
                             if alias.name.split(".")[0] == "explore")  # fmt: skip
            elif isinstance(child, ast.ImportFrom):
                for target in _resolve(child, importer, is_package, known):
                    if target.split(".")[0] == "explore":
                        found.append((target, inside, child.lineno))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that names ``module``'s layer."""
    best, best_length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best is None:
        raise AssertionError(f"module {module} is in no layer; add it to LAYERS in {__file__}")
    return best


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def problems(sources: dict[str, tuple[str, bool]]) -> dict[str, list[str]]:
    """Layer, neighbour and function-level problems of ``sources`` (module → (source, is_package))."""
    known = set(sources)
    found: dict[str, list[str]] = {"layers": [], "forbidden": [], "function_level": []}
    for importer, (source, is_package) in sorted(sources.items()):
        for target, in_function, line in explore_imports(source, importer, is_package, known):
            where = f"{importer}:{line} imports {target}"
            if in_function:
                if not any(_under(importer, a) and _under(target, b) for a, b in FUNCTION_LEVEL_ALLOWED):
                    found["function_level"].append(where)
                continue
            if layer_of(target) > layer_of(importer):
                found["layers"].append(f"{where} (layer {layer_of(importer)} imports layer {layer_of(target)})")
            for (a, b), why in FORBIDDEN.items():
                if _under(importer, a) and _under(target, b):
                    found["forbidden"].append(f"{where}: {why}")
    return found


def module_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    known = set(sources)
    return {importer: {target for target, in_function, _ in explore_imports(source, importer, is_package, known)
                       if not in_function and target in known and target != importer}
            for importer, (source, is_package) in sources.items()}  # fmt: skip


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


@pytest.fixture(scope="module")
def package_sources() -> dict[str, tuple[str, bool]]:
    return {name: (path.read_text(encoding="utf-8"), path.name == "__init__.py") for name, path in modules().items()}


def test_every_module_is_in_a_layer(package_sources):
    for module in package_sources:
        layer_of(module)


def test_no_module_level_import_goes_against_the_layers(package_sources):
    assert problems(package_sources)["layers"] == []


def test_evaluation_never_imports_diffusion(package_sources):
    assert problems(package_sources)["forbidden"] == []


def test_module_level_imports_have_no_cycle(package_sources):
    assert cycles(module_graph(package_sources)) == []


def test_no_function_level_import_hides_a_cycle(package_sources):
    assert problems(package_sources)["function_level"] == []


def test_every_allowlisted_function_level_import_still_exists(package_sources):
    """An entry whose import is gone must go too, so that the allowlist only ever shrinks."""
    known = set(package_sources)
    used = {(a, b) for importer, (source, is_package) in package_sources.items()
            for target, in_function, _ in explore_imports(source, importer, is_package, known) if in_function
            for a, b in FUNCTION_LEVEL_ALLOWED if _under(importer, a) and _under(target, b)}  # fmt: skip
    assert set(FUNCTION_LEVEL_ALLOWED) - used == set()


@pytest.mark.parametrize(
    ("module", "source", "kind"),
    [
        ("explore.models.loading", "from explore.compress.precision import load_at_precision\n", "layers"),
        ("explore.eval.t2i", "import explore.diffusion.features\n", "forbidden"),
        ("explore.eval.t2i", "def f():\n    from explore.eval.runner import run_task\n", "function_level"),
        ("explore.data.coco", "class A:\n    def f(self):\n        from .images import load_image\n", "function_level"),
    ],
)
def test_the_checks_catch_what_they_are_for(module, source, kind):
    sources = {"explore.data.images": ("", False), "explore.eval.runner": ("", False), module: (source, False)}
    found = problems(sources)
    assert len(found[kind]) == 1 and all(not v for k, v in found.items() if k != kind), found


def test_the_cycle_check_finds_a_cycle():
    graph = {"explore.a": {"explore.b"}, "explore.b": {"explore.c"}, "explore.c": {"explore.a"}, "explore.d": set()}
    assert cycles(graph) == [["explore.a", "explore.b", "explore.c"]]

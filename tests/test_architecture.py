"""The code's shape stays as designed: imports point one way, layers keep out of each other, modules stay small.

Read from the source with ``ast`` (nothing is imported), so a violation names the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "export", "loadtest", "bench")
MAX_MODULE_LINES = 250


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything a module imports at run time (``TYPE_CHECKING`` blocks included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    """Project module → the project modules it imports."""
    sources = _sources()
    return {module: _imports(path, module) & set(sources) for module, path in sources.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycle = [*visiting[visiting.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        visiting.append(module)
        for target in sorted(graph[module]):
            if target != module and not module.startswith(target + "."):  # a package's own __init__
                visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("service", ("torch", "torchvision", "export", "loadtest", "bench")),
        ("service.batching", ("fastapi", "starlette", "onnxruntime", "uvicorn", "service.api", "service.dataplane")),
        ("service.api", ("onnxruntime",)),
        ("loadtest", ("service", "export", "bench", "torch")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    offences = [
        f"{module} imports {name}"
        for module, path in _sources().items()
        if module == layer or module.startswith(layer + ".")
        for name in sorted(_imports(path, module))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert not offences, offences


def test_modules_stay_small() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in _sources().items()}
    large = {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not large, f"modules over {MAX_MODULE_LINES} lines (split them by job): {large}"

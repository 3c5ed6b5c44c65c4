"""The import graph of the package: no cycles (late imports included, so none can hide one), and imports flow one
way through the layers (bottom to top): messages, log, audio, tools, kernels; runtime, model; actors; assembly,
serve; scenarios, demo, console; training, web; cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "microturn"

LAYERS = {
    "messages": 0, "log": 0, "redaction": 0, "audio": 0, "tools": 0, "kernels": 0,
    "runtime": 1, "model": 1,
    "actors": 2,
    "assembly": 3, "asr": 3, "serve": 3, "serve_cli": 3, "extras": 3, "http_serving": 3, "realtime": 3,
    "scenarios": 4, "demo": 4, "console": 4,
    "training": 5, "web": 5,
    "cli": 6, "__main__": 6,
}  # fmt: skip
"""Each part's layer: a module may import its own layer's and lower layers' modules, never a higher one."""


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module file an import of ``name`` loads (the longest prefix that is a module of ours)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` loads pkg/sub.py (and pkg's __init__, which a submodule of pkg already has
            # loaded); ``from pkg import name`` loads pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            if target.startswith("microturn"):
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package importing its own submodules (re-exports) is how packages work; a cycle is a path back.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_flow_one_way() -> None:
    wrong = []
    for module, targets in _graph().items():
        part = _part(module)
        if part == "__init__":
            continue
        for target in targets:
            other = _part(target)
            if other == "__init__" or other == part:
                continue
            if part not in LAYERS or other not in LAYERS:
                wrong.append(f"{module} -> {target}: a part with no layer (add it to LAYERS)")
            elif LAYERS[other] > LAYERS[part]:
                wrong.append(f"{module} (layer {LAYERS[part]}) imports {target} (layer {LAYERS[other]})")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("source", ["from .b import f", "import microturn.a.b", "from microturn.a import b"])
def test_the_checker_sees_a_late_import_cycle(tmp_path, source) -> None:
    """The checker itself: a cycle through a late import is found, so a green run means something."""
    pkg = tmp_path / "microturn" / "a"
    pkg.mkdir(parents=True)
    (tmp_path / "microturn" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "b.py").write_text("def f():\n    from microturn.a.c import y\n")
    (pkg / "c.py").write_text(source + "\n")
    graph = _graph(tmp_path / "microturn")
    assert "microturn.a.c" in graph["microturn.a.b"]
    assert "microturn.a.b" in graph["microturn.a.c"]

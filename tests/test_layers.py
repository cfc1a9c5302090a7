"""The layering, read off the import lines: every edge between layers is one the
architecture allows (README, Architecture), the module graph has no cycle, and
no toolprm import hides inside a function.

``LAYERS`` and ``ALLOWED`` are the one statement of the architecture.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("errors", "grammar", "engine", "reward", "bfcl", "train", "bench")

#: Each layer: the modules in it (a prefix matches a package and its modules).
LAYERS = {
    "errors": ("toolprm.errors",),
    "grammar": ("toolprm.grammar",),
    "engine core": tuple(f"toolprm.engine.{m}" for m in (
        "models", "lean", "runners", "kv", "prompts", "decode", "query", "explore", "search", "parse",
        "logits", "workers")),
    "reward": ("toolprm.reward",),
    "engine front": ("toolprm.engine.api", "toolprm.engine.cli", "toolprm.engine.demo",
                     "toolprm.engine"),
    "bfcl": ("toolprm.bfcl",),
    "train": ("toolprm.train",),
    "bench": ("toolprm.bench",),
}
#: Which layers each layer may import (besides its own modules).
ALLOWED = {
    "errors": set(),
    "grammar": {"errors"},
    "engine core": {"errors", "grammar"},
    "reward": {"errors", "grammar", "engine core"},
    "engine front": {"errors", "grammar", "engine core", "reward"},
    "bfcl": {"errors"},
    "train": {"errors", "grammar", "engine core", "reward", "engine front", "bfcl"},
    "bench": {"errors", "grammar", "engine core", "reward", "engine front", "bfcl", "train"},
}


def layer_of(module: str) -> str | None:
    best = None
    for layer, prefixes in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (layer, p)
    return best[0] if best else None


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT / pkg).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join(["toolprm", pkg, *parts])] = f
    return out


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported toolprm module, line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("toolprm."):
                        found.append((a.name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{base}.{child.module}" if child.module else base
                else:
                    base = child.module or ""
                if base == "toolprm" or base.startswith("toolprm."):
                    for a in child.names:  # "from pkg import submodule" is an edge to the submodule
                        sub = f"{base}.{a.name}"
                        found.append((sub if sub in known else base, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer_of(m) is None] == []


def test_edges_between_layers_are_allowed():
    bad = []
    for m, edges in graph().items():
        for target, line, _ in edges:
            a, b = layer_of(m), layer_of(target)
            if b is None or (a != b and b not in ALLOWED[a]):
                bad.append(f"{m}:{line} ({a}) imports {target} ({b})")
    assert bad == []


def test_no_toolprm_import_inside_a_function():
    bad = [f"{m}:{line} imports {t}" for m, edges in graph().items() for t, line, inner in edges if inner]
    assert bad == []


def test_module_graph_is_acyclic():
    g = {m: sorted({t for t, _, _ in edges if t != m}) for m, edges in graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def dfs(m, path):
        state[m] = 1
        for t in g.get(m, []):
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t] if t in path else [m, t])
            elif t not in state:
                dfs(t, path + [t])
        state[m] = 2

    for m in g:
        if m not in state:
            dfs(m, [m])
    assert cycles == []


def test_the_checker_sees_a_forbidden_edge(tmp_path):
    """The test itself can fail: a grammar module importing the engine is caught."""
    f = tmp_path / "x.py"
    f.write_text("from toolprm.engine.decode import Decoder\n\ndef g():\n    import toolprm.reward\n")
    edges = imports("toolprm.grammar.x", f, set(modules()))
    assert [(t, inner) for t, _, inner in edges] == [("toolprm.engine.decode", False), ("toolprm.reward", True)]
    assert layer_of("toolprm.engine.decode") not in ALLOWED[layer_of("toolprm.grammar.x")]


def test_each_package_imports_on_its_own():
    """Whichever package a user imports first, the layers load in their order (the
    engine package imports its lower modules before ``api``, which needs reward)."""
    import subprocess
    import sys
    for pkg in PACKAGES:
        r = subprocess.run([sys.executable, "-c", f"import toolprm.{pkg}"], capture_output=True, text=True)
        assert r.returncode == 0, f"import toolprm.{pkg}: {r.stderr[-2000:]}"

"""The package layout's contract: packages import one way, and no module cycle hides behind a function-level
import (optional extras are outside the package and not counted)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "sceneparse"
# each package may import only those before it (docs/architecture.md)
ORDER = ["constants", "utils", "config", "kernels", "data", "checkpoint", "hub", "models", "deploy", "inference",
         "evaluation", "training", "benchmark", "api", "demo", "cli", "__main__"]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        is_pkg = f.name == "__init__.py"
        out[".".join(rel.parts[:-1] if is_pkg else rel.parts)] = (f, is_pkg)
    return out


def _imports(path: Path, mod: str, is_pkg: bool):
    """``(imported name, line)`` for every sceneparse import in the file, function-level ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] == "sceneparse":
                for a in node.names:
                    yield f"{target}.{a.name}", node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "sceneparse":
                    yield a.name, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    mods = _modules()
    graph = {}
    for mod, (f, is_pkg) in mods.items():
        edges = {}
        for name, line in _imports(f, mod, is_pkg):
            while name not in mods:  # a name inside a module -> the module
                name = name.rsplit(".", 1)[0]
            if name != mod:
                edges.setdefault(name, line)
        graph[mod] = edges
    return graph


def _package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_packages_import_one_way():
    against = []
    for mod, edges in _graph().items():
        src = _package(mod)
        for dst_mod, line in edges.items():
            dst = _package(dst_mod)
            if src == "__init__" or dst in (src, "__init__"):
                continue  # the top-level package is lazy (its names import on first use)
            assert src in ORDER and dst in ORDER, f"{mod} / {dst_mod}: a new package? add it to ORDER and the docs"
            if ORDER.index(dst) > ORDER.index(src):
                against.append(f"{mod}:{line} imports {dst_mod}")
    assert not against, "imports against the layer order:\n" + "\n".join(against)


def test_no_module_import_cycle():
    graph = _graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_see_a_cycle_and_a_backward_import(tmp_path):
    # the walker resolves relative imports, function-level ones included
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from ..training.trainer import train\n")
    assert list(_imports(f, "sceneparse.models.m", False)) == [("sceneparse.training.trainer.train", 2)]
    f.write_text("from . import build_model\nfrom .registry import ARCHS\n")
    assert [n for n, _ in _imports(f, "sceneparse.models", True)] == ["sceneparse.models.build_model",
                                                                       "sceneparse.models.registry.ARCHS"]


def test_every_import_names_a_module_of_the_package():
    # a function-level import runs only when its function does: check them all statically (moved code keeps
    # relative imports that no longer resolve, e.g. one level too many)
    mods = _modules()
    bad = []
    for mod, (f, is_pkg) in mods.items():
        depth = len(mod.split(".")) - (0 if is_pkg else 1)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > depth:
                bad.append(f"{mod}:{node.lineno}: from {'.' * node.level}{node.module or ''} leaves the package")
        for name, line in _imports(f, mod, is_pkg):
            owner = name
            while owner and owner not in mods:
                owner = owner.rsplit(".", 1)[0] if "." in owner else ""
            if not owner:
                bad.append(f"{mod}:{line}: no module for {name}")
    assert not bad, "\n".join(bad)


def test_a_clone_named_sceneparse_does_not_shadow_the_install(tmp_path):
    """Python run from the folder that holds a clone named ``sceneparse`` imports the installed package, not
    the clone's folder as an empty namespace package (the src/ layout: an editable install puts ``src`` on
    ``sys.path``, and a regular package anywhere on the path wins over a namespace folder)."""
    import subprocess
    import sys

    (tmp_path / "sceneparse").symlink_to(ROOT.parents[1], target_is_directory=True)
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import sceneparse; print(callable(sceneparse.load))"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-500:]

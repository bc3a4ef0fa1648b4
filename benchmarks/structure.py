"""The package's structure as JSON: its import graph (module-level and function-level imports), the import cycles,
the imports that run up the layers, and the largest files and functions.

    python benchmarks/structure.py > runs/structure.json

The layers are the house's (issue 31, docs): a module may import only modules of a lower layer, or of its own
layer inside its own package. An import inside a function counts like any other: it is still an arrow between
the two modules, only a later one. The package's lazy top-level names (`infinimodal.MultimodalVAE`) are the one
allowed arrow up.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGE = "infinimodal"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE

#: Layer of each module or package (top first). A module not named here takes its package's layer.
LAYERS = [
    ["cli", "__main__"],
    ["commands", "demo", "parser"],
    ["api"],
    ["train", "training", "evaluation", "synthesis", "deviation", "feature_deviation", "rundata"],
    ["config", "model", "data", "semisupervised", "runfiles", "runlog"],
    [
        "latents",
        "aggregators",
        "tabular",
        "likelihoods",
        "mixture",
        "nets",
        "stick_breaking",
        "modality",
        "truncation",
        "distributed",
        "adam_state",
    ],
    ["settings", "outputs", "options", "flagtypes", "maths", "errors", "columns"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


def layer_of(module: str) -> int | None:
    head = module.split(".")[0]
    for depth, names in enumerate(LAYERS):
        if module in names or head in names:
            return depth
    return None


def imports_of(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported package module, imported inside a function) for each import of a module of the package."""
    tree = ast.parse(path.read_text())
    package = (
        module.split(".")[:-1] if path.name != "__init__.py" else module.split(".") if module != "__init__" else []
    )
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)] if child.level > 1 else list(package)
                    target = base + (child.module.split(".") if child.module else [])
                elif child.module and child.module.split(".")[0] == PACKAGE:
                    target = child.module.split(".")[1:]
                else:
                    continue
                names = [a.name for a in child.names]
                for name in names:  # `from . import latents` names a module
                    candidate = ".".join(target + [name])
                    if (ROOT / Path(*target, name)).with_suffix(".py").is_file() or (
                        ROOT / Path(*target, name)
                    ).is_dir():
                        found.append((candidate, inner))
                        break
                else:
                    if target:
                        found.append((".".join(target), inner))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == PACKAGE and alias.name != PACKAGE:
                        found.append((alias.name.split(".", 1)[1], inner))
            visit(child, inner)

    visit(tree, False)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def function_sizes(path: Path, module: str) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append((f"{module}.{node.name}", node.end_lineno - node.lineno + 1))
    return out


def measure(top: int = 10) -> dict:
    """The structure of the package (module docstring)."""
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p): p for p in files}

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    upward = []
    for module, path in modules.items():
        for target, nested in imports_of(path, module):
            resolved = resolve(target)
            if resolved is None or resolved == module:
                continue
            graph[module].add(resolved)
            mine, theirs = layer_of(module), layer_of(resolved)
            same_package = module.split(".")[0] == resolved.split(".")[0]
            if module == "__init__":
                continue  # the package's own names: its lazy `MultimodalVAE` is the one allowed arrow up
            if mine is not None and theirs is not None and theirs < mine and not same_package:
                upward.append({"from": module, "to": resolved, "in_function": nested})
    # a package's __init__ re-exports its own modules: the arrows it draws are the package's, not a cycle of it
    package_graph: dict[str, set[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            a, b = module.split(".")[0], target.split(".")[0]
            if a != b:
                package_graph.setdefault(a, set()).add(b)
    lines = {m: len(p.read_text().splitlines()) for m, p in modules.items()}
    functions = sorted((f for m, p in modules.items() for f in function_sizes(p, m)), key=lambda f: -f[1])
    unplaced = sorted({m.split(".")[0] for m in modules if layer_of(m) is None and m != "__init__"})
    return {
        "files": len(files),
        "lines": sum(lines.values()),
        "imports": sum(len(t) for t in graph.values()),
        "module_cycles": cycles(graph),
        "package_cycles": cycles(package_graph),
        "upward_imports": upward,
        "modules_without_layer": unplaced,
        "largest_files": sorted(lines.items(), key=lambda kv: -kv[1])[:top],
        "largest_functions_and_classes": functions[:top],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(measure(args.top), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

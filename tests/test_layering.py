"""The package layers run one way: components <- flows <- peftpipe, with no import cycle.

Every import counts, also one inside a function, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("components", "flows", "peftpipe")  # lowest first


def module_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the project modules it imports}, read from the source."""
    files = {}
    for top in LAYERS:
        for p in (root / top).rglob("*.py"):
            name = ".".join(p.relative_to(root).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = p
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for t in targets:
                hit = max((m for m in files if t == m or t.startswith(m + ".")), key=len, default=None)
                if hit and hit != name and not name.startswith(hit + "."):  # a package's own __init__ is not an edge
                    edges[name].add(hit)
    for name in files:
        edges.setdefault(name, set())
    return edges


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    level = lambda m: LAYERS.index(m.split(".")[0])  # noqa: E731
    return sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs if level(b) > level(a))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_layers_point_one_way():
    assert upward_imports(module_imports()) == []


def test_no_import_cycles():
    assert cycles(module_imports()) == []


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path):
    """Negative control: a tree with both faults is caught."""
    for f, text in {"components/__init__.py": "", "components/a.py": "def f():\n    from components import b\n",
                    "components/b.py": "import components.a\nfrom flows.x import y\n",
                    "flows/__init__.py": "", "flows/x.py": "y = 1\n", "peftpipe/__init__.py": ""}.items():
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(text)
    edges = module_imports(tmp_path)
    assert upward_imports(edges) == ["components.b -> flows.x"]
    assert cycles(edges) == [["components.a", "components.b"]]

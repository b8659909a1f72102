"""The layers run one way: components <- flows <- peftpipe, and inside components/ its folders in the
order of FOLDERS, with no import cycle; no module of components/ is over MAX_LINES lines.

Every import counts, also one inside a function, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("components", "flows", "peftpipe")  # lowest first
# the folders of components/, lowest first: a folder imports only folders before it (stages.py is the top)
FOLDERS = ("core", "prompts", "methods", "config", "data", "model", "training", "evaluation", "bundle", "inspect",
           "deploy", "release", "serving", "stages")
MAX_LINES = 400


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


def folder_of(module: str) -> str | None:
    """The folder of components/ a module lives in ('stages' for components/stages.py); None outside."""
    parts = module.split(".")
    return parts[1] if parts[0] == "components" and len(parts) > 1 else None


def upward_folder_imports(edges: dict[str, set[str]], order: tuple[str, ...] = FOLDERS) -> list[str]:
    """Imports from a folder of components/ into one at its level or above it (or into an unlisted folder)."""
    rank = {f: i for i, f in enumerate(order)}
    out = []
    for a, bs in edges.items():
        fa = folder_of(a)
        for b in bs:
            fb = folder_of(b)
            if fa is None or fb is None or fa == fb:
                continue
            if fa not in rank or fb not in rank or rank[fb] > rank[fa]:
                out.append(f"{a} -> {b}")
    return sorted(out)


def long_modules(root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    return sorted(f"{p.relative_to(root)}: {n} lines" for p in (root / "components").rglob("*.py")
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit)


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


def test_components_folders_point_one_way():
    """No folder of components/ imports one above it, so no two folders import each other, even through others."""
    assert upward_folder_imports(module_imports()) == []
    present = {p.name for p in (ROOT / "components").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert present <= set(FOLDERS), f"add {sorted(present - set(FOLDERS))} to FOLDERS at its level"


def test_no_component_module_is_over_the_limit():
    assert long_modules() == []


def test_the_folder_check_sees_an_upward_import(tmp_path):
    """Negative control: a low folder importing a higher one (directly, or lazily inside a function) is caught."""
    for f, text in {"components/__init__.py": "", "components/core/__init__.py": "",
                    "components/core/a.py": "def f():\n    from components.serving import s\n",
                    "components/serving/__init__.py": "", "components/serving/s.py": "from components.core import a\n",
                    "flows/__init__.py": "", "peftpipe/__init__.py": ""}.items():
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(text)
    assert upward_folder_imports(module_imports(tmp_path)) == ["components.core.a -> components.serving",
                                                              "components.core.a -> components.serving.s"]
    (tmp_path / "components/core/big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert long_modules(tmp_path) == [f"components/core/big.py: {MAX_LINES + 1} lines"]


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

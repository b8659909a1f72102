"""The documentation: docs/ builds as a MkDocs site in strict mode (a link to a missing page or anchor fails
it, as the negative controls show), README.md stays a short summary, and its links point at real files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -c constraints.txt mkdocs mkdocs-material)")

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 10_000  # bytes


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` in a subprocess, output captured (stdout and stderr together)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner: noise, not a warning
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The repository's mkdocs.yml built once (strict): the result and the site folder."""
    out = tmp_path_factory.mktemp("docs") / "site"
    return mkdocs_build(ROOT / "mkdocs.yml", out), out


@pytest.fixture
def site(built) -> Path:
    result, out = built
    assert result.returncode == 0, "the site did not build (see test_docs_build_strict)"
    return out


def test_docs_build_strict(built):
    result, site = built
    assert result.returncode == 0, f"mkdocs build --strict failed (exit {result.returncode}):\n{result.stdout}"
    assert (site / "index.html").is_file()
    for page in ["pipeline", "data", "methods", "training", "evaluation", "serving", "releases", "experiments",
                 "performance", "contributing", "deployment"]:
        assert (site / page / "index.html").is_file(), page


def test_readme_is_short():
    size = (ROOT / "README.md").stat().st_size
    assert size < README_LIMIT, f"README.md is {size} bytes (limit {README_LIMIT}): move detail into docs/"


def test_readme_links_resolve(site):
    """Every relative link in README.md names an existing file; a link into docs/ with an anchor names a
    heading the built page has (MkDocs checks the links between pages, not the README's)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        if not target.exists():
            broken.append(f"{link}: no such file")
            continue
        if anchor and path.startswith("docs/") and path.endswith(".md"):
            rel = Path(path).relative_to("docs").with_suffix("")
            page = site / ("" if rel.name == "index" else rel) / "index.html"
            if f'id="{anchor}"' not in page.read_text(encoding="utf-8"):
                broken.append(f"{link}: no heading with that anchor")
    assert not broken, "README.md has broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("bad_link", ["no-such-page.md", "training.md#no-such-anchor"])
def test_strict_build_fails_on_a_broken_link(tmp_path, bad_link):
    """Negative control: the same config and pages plus one broken link must fail the strict build."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + f"\nSee [this]({bad_link}).\n", encoding="utf-8")
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, f"a link to {bad_link} did not fail the strict build:\n{result.stdout}"
    assert bad_link.split("#")[-1] in result.stdout, result.stdout

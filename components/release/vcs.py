"""The registry's calls to git and DVC, and its one error type.

GTO itself is called where its tags are read or written (components/release/registry.py); here are the
commands around it: git with a fallback identity, `python -m dvc`, and the one-second spacing GTO's tags need.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from components.core.errors import UserError


class RegistryError(UserError, RuntimeError):
    """A registry operation that must not happen (failed gates, regression, nothing to roll back to)."""


@lru_cache(maxsize=None)
def ensure_identity(root: Path) -> None:
    """Commits and tags need an author: fall back to 'peftpipe' on machines (CI) without a git identity."""
    for key, env, default in (("user.name", "NAME", "peftpipe"), ("user.email", "EMAIL", "peftpipe@localhost")):
        value = _git_config(root, key) or default
        os.environ.setdefault(f"GIT_AUTHOR_{env}", value)
        os.environ.setdefault(f"GIT_COMMITTER_{env}", value)


def git(root: Path, *args: str, check: bool = True) -> str:
    ensure_identity(root)
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RegistryError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _git_config(root: Path, key: str) -> str | None:
    proc = subprocess.run(["git", "config", key], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() or None


def dvc(root: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RegistryError(f"dvc {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def tick(root: Path) -> None:
    """GTO orders events by their tag's timestamp (whole seconds): never create two in one second."""
    stamps = git(root, "for-each-ref", "--sort=-creatordate", "--count=1", "--format=%(creatordate:unix)", "refs/tags")
    if stamps:
        wait = int(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)

"""The bundle's format: which files a bundle holds, its model variants, and its checksums.

One home for what export writes and what serving, the registry and promotion read, so a deploy target
adds its files here and nothing below `deploy/` or `serving/` has to know the other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from components.core.atomic import atomic_write_text
from components.core.errors import UserError
from components.core.layout import CHECKSUMS, MODEL_ONNX

VARIANTS = {"int8": "model.int8.onnx", "int4": "model.int4.onnx"}  # `auto` serves the first one shipped: int8 first
BITS = {"int4": 4, "int8": 8}


class BundleCheckFailed(UserError, RuntimeError):
    """A bundle that must not be loaded: a file missing, changed, or not listed in its checksums."""


def variant_file(folder: Path, variant: str) -> tuple[str, str]:
    """(variant, ONNX file): 'auto' takes a quantized variant when the bundle ships one (it passed its gate)."""
    if variant == "auto":
        variant = next((v for v, f in VARIANTS.items() if (folder / f).exists()), "fp32")
    name = MODEL_ONNX if variant == "fp32" else VARIANTS.get(variant)
    if name is None or not (folder / name).exists():
        raise FileNotFoundError(f"{folder}: no {variant} model in this bundle (it was not exported or failed its gate)")
    return variant, name


def write_checksums(folder: Path) -> None:
    """List every file of the bundle with its SHA-256 (the manifest itself excepted)."""
    lines = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(folder).as_posix()}")
    atomic_write_text(folder / CHECKSUMS, "\n".join(lines) + "\n")


def verify_checksums(folder: str | Path) -> None:
    """Raise if a bundle file is missing, differs from checksums.sha256, or is not listed there (nothing
    unverified is loaded from a bundle)."""
    folder = Path(folder)
    manifest = folder / CHECKSUMS
    if not manifest.exists():
        raise BundleCheckFailed(f"{folder}: no {CHECKSUMS}; not a peftpipe bundle")
    listed = set()
    for line in manifest.read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed.add(name)
        f = folder / name
        if not f.exists() or hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            raise BundleCheckFailed(f"{folder}: {name} is missing or corrupt (checksum mismatch)")
    extra = sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*")
                   if f.is_file() and f != manifest and f.relative_to(folder).as_posix() not in listed)
    if extra:
        raise BundleCheckFailed(f"{folder}: {', '.join(extra)} not listed in {CHECKSUMS}; refusing a bundle with "
                                "unverified files (re-export it, or remove them)")

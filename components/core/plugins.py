"""Plug-ins found by name: the modules of a package, each checked against a small contract.

Methods use it today (`components.methods`); data formats and deploy targets are meant to use the same two
functions, so every kind of plug-in is discovered and checked the same way.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType


@dataclass(frozen=True)
class Contract:
    """What a plug-in module must define: `required` names, and allowed values for some of them."""

    kind: str                                        # "method", "data format", ... (for messages)
    package: str                                     # dotted package name, e.g. "components.methods"
    required: tuple[str, ...]
    choices: tuple[tuple[str, tuple], ...] = ()      # (attribute, allowed values)
    not_plugins: frozenset[str] = frozenset({"base"})


def discover(package: ModuleType, not_plugins: frozenset[str] | set[str] = frozenset({"base"})) -> tuple[str, ...]:
    """The plug-in names in `package` (its modules, sorted); "_private" modules and `not_plugins` are not plug-ins."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules(package.__path__)
                        if not info.ispkg and not info.name.startswith("_") and info.name not in not_plugins))


def load(contract: Contract, names: tuple[str, ...], name: str, field: str) -> ModuleType:
    """The plug-in module `name`, checked against `contract`; `field` names the params key in the error."""
    if name not in names:
        raise ValueError(f"{field}: unknown {contract.kind} {name!r}; choose from {', '.join(names)}")
    module = import_module(f"{contract.package}.{name}")
    where = f"{contract.package.replace('.', '/')}/{name}.py"
    missing = [a for a in contract.required if not hasattr(module, a)]
    if missing:
        raise TypeError(f"{where} lacks {', '.join(missing)} (every {contract.kind} defines "
                        f"{', '.join(contract.required)})")
    for attr, allowed in contract.choices:
        if getattr(module, attr) not in allowed:
            raise TypeError(f"{where}: {attr} {getattr(module, attr)!r} must be one of {allowed}")
    return module

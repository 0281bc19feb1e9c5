"""Names of a package loaded on first use (PEP 562), so importing the package stays cheap.

>>> import types
>>> mod = types.ModuleType("demo")
>>> mod.__getattr__, mod.__dir__ = lazy_names(vars(mod), {"dedent": "textwrap"}, "demo")
>>> mod.dedent("  x")
'x'
>>> "dedent" in dir(mod)
True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(namespace: dict[str, Any], table: dict[str, str], package: str
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose names in ``table`` (name ->
    module) are imported when first asked for, then kept in ``namespace``."""

    def getattr_(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(table))

    return getattr_, dir_

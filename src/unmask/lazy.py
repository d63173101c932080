"""Lazy package exports: `from unmask.sampling import generate` works, but `import unmask.sampling` alone
does not import torch.

The command-line entry point imports every stage's `cli.py` to build its parser, and importing
`unmask.sampling.cli` first runs `unmask/sampling/__init__.py`; if that imported the decoders (and so
torch, ~2 s) every `unmask ...` command, `--help` included, would pay for it. A package lists its public
names and the submodule of each; a name is imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`, whose public name N lives in submodule `exports[N]` (".x")."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return __getattr__, __dir__


class FunctionOverSubmodule(types.ModuleType):
    """A package whose public function shares its name with a submodule (sampling's `generate`, in
    generate.py). Python binds a package's attribute to each submodule it loads, which would shadow the
    function once anything imports the submodule; this class keeps the function bound to the name."""

    shadowed: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).shadowed and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)

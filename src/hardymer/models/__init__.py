"""Methods behind one registry: ``create_method(name, dims=..., n_outputs=..., task=...)``.

Each file (or subpackage, like ``hardymer/``) registers one method; importing this package
imports every module in it, so the lookups below see every method and adding a method is
adding one file.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from typing import Any

from ..training.method import Method, Stage
from .registry import METHODS, register_method

# Registration: importing each module of this package adds its method to the registry.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell pattern."""
    return METHODS.names(pattern)


def get_method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def create_method(name: str, dims: dict[str, int], n_outputs: int, task: str,
                  **overrides: Any) -> Method:
    """Build a registered method from its default config with keyword overrides."""
    cls = get_method_class(name)
    known = {f.name for f in fields(cls.Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{name}: unknown config field(s) {unknown}; fields: {sorted(known)}")
    return cls(cls.Config(**overrides), dims, n_outputs, task)


__all__ = ["Method", "Stage", "create_method", "get_method_class", "list_methods",
           "register_method", "METHODS"]

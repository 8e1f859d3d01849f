"""Methods behind one registry: ``create_method(name, dims=..., n_outputs=..., task=...)``.

Each file registers one method; importing this package registers them all.
"""
from .base import Method, Stage, create_method, get_method_class, list_methods, register_method
from . import momke, zero_fill  # noqa: F401  (registration)

__all__ = ["Method", "Stage", "create_method", "get_method_class", "list_methods",
           "register_method"]

"""Methods behind one registry: ``create_method(name, dims=..., n_outputs=..., task=...)``.

Each file registers one method; importing this package registers them all.
"""
from .base import Method, Stage, create_method, get_method_class, list_methods, register_method
# Registration: importing each method's file adds it to the registry.
from . import cif_mmin, cpm_nets, gcnet, hardymer, if_mmin, mmin, momke, zero_fill  # noqa: F401
from ..hardness import teacher as _teacher  # noqa: F401,E402  (registers the teacher)

__all__ = ["Method", "Stage", "create_method", "get_method_class", "list_methods",
           "register_method"]

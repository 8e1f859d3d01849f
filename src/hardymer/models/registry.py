"""The method registry: ``@register_method("name")`` on a :class:`~hardymer.training.Method`.

A leaf that method files import; lookups go through :mod:`hardymer.models`, which imports
every method file first, so they always see every method.
"""
from __future__ import annotations

from ..registry import Registry
from ..training.method import Method

METHODS: Registry[type[Method]] = Registry("method", "method_name")
register_method = METHODS.register

"""One small registry (timm-style) for everything found by name: methods, extractors.

A module registers a class with ``@REGISTRY.register("name")``; callers look it up with
``REGISTRY.get("name")``. The package that owns a registry imports every file that registers
into it, so a lookup through that package always sees them all.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Names -> classes.

    Parameters
    ----------
    kind : what is registered, for messages ("method", "extractor")
    attribute : class attribute set to the registered name ("method_name", "name")
    """

    def __init__(self, kind: str, attribute: str):
        self.kind, self.attribute = kind, attribute
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@METHODS.register("momke")``."""
        def wrap(cls: T) -> T:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.kind} name {name!r} is already registered")
            setattr(cls, self.attribute, name)
            self._items[name] = cls
            return cls
        return wrap

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: "
                           f"{', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

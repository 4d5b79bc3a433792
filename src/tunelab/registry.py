"""A tiny explicit name -> spec map; misses list the valid choices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Read-only mapping from names to specs, built from one visible dict literal."""

    def __init__(self, kind: str, entries: Mapping[str, T]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def get(self, name: str) -> T:
        """Return the spec for ``name`` or raise KeyError naming every valid choice."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Sorted names of all registered entries."""
        return sorted(self._entries)

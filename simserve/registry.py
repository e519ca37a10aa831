"""Named extension points: scheduler policies, routers, all-reduce algorithms, arrival processes.

A registry maps a name to an implementation. Adding a policy or an algorithm is one module that
calls `REGISTRY.register("name")` on its implementation; the config's allowed values, the CLI's
help and `simserve catalog` read `names()`, so nothing else has to be edited (Vidur registers its
schedulers and predictors the same way).
"""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from simserve.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> implementation table; `kind` names it in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None, *, replace: bool = False):
        """`registry.register("name", obj)`, or as a decorator: `@registry.register("name")`."""
        def add(obj: T) -> T:
            if name in self._items and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj
        return add(item) if item is not None else add

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str, field: str | None = None) -> T:
        """The implementation called `name`; a ConfigError naming `field` and the choices if none."""
        try:
            return self._items[name]
        except KeyError:
            where = f"{field}: " if field else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r}; choose one of {', '.join(self._items)}") \
                from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)



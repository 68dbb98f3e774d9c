"""Name → constructor registries (timm style): ``@register`` next to the code it registers.

Example:
    >>> from metarec.registry import ALGORITHMS
    >>> @ALGORITHMS.register("my_method")
    ... class MyMethod(MetaLearner): ...
    >>> ALGORITHMS.create("my_method", encoder=enc, n_way=5)
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of constructors of one kind (algorithms, families, encoders)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``fn`` under ``name``; a duplicate name is an error."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not fn:
                raise ValueError(f"duplicate {self.kind} name {name!r} (already {self._entries[name]!r})")
            self._entries[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries


ALGORITHMS: Registry[Any] = Registry("algorithm")
FAMILIES: Registry[Any] = Registry("family")
ENCODERS: Registry[Any] = Registry("encoder")
#: Recommenders of the cold-start rating family (see metarec/recsys/): they see a
#: RatingEpisode, not a text Episode, so they are kept apart from ALGORITHMS' contract tests.
RECOMMENDERS: Registry[Any] = Registry("recommender")
#: Methods of the cold-start CTR family (metarec/recsys/ctr/methods.py): they see a click log's
#: item tasks, not an Episode.
CTR_METHODS: Registry[Any] = Registry("CTR method")
#: Run paths, one per registry of methods, named by that registry's kind: ``RUNNERS.get("algorithm")``
#: runs a text algorithm (metarec/training.py), ``RUNNERS.get("recommender")`` a recommender
#: (metarec/recsys/run.py), ``RUNNERS.get("CTR method")`` a CTR method (metarec/recsys/ctr/run.py).
#: A runner is ``fn(cfg, run_dir, ckpt_path=None, fit=True) -> RunResult``.
RUNNERS: Registry[Any] = Registry("run path")
#: The registries of methods a config's ``algorithm.name`` is looked up in, in this order.
METHODS: tuple[Registry[Any], ...] = (ALGORITHMS, RECOMMENDERS, CTR_METHODS)


def method_kind(name: str) -> str:
    """The kind of registry that holds method ``name`` (``"algorithm"``, ``"recommender"``): its run path.

    Raises:
        UnknownNameError: no registry of :data:`METHODS` holds ``name`` (the message lists them all).
    """
    for registry in METHODS:
        if name in registry:
            return registry.kind
    known = "; ".join(f"known {r.kind}s: {', '.join(r.list()) or '(none)'}" for r in METHODS)
    raise UnknownNameError(f"unknown algorithm {name!r}; {known}")

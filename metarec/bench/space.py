"""Search spaces: what ``metarec tune`` may vary for an algorithm, declared beside its defaults.

An algorithm config holds its search space in a ``search:`` block next to the values it
varies; the block is stripped before the algorithm is built (:func:`metarec.training._kwargs`)
and excluded from a bench cell's identity (:data:`metarec.bench.suite.VOLATILE_KEYS`), so
declaring a space never changes what ``metarec fit`` runs::

    name: protonet
    outer_lr: 1.0e-3
    search:
      outer_lr: {float: [1.0e-4, 1.0e-2], log: true}
      warmup_steps: {int: [0, 50], step: 10}
      metric: {choice: [euclidean, cosine]}

A key is an algorithm option (``outer_lr`` → ``algorithm.outer_lr``) or, with a dot, any config
path (``encoder.top_k``). Each trial's values become Hydra overrides of the base config, so
a trial is exactly the run ``metarec fit <overrides>`` would make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import optuna

KINDS = ("float", "int", "choice")


class SearchSpaceError(ValueError):
    """A malformed ``search:`` entry; the message names the parameter and the offending value."""


@dataclass(frozen=True)
class Param:
    """One searched option.

    Attributes:
        path: full config path, e.g. ``algorithm.outer_lr``.
        kind: ``float``, ``int`` or ``choice``.
        low, high: bounds (``float``/``int``).
        log: sample on a log scale.
        step: grid step (``int``, or ``float`` without ``log``).
        choices: the values of a ``choice``.
    """

    path: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: Any = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.path, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.path, list(self.choices))


def parse_space(search: Mapping[str, Any], where: str) -> list[Param]:
    """Parses a ``search:`` mapping (see the module docstring).

    Args:
        search: parameter → spec, e.g. ``{"outer_lr": {"float": [1e-4, 1e-2], "log": True}}``.
        where: what to name in errors, e.g. ``"algorithm protonet"`` or a suite file.
    """
    params = []
    for key, spec in search.items():
        path = str(key) if "." in str(key) else f"algorithm.{key}"
        if not isinstance(spec, Mapping):
            raise SearchSpaceError(f"{where}: search.{key} must be a mapping like {{float: [low, high]}}, got {spec!r}")
        kinds = [k for k in KINDS if k in spec]
        extra = set(spec) - {*KINDS, "log", "step"}
        if len(kinds) != 1 or extra:
            raise SearchSpaceError(f"{where}: search.{key} needs exactly one of {list(KINDS)} "
                                   f"(plus optional log, step), got keys {sorted(spec)}")
        kind, val = kinds[0], spec[kinds[0]]
        if kind == "choice":
            if not isinstance(val, (list, tuple)) or not val:
                raise SearchSpaceError(f"{where}: search.{key}.choice must be a non-empty list, got {val!r}")
            params.append(Param(path, kind, choices=tuple(val)))
            continue
        if not isinstance(val, (list, tuple)) or len(val) != 2 or not all(isinstance(v, (int, float)) for v in val):
            raise SearchSpaceError(f"{where}: search.{key}.{kind} must be [low, high], got {val!r}")
        low, high = float(val[0]), float(val[1])
        log = bool(spec.get("log", False))
        if low >= high or (log and low <= 0):
            raise SearchSpaceError(f"{where}: search.{key}.{kind} = {list(val)} is not a valid "
                                   f"{'log-' if log else ''}range (need {'0 < ' if log else ''}low < high)")
        params.append(Param(path, kind, low=low, high=high, log=log, step=spec.get("step")))
    return params


def to_override(path: str, value: Any) -> str:
    """A Hydra override that sets ``path`` to ``value``."""
    if isinstance(value, str):
        return f"{path}={value}"
    if isinstance(value, bool):
        return f"{path}={'true' if value else 'false'}"
    return f"{path}={value!r}"

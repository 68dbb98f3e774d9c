"""Every config value checked before any work starts.

:func:`validate_config` walks the composed config tree and refuses, with one line naming the
option (and a "did you mean" when a known key is close):

* an unknown key anywhere, ``+``-added ones included. What is known is *derived*, never listed
  here: ``algorithm.*``, ``family.*`` and ``encoder.*`` are the parameters of the registered
  constructor (its signature, following ``**kwargs`` up the class hierarchy, or to the callable a
  function names in its ``kwargs_target`` attribute); every other key is one that the shipped
  config tree (``config.yaml``, the ``trainer/`` and ``logger/`` groups, experiment files) sets.
  A new algorithm, family, encoder or trainer option is known as soon as it exists there.
* a value of the wrong type: against the constructor's type hints, or the type of the key's
  value in the config tree;
* a value out of range, for the options whose range the runner relies on (:data:`RANGES`);
* combinations that cannot work: a second-order algorithm under fp16, a fit whose
  ``trainer.max_steps`` trains nothing.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Union

import yaml
from omegaconf import DictConfig, OmegaConf

import metarec.algorithms  # noqa: F401  (registers the algorithms whose signatures are checked)
import metarec.data  # noqa: F401  (registers the families)
import metarec.models  # noqa: F401  (registers the encoders)
import metarec.recsys  # noqa: F401  (registers the recommenders and rating families)
from metarec.registry import ALGORITHMS, ENCODERS, FAMILIES, METHODS, method_kind
from metarec.config import CONSTRUCTOR_GROUPS, ConfigError, config_dir, did_you_mean, known_keys, suggest_key

#: Parameters the runner passes itself; a config that sets them is refused (they come from elsewhere).
INJECTED = {
    "algorithm": {"encoder": "the encoder group", "n_way": "episodes.n_way", "max_steps": "trainer.max_steps",
                  "schema": "the family", "train_stats": "the family", "like_threshold": "the family"},
    "family": {},
    "encoder": {"model": "the encoder", "tokenizer": "the encoder", "name_or_path": "the encoder"},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(lo: int) -> tuple[str, Callable[[Any], bool]]:
    return f"an integer >= {lo}", lambda v: _is_int(v) and v >= lo


def _null_or_int_at_least(lo: int) -> tuple[str, Callable[[Any], bool]]:
    return f"null or an integer >= {lo}", lambda v: v is None or (_is_int(v) and v >= lo)


#: Ranges of the options the runner relies on: (what is expected, check). Other keys get a type
#: check from their value in the config tree.
RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "seed": _int_at_least(0),
    "episodes.n_way": _int_at_least(2),
    "episodes.n_shot": _int_at_least(0),  # 0: the rating family's suites (no support set); >= 1 checked below
    "episodes.n_query": _int_at_least(1),
    "episodes.meta_batch_size": _int_at_least(1),
    "episodes.eval_seed": _int_at_least(0),
    "episodes.val_episodes": _int_at_least(1),
    "episodes.test_episodes": _int_at_least(1),
    "trainer.max_steps": _int_at_least(0),
    "trainer.val_check_interval": _int_at_least(1),
    "trainer.log_every_n_steps": _int_at_least(1),
    "trainer.num_nodes": _int_at_least(1),
    "trainer.accumulate_grad_batches": _int_at_least(1),
    "trainer.early_stopping.patience": _null_or_int_at_least(1),
    "trainer.early_stopping.min_delta": ("a number >= 0", lambda v: _is_num(v) and v >= 0),
    "trainer.checkpoint_every_n_steps": _null_or_int_at_least(1),
    "trainer.keep_checkpoints": ("-1 (all) or an integer >= 1", lambda v: _is_int(v) and (v == -1 or v >= 1)),
    "trainer.gradient_clip_val": ("null or a number >= 0", lambda v: v is None or (_is_num(v) and v >= 0)),
    "trainer.weight_averaging_start": ("null or a fraction of trainer.max_steps in [0, 1)",
                                       lambda v: v is None or (_is_num(v) and 0 <= v < 1)),
    "trainer.devices": ("an integer >= 1, a list of device ids or 'auto'",
                        lambda v: (_is_int(v) and v >= 1) or isinstance(v, (list, str))),
    "trainer.deterministic": ("true, false or 'warn'", lambda v: isinstance(v, bool) or v == "warn"),
    "trainer.fast_dev_run": ("true, false or an integer >= 0", lambda v: isinstance(v, bool) or (_is_int(v) and v >= 0)),
    "trainer.precision": ("one of 32-true, 32, 64-true, 64, 16-mixed, 16, bf16-mixed, bf16, 16-true, bf16-true",
                          lambda v: str(v) in {"32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed",
                                               "bf16", "16-true", "bf16-true", "transformer-engine"}),
    "features.batch_size": _int_at_least(1),
    "episodes.task_weights": ("null or a mapping {task-name glob: factor > 0}, e.g. {*.t5: 2}",
                              lambda v: v is None or (isinstance(v, dict) and all(
                                  isinstance(k, str) and _is_num(f) and f > 0 for k, f in v.items()))),
}


# -- what a constructor accepts ---------------------------------------------------------------------
def constructor_params(fn: Callable[..., Any]) -> tuple[dict[str, tuple[inspect.Parameter, Any]], bool]:
    """Keyword parameters ``fn`` accepts, with their type hints, and whether it accepts any other.

    A class's ``__init__(..., **kwargs)`` is followed to its bases' ``__init__``; a function's
    ``**kwargs`` to the callable in its ``kwargs_target`` attribute. A ``**kwargs`` that leads
    nowhere makes the set open (``True``): then unknown keys cannot be told apart.
    """
    params: dict[str, tuple[inspect.Parameter, Any]] = {}
    todo: list[Callable[..., Any]] = [fn]
    while todo:
        f = todo.pop(0)
        chain = [c.__init__ for c in f.__mro__ if "__init__" in c.__dict__] if isinstance(f, type) else [f]
        for g in chain:
            try:
                sig = inspect.signature(g)
            except (TypeError, ValueError):
                return params, True
            try:
                hints = typing.get_type_hints(g)
            except Exception:  # an annotation that does not evaluate: skip type checks, keep names
                hints = {}
            var_kw = False
            for p in sig.parameters.values():
                if p.kind is p.VAR_KEYWORD:
                    var_kw = True
                elif p.kind is not p.VAR_POSITIONAL and p.name != "self":
                    params.setdefault(p.name, (p, hints.get(p.name, inspect.Parameter.empty)))
            if not var_kw:
                break
            target = getattr(g, "kwargs_target", None)
            if target is not None:
                todo.append(target)
                break
            if g is chain[-1]:
                return params, True
    return params, False


def fits(value: Any, hint: Any) -> bool:
    """Whether a config value fits a type hint (hints it cannot judge are fitted by anything)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_num(value)
    if hint is str:
        return isinstance(value, str)
    if hint is Path or hint is Path | str:
        return isinstance(value, (str, Path))
    seq = (list, tuple, collections.abc.Sequence, collections.abc.Collection, collections.abc.Iterable)
    if origin in seq or hint in (list, tuple):
        return isinstance(value, (list, tuple)) and not isinstance(value, str)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


def _unknown(path: str, siblings: list[str], everywhere: list[str], where: str) -> ConfigError:
    key = path.rsplit(".", 1)[-1]
    hint = suggest_key(key, path, siblings, everywhere)
    did = f" (did you mean {hint}?)" if hint else ""
    shown = ", ".join(sorted(siblings)[:25]) + (", …" if len(siblings) > 25 else "")
    return ConfigError(f"unknown config key {path}{did}; {where} knows: {shown}")


def _bad(path: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{path}={value!r} is invalid: {path} must be {expected}")


# -- the walk --------------------------------------------------------------------------------------
def _constructor(group: str, name: str) -> Callable[..., Any]:

    if group == "algorithm":  # every registry of methods (text algorithms, recommenders, CTR methods, ...)
        for registry in METHODS:
            if name in registry:
                return registry.get(name)
        method_kind(name)  # raises UnknownNameError listing every known method
    return (FAMILIES if group == "family" else ENCODERS).get(name)


def algorithm_class(cfg: DictConfig) -> Callable[..., Any]:
    """The registered constructor of ``cfg.algorithm.name`` (an algorithm or a recommender)."""
    return _constructor("algorithm", str(cfg.algorithm.name))


def _check_group(group: str, node: dict[str, Any], everywhere: list[str]) -> Callable[..., Any]:
    name = node.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{group}.name must name a registered {group}, got {name!r}")
    fn = _constructor(group, name)
    params, open_ = constructor_params(fn)
    fixed: dict[str, str] = getattr(fn, "fixed_options", {})
    accepted = sorted(set(params) - set(INJECTED[group]) - set(fixed) | {"name"})
    for key, value in node.items():
        path = f"{group}.{key}"
        if key == "name" or (group == "algorithm" and key == "search"):
            continue  # search: the tuning space beside the defaults (metarec/bench/space.py), not an argument
        if key in INJECTED[group] and key in params:
            raise ConfigError(f"{path} cannot be set: it comes from {INJECTED[group][key]}")
        if key in fixed:
            raise ConfigError(f"{path} cannot be set for {group} {name!r}: {fixed[key]}")
        if key not in params:
            if open_:
                continue
            raise _unknown(path, accepted, everywhere, f"{group} {name!r}")
        hint = params[key][1]
        if not fits(value, hint):
            raise _bad(path, value, f"of type {_type_name(hint)}")
    return fn


def _default_check(path: str, value: Any, example: Any) -> None:
    if example is None or value is None:
        return
    if isinstance(example, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif _is_int(example):
        ok, what = _is_int(value), "an integer"
    elif isinstance(example, float):
        ok, what = _is_num(value), "a number"
    elif isinstance(example, str):
        ok, what = isinstance(value, (str, int, float)), "a string"
    elif isinstance(example, list):
        ok, what = isinstance(value, list), "a list"
    else:
        return
    if not ok:
        raise _bad(path, value, what)


def _walk(node: dict[str, Any], prefix: str, known: dict[str, Any], everywhere: list[str]) -> Iterator[tuple[str, Any]]:
    siblings = sorted({p[len(prefix) + 1:].split(".")[0] if prefix else p.split(".")[0]
                       for p in known if (p.startswith(prefix + ".") if prefix else True)})
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if path in CONSTRUCTOR_GROUPS:
            continue
        if path not in known:
            raise _unknown(path, siblings, everywhere, f"the config {prefix or 'root'}")
        if isinstance(value, dict) and isinstance(known[path], dict):
            yield from _walk(value, path, known, everywhere)
        else:
            yield path, value


def validate_config(cfg: DictConfig, fitting: bool = True, root: Optional[Path] = None) -> None:
    """Refuses a config with an unknown key, a bad value or an impossible combination.

    Args:
        cfg: the composed config.
        fitting: the run will meta-train (``metarec fit``); ``False`` for ``metarec test``.
        root: the config tree the keys are known from (default: :func:`config_dir`).

    Raises:
        ConfigError: one line naming the option, the value and what is expected.
    """
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    known = known_keys(str(root) if root else None)
    everywhere = sorted(known)
    for path, value in _walk(tree, "", known, everywhere):
        if path in RANGES:
            expected, ok = RANGES[path]
            if not ok(value):
                raise _bad(path, value, expected)
        else:
            _default_check(path, value, known[path])
    ctors = {}
    for group in CONSTRUCTOR_GROUPS:
        node = tree.get(group)
        if not isinstance(node, dict):
            raise ConfigError(f"config has no {group} group (choose one, e.g. {group}=...)")
        ctors[group] = _check_group(group, node, everywhere)
    algo, node = ctors["algorithm"], tree["algorithm"]

    if node["name"] in ALGORITHMS and tree["episodes"]["n_shot"] < 1:  # text episodes need a support set
        raise _bad("episodes.n_shot", tree["episodes"]["n_shot"], f"an integer >= 1 for algorithm {node['name']}")
    precision = str(tree["trainer"]["precision"])
    if precision.startswith("16") and second_order(algo, node):
        raise ConfigError(
            f"trainer.precision={precision} with second-order algorithm {node['name']} gives NaN gradients (fp16 "
            "overflow in the inner autograd.grad, pytorch#64655); use trainer.precision=bf16-mixed or 32-true, "
            "or algorithm.first_order=true")
    if node.get("backward_chunks"):
        trainer = tree["trainer"]
        # (option, its value, the value that leaves it off); a clip value of 0 is off as well
        for key, value, off in (("accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), "1"),
                                ("gradient_clip_val", trainer.get("gradient_clip_val"), "null")):
            if value and str(value) != off:
                raise ConfigError(
                    f"trainer.{key}={value} cannot be used with algorithm.backward_chunks=true (the multi-task stage then "
                    f"steps the optimizer itself, Lightning manual optimization): set trainer.{key}={off} "
                    "or algorithm.backward_chunks=false")
    if fitting and getattr(algo, "trains", True) and tree["trainer"]["max_steps"] == 0 \
            and not tree["trainer"].get("fast_dev_run"):
        raise ConfigError(f"trainer.max_steps=0 trains nothing, but algorithm {node['name']} meta-trains: set "
                          "trainer.max_steps > 0 (or test a checkpoint with `metarec test`)")


def second_order(algo: Callable[..., Any], node: dict[str, Any]) -> bool:
    """Whether the configured algorithm differentiates through an inner loop (second order).

    Known from the constructor: a ``first_order`` parameter that the config (or its default,
    or the class's ``first_order_default``) leaves false.
    """
    params, _ = constructor_params(algo)
    if "first_order" not in params:
        return False
    value = node.get("first_order")
    if value is None:
        value = getattr(algo, "first_order_default", None)
    if value is None:
        default = params["first_order"][0].default
        value = False if default is inspect.Parameter.empty or default is None else default
    return not bool(value)

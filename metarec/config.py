"""Hydra configuration: where the config tree lives and how it is composed.

metarec uses Hydra's compose API (not ``@hydra.main``) so that the CLI, the benchmark runner
and the tests build configs the same way: ``compose(["experiment=quickstart/protonet",
"trainer.max_steps=10"])``.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from functools import lru_cache
from typing import Any, Optional, Sequence

import difflib

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from metarec.hardware import register_resolvers


def config_dir() -> Path:
    """``$METAREC_CONFIG_DIR`` or the config tree shipped inside the package (``metarec/configs``).

    The tree is package data, found through :mod:`importlib.resources`, so a non-editable
    install (``pip install .``) has its configs too.
    """
    env = os.environ.get("METAREC_CONFIG_DIR")
    path = Path(env) if env else Path(str(resources.files("metarec") / "configs"))
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"metarec config tree not found at {path} (set METAREC_CONFIG_DIR)")
    return path


def compose(overrides: Sequence[str] = (), config_name: str = "config", config_path: Optional[Path] = None) -> DictConfig:
    """Composes the config with Hydra overrides, e.g. ``["algorithm=maml", "seed=3"]``."""
    root = Path(config_path or config_dir())
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except MissingConfigException as e:
        raise ConfigError(_missing_message(e, root)) from None
    except HydraException as e:
        first = str(e).splitlines()[0]
        m = re.search(r"Could not override '([^']+)'", first)
        if m:  # an override of a key the tree lacks
            raise ConfigError(f"unknown config key {m.group(1)}{did_you_mean(m.group(1))}: {first}") from None
        raise ConfigError(f"bad config override: {first}") from None
    OmegaConf.resolve(cfg)
    return cfg


class ConfigError(ValueError):
    """A config override names a config file or key that does not exist."""


def _missing_message(e: Exception, root: Path) -> str:
    msg = str(e).splitlines()[0]
    m = re.search(r"Could not (?:find|load) '([^']+)'", msg)
    if not m:
        return msg
    group, _, name = m.group(1).partition("/")  # the config group is the top folder
    folder = root / group
    known = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")) if folder.is_dir() else []
    return f"unknown {group or 'config'} {name!r} (no {m.group(1)}.yaml under {root}); known: {', '.join(known)}"


def list_experiments() -> list[str]:
    root = config_dir() / "experiment"
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


#: Config groups whose keys are constructor parameters (checked against signatures).
CONSTRUCTOR_GROUPS = ("algorithm", "family", "encoder")
# -- what the config tree knows ---------------------------------------------------------------------
def _leaves(node: Any, prefix: str, out: dict[str, Any]) -> None:
    """Dotted paths of ``node``'s keys; a mapping is recursed into, its own path recorded as ``{}``."""
    if not isinstance(node, dict):
        return
    for k, v in node.items():
        if not isinstance(k, str) or (not prefix and k == "defaults"):
            continue
        path = f"{prefix}.{k}" if prefix else k
        if path.split(".")[0] in CONSTRUCTOR_GROUPS:
            out.setdefault(path.split(".")[0], {})
            continue
        if isinstance(v, dict):
            out.setdefault(path, {})
            _leaves(v, path, out)
        elif path not in out or out[path] is None:
            out[path] = v


@lru_cache(maxsize=4)
def known_keys(root: Optional[str] = None) -> dict[str, Any]:
    """Every non-constructor key the config tree under ``root`` sets, with an example value."""
    base = Path(root) if root else config_dir()
    out: dict[str, Any] = {}
    for f in sorted(base.rglob("*.yaml")):
        rel = f.relative_to(base)
        group = rel.parts[0] if len(rel.parts) > 1 else ""
        if group in CONSTRUCTOR_GROUPS:
            continue
        try:
            text = f.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
        except (OSError, yaml.YAMLError):
            continue  # Hydra reports a broken file when it composes it
        glob = group in ("", "experiment") or "@package _global_" in text
        if not glob:
            out.setdefault(group, {})
        _leaves(data, "" if glob else group, out)
    return out


def suggest_key(key: str, path: str, siblings: list[str], everywhere: list[str]) -> str:
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        return f"{path.rsplit('.', 1)[0]}.{close[0]}" if "." in path else close[0]
    # A key at the wrong level (``max_steps`` for ``trainer.max_steps``): match the last part.
    last = {p.rsplit(".", 1)[-1]: p for p in everywhere if "." in p}
    close = difflib.get_close_matches(key, list(last), n=1, cutoff=0.8)
    return last[close[0]] if close else ""


def did_you_mean(path: str, root: Optional[Path] = None) -> str:
    """`` (did you mean X?)`` for a dotted key that is not in the config tree, or ``""``."""
    known = known_keys(str(root) if root else None)
    parent, _, key = path.rpartition(".")
    siblings = sorted({p[len(parent) + 1:].split(".")[0] if parent else p.split(".")[0]
                       for p in known if (p.startswith(parent + ".") if parent else True)})
    hint = suggest_key(key, path, siblings, sorted(known))
    return f" (did you mean {hint}?)" if hint else ""

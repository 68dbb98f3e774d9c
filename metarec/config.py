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
from typing import Optional, Sequence

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
            from metarec.validate import did_you_mean

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

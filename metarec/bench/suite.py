"""Suite files: a grid of methods × families × shots × seeds, each cell an experiment config.

Example (``benchmarks/suites/quickstart.yaml``)::

    name: quickstart
    synthetic: true
    reference: nearest_prototype        # paired comparisons against this method
    overrides: [encoder=minilm]          # applied to every cell
    methods:
      nearest_prototype: [algorithm=nearest_prototype]
      protonet: [algorithm=protonet]
    families:
      category: [family=synthetic_category, episodes.n_way=5]
    shots: [5]
    seeds: [0]
    reported:                            # published numbers, shown in a separate block
      - {method: Induction Networks, family: arsc, n_shot: 5, value: 85.63, source: "Geng et al. 2019"}
    exclude:                             # method × family pairs not run, each with its reason (listed in the report)
      - {method: protonet, family: sentiment, reason: "..."}
    tune: {trials: 12, max_steps: 100}   # `metarec tune SUITE`: the equal budget (metarec/bench/tune.py)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf

from metarec.config import compose

#: Keys that do not change a cell's result (display, paths): excluded from its hash.
VOLATILE_KEYS = ("run_dir", "resume_from", "overwrite", "trainer.enable_progress_bar", "logger", "features.cache_dir",
                 "features.batch_size", "features.memory", "name", "tags", "trainer.checkpoint_every_n_steps",
                 "algorithm.search")
#: Keys dropped from a cell's identity while they hold their neutral value, so that adding such an
#: option left the identity (and the stored results) of every existing cell unchanged.
NEUTRAL_KEYS = {"episodes.task_weights": None, "trainer.weight_averaging_start": None,
                "family.oracle_heldout_train": False}


class SuiteError(ValueError):
    """A malformed suite file; the message names the file and the offending key."""


@dataclass
class Cell:
    """One experiment of a suite."""

    method: str
    family: str
    n_shot: int
    seed: int
    overrides: list[str]

    @property
    def id(self) -> str:
        return f"{self.method}/{self.family}/{self.n_shot}shot/seed{self.seed}"

    def config(self) -> DictConfig:
        return compose(self.overrides)


def _parent(tree: dict[str, Any], key: str) -> tuple[Any, str]:
    """The node holding dotted ``key`` in ``tree`` (``{}`` where a level is missing), and its last part."""
    node: Any = tree
    *parents, last = key.split(".")
    for p in parents:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    return node, last


def config_hash(cfg: DictConfig) -> str:
    """Hash of a resolved config without its volatile keys: the cell's identity in the store."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    for key in VOLATILE_KEYS:
        node, last = _parent(c, key)
        if isinstance(node, dict):
            node.pop(last, None)
    for key, neutral in NEUTRAL_KEYS.items():
        node, last = _parent(c, key)
        if isinstance(node, dict) and last in node and node[last] == neutral:
            del node[last]
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Suite:
    name: str
    path: Path
    methods: dict[str, list[str]]
    families: dict[str, list[str]]
    shots: list[int]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    reference: Optional[str] = None
    synthetic: bool = False
    reported: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    exclude: list[dict[str, str]] = field(default_factory=list)
    tune: Optional[dict[str, Any]] = None  # budget and sampler of `metarec tune` (metarec.bench.tune.TuneSpec)

    def excluded(self, method: str, family: str) -> bool:
        return any(e["method"] == method and e["family"] == family for e in self.exclude)

    def cells(self, extra: tuple[str, ...] | list[str] = ()) -> list[Cell]:
        out = []
        for family, f_over in self.families.items():
            for shot in self.shots:
                for method, m_over in self.methods.items():
                    if self.excluded(method, family):
                        continue
                    for seed in self.seeds:
                        over = [*self.overrides, *m_over, *f_over, f"episodes.n_shot={shot}", f"seed={seed}", *extra]
                        out.append(Cell(method, family, shot, seed, over))
        return out


def _list_of_str(path: Path, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise SuiteError(f"{path}: {key} must be a list of Hydra overrides (strings), got {value!r}")
    return [str(v) for v in value]


def load_suite(path: Path) -> Suite:
    """Reads and validates a suite file."""
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite is a mapping with keys name, methods, families, shots, seeds")
    known = {"name", "description", "synthetic", "reference", "overrides", "methods", "families", "shots", "seeds",
             "reported", "exclude", "tune"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SuiteError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    for key in ("methods", "families"):
        if not isinstance(raw.get(key), dict) or not raw[key]:
            raise SuiteError(f"{path}: {key} must be a non-empty mapping of name -> list of overrides")
    methods = {str(k): _list_of_str(path, f"methods.{k}", v) for k, v in raw["methods"].items()}
    families = {str(k): _list_of_str(path, f"families.{k}", v) for k, v in raw["families"].items()}
    shots = raw.get("shots", [5])
    seeds = raw.get("seeds", [0])
    for key, vals in (("shots", shots), ("seeds", seeds)):
        if not isinstance(vals, list) or not vals or not all(isinstance(v, int) for v in vals):
            raise SuiteError(f"{path}: {key} must be a non-empty list of integers, got {vals!r}")
    reference = raw.get("reference")
    if reference is not None and reference not in methods:
        raise SuiteError(f"{path}: reference {reference!r} is not one of the methods {sorted(methods)}")
    reported = raw.get("reported") or []
    for i, r in enumerate(reported):
        missing = {"method", "value", "source"} - set(r or {})
        if missing:
            raise SuiteError(f"{path}: reported[{i}] lacks {sorted(missing)}")
    exclude = raw.get("exclude") or []
    for i, e in enumerate(exclude):
        if not isinstance(e, dict) or {"method", "family", "reason"} - set(e):
            raise SuiteError(f"{path}: exclude[{i}] must be a mapping with method, family and reason, got {e!r}")
        if e["method"] not in methods or e["family"] not in families:
            raise SuiteError(f"{path}: exclude[{i}] names method {e['method']!r} / family {e['family']!r}; "
                             f"methods are {sorted(methods)}, families {sorted(families)}")
    return Suite(
        name=str(raw.get("name") or path.stem), path=path, methods=methods, families=families,
        shots=list(shots), seeds=list(seeds), overrides=_list_of_str(path, "overrides", raw.get("overrides")),
        reference=reference, synthetic=bool(raw.get("synthetic", False)), reported=list(reported),
        description=str(raw.get("description", "")),
        exclude=[{k: str(v) for k, v in e.items()} for e in exclude], tune=_tune_block(path, raw.get("tune")),
    )


def _tune_block(path: Path, value: Any) -> Optional[dict[str, Any]]:
    if value is not None and not isinstance(value, dict):
        raise SuiteError(f"{path}: tune must be a mapping (trials, max_steps, ...), got {value!r}")
    return value

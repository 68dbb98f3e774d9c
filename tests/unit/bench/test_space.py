"""Search spaces declared in algorithm configs: parsed, validated by name, and never passed to a constructor."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import metarec.algorithms  # noqa: F401
from metarec.bench.space import SearchSpaceError, parse_space, to_override
from metarec.bench.suite import config_hash
from metarec.config import compose
from metarec.registry import ALGORITHMS
from metarec.runtime import config_kwargs


def test_every_declared_space_parses_and_contains_its_defaults():
    for name in ALGORITHMS.list():
        cfg = compose([f"algorithm={name}"])  # every algorithm has its config file (test_registry)
        search = cfg.algorithm.get("search")
        if search is None:
            continue
        for p in parse_space(OmegaConf.to_container(search), f"algorithm {name}"):
            default = cfg.algorithm[p.path.removeprefix("algorithm.")]
            if p.kind == "choice":
                assert default in p.choices, (name, p.path)
            else:
                assert p.low <= default <= p.high, (name, p.path, default)


def test_space_is_stripped_before_construction_and_from_the_cell_hash():
    cfg = compose(["algorithm=protonet"])
    assert "search" in cfg.algorithm and "search" not in config_kwargs(cfg.algorithm)
    bare = compose(["algorithm=protonet", "~algorithm.search"])
    assert config_hash(cfg) == config_hash(bare)


@pytest.mark.parametrize("spec, message", [
    ({"lr": {"float": [1e-3]}}, r"search.lr.float must be \[low, high\]"),
    ({"lr": {"float": [0, 1], "log": True}}, "not a valid log-range"),
    ({"lr": {"float": [1, 2], "int": [1, 2]}}, "needs exactly one of"),
    ({"metric": {"choice": []}}, "search.metric.choice must be a non-empty list"),
    ({"lr": 0.1}, "search.lr must be a mapping"),
])
def test_bad_entries_are_named(spec, message):
    with pytest.raises(SearchSpaceError, match=message):
        parse_space(spec, "algorithm x")


def test_paths_and_overrides():
    (a, b) = parse_space({"outer_lr": {"float": [1e-4, 1e-2], "log": True}, "encoder.top_k": {"int": [1, 3]}}, "x")
    assert (a.path, b.path) == ("algorithm.outer_lr", "encoder.top_k")
    assert to_override(a.path, 0.001) == "algorithm.outer_lr=0.001"
    assert to_override("algorithm.normalize", False) == "algorithm.normalize=false"
    assert compose([to_override(a.path, 0.00123)]).algorithm.outer_lr == pytest.approx(0.00123)

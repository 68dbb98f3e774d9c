import pytest

import metarec.algorithms  # noqa: F401
import metarec.data  # noqa: F401
from metarec.registry import ALGORITHMS, ENCODERS, FAMILIES, RECOMMENDERS, RUNNERS, Registry, UnknownNameError, method_kind


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown algorithm 'protonett'; known algorithms: .*protonet"):
        ALGORITHMS.get("protonett")
    with pytest.raises(UnknownNameError, match="known familys|known families|synthetic_category"):
        FAMILIES.get("nope")
    with pytest.raises(UnknownNameError, match="minilm"):
        ENCODERS.get("nope")


def test_duplicate_name_is_an_error():
    r: Registry = Registry("thing")
    r.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        r.register("a")(lambda: 2)


def test_list_pattern():
    assert "maml" in ALGORITHMS.list("*maml") and "fomaml" in ALGORITHMS.list("*maml")
    assert "protonet" not in ALGORITHMS.list("*maml")


def test_every_algorithm_has_a_config():
    from metarec.config import config_dir

    for name in ALGORITHMS.list():
        assert (config_dir() / "algorithm" / f"{name}.yaml").is_file(), f"metarec/configs/algorithm/{name}.yaml missing"


def test_every_method_kind_has_its_run_path():
    import metarec.training  # noqa: F401  (registers the run paths: text algorithms, and recommenders via metarec.recsys)
    from metarec.recsys.run import run_rating_experiment

    assert method_kind("protonet") == "algorithm" and method_kind("melu_maml") == "recommender"
    assert RUNNERS.get("algorithm") is metarec.training.run_episodic
    assert RUNNERS.get("recommender") is run_rating_experiment
    for name in ALGORITHMS.list() + RECOMMENDERS.list():
        assert method_kind(name) in RUNNERS, name
    with pytest.raises(UnknownNameError, match=r"unknown algorithm 'melu'; known algorithms: .*; known recommenders: .*melu_maml"):
        method_kind("melu")


def test_every_algorithm_builds_from_its_shipped_config():
    # The runner passes max_steps and n_way besides the config's keys: a config key that collides
    # with them (or that the constructor does not take) fails here, not in the middle of a suite.
    from metarec.config import compose
    from metarec.training import build_algorithm
    from tests.conftest import tiny_encoder

    encoder = tiny_encoder()
    for name in ALGORITHMS.list():
        model = build_algorithm(compose([f"algorithm={name}", "encoder=tiny_bert"]), encoder)
        assert model.n_way == 5 and model.max_steps == 300, name

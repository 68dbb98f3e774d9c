import pytest
from omegaconf import OmegaConf

from metarec.bench.suite import NEUTRAL_KEYS, config_hash
from metarec.config import ConfigError, compose
from metarec.validate import validate_config


@pytest.mark.parametrize("key", sorted(NEUTRAL_KEYS))
def test_a_neutral_option_at_its_off_value_leaves_the_cell_identity_unchanged(key):
    cfg = compose(["experiment=arsc/multitask_dev"])
    assert OmegaConf.select(cfg, key) == NEUTRAL_KEYS[key]
    without = OmegaConf.to_container(cfg)  # the config as it was before the option existed
    *parents, last = key.split(".")
    node = without
    for p in parents:
        node = node[p]
    del node[last]
    assert config_hash(cfg) == config_hash(OmegaConf.create(without))


@pytest.mark.parametrize("override", ["trainer.weight_averaging_start=0.5", "family.oracle_heldout_train=true"])
def test_a_neutral_option_away_from_its_off_value_changes_the_cell_identity(override):
    base = compose(["experiment=arsc/multitask_dev"])
    assert config_hash(compose(["experiment=arsc/multitask_dev", override])) != config_hash(base)


def test_task_weights_change_the_identity_and_are_checked():
    base = compose(["experiment=arsc/multitask_dev"])
    weighted = compose(["experiment=arsc/multitask_dev", "episodes.task_weights={*.t5:2}"])
    assert dict(weighted.episodes.task_weights) == {"*.t5": 2}
    validate_config(weighted)
    assert config_hash(weighted) != config_hash(base)
    with pytest.raises(ConfigError, match=r"episodes.task_weights=.* must be null or a mapping "
                                          r"\{task-name glob: factor > 0\}"):
        validate_config(compose(["experiment=arsc/multitask_dev", "episodes.task_weights={*.t5:-1}"]))


def test_the_checkpoint_period_never_changes_the_cell_identity_and_is_checked():
    base = compose(["experiment=arsc/multitask_dev"])
    every = compose(["experiment=arsc/multitask_dev", "trainer.checkpoint_every_n_steps=50"])
    validate_config(every)
    assert config_hash(every) == config_hash(base)
    with pytest.raises(ConfigError, match=r"trainer.checkpoint_every_n_steps.*null or an integer >= 1"):
        validate_config(compose(["experiment=arsc/multitask_dev", "trainer.checkpoint_every_n_steps=0"]))

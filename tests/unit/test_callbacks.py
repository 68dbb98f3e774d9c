"""``+trainer.malloc_trim_every``: the trainer gets a callback that returns free heap pages to the
OS every N steps; bad values are refused by name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from metarec.callbacks import MallocTrim
from metarec.config import compose
from metarec.runtime import build_trainer
from metarec.validate import ConfigError, validate_config


def test_malloc_trim_runs_every_n_steps_and_is_wired_by_the_trainer_option(tmp_path):
    trim = MallocTrim(3)
    calls: list[int] = []
    trim._trim = calls.append
    for step in range(1, 10):
        trim.on_train_batch_end(SimpleNamespace(global_step=step))
    assert len(calls) == 3 and calls == [0, 0, 0]
    assert MallocTrim(1)._trim(0) in (0, 1)  # the real glibc call: 1 when memory went back, else 0
    cfg = compose(["experiment=arsc/multitask_dev", "+trainer.malloc_trim_every=50"])
    validate_config(cfg)
    trainer = build_trainer(cfg, tmp_path, accelerator="cpu", logger=False, checkpoint=False)
    assert [c.every for c in trainer.callbacks if isinstance(c, MallocTrim)] == [50]
    plain = build_trainer(compose(["experiment=arsc/multitask_dev"]), tmp_path, accelerator="cpu", logger=False,
                          checkpoint=False)
    assert not any(isinstance(c, MallocTrim) for c in plain.callbacks)


@pytest.mark.parametrize("value", ["0", "-2", "1.5"])
def test_malloc_trim_every_refuses_values_below_one(value):
    with pytest.raises(ConfigError, match="trainer.malloc_trim_every=.* must be an integer >= 1"):
        validate_config(compose(["experiment=arsc/multitask_dev", f"+trainer.malloc_trim_every={value}"]))
    with pytest.raises(ValueError, match="trainer.malloc_trim_every must be an integer >= 1"):
        MallocTrim(0)

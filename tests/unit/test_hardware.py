"""``${fast_bf16:A,B}``: configs pick bf16 only where the hardware runs it natively."""

import pytest

import metarec.hardware as hardware
from metarec.config import compose


@pytest.mark.parametrize("fast", [True, False])
def test_recipes_pick_precision_by_hardware(monkeypatch, fast):
    monkeypatch.setattr(hardware, "fast_bf16", lambda: fast)
    arsc = compose(["experiment=arsc/multitask_dev"])
    assert arsc.trainer.precision == ("bf16-mixed" if fast else "32-true")
    assert arsc.features.autocast is fast
    quick = compose(["experiment=quickstart/protonet"])
    assert quick.trainer.precision == ("bf16-mixed" if fast else "32-true")
    # An explicit override wins over the hardware choice.
    assert compose(["experiment=arsc/multitask_dev", "trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"


def test_fast_bf16_answers_for_this_machine():
    assert isinstance(hardware.fast_bf16(), bool)


@pytest.mark.parametrize("preset,expected", [(None, "16"), ("7", "7")])
def test_importing_metarec_caps_the_onednn_primitive_cache_unless_the_user_chose(preset, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if preset is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = preset
    out = subprocess.run([sys.executable, "-c", "import os, metarec; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected

"""``${fast_bf16:A,B}``: configs pick bf16 only where the hardware runs it natively."""

from pathlib import Path

import pytest
import torch

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
    # An explicit override wins over the hardware choice (the opposite of what it would pick).
    other = "32-true" if fast else "bf16-mixed"
    assert compose(["experiment=arsc/multitask_dev", f"trainer.precision={other}"]).trainer.precision == other


def test_fast_bf16_follows_the_cpus_bf16_flags(monkeypatch):
    # Without a GPU the answer is the CPU's: native bf16 (AVX-512 BF16 or AMX) or not. An AVX2-only
    # CPU must get fp32: bf16 is emulated there and several times slower (docs/arsc.md, Hardware).
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.fast_bf16() is bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize("supported", [True, False])
def test_fast_bf16_on_a_gpu_asks_the_gpu(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
    assert hardware.fast_bf16() is supported


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

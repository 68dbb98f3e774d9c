"""2-rank DDP (gloo, CPU) with meta-batch b per rank equals 1 process with meta-batch 2b.

The outer optimizer is SGD here: some parameters (attention key biases, the last LayerNorm bias
under ProtoNet's shift-invariant distances) have exactly-zero gradients in exact arithmetic, and
Adam would normalize their rounding noise, whose sign depends on summation order, into full steps.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(algo, devices, meta_batch, steps, out):
    proc = subprocess.run([sys.executable, str(WORKER), algo, str(devices), str(meta_batch), str(steps), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.ddp
@pytest.mark.parametrize("algo", ["maml", "protonet"])
def test_ddp_two_ranks_equal_one_process_with_double_meta_batch(algo, tmp_path):
    single = _run(algo, 1, 4, 3, tmp_path / "single.pt")
    ddp = _run(algo, 2, 2, 3, tmp_path / "ddp.pt")
    assert single["params"].keys() == ddp["params"].keys() and single["params"]
    for name, p in single["params"].items():
        torch.testing.assert_close(ddp["params"][name], p, atol=1e-5, rtol=1e-4, msg=f"{algo}: {name} differs")
    # Test metrics are gathered across ranks: every episode exactly once.
    assert sorted(ddp["test_index"]) == list(range(7)) == sorted(single["test_index"])
    assert ddp["test_episodes"] == 7.0
    assert ddp["test_acc"] == pytest.approx(single["test_acc"], abs=1e-6)

"""benchmarks/soup.py end to end: two tiny runs, their weight soup tested as `metarec test` tests it."""

import pytest
import torch

from metarec.checkpoint import read_checkpoint
from metarec.cli import main
from tests.integration.scripts import run_benchmark
from tests.integration.test_reliability import TINY, assert_one_line_error, run_cli


def _soup(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    return run_benchmark("soup.py", argv, monkeypatch)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("soup")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAREC_CACHE_DIR", str(root / "cache"))
        for seed in (0, 1):
            assert main(["fit", *TINY, f"seed={seed}", f"run_dir={root / f'run{seed}'}"]) == 0
    return [str(root / f"run{seed}" / "checkpoints" / "last.ckpt") for seed in (0, 1)]


def test_soup_averages_the_weights_and_is_tested_again_alike(two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "cache"))
    assert _soup(["--out", str(tmp_path / "soup"), *two_runs, "--", *TINY], monkeypatch) == 0
    out = capsys.readouterr().out
    path = tmp_path / "soup" / "checkpoints" / "soup.ckpt"
    assert f"soup of 2 checkpoints written to {path}" in out
    soup = read_checkpoint(path)   # the checksum holds
    a, b = (read_checkpoint(c)["state_dict"] for c in two_runs)
    key = next(k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k]))
    assert torch.allclose(soup["state_dict"][key], (a[key] + b[key]) / 2)
    assert soup["metarec_soup"] == two_runs and "optimizer_states" not in soup
    printed = next(line for line in out.splitlines() if "test accuracy" in line)
    assert main(["test", str(path), *TINY, f"run_dir={tmp_path / 'again'}"]) == 0
    again = next(line for line in capsys.readouterr().out.splitlines() if "test accuracy" in line)
    assert printed.split(" over ")[0] == again.split(" over ")[0]   # the printed table is the soup's own test


def test_soup_refuses_an_existing_soup_a_bad_option_and_resuming(two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "cache"))
    assert _soup(["--out", str(tmp_path / "s"), two_runs[0], "--", *TINY], monkeypatch) == 2
    assert "a soup needs at least two checkpoints" in capsys.readouterr().err
    assert _soup(["--out", str(tmp_path / "s"), *two_runs, "--", *TINY, "encoder.bogus=1"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "unknown config key encoder.bogus" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()   # nothing written before the checks pass
    assert _soup(["--out", str(tmp_path / "s"), *two_runs, "--", *TINY], monkeypatch) == 0
    assert _soup(["--out", str(tmp_path / "s"), *two_runs, "--", *TINY], monkeypatch) == 2
    assert "soup.ckpt exists" in capsys.readouterr().err
    soup = tmp_path / "s" / "checkpoints" / "soup.ckpt"
    code, err = run_cli(["fit", *TINY, "trainer.max_steps=4", f"run_dir={tmp_path / 'r'}", f"resume_from={soup}"],
                        capsys)
    assert_one_line_error(code, err, f"resume_from={soup} holds weights only, no training state")

"""benchmarks/vote.py end to end: two tiny runs, their vote, and the members' own test results."""

import pytest

from metarec.cli import main
from tests.integration.scripts import run_benchmark
from tests.integration.test_reliability import TINY


def _vote(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    return run_benchmark("vote.py", argv, monkeypatch)


def test_vote_prints_each_member_as_metarec_test_does_and_their_vote(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "cache"))
    ckpts = []
    for seed in (0, 1, 2):
        assert main(["fit", *TINY, f"seed={seed}", f"run_dir={tmp_path / f'run{seed}'}"]) == 0
        ckpts.append(str(tmp_path / f"run{seed}" / "checkpoints" / "last.ckpt"))
    capsys.readouterr()
    assert main(["test", ckpts[1], *TINY]) == 0
    alone = capsys.readouterr().out
    assert _vote([*ckpts, "--", *TINY], monkeypatch) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| task"))
    assert [c.strip() for c in header.strip("|").split("|")][-4:] == ["member 0", "member 1", "member 2", "vote of 3"]
    mean = next(line for line in out.splitlines() if line.startswith("| mean accuracy"))
    member1 = [c.strip() for c in mean.strip("|").split("|")][3]
    assert f"test accuracy {member1}" in alone   # the member's column is its own `metarec test` result


def test_vote_refuses_a_missing_checkpoint_or_a_single_one(tmp_path, monkeypatch, capsys):
    assert _vote([str(tmp_path / "nope.ckpt"), str(tmp_path / "nope.ckpt"), "--", *TINY], monkeypatch) == 2
    assert f"checkpoint {tmp_path / 'nope.ckpt'} does not exist" in capsys.readouterr().err
    (tmp_path / "one.ckpt").write_bytes(b"")
    assert _vote([str(tmp_path / "one.ckpt"), "--", *TINY], monkeypatch) == 2
    assert "a vote needs at least two checkpoints" in capsys.readouterr().err
    # a bad option is refused before the first member is tested: one line, no traceback
    assert _vote([str(tmp_path / "one.ckpt"), str(tmp_path / "one.ckpt"), "--", *TINY, "encoder.bogus=1"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "unknown config key encoder.bogus" in err and "Traceback" not in err
    assert _vote([str(tmp_path / "one.ckpt"), str(tmp_path / "one.ckpt"), "--", *TINY, "+algorithm.nope=1"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "algorithm.nope" in err and "Traceback" not in err

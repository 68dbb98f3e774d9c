"""The reliability corpus (issue 18): bad inputs and faults, as a careless user or a crashing
machine would produce them. Each case asserts the exit code, the one-line message and that no
traceback reaches the user; the handled cases assert the right outcome.

Fast by design: in-process CLI calls (``metarec.cli.main``), the tiny random BERT, the synthetic
sentiment family, two meta-steps; one trained checkpoint is shared by the checkpoint cases.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

from metarec.cli import main
from tests.unit.data.test_arsc import make_arsc_dir

TINY = ["encoder=tiny_bert", "family=synthetic_sentiment", "episodes.n_way=2", "episodes.n_shot=2",
        "episodes.n_query=2", "trainer.max_steps=2", "trainer.val_check_interval=2", "episodes.val_episodes=2",
        "episodes.test_episodes=2", "episodes.meta_batch_size=1", "trainer.enable_progress_bar=false"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, message: str) -> None:
    """Exit 2, no traceback, exactly one ``metarec: error:`` line holding one of ``message``'s alternatives."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("metarec: error:")]
    assert len(lines) == 1, err
    assert any(m in lines[0] for m in message.split("|")), lines[0]


# -- 1. config values: every one validated before any work ------------------------------------------
CONFIG_CASES = [
    (["+trainer.foo=1"], "unknown config key trainer.foo"),
    (["+episodes.n_wya=3"], "unknown config key episodes.n_wya (did you mean episodes.n_way?)"),
    (["+foo=1"], "unknown config key foo;"),
    (["+algorithm.foo=1"], "unknown config key algorithm.foo; algorithm 'protonet' knows"),
    (["+algorithm.outer_l=0.1"], "did you mean algorithm.outer_lr?"),
    (["+encoder.foo=1"], "unknown config key encoder.foo; encoder 'tiny_bert' knows"),
    (["+encoder.max_lenght=8"], "did you mean encoder.max_length?"),
    (["+family.n_aspect=3"], "did you mean family.n_aspects?"),
    (["+features.cahce=false"], "did you mean features.cache?"),
    (["+logger.wandb_projet=x"], "did you mean logger.wandb_project?"),
    (["+max_steps=abc"], "did you mean trainer.max_steps?"),
    (["+n_way=1"], "did you mean episodes.n_way?"),
    (["trainer.foo=1"], "unknown config key trainer.foo: Could not override 'trainer.foo'"),
    (["trainer.max_step=5"], "unknown config key trainer.max_step (did you mean trainer.max_steps?)"),
    (["episodes.n_way=1"], "episodes.n_way=1 is invalid: episodes.n_way must be an integer >= 2"),
    (["episodes.n_way=two"], "episodes.n_way='two' is invalid"),
    (["trainer.max_steps=abc"], "trainer.max_steps='abc' is invalid"),
    (["seed=abc"], "seed='abc' is invalid: seed must be an integer"),
    (["seed=-1"], "seed=-1 is invalid"),
    (["episodes.meta_batch_size=0"], "episodes.meta_batch_size=0 is invalid"),
    (["episodes.meta_batch_size=-1"], "episodes.meta_batch_size=-1 is invalid"),
    (["trainer.max_steps=-5"], "trainer.max_steps=-5 is invalid"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval=0 is invalid"),
    (["episodes.test_episodes=0"], "episodes.test_episodes=0 is invalid"),
    (["episodes.val_episodes=0"], "episodes.val_episodes=0 is invalid"),
    (["episodes.n_shot=0"], "episodes.n_shot=0 is invalid"),
    (["episodes.n_query=0"], "episodes.n_query=0 is invalid"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is invalid"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints=0 is invalid"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid"),
    (["trainer.num_nodes=0"], "trainer.num_nodes=0 is invalid"),
    (["trainer.devices=0"], "trainer.devices=0 is invalid"),
    (["trainer.precision=8-bit"], "trainer.precision='8-bit' is invalid"),
    (["trainer.enable_progress_bar=sometimes"], "trainer.enable_progress_bar='sometimes' is invalid"),
    (["features.batch_size=0"], "features.batch_size=0 is invalid"),
    (["overwrite=maybe"], "overwrite='maybe' is invalid"),
    (["algorithm.outer_lr=abc"], "algorithm.outer_lr='abc' is invalid"),
    (["algorithm=maml", "algorithm.inner_steps=2.5"], "algorithm.inner_steps=2.5 is invalid"),
    (["encoder.max_length=abc"], "encoder.max_length='abc' is invalid"),
    (["encoder.hidden_size=1.5"], "encoder.hidden_size=1.5 is invalid"),
    (["family.seed=abc"], "family.seed='abc' is invalid"),
    (["+algorithm.n_way=3"], "algorithm.n_way cannot be set: it comes from episodes.n_way"),
    # an option a method fixes is refused, not overwritten (fixed_options)
    (["experiment=coldstart-ml100k/global", "+algorithm.inner_steps=3"],
     "algorithm.inner_steps cannot be set for algorithm 'melu_global': melu_global has no local update"),
    (["experiment=coldstart-ml100k/global", "+algorithm.eval_inner_steps=3"],
     "algorithm.eval_inner_steps cannot be set for algorithm 'melu_global'"),
    (["experiment=coldstart-ml100k/finetune", "+algorithm.inner_steps=3"],
     "algorithm.inner_steps cannot be set for algorithm 'melu_finetune'"),
    (["experiment=ctr-ml100k/random", "+algorithm.meta_steps=3"],
     "algorithm.meta_steps cannot be set for algorithm 'ctr_random': this method has no meta-training stage"),
    (["experiment=ctr-ml100k/popularity", "+algorithm.meta_lr=0.1"],
     "algorithm.meta_lr cannot be set for algorithm 'ctr_popularity'"),
    (["algorithm=protonett"], "unknown algorithm 'protonett'"),
    (["algorithm=anil", "trainer.precision=16-mixed"], "second-order algorithm anil gives NaN gradients"),
    (["algorithm=maml", "trainer.precision=16-mixed"], "second-order algorithm maml"),
    (["algorithm=metasgd", "trainer.precision=16-mixed"], "second-order algorithm metasgd"),
    (["algorithm=melu_maml", "trainer.precision=16-mixed"], "second-order algorithm melu_maml"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_bad_config_value_is_one_clear_line(overrides, message, capsys, tmp_path):
    code, err = run_cli(["fit", *TINY, f"run_dir={tmp_path / 'run'}", *overrides], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work


def test_first_order_algorithm_is_allowed_under_fp16():
    from metarec.config import compose
    from metarec.validate import validate_config

    validate_config(compose([*TINY, "algorithm=fomaml", "trainer.precision=16-mixed"]))


def test_every_shipped_experiment_validates():
    from metarec.config import compose, list_experiments
    from metarec.validate import validate_config

    for name in list_experiments():
        validate_config(compose([f"experiment={name}"]))


# -- 2. checkpoints: checksum + identity, refused by test and resume_from ------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory fitted for two steps (tiny BERT, synthetic sentiment, protonet)."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAREC_CACHE_DIR", str(root / "cache"))
        assert main(["fit", *TINY, f"run_dir={root / 'run'}"]) == 0
    return root / "run"


def flip_tensor_bytes(src: Path, dst: Path, n: int = 64) -> None:
    """Copies ``src`` with ``n`` bytes flipped inside its largest tensor's data (the archive stays readable)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    # Local header: 30 bytes + name + extra field, then the stored (uncompressed) bytes.
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    for i in range(n):
        data[start + (i * 7) % info.file_size] ^= 0xFF
    dst.write_bytes(bytes(data))


def flip_random_bytes(src: Path, dst: Path, n: int = 64) -> None:
    data = bytearray(src.read_bytes())
    g = torch.Generator().manual_seed(0)
    for i in torch.randperm(len(data), generator=g)[:n].tolist():
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))


def _bad_file(kind: str, last: Path, dst: Path) -> Path:
    if kind == "flipped-tensor":
        flip_tensor_bytes(last, dst)
    elif kind == "flipped-random":
        flip_random_bytes(last, dst)
    elif kind == "truncated":
        dst.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif kind == "empty":
        dst.write_bytes(b"")
    elif kind == "text":
        dst.write_text("not a checkpoint\n")
    elif kind == "plain-dict":
        torch.save({"weights": torch.zeros(2)}, dst)
    elif kind == "missing":
        return dst.parent / "nope.ckpt"
    return dst


BAD_FILES = [
    ("flipped-tensor", "is corrupt: its content does not match its checksum"),
    ("flipped-random", "is corrupt|cannot be read"),
    ("truncated", "cannot be read (truncated, damaged or not a checkpoint file)"),
    ("empty", "is empty (0 bytes)"),
    ("text", "cannot be read"),
    ("plain-dict", "is not a Lightning checkpoint"),
    ("missing", "does not exist"),
]


@pytest.mark.parametrize("kind, message", BAD_FILES, ids=[k for k, _ in BAD_FILES])
def test_test_refuses_a_bad_checkpoint(trained, kind, message, capsys, tmp_path):
    ckpt = _bad_file(kind, trained / "checkpoints" / "last.ckpt", tmp_path / "bad.ckpt")
    code, err = run_cli(["test", str(ckpt), *TINY, f"run_dir={tmp_path / 'out'}"], capsys)
    assert_one_line_error(code, err, message)
    assert str(ckpt) in err


@pytest.mark.parametrize("kind, message", BAD_FILES, ids=[k for k, _ in BAD_FILES])
def test_resume_from_refuses_a_bad_checkpoint(trained, kind, message, capsys, tmp_path):
    ckpt = _bad_file(kind, trained / "checkpoints" / "last.ckpt", tmp_path / "bad.ckpt")
    code, err = run_cli(["fit", *TINY, "trainer.max_steps=4", f"run_dir={tmp_path / 'run'}",
                         f"resume_from={ckpt}"], capsys)
    assert_one_line_error(code, err, message)


MISMATCHES = [
    (["algorithm=maml"], "algorithm='protonet' (this run: 'maml')"),
    (["episodes.n_way=3"], "n_way=2 (this run: 3)"),
    (["encoder=minilm"], "encoder='tiny_bert' (this run: 'minilm')"),
    (["family=synthetic_category"], "family='synthetic_sentiment' (this run: 'synthetic_category')"),
    (["encoder.top_k=2"], "trainable='top_k=1' (this run: 'top_k=2')"),
    (["encoder.freeze=full"], "trainable='top_k=1' (this run: 'full')"),
]


@pytest.mark.parametrize("overrides, message", MISMATCHES, ids=[m[0][0] for m in MISMATCHES])
@pytest.mark.parametrize("command", ["test", "resume"])
def test_a_checkpoint_of_another_kind_of_run_is_refused(trained, command, overrides, message, capsys, tmp_path):
    last = trained / "checkpoints" / "last.ckpt"
    argv = (["test", str(last), *TINY, f"run_dir={tmp_path / 'out'}", *overrides] if command == "test" else
            ["fit", *TINY, "trainer.max_steps=4", f"run_dir={tmp_path / 'run'}", f"resume_from={last}", *overrides])
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, f"checkpoint {last} belongs to another kind of run")
    assert message in err


def test_resume_past_the_budget_is_refused(trained, capsys, tmp_path):
    last = trained / "checkpoints" / "last.ckpt"
    code, err = run_cli(["fit", *TINY, f"run_dir={tmp_path / 'run'}", f"resume_from={last}"], capsys)
    assert_one_line_error(code, err, "is at step 2 and trainer.max_steps=2: nothing is left to train")


def test_intact_checkpoint_is_tested(trained, capsys, tmp_path):
    code = main(["test", str(trained / "checkpoints" / "last.ckpt"), *TINY, f"run_dir={tmp_path / 'out'}"])
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out


def test_checkpoint_records_identity_and_checksum(trained):
    from metarec.checkpoint import DIGEST_KEY, IDENTITY_KEY, content_digest

    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt[IDENTITY_KEY] == {"algorithm": "protonet", "encoder": "tiny_bert", "trainable": "top_k=1",
                                  "n_way": 2, "family": "synthetic_sentiment"}
    assert ckpt[DIGEST_KEY] == content_digest(ckpt)


def _older(ckpt_path, out, drop_freeze: bool = False):
    """``ckpt_path`` as metarec wrote it before the identity recorded the trainable layers (and,
    with ``drop_freeze``, before ``checkpoint["metarec"]`` recorded the freeze policy), re-checksummed."""
    from metarec.checkpoint import DIGEST_KEY, IDENTITY_KEY, content_digest

    ckpt = torch.load(ckpt_path, weights_only=True)
    del ckpt[IDENTITY_KEY]["trainable"]
    if drop_freeze:
        del ckpt["metarec"]["freeze"]
    ckpt[DIGEST_KEY] = content_digest(ckpt)
    torch.save(ckpt, out)
    return out


def test_an_older_checkpoint_tested_with_other_trainable_layers_is_refused_before_any_work(trained, capsys, tmp_path,
                                                                                         monkeypatch):
    # Checkpoints written before the identity recorded the trainable layers load as before; their
    # layers are read from the freeze policy and the encoder layers they saved, so one tested with
    # other trainable layers is refused by the identity check, before the run builds anything.
    from metarec.checkpoint import recorded_trainable

    old = _older(trained / "checkpoints" / "last.ckpt", tmp_path / "old.ckpt")
    assert recorded_trainable(torch.load(old, weights_only=True)) == "top_k=1"
    assert main(["test", str(old), *TINY, f"run_dir={tmp_path / 'same'}"]) == 0
    assert "test accuracy" in capsys.readouterr().out

    def no_work(*args, **kwargs):
        raise AssertionError("the run started building its state cache before refusing the checkpoint")

    monkeypatch.setattr("metarec.training.build_features", no_work)
    for i, (overrides, message) in enumerate([(["encoder.top_k=2"], "trainable='top_k=1' (this run: 'top_k=2')"),
                                              (["encoder.freeze=frozen"], "trainable='top_k=1' (this run: 'frozen')")]):
        code, err = run_cli(["test", str(old), *TINY, f"run_dir={tmp_path / f'other{i}'}", *overrides], capsys)
        assert_one_line_error(code, err, f"checkpoint {old} belongs to another kind of run")
        assert message in err


def test_a_checkpoint_whose_layers_cannot_be_told_is_refused_when_its_weights_load(trained, capsys, tmp_path):
    # Without a recorded freeze policy the trainable layers cannot be read before loading: the
    # weights themselves are the last guard, in both directions, in one line naming the file.
    from metarec.checkpoint import recorded_trainable

    old = _older(trained / "checkpoints" / "last.ckpt", tmp_path / "older.ckpt", drop_freeze=True)
    assert recorded_trainable(torch.load(old, weights_only=True)) is None
    assert main(["test", str(old), *TINY, f"run_dir={tmp_path / 'same'}"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    code, err = run_cli(["test", str(old), *TINY, f"run_dir={tmp_path / 'more'}", "encoder.top_k=2"], capsys)
    assert_one_line_error(code, err, f"{old}: checkpoint lacks 16 parameters of ProtoNet that this run trains")
    assert "fewer trainable encoder layers than this run (trainable='top_k=2'); pass the encoder.freeze" in err
    # ... and one tested with fewer: its trained top layer would be frozen under a pretrained state cache
    code, err = run_cli(["test", str(old), *TINY, f"run_dir={tmp_path / 'fewer'}", "encoder.freeze=frozen"], capsys)
    assert_one_line_error(code, err, f"{old}: checkpoint holds trained weights of 16 parameters of ProtoNet that "
                                     "this run freezes")
    assert "more trainable encoder layers than this run (trainable='frozen'); pass the encoder.freeze" in err


# -- 3. run directories: one run each, locked, metrics kept across a resume -----------------------
def test_second_fit_into_a_used_run_dir_is_refused(trained, capsys):
    before = (trained / "checkpoints" / "last.ckpt").read_bytes()
    code, err = run_cli(["fit", *TINY, f"run_dir={trained}"], capsys)
    assert_one_line_error(code, err, f"run_dir {trained} already holds a run")
    assert "overwrite=true" in err and "resume_from=" in err
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["best-2.ckpt", "last.ckpt"]
    assert (trained / "checkpoints" / "last.ckpt").read_bytes() == before


def test_overwrite_leaves_last_ckpt_of_the_new_run(capsys, tmp_path):
    from metarec.checkpoint import verify_checkpoint
    from metarec.config import compose

    run = tmp_path / "run"
    assert main(["fit", *TINY, f"run_dir={run}"]) == 0
    old = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    old_rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert main(["fit", *TINY, f"run_dir={run}", "overwrite=true", "seed=1"]) == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best-2.ckpt", "last.ckpt"]  # no last-v1.ckpt beside a stale last.ckpt
    new = verify_checkpoint(run / "checkpoints" / "last.ckpt", compose([*TINY, "seed=1"]))
    assert new["global_step"] == 2
    assert any(not torch.equal(new["state_dict"][k], v) for k, v in old["state_dict"].items())  # seed 1's weights
    assert len((run / "csv" / "metrics.csv").read_text().splitlines()) == len(old_rows)  # the new run's rows only


def test_resume_keeps_every_metrics_row(capsys, tmp_path):
    import csv

    run = tmp_path / "run"
    base = [*TINY, "trainer.log_every_n_steps=1", "trainer.val_check_interval=1", f"run_dir={run}"]
    assert main(["fit", *base]) == 0
    with (run / "csv" / "metrics.csv").open() as f:
        first = list(csv.DictReader(f))
    assert main(["fit", *base, "trainer.max_steps=4", f"resume_from={run / 'checkpoints' / 'last.ckpt'}"]) == 0
    with (run / "csv" / "metrics.csv").open() as f:
        after = list(csv.DictReader(f))
    kept = [{k: v for k, v in r.items() if k in first[0]} for r in after[: len(first)]]
    assert kept == [{k: (v or "") for k, v in r.items()} for r in first]  # every row of the first run
    train_steps = {int(r["step"]) for r in after if r.get("train/loss")}
    assert train_steps == {0, 1, 2, 3}, train_steps  # steps before and after the resume
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_live_lock_refuses_a_second_writer(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".metarec.lock").write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename, "since": "x"}))
        code, err = run_cli(["fit", *TINY, f"run_dir={run}"], capsys)
        assert_one_line_error(code, err, f"run_dir {run} is in use by process {other.pid}")
    finally:
        other.kill()
        other.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(capsys, caplog, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".metarec.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "since": "x"}))
    with caplog.at_level(logging.WARNING, logger="metarec"):
        assert main(["fit", *TINY, f"run_dir={run}"]) == 0
    assert any(f"stale lock from dead process {dead.pid}" in m for m in caplog.messages)
    assert not (run / ".metarec.lock").exists()  # released at the end


def test_run_dir_that_is_a_file_names_the_path(capsys, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    code, err = run_cli(["fit", *TINY, f"run_dir={f / 'run'}"], capsys)
    assert_one_line_error(code, err, str(f))


def test_os_error_without_a_path_is_given_the_run_dir(capsys, tmp_path, monkeypatch):
    import errno

    import metarec.training

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metarec.training, "build_family", full_disk)
    code, err = run_cli(["fit", *TINY, f"run_dir={tmp_path / 'run'}"], capsys)
    assert_one_line_error(code, err, f"No space left on device (while writing under run_dir): {tmp_path / 'run'}")


# -- 4. records that cannot run together ------------------------------------------------------------
READER_CASES = [
    (b"first review\t1\rsecond review\t-1\n", "carriage return inside the line"),
    (b"a review that ran\t1into the next one\t-1\n", "2 tabs, expected exactly one"),
    (b"a review with a\ttab inside\t1\n", "2 tabs, expected exactly one"),
    (b"no tab here 1\n", "line without a tab"),
]


@pytest.mark.parametrize("line, reason", READER_CASES, ids=["cr-only", "run-together", "tab-in-text", "no-tab"])
def test_run_together_records_are_errors_or_counted_skips(line, reason, tmp_path):
    from metarec.data.corpus import DataError
    from metarec.data.readers import read_labeled_lines

    f = tmp_path / "x.train"
    f.write_bytes(b"good review\t1\n" + line + b"another good one\t-1\n")
    with pytest.raises(DataError, match="x.train, line 2: " + reason.replace("(", r"\(")):
        read_labeled_lines(f, labels={"1", "-1"})
    read = read_labeled_lines(f, labels={"1", "-1"}, lenient=True)
    assert read.texts == ["good review", "another good one"] and read.report.n_skipped == 1


def test_cr_only_arsc_file_is_refused_by_the_cli(capsys, tmp_path):
    root = make_arsc_dir(tmp_path / "arsc")
    target = root / "books.t2.test"
    target.write_bytes(target.read_bytes().replace(b"\n", b"\r"))
    code, err = run_cli(["fit", *TINY, "family=arsc", f"family.data_dir={root}", f"run_dir={tmp_path / 'run'}"], capsys)
    assert_one_line_error(code, err, f"{target}, line 1: carriage return inside the line")


@pytest.mark.parametrize("strict", [False, True])
def test_strict_turns_an_empty_train_file_warning_into_an_error(strict, capsys, caplog, tmp_path):
    from metarec.data.arsc import arsc
    from metarec.data.corpus import DataError

    root = make_arsc_dir(tmp_path / "arsc")
    (root / "baby.t2.train").write_text("")
    if strict:
        code, err = run_cli(["fit", *TINY, "family=arsc", f"family.data_dir={root}", "family.strict=true",
                             "family.thresholds=[t2]", f"run_dir={tmp_path / 'run'}"], capsys)
        assert_one_line_error(code, err, "dropped train tasks baby.t2 (0 negative/0 positive) (strict=true makes")
        with pytest.raises(DataError):
            arsc(str(root), n_shot=2, n_query=2, strict=True)
    else:
        with caplog.at_level(logging.WARNING, logger="metarec"):
            fam = arsc(str(root), n_shot=2, n_query=2)
        assert "baby.t2" not in [t.name for t in fam.tasks("train")]
        assert any("dropped train tasks baby.t2" in m for m in caplog.messages)


# -- 5. bench: a failing cell is recorded, the suite goes on, the report lists it ----------------------
SUITE = """
name: broken
synthetic: true
overrides: [encoder=tiny_bert, family=synthetic_sentiment, episodes.n_way=2, trainer.max_steps=2,
            trainer.val_check_interval=2, episodes.val_episodes=2, episodes.test_episodes=2,
            episodes.n_query=2, episodes.meta_batch_size=1, trainer.enable_progress_bar=false]
methods:
  nearest_prototype: [algorithm=nearest_prototype, encoder.freeze=frozen]
  broken: [algorithm=maml, algorithm.inner_steps=abc]
families:
  sentiment: []
shots: [2]
seeds: [0]
"""


def test_suite_with_a_broken_cell_completes_and_reports_it(capsys, tmp_path):
    from metarec.bench.runner import run_suite
    from metarec.bench.store import RunStore

    suite = tmp_path / "broken.yaml"
    suite.write_text(SUITE)
    code = run_suite(suite, store=tmp_path / "store", isolate=False)
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    report = (tmp_path / "store" / "report.md").read_text()
    assert "nearest_prototype" in report  # the good cell ran and is reported
    assert "`broken/sentiment/2shot/seed0`: FAILED: algorithm.inner_steps='abc' is invalid" in report
    assert "1 of 2 cells failed (broken/sentiment/2shot/seed0)" in captured.err
    rs = RunStore(tmp_path / "store")
    assert len(list(rs.keys())) == 1


def test_truncated_result_json_is_not_finished_and_named(caplog, tmp_path):
    from metarec.bench.store import RunStore

    rs = RunStore(tmp_path)
    rs.write("abc", {"metrics": {"test/acc": 0.5}}, [], "x: 1\n", {})
    assert rs.finished("abc")
    p = tmp_path / "abc" / "result.json"
    p.write_text(p.read_text()[:10])
    with caplog.at_level(logging.WARNING, logger="metarec"):
        assert not rs.finished("abc")
    assert any(str(p) in m and "truncated" in m for m in caplog.messages)
    assert list(rs.keys()) == []


def test_cell_worker_dies_with_its_parent(tmp_path):
    """The bench parent is killed with SIGKILL: its cell worker must not live on as an orphan."""
    pidfile = tmp_path / "child.pid"
    parent_code = (
        "import subprocess, sys, time\n"
        "from metarec.bench.runner import die_with_parent\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=die_with_parent())\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=env)
    try:
        for _ in range(300):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.1)
        child = int(pidfile.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(100):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            # A zombie is dead too: reparented to init (or us), it is reaped shortly.
            if Path(f"/proc/{child}/stat").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail(f"cell worker {child} outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
        shutil.rmtree(tmp_path, ignore_errors=True)


# -- 6. SIGTERM (timeout, kill, a scheduler): the process unwinds, nothing half-written stays ------------
_STALLED = """
import sys, time
import metarec.algorithms.base as base
import metarec.models.features as features

def stalled_build(self, out):
    print("building", out.parent, flush=True)
    time.sleep(120)

def stalled_fit(self):
    print("training", flush=True)
    time.sleep(120)

if sys.argv[1] == "build":
    features.FeatureStore._compute = stalled_build
else:
    base.MetaLearner.on_train_start = stalled_fit
from metarec.cli import main
sys.exit(main(sys.argv[2:]))
"""


@contextmanager
def _started(argv: list[str], **env: str) -> Iterator[subprocess.Popen]:
    """``python ARGV`` with metarec importable (text pipes), killed if a test leaves it running."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **env}
    proc = subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("phase", ["build", "fit"])
def test_sigterm_unwinds_a_run(phase, tmp_path):
    # Stopped while building its state cache, the run removes the temporary cache directory (a
    # real build's is gigabytes); stopped inside Trainer.fit (whose own SIGTERM handler runs first),
    # it releases its run directory's lock. Either way: exit 143 and one line, no traceback.
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    with _started(["-c", _STALLED, phase, "fit", *TINY, f"run_dir={run_dir}"], METAREC_CACHE_DIR=str(cache)) as proc:
        line = proc.stdout.readline()
        assert line.startswith("building" if phase == "build" else "training"), line + proc.stderr.read()
        if phase == "build":
            tmp = Path(line.split(" ", 1)[1].strip())
            assert tmp.is_dir() and tmp.name.endswith(".tmp")
        assert (run_dir / ".metarec.lock").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "metarec: stopped by SIGTERM" in err and "Traceback" not in err, err
    assert not list(cache.glob("*.tmp")), list(cache.iterdir())
    assert not (run_dir / ".metarec.lock").exists()


def test_sigterm_stops_a_benchmark_script_in_one_line_and_a_second_one_does_not_break_the_unwinding(tmp_path):
    # benchmarks/*.py end with sys.exit(run_script(main)): the same unwinding, named by the script.
    # A second SIGTERM while the first unwinds (schedulers send several) is ignored.
    script = tmp_path / "bench_probe.py"
    script.write_text("import sys, tempfile, time\nfrom metarec.signals import run_script\n"
                      "def main():\n"
                      "    with tempfile.TemporaryDirectory(dir=sys.argv[1]) as d:\n"
                      "        try:\n"
                      "            print(d, flush=True)\n"
                      "            time.sleep(60)\n"
                      "        finally:\n"
                      "            print('unwinding', flush=True)\n"
                      "            time.sleep(1)\n"
                      "            open(sys.argv[1] + '/cleaned', 'w').close()  # after the second signal\n"
                      "sys.exit(run_script(main))\n")
    with _started([str(script), str(tmp_path)]) as proc:
        work = Path(proc.stdout.readline().strip())
        assert work.is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "unwinding"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err.strip() == "bench_probe.py: stopped by SIGTERM; unfinished files were removed"
    assert not work.exists() and (tmp_path / "cleaned").exists()


_DDP_PROBE = """
import signal, sys, time
import metarec.signals as signals
signals._ddp_running = lambda: True  # as on a rank of a DDP run
def main():
    if sys.argv[1] == "trainer":  # a handler in front of metarec's, calling it, as Lightning's does
        inner = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda s, f: inner(s, f))
    print("ready", flush=True)
    time.sleep(3)
    print("went on", flush=True)
sys.exit(signals.run_script(main))
"""


@pytest.mark.parametrize("where", ["trainer", "outside"])
def test_sigterm_on_a_ddp_rank(where):
    # Inside a Trainer the rank goes on to the step where Lightning stops every rank (here: the end
    # of main); outside one it ends as by default, since one rank cannot unwind alone.
    with _started(["-c", _DDP_PROBE, where]) as proc:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    if where == "trainer":
        assert proc.returncode == 0 and out.strip() == "went on" and not err, err
    else:
        assert proc.returncode == -signal.SIGTERM and not out, (out, err)

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from metarec.config import config_dir
from metarec.data.arsc import ARSC_LABEL_MAP, arsc, make_target_fixture, per_task_table
from metarec.data.corpus import DataError
from metarec.data.sampler import EpisodeSampler, EpisodeSpec
from metarec.registry import FAMILIES

SIZES = {"train": (8, 8), "dev": (6, 6), "test": (4, 4)}  # (negative, positive) lines per file


def _lines(domain: str, t: str, split: str, n_neg: int, n_pos: int) -> str:
    rows = [f"{domain} {t} {split} review {i} awful broke\t-1" for i in range(n_neg)]
    rows += [f"{domain} {t} {split} review {i} great love it\t1" for i in range(n_pos)]
    return "".join(r + "\n" for r in rows)


def make_arsc_dir(root: Path, filtered=("apparel", "baby", "beauty"), targets=("books",), thresholds=("t2",),
                  sizes=SIZES, skip=()) -> Path:
    """A tiny directory in the full ARSC layout; ``skip`` lists file names not to write."""
    root.mkdir(parents=True, exist_ok=True)
    for d in filtered:
        for t in thresholds:
            for split, (n, p) in sizes.items():
                name = f"{d}.{t}.{split}"
                if name not in skip:
                    (root / name).write_text(_lines(d, t, split, n, p), encoding="utf-8")
    for d in targets:
        for t in thresholds:
            (root / f"{d}.{t}.train").write_text(_lines(d, t, "train", 5, 5), encoding="utf-8")
            (root / f"{d}.{t}.test").write_text(_lines(d, t, "test", 3, 7), encoding="utf-8")
            (root / f"{d}.{t}.dev").write_text(_lines(d, t, "dev", 3, 3), encoding="utf-8")
    (root / "workspace.filtered.list").write_text("".join(f"{d}\n" for d in filtered))
    if targets:
        (root / "workspace.target.list").write_text("".join(f"{d}\n" for d in targets))
    return root


def _snapshot(root: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.iterdir())}


def _file_rows(family, task_rows):
    """(file name, line) of corpus rows."""
    out = []
    for r in task_rows.tolist():
        path, line = family.corpus.origins[r].rsplit(":", 1)
        out.append((Path(path).name, int(line)))
    return out


def test_registered():
    assert "arsc" in FAMILIES


def test_official_protocol_tasks_labels_and_fixed_support(tmp_path):
    root = make_arsc_dir(tmp_path / "arsc", thresholds=("t2", "t4"))
    fam = arsc(str(root), thresholds=["t2", "t4"])
    assert fam.metadata["protocol"] == "official"
    assert [t.name for t in fam.tasks("train")] == ["apparel.t2", "apparel.t4", "baby.t2", "baby.t4",
                                                     "beauty.t2", "beauty.t4"]
    assert [t.name for t in fam.tasks("val")] == [t.name for t in fam.tasks("train")]
    assert [t.name for t in fam.tasks("test")] == ["books.t2", "books.t4"]
    # Labels mapped once, recorded with the corpus (and so with every result).
    assert fam.corpus.label_names == ["negative", "positive"]
    assert fam.corpus.label_map == ARSC_LABEL_MAP == {"-1": "negative", "1": "positive"}
    assert fam.metadata["label_map"] == ARSC_LABEL_MAP
    assert "apparel.t2:negative" in fam.class_names and "books.t4:positive" in fam.class_names
    for task in fam.tasks("train"):
        assert {fam.class_names[c] for c in task.classes} == {f"{task.name}:negative", f"{task.name}:positive"}
        assert {f for f, _ in _file_rows(fam, task.indices)} == {f"{task.name}.train"}
        # every line of the file, with its label
        assert len(task.indices) == 16
        for r, c in zip(task.indices.tolist(), task.labels.tolist()):
            assert fam.class_names[c].endswith(":positive") == ("great" in fam.corpus.texts[r])
    for task in fam.tasks("val"):
        assert {f for f, _ in _file_rows(fam, task.indices)} == {f"{task.name}.dev"}
    for task in fam.tasks("test"):
        assert task.fixed
        assert _file_rows(fam, task.support) == [(f"{task.name}.train", n) for n in range(1, 11)]
        assert _file_rows(fam, task.query) == [(f"{task.name}.test", n) for n in range(1, 11)]
    # The sampler returns the fixed support/query as they are, never resampled.
    sampler = EpisodeSampler(fam, "test", EpisodeSpec(2, 5, 5), seed=0)
    tasks = {t.name: t for t in fam.tasks("test")}
    for i in range(6):
        e = sampler.sample(i)
        task = tasks[e.task]
        assert e.support_idx.tolist() == task.support.tolist() and e.query_idx.tolist() == task.query.tolist()
        assert e.classes == [f"{e.task}:negative", f"{e.task}:positive"]
        for r, y in zip(e.support_idx.tolist() + e.query_idx.tolist(), e.support_y.tolist() + e.query_y.tolist()):
            assert y == ("great" in fam.corpus.texts[r])


def test_training_episodes_are_two_way_within_one_task(tmp_path):
    fam = arsc(str(make_arsc_dir(tmp_path / "arsc")), n_shot=3, n_query=2)
    sampler = EpisodeSampler(fam, "train", EpisodeSpec(2, 3, 2), seed=0)
    for i in range(10):
        e = sampler.sample(i)
        assert sorted(e.classes) == [f"{e.task}:negative", f"{e.task}:positive"]
        assert len(e.support_idx) == 6 and len(e.query_idx) == 4
        assert all(fam.corpus.origins[r].rsplit(":", 1)[0].endswith(f"{e.task}.train")
                   for r in e.support_idx.tolist() + e.query_idx.tolist())


def test_task_weights_draw_matching_training_tasks_more_often(tmp_path):
    fam = arsc(str(make_arsc_dir(tmp_path / "arsc", thresholds=("t2", "t4", "t5"))), n_shot=3, n_query=2)

    def share(weights, suffix):
        sampler = EpisodeSampler(fam, "train", EpisodeSpec(2, 3, 2), seed=0, task_weights=weights)
        return np.mean([sampler.sample(i).task.endswith(suffix) for i in range(600)])

    # 9 equal-sized tasks, 3 of them t5: 1/3 by size; x3 gives 3 * 3 / (3 * 3 + 6) = 0.6.
    assert share(None, ".t5") == pytest.approx(1 / 3, abs=0.05)
    assert share({"*.t5": 3}, ".t5") == pytest.approx(0.6, abs=0.05)
    # Factors multiply: apparel.t5 weighs 3 * 0.5 against a total of 2 * 0.5 + 1.5 + 2 * (2 + 3) = 12.5.
    assert share({"*.t5": 3, "apparel.*": 0.5}, "apparel.t5") == pytest.approx(1.5 / 12.5, abs=0.04)


@pytest.mark.parametrize("weights, message", [
    ({"*.t3": 2}, r"episodes.task_weights\['\*.t3'\]: the glob matches no 'train' task of family 'arsc'; "
                  r"its tasks are apparel.t2, apparel.t5"),
    ({"*.t5": 0}, r"episodes.task_weights\['\*.t5'\] = 0: the factor must be a number > 0"),
])
def test_task_weights_refuse_a_glob_matching_nothing_or_a_bad_factor(tmp_path, weights, message):
    fam = arsc(str(make_arsc_dir(tmp_path / "arsc", thresholds=("t2", "t5"))), n_shot=3, n_query=2)
    with pytest.raises(DataError, match=message):
        EpisodeSampler(fam, "train", EpisodeSpec(2, 3, 2), seed=0, task_weights=weights)


def test_reading_never_modifies_the_data_dir(tmp_path, monkeypatch):
    root = make_arsc_dir(tmp_path / "arsc")
    before = _snapshot(root)
    for p in root.iterdir():
        p.chmod(0o444)
    root.chmod(0o555)
    # As root (CI) the modes above stop no write, and a file written and then deleted would leave
    # the snapshot as it was: every open for writing under the data dir fails the test instead.
    import builtins

    real_open, real_os_open = builtins.open, os.open
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def under_root(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(root.resolve())
        except (TypeError, ValueError):
            return False  # a file descriptor, not a path

    def guarded_open(file, mode="r", *args, **kwargs):
        if under_root(file) and any(c in mode for c in "wax+"):
            raise AssertionError(f"the ARSC reader opened {file} for writing (mode {mode!r})")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if under_root(path) and flags & writes:
            raise AssertionError(f"the ARSC reader opened {path} for writing (flags {flags:#o})")
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    try:
        arsc(str(root))
        arsc(str(root), lenient=True, max_per_class=3)
    finally:
        root.chmod(0o755)
    assert _snapshot(root) == before


def test_missing_train_files_one_warning_or_strict_error(tmp_path, caplog):
    root = make_arsc_dir(tmp_path / "arsc", thresholds=("t2", "t4"), skip=("baby.t2.train", "baby.t4.train"))
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fam = arsc(str(root), thresholds=["t2", "t4"])
    missing = [m for m in caplog.messages if "missing" in m]
    assert len(missing) == 1
    assert "baby.t2.train" in missing[0] and "baby.t4.train" in missing[0] and "strict" in missing[0]
    assert [t.name for t in fam.tasks("train")] == ["apparel.t2", "apparel.t4", "beauty.t2", "beauty.t4"]
    assert fam.metadata["missing_files"] == [str(root / "baby.t2.train"), str(root / "baby.t4.train")]
    with pytest.raises(DataError, match=r"2 listed files are missing \(strict=true\): baby.t2.train, baby.t4.train"):
        arsc(str(root), thresholds=["t2", "t4"], strict=True)


def test_fallback_without_target_list_holds_out_domains(tmp_path, caplog):
    root = make_arsc_dir(tmp_path / "arsc", filtered=("apparel", "baby", "beauty", "camera_photo"), targets=())
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fam = arsc(str(root), holdout_domains=["beauty", "camera_photo"], n_shot=3)
    warning = [m for m in caplog.messages if "workspace.target.list" in m]
    assert len(warning) == 1 and "NOT the official" in warning[0] and "['beauty', 'camera_photo']" in warning[0]
    assert fam.metadata["protocol"] == "fallback"
    assert [t.name for t in fam.tasks("train")] == ["apparel.t2", "baby.t2"]
    assert [t.name for t in fam.tasks("test")] == ["beauty.t2", "camera_photo.t2"]
    again = arsc(str(root), holdout_domains=["beauty", "camera_photo"], n_shot=3)
    for task, same in zip(fam.tasks("test"), again.tasks("test")):
        # support: n_shot per class from .train, fixed by the data seed; queries: the whole .test file
        assert np.bincount(fam.corpus.labels[task.support]).tolist() == [3, 3]
        assert {f for f, _ in _file_rows(fam, task.support)} == {f"{task.name}.train"}
        assert _file_rows(fam, task.query) == [(f"{task.name}.test", n) for n in range(1, 9)]
        assert _file_rows(fam, task.support) == _file_rows(again, same.support)
    other = arsc(str(root), holdout_domains=["beauty", "camera_photo"], n_shot=3, seed=1)
    assert any(_file_rows(fam, a.support) != _file_rows(other, b.support)
               for a, b in zip(fam.tasks("test"), other.tasks("test")))


def test_fallback_default_holdout_and_unknown_domains(tmp_path):
    root = make_arsc_dir(tmp_path / "arsc", filtered=("apparel", "camera_photo", "health_personal_care"), targets=())
    fam = arsc(str(root))
    assert fam.metadata["holdout_domains"] == ["camera_photo", "health_personal_care"]
    assert [t.name for t in fam.tasks("train")] == ["apparel.t2"]
    with pytest.raises(DataError, match=r"holdout_domains \['books'\] not in .*workspace.filtered.list"):
        arsc(str(root), holdout_domains=["books"])
    with pytest.raises(DataError, match=r"domains \['nope'\] not in"):
        arsc(str(root), domains=["nope"])


def test_target_dir_and_target_domains_left_out_of_training(tmp_path, caplog):
    root = make_arsc_dir(tmp_path / "arsc", targets=())
    target = make_target_fixture(root, tmp_path / "target", ["beauty"], thresholds=["t2"], n_per_class=2)
    assert sorted(p.name for p in target.iterdir()) == ["beauty.t2.test", "beauty.t2.train", "workspace.target.list"]
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fam = arsc(str(root), target_dir=str(target))
    assert any("also in" in m and "left out of meta-training" in m for m in caplog.messages)
    assert fam.metadata["protocol"] == "official"
    assert [t.name for t in fam.tasks("train")] == ["apparel.t2", "baby.t2"]
    (task,) = fam.tasks("test")
    assert _file_rows(fam, task.support) == [("beauty.t2.train", n) for n in range(1, 5)]
    assert all(fam.corpus.origins[r].startswith(str(target)) for r in task.indices.tolist())
    with pytest.raises(DataError, match="has no workspace.target.list"):
        arsc(str(root), target_dir=str(tmp_path))


def test_domains_and_max_per_class_restrict_training(tmp_path):
    root = make_arsc_dir(tmp_path / "arsc")
    fam = arsc(str(root), domains=["baby"], max_per_class=3)
    assert [t.name for t in fam.tasks("train")] == ["baby.t2"]
    for split in ("train", "val"):
        (task,) = fam.tasks(split)
        assert np.bincount(fam.corpus.labels[task.indices]).tolist() == [3, 3]
    # targets are always read whole
    (test,) = fam.tasks("test")
    assert len(test.support) == 10 and len(test.query) == 10
    assert fam.tasks("train")[0].indices.tolist() == arsc(str(root), domains=["baby"], max_per_class=3) \
        .tasks("train")[0].indices.tolist()


def test_train_files_add_the_training_domains_test_files_only(tmp_path):
    # baby has no .train (like music/video in the shared copy): with .test it becomes a training task
    root = make_arsc_dir(tmp_path / "arsc", skip=("baby.t2.train",))
    base = arsc(str(root))
    assert [t.name for t in base.tasks("train")] == ["apparel.t2", "beauty.t2"]
    fam = arsc(str(root), train_files=["train", "test"])
    assert fam.metadata["train_files"] == ["train", "test"]
    by_name = {t.name: t for t in fam.tasks("train")}
    assert sorted(by_name) == ["apparel.t2", "baby.t2", "beauty.t2"]
    assert _file_rows(fam, by_name["apparel.t2"].indices) == \
        [("apparel.t2.train", n) for n in range(1, 17)] + [("apparel.t2.test", n) for n in range(1, 9)]
    assert _file_rows(fam, by_name["baby.t2"].indices) == [("baby.t2.test", n) for n in range(1, 9)]
    # meta-validation stays the .dev files; the target's files never reach meta-training
    assert {f for t in fam.tasks("val") for f, _ in _file_rows(fam, t.indices)} == \
        {"apparel.t2.dev", "baby.t2.dev", "beauty.t2.dev"}
    train_files = {f for t in fam.tasks("train") for f, _ in _file_rows(fam, t.indices)}
    assert not any(f.startswith("books.") for f in train_files)
    for bad in (["valid"], [], ["train", "train"]):
        with pytest.raises(DataError, match=r"train_files must be distinct names among \['train', 'test', 'dev'\]"):
            arsc(str(root), train_files=bad)


def test_train_files_with_dev_train_on_the_validation_files_and_say_so(tmp_path, caplog):
    root = make_arsc_dir(tmp_path / "arsc")
    with caplog.at_level(logging.WARNING, logger="metarec.data.arsc"):
        fam = arsc(str(root), train_files=["train", "test", "dev"])
    assert "val/acc is in-sample" in caplog.text
    by_name = {t.name: t for t in fam.tasks("train")}
    assert _file_rows(fam, by_name["apparel.t2"].indices) == [("apparel.t2.train", n) for n in range(1, 17)] + \
        [("apparel.t2.test", n) for n in range(1, 9)] + [("apparel.t2.dev", n) for n in range(1, 13)]
    val_rows = {r for t in fam.tasks("val") for r in _file_rows(fam, t.indices)}
    train_rows = {r for t in fam.tasks("train") for r in _file_rows(fam, t.indices)}
    assert val_rows and val_rows <= train_rows
    assert not any(f.startswith("books.") for f, _ in train_rows)


@pytest.mark.parametrize("line, reason", [
    (b"no tab in this line -1\n", "line without a tab"),
    (b"a neutral review\t0\n", "label outside the declared set"),
    (b"  \t1\n", "empty text"),
    (b"caf\xe9 review\t1\n", "non-UTF-8 byte 0xe9 at byte offset"),
])
def test_bad_lines_are_errors_naming_file_and_line_or_skipped_when_lenient(tmp_path, caplog, line, reason):
    root = make_arsc_dir(tmp_path / "arsc")
    bad = root / "baby.t2.train"
    bad.write_bytes(bad.read_bytes() + line)
    with pytest.raises(DataError) as e:
        arsc(str(root))
    assert f"{bad}, line 17" in str(e.value) and reason in str(e.value)
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fam = arsc(str(root), lenient=True)
    assert len(fam.tasks("train")[1].indices) == 16
    (report,) = fam.metadata["skipped_lines"]
    assert report["path"] == str(bad) and report["skipped"] == 1 and report["where"][0].startswith("line 17")
    assert sum("lenient read skipped 1 malformed lines" in m for m in caplog.messages) == 1


def test_class_with_too_few_examples(tmp_path, caplog):
    sizes = {"train": (3, 8), "dev": (6, 6), "test": (4, 4)}
    root = make_arsc_dir(tmp_path / "arsc", filtered=("apparel",), sizes=sizes)
    fam = arsc(str(root))  # no episode shape given: nothing dropped, the sampler says what is wrong
    with pytest.raises(DataError, match=r"n_shot \+ n_query = 5 \+ 5 = 10 .*'apparel.t2' .*'apparel.t2:negative' has 3"):
        EpisodeSampler(fam, "train", EpisodeSpec(2, 5, 5), seed=0)
    root2 = make_arsc_dir(tmp_path / "arsc2")
    (root2 / "apparel.t2.train").write_text(_lines("apparel", "t2", "train", 3, 8))
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fam = arsc(str(root2), thresholds=["t2"], n_shot=3, n_query=3)
    dropped = [m for m in caplog.messages if "dropped" in m]
    assert len(dropped) == 1 and "apparel.t2 (3 negative/8 positive)" in dropped[0]
    assert fam.metadata["dropped_tasks"] == {"train": ["apparel.t2 (3 negative/8 positive)"]}
    assert [t.name for t in fam.tasks("train")] == ["baby.t2", "beauty.t2"]
    assert [t.name for t in fam.tasks("val")] == ["apparel.t2", "baby.t2", "beauty.t2"]


def test_split_without_tasks_is_an_error(tmp_path):
    sizes = {"train": (3, 8), "dev": (6, 6), "test": (4, 4)}
    root = make_arsc_dir(tmp_path / "arsc", sizes=sizes)
    with pytest.raises(DataError, match=r"split 'train' has no tasks"):
        arsc(str(root), n_shot=5, n_query=5)


def test_target_support_needs_both_classes(tmp_path):
    root = make_arsc_dir(tmp_path / "arsc")
    (root / "books.t2.train").write_text(_lines("books", "t2", "train", 0, 10))
    with pytest.raises(DataError, match=r"target support .*books.t2.train must hold both classes, it has 0 negative"):
        arsc(str(root))


def test_not_an_arsc_dir(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="has no workspace.filtered.list"):
        arsc(str(tmp_path))


def test_per_task_table():
    records = [{"task": "books.t2", "acc": 0.8, "f1": 0.5, "n_query": 10}, {"task": "dvd.t2", "acc": 0.6, "f1": 0.3, "n_query": 20}]
    table = per_task_table(records)
    assert "| books.t2" in table and "80.0" in table and "mean over 2 tasks" in table and "70.0 ±" in table
    assert "macro-F1" in table and "50.0" in table and "40.0 ±" in table
    assert "—" in per_task_table([{k: v for k, v in r.items() if k != "f1"} for r in records])  # older records


# -- the shared copy of the real data ---------------------------------------------------------
def test_shared_arsc_training_domains(arsc_dir, caplog):
    before = _snapshot(arsc_dir)
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fam = arsc(str(arsc_dir))
    missing = [m for m in caplog.messages if "missing" in m]
    assert len(missing) == 1
    for d in ("music", "video"):
        for t in ("t2", "t4", "t5"):
            assert f"{d}.{t}.train" in missing[0]
    assert any("NOT the official" in m for m in caplog.messages)
    filtered = (arsc_dir / "workspace.filtered.list").read_text().split()
    expected = [f"{d}.{t}" for d in filtered for t in ("t2", "t4", "t5")
                if d not in ("music", "video", "camera_photo", "health_personal_care")]
    assert [t.name for t in fam.tasks("train")] == expected
    assert len(expected) == 45
    assert fam.corpus.label_map == {"-1": "negative", "1": "positive"}
    assert fam.class_names[:2] == ["apparel.t2:negative", "apparel.t2:positive"]
    with pytest.raises(DataError, match="music.t2.train"):
        arsc(str(arsc_dir), strict=True)
    assert _snapshot(arsc_dir) == before


# -- the development protocol (held-out domains, fixed supports from a split file) ------------
def _dev_dir(tmp_path):
    sizes = {"train": (8, 8), "dev": (6, 6), "test": (5, 7)}
    return make_arsc_dir(tmp_path / "arsc", filtered=("apparel", "baby", "beauty", "camera_photo", "dvd"),
                         targets=(), thresholds=("t2", "t4"), sizes=sizes, skip=("dvd.t4.test",))


def test_dev_split_holds_out_domains_with_fixed_supports(tmp_path):
    import json

    from metarec.data.arsc import make_dev_split

    root = _dev_dir(tmp_path)
    split = make_dev_split(root, n_domains=2, min_test=10, thresholds=("t2", "t4"), seed=0)
    # dvd lacks a .test file for t4: not eligible.
    assert split["eligible_domains"] == ["apparel", "baby", "beauty", "camera_photo"]
    assert split == make_dev_split(root, n_domains=2, min_test=10, thresholds=("t2", "t4"), seed=0)
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(split))
    fam = arsc(str(root), thresholds=["t2", "t4"], dev_split=str(path))
    held = split["holdout_domains"]
    assert fam.metadata["protocol"] == "dev" and fam.metadata["test_domains"] == held
    assert not {t.name.split(".")[0] for t in fam.tasks("train") + fam.tasks("val")} & set(held)
    assert sorted(t.name for t in fam.tasks("test")) == sorted(split["supports"])  # the loop checks every one
    for task in fam.tasks("test"):
        entry = split["supports"][task.name]
        assert _file_rows(fam, task.support) == [(entry["file"], n) for n in entry["lines"]]
        assert np.bincount(fam.corpus.labels[task.support]).tolist() == [5, 5]
        assert _file_rows(fam, task.query) == [(f"{task.name}.test", n) for n in range(1, 13)]
    with pytest.raises(DataError, match=r"only 4 domains .* 5 requested"):
        make_dev_split(root, n_domains=5, min_test=10, thresholds=("t2", "t4"))


def test_oracle_heldout_train_adds_the_held_out_train_files_only_and_says_so(tmp_path, caplog):
    import json

    from metarec.data.arsc import make_dev_split

    root = _dev_dir(tmp_path)
    split = make_dev_split(root, n_domains=2, min_test=10, thresholds=("t2", "t4"), seed=0)
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(split))
    plain = arsc(str(root), thresholds=["t2", "t4"], dev_split=str(path))
    with caplog.at_level(logging.WARNING, logger="metarec.data.arsc"):
        fam = arsc(str(root), thresholds=["t2", "t4"], dev_split=str(path), oracle_heldout_train=True)
    held = split["holdout_domains"]
    added = sorted(t.name for t in fam.tasks("train"))
    assert added == sorted([t.name for t in plain.tasks("train")] + [f"oracle-{d}.{t}" for d in held for t in ("t2", "t4")])
    assert "in-domain ceiling, not a few-shot result" in caplog.text
    assert fam.metadata["oracle_heldout_train"] is True and plain.metadata["oracle_heldout_train"] is False
    for task in fam.tasks("train"):
        if task.name.startswith("oracle-"):  # every line of the held-out .train file, nothing of its .test
            assert _file_rows(fam, task.indices) == [(f"{task.name[len('oracle-'):]}.train", n) for n in range(1, 17)]
    # the test tasks, their supports and queries are those of the plain protocol
    assert [(t.name, _file_rows(fam, t.support), _file_rows(fam, t.query)) for t in fam.tasks("test")] == \
        [(t.name, _file_rows(plain, t.support), _file_rows(plain, t.query)) for t in plain.tasks("test")]
    assert [t.name for t in fam.tasks("val")] == [t.name for t in plain.tasks("val")]
    capped = arsc(str(root), thresholds=["t2", "t4"], dev_split=str(path), oracle_heldout_train=True, max_per_class=3)
    for task in capped.tasks("train"):  # max_per_class caps the oracle's files like every training file
        if task.name.startswith("oracle-"):
            assert np.bincount(capped.corpus.labels[task.indices]).tolist() == [3, 3]
    with pytest.raises(DataError, match="oracle_heldout_train=true .* only the development protocol"):
        arsc(str(root), thresholds=["t2", "t4"], oracle_heldout_train=True, holdout_domains=["apparel"])


def test_dev_split_refuses_changed_data_and_bad_files(tmp_path):
    import json

    from metarec.data.arsc import make_dev_split

    root = _dev_dir(tmp_path)
    split = make_dev_split(root, n_domains=2, min_test=10, thresholds=("t2", "t4"), seed=0)
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(split))
    task = sorted(split["supports"])[0]
    line = split["supports"][task]["lines"][0]
    f = root / f"{task}.train"
    rows = f.read_text().splitlines(keepends=True)
    rows[line - 1] = "an edited review\t-1\n"
    f.write_text("".join(rows))
    with pytest.raises(DataError, match=rf"{task}.train, line {line} differs from the line dev_split"):
        arsc(str(root), thresholds=["t2", "t4"], dev_split=str(path))
    with pytest.raises(DataError, match=r"drawn for thresholds \['t2', 't4'\]"):
        arsc(str(root), thresholds=["t2"], dev_split=str(path))
    (tmp_path / "broken.json").write_text('{"format": 1,\n oops')
    with pytest.raises(DataError, match=r"broken.json, line 2: not valid JSON"):
        arsc(str(root), dev_split=str(tmp_path / "broken.json"))
    with pytest.raises(FileNotFoundError, match="dev_split .*missing.json does not exist"):
        arsc(str(root), dev_split=str(tmp_path / "missing.json"))


def test_committed_dev_split_is_the_one_the_shared_data_gives(arsc_dir):
    """splits/arsc_dev.json is what make_dev_split draws from the shared ARSC copy."""
    import json

    from metarec.data.arsc import make_dev_split
    shared = arsc_dir  # the bundled copy: the same files as the shared one the split was drawn from

    committed = json.loads((config_dir() / "splits/arsc_dev.json").read_text())
    assert make_dev_split(shared, seed=committed["seed"]) == committed
    fam = arsc(str(shared), dev_split=str(config_dir() / "splits/arsc_dev.json"))
    assert [t.name for t in fam.tasks("test")] == sorted(committed["supports"])
    assert all(len(t.support) == 10 for t in fam.tasks("test"))

"""Interactions readers (RecBole atomic, MovieLens ml-100k), bad input, and the MeLU four-state split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from metarec.recsys.datamodule import TrainTasks
from metarec.recsys.family import ColdStartFamily
from metarec.recsys.split import STATES, SplitSpec, make_split
from metarec.data.corpus import DataError
from metarec.recsys.interactions import load_interactions
from metarec.data.readers import LineError

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "coldstart"
RECBOLE, ML = FIX / "recbole", FIX / "ml100k"
TINY = dict(cut=1000, new_items="release_year", item_year_cut=1997, min_ratings=3, max_ratings=100, n_query=2)


def _copy(tmp_path: Path, src: Path = RECBOLE) -> Path:
    d = tmp_path / src.name
    shutil.copytree(src, d)
    return d


def _append(path: Path, line: str) -> int:
    text = path.read_text()
    path.write_text(text + line + "\n")
    return text.count("\n") + 1  # the new line's number


# -- readers --------------------------------------------------------------------------------------
def test_both_formats_read_the_same_interactions_and_features():
    a, b = load_interactions(RECBOLE), load_interactions(ML)
    assert len(a) == len(b) == 68 and a.n_users == b.n_users == 8 and a.n_items == b.n_items == 10
    for x, y in ((a.user_ids, b.user_ids), (a.item_ids, b.item_ids)):
        assert x == y
    np.testing.assert_array_equal(a.rating, b.rating)
    np.testing.assert_array_equal(a.timestamp, b.timestamp)
    for f in ("movie_title", "release_year", "class"):
        assert a.item_features[f] == b.item_features[f], f
    for f in ("age", "gender", "occupation"):
        assert a.user_features[f] == b.user_features[f], f
    assert "Café au lait" in b.item_features["movie_title"]  # u.item is latin-1
    assert a.origins[0].endswith("tiny.inter:2")


@pytest.mark.parametrize("line, reason", [
    ("99\t1\t4\t500", "unknown user_id"),
    ("1\t99\t4\t500", "unknown item_id"),
    ("1\t5\t6\t500", r"rating outside the declared range \[1, 5\]"),
    ("1\t5\t0.5\t500", r"rating outside the declared range \[1, 5\]"),
    ("1\t1\t2\t999", r"duplicate \(user_id, item_id\) pair, first on line 2"),
    ("1\t5\tgood\t500", "rating is not a number"),
    ("1\t5\t4", "3 tab-separated values, the header has 4"),
])
def test_bad_interaction_lines_are_errors_naming_file_line_and_value(tmp_path, line, reason):
    d = _copy(tmp_path)
    n = _append(d / "tiny.inter", line)
    with pytest.raises(LineError, match=rf"tiny.inter, line {n}: {reason}") as e:
        load_interactions(d)
    assert e.value.line == n


def test_lenient_read_skips_and_counts_bad_lines(tmp_path):
    d = _copy(tmp_path)
    for line in ("99\t1\t4\t500", "1\t5\t6\t500", "1\t1\t2\t999"):
        _append(d / "tiny.inter", line)
    data = load_interactions(d, lenient=True)
    assert len(data) == 68
    summary = data.read_summary()
    assert summary["skipped_lines"] == {str(d / "tiny.inter"): 3}
    assert any("unknown user_id" in w for w in summary["skipped_where"])


def test_declared_rating_range_is_configurable(tmp_path):
    with pytest.raises(LineError, match="outside the declared range"):
        load_interactions(RECBOLE, rating_max=4)
    with pytest.raises(LineError, match="outside the declared range"):
        load_interactions(RECBOLE, rating_min=2)
    # a 0-10 scale: a rating of 8 is refused under the default 1-5 range, read with the range declared
    d = _copy(tmp_path)
    inter = d / "tiny.inter"
    inter.write_text(inter.read_text().replace("\n1\t1\t3\t110\n", "\n1\t1\t8\t110\n", 1))
    with pytest.raises(LineError, match=r"tiny.inter, line 2: .*outside the declared range"):
        load_interactions(d)
    assert len(load_interactions(d, rating_min=0, rating_max=10)) == len(load_interactions(RECBOLE))


def test_movielens_bad_lines_name_file_and_line(tmp_path):
    d = _copy(tmp_path, ML)
    n = _append(d / "u.data", "1\t1\t2")
    with pytest.raises(LineError, match=rf"u.data, line {n}: 3 values"):
        load_interactions(d)
    d2 = _copy(tmp_path / "b", ML)
    n = _append(d2 / "u.data", "3\t2\t4\t777")
    with pytest.raises(LineError, match=rf"u.data, line {n}: duplicate"):
        load_interactions(d2)


def test_missing_header_field_and_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_interactions(tmp_path / "nope")
    with pytest.raises(DataError, match="no field 'score'"):
        load_interactions(RECBOLE, rating_field="score")


# -- the four-state split ------------------------------------------------------------------------
def test_states_follow_the_cut_and_release_year():
    split = make_split(load_interactions(RECBOLE), SplitSpec(**TINY))
    assert sorted(t.user for t in split.train) == [0, 1, 2, 3]
    assert {s: len(v) for s, v in split.test.items()} == {
        "existing/existing": 4, "existing/new": 4, "new/existing": 4, "new/new": 4}
    for state, tasks in split.test.items():
        for t in tasks:
            assert len(t.query) == 2 and len(t.support) == len(t.rows) - 2, state
    assert split.filter_report["existing_users"] == 4 and split.filter_report["new_items_count"] == 3


def test_validation_users_are_disjoint_and_leave_the_test_users_unchanged():
    data = load_interactions(RECBOLE)
    # min_ratings=4: the existing users' post-cut states (3 ratings each) are empty, so every
    # training user is a candidate; with the default, every training user is also a test user.
    spec = {**TINY, "min_ratings": 4}
    base, split = make_split(data, SplitSpec(**spec)), make_split(data, SplitSpec(**spec, val_users=0.5))
    val = {t.user for t in split.val}
    tested = {t.user for tasks in split.test.values() for t in tasks}
    assert len(val) == 2 and {t.state for t in split.val} == {"val"}
    assert not val & tested and not val & {t.user for t in split.train}
    assert sorted(val | {t.user for t in split.train}) == [t.user for t in base.train]
    assert not np.isin(split.train_rows(), np.concatenate([t.rows for t in split.val])).any()
    for t in split.val:
        assert len(t.query) == 2 and sorted([*t.support, *t.query]) == list(t.rows)
    for state in STATES:  # same test users, same support/query draws
        assert [(t.user, t.support.tolist(), t.query.tolist()) for t in split.test[state]] == \
               [(t.user, t.support.tolist(), t.query.tolist()) for t in base.test[state]]
    with pytest.raises(DataError, match="disjoint from test users"):
        make_split(data, SplitSpec(**TINY, val_users=0.5))  # every training user is a test user there
    with pytest.raises(ValueError, match="val_users"):
        SplitSpec(**TINY, val_users=1.0)


def _assert_no_leakage(data, split) -> None:
    train_rows = split.train_rows()
    train_pairs = set(zip(data.user[train_rows].tolist(), data.item[train_rows].tolist()))
    train_items = set(data.item[train_rows].tolist())
    train_users = set(data.user[train_rows].tolist())
    assert (data.timestamp[train_rows] < split.cut).all()
    # An empty test split would pass every check below without checking anything.
    assert sum(len(tasks) for tasks in split.test.values()) > 0, split.filter_report
    for state, tasks in split.test.items():
        user_new, item_new = state.split("/")[0] == "new", state.split("/")[1] == "new"
        for t in tasks:
            assert not set(t.query.tolist()) & set(t.support.tolist())
            q_items = set(data.item[t.query].tolist())
            assert not q_items & set(data.item[t.support].tolist()), "a query item is also in the support"
            assert not {(t.user, i) for i in q_items} & train_pairs, "a query rating is in the training data"
            if item_new:
                assert not q_items & train_items, "a new item appears in training"
            if user_new:
                assert t.user not in train_users, "a new user appears in training"
            else:
                assert (data.timestamp[t.rows] >= split.cut).all() or item_new


def test_no_query_leaks_into_support_or_training():
    data = load_interactions(RECBOLE)
    _assert_no_leakage(data, make_split(data, SplitSpec(**TINY)))
    _assert_no_leakage(data, make_split(data, SplitSpec(**{**TINY, "new_items": "first_rating", "min_ratings": 3})))


def test_no_leakage_on_embedded_ml100k():
    from metarec.recsys.interactions import recbole_ml100k_dir

    try:
        d = recbole_ml100k_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    data = load_interactions(d)
    assert (len(data), data.n_users, data.n_items) == (100000, 943, 1682)
    split = make_split(data, SplitSpec(cut=0.8, new_items="release_year", item_year_cut=1997))
    _assert_no_leakage(data, split)
    assert all(split.test[state] for state in split.test), {k: len(v) for k, v in split.test.items()}
    assert all(13 <= len(t.rows) <= 100 for ts in split.test.values() for t in ts)
    assert split.filter_report["train"]["users_too_many"] > 0  # heavy raters: counted, not silently dropped


def test_training_episodes_draw_only_training_rows():
    fam = ColdStartFamily(data_dir=str(RECBOLE), user_fields=["age", "gender"], item_fields=["release_year"],
                          item_multi_fields=["class"], item_text_fields=["movie_title"], split=TINY)
    import torch

    table = fam.feature_table(torch.zeros(fam.data.n_items, 4))
    ds = TrainTasks(fam, table, seed=0)
    allowed = set(zip(fam.data.user[fam.split.train_rows()].tolist(), fam.data.item[fam.split.train_rows()].tolist()))
    uid = {u: i for i, u in enumerate(fam.data.user_ids)}
    for i in range(20):
        ep = ds[i]
        u = uid[ep.user]
        items = ep.support_items.tolist() + ep.query_items.tolist()
        assert {(u, it) for it in items} <= allowed
        assert len(ep.query_items) == 2 and not set(ep.query_items.tolist()) & set(ep.support_items.tolist())
    assert ds[3].fingerprint() == ds[3].fingerprint() and ds[3].fingerprint() != ds[4].fingerprint()


def test_too_few_and_too_many_ratings_are_counted_not_silent():
    data = load_interactions(RECBOLE)
    split = make_split(data, SplitSpec(**{**TINY, "min_ratings": 4}))  # states with 3 ratings per user drop everyone
    rep = split.filter_report
    assert rep["existing/new"] == {"users_kept": 0, "users_too_few": 4, "users_too_many": 0, "ratings": 12,
                                   "ratings_in_kept_tasks": 0}
    assert rep["new/existing"]["users_kept"] == 4
    with pytest.raises(DataError, match="no training user with 3-3 ratings"):  # all 4 have 4 training ratings
        make_split(data, SplitSpec(**{**TINY, "max_ratings": 3}))


def test_inconsistent_sizes_and_empty_training_are_errors():
    data = load_interactions(RECBOLE)
    with pytest.raises(ValueError, match="leaves no support item"):
        make_split(data, SplitSpec(**{**TINY, "min_ratings": 2}))
    with pytest.raises(DataError, match="no training user"):
        make_split(data, SplitSpec(**{**TINY, "min_ratings": 5}))
    with pytest.raises(ValueError, match="item_year_cut"):
        make_split(data, SplitSpec(**{**TINY, "item_year_cut": None}))
    with pytest.raises(ValueError, match="cut must be"):
        make_split(data, SplitSpec(**{**TINY, "cut": "yesterday"}))


def test_unknown_feature_field_is_an_error():
    with pytest.raises(DataError, match=r"user field\(s\) \['income'\]"):
        ColdStartFamily(data_dir=str(RECBOLE), user_fields=["income"], split=TINY)


def test_split_options_are_checked_before_reading_and_named():
    with pytest.raises(ValueError, match=r"unknown option\(s\) family.split.min_rating; known: cut, "):
        ColdStartFamily(data_dir=str(RECBOLE / "nope"), split={**TINY, "min_rating": 3})
    with pytest.raises(ValueError, match="new_items must be"):
        ColdStartFamily(data_dir=str(RECBOLE / "nope"), split={**TINY, "new_items": "release_date"})
    assert ColdStartFamily(data_dir=str(RECBOLE), split=SplitSpec(**TINY)).n_query == 2

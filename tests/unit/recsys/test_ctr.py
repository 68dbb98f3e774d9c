"""The ctr_coldstart family: streamed reader and bad input, the old/new item split (no leakage, warm-up
before query), AUC / log-loss against hand computations, and every CTR method on a tiny log."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from metarec.data.readers import LineError
from metarec.recsys.ctr.datamodule import CTRDataModule, TrainStream
from metarec.recsys.ctr.family import CTRColdStartFamily
from metarec.recsys.ctr.log import read_click_log
from metarec.recsys.ctr.metrics import auc, item_resamples, log_loss, weighted_auc, weighted_log_loss
from metarec.recsys.ctr.split import PHASE_QUERY
from metarec.registry import CTR_METHODS

K = 2  # k_shot of the fixture


def _write_log(d: Path, label: bool = False) -> Path:
    """8 users; items 1-4 released 1990 (old, 8 rows each), 5-7 released 1998 (new, 8/8/3 rows).

    New items' rows are written in reverse time order, so time order is not file order.
    """
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    head = "user_id:token\titem_id:token\trating:float\ttimestamp:float" + ("\tlabel:float" if label else "")
    lines = [head]
    for item, n in ((1, 8), (2, 8), (3, 8), (4, 8), (5, 8), (6, 8), (7, 3)):
        rows = [(u, item, int(rng.integers(1, 6)), 1000 + 10 * u + item) for u in range(1, n + 1)]
        if item >= 5:
            rows = rows[::-1]
        for u, i, r, t in rows:
            lines.append(f"{u}\t{i}\t{r}\t{t}" + (f"\t{int(r >= 4)}" if label else ""))
    (d / "tiny.inter").write_text("\n".join(lines) + "\n")
    (d / "tiny.user").write_text("user_id:token\tage:token\n" + "".join(f"{u}\t{20 + u}\n" for u in range(1, 9)))
    (d / "tiny.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\tMovie {i}\t{1990 if i <= 4 else 1998}\t{'Drama' if i % 2 else 'Comedy Drama'}\n" for i in range(1, 8)))
    return d


def _family(d: Path, **kw) -> CTRColdStartFamily:
    args = dict(data_dir=str(d), item_year_cut=1997, k_shot=K, min_query=1, user_fields=["age"],
                item_fields=["release_year"], item_multi_fields=["class"], item_text_fields=["movie_title"])
    args.update(kw)
    return CTRColdStartFamily(**args)


@pytest.fixture()
def fam(tmp_path: Path) -> CTRColdStartFamily:
    return _family(_write_log(tmp_path / "log"))


# -- reader ------------------------------------------------------------------------------------------------
def test_click_rule_and_label_field_agree_and_chunks_do_not_change_the_arrays(tmp_path):
    d = _write_log(tmp_path / "a", label=True)
    by_rule = read_click_log(d, click_threshold=4)
    by_label = read_click_log(d, label_field="label")
    tiny_chunks = read_click_log(d, click_threshold=4, chunk_rows=3)
    np.testing.assert_array_equal(by_rule.click, by_label.click)
    for a in ("user", "item", "click", "time", "line"):
        np.testing.assert_array_equal(getattr(by_rule, a), getattr(tiny_chunks, a))
    assert len(by_rule) == 51 and by_rule.line[0] == 2 and by_rule.click.dtype == np.float32
    assert by_rule.item_features["release_year"][by_rule.item_ids.index("5")] == "1998"


@pytest.mark.parametrize("line, reason, kw", [
    ("1\t1\t4", "3 tab-separated values, expected 4", {}),
    ("1\t1\tgood\t500", "rating is not a number", {}),
    ("1\t1\t4\tnoon", "timestamp is not a number", {}),
    ("1\t1\t6\t500", r"rating outside the declared range \[1, 5\]", {}),
    ("99\t1\t4\t500", "unknown user_id", {}),
    ("1\t99\t4\t500", "unknown item_id", {}),
    ("1\t1\t4\t500\t2", "label is not 0 or 1", {"label": True}),
])
def test_bad_lines_are_file_line_errors_or_counted_skips(tmp_path, line, reason, kw):
    d = _write_log(tmp_path / "log", label=bool(kw))
    path = d / "tiny.inter"
    n = path.read_text().count("\n") + 1
    path.write_text(path.read_text() + line + "\n")
    opts = {"label_field": "label"} if kw else {}
    with pytest.raises(LineError, match=reason) as e:
        read_click_log(d, **opts)
    assert f"{path}, line {n}:" in str(e.value)
    log = read_click_log(d, lenient=True, **opts)
    rep = next(r for r in log.report if r.path == str(path))
    assert rep.n_skipped == 1 and rep.skipped[0].line == n and reason.split(" ")[0].strip("\\") in rep.skipped[0].reason
    assert len(log) == 51 and log.read_summary()["skipped_lines"] == {str(path): 1}


def test_non_utf8_byte_is_a_line_error(tmp_path):
    d = _write_log(tmp_path / "log")
    path = d / "tiny.inter"
    path.write_bytes(path.read_bytes() + b"1\t1\t4\t5\xff0\n")
    with pytest.raises(LineError, match=r"line 53: non-UTF-8 byte"):
        read_click_log(d)
    assert len(read_click_log(d, lenient=True)) == 51


# -- split -------------------------------------------------------------------------------------------------
def test_no_test_item_interaction_reaches_training(fam):
    d, s = fam.data, fam.split
    test_items = set(s.test_items.tolist())
    assert [d.item_ids[i] for i in s.test_items] == ["5", "6"]  # item 7 has 3 < 3k + 1 rows: counted, unused
    assert s.report["new_items_too_few"] == 1 and s.report["new_item_rows_unused"] == 3
    assert not test_items & set(d.item[s.train_rows].tolist())
    assert not set(s.test_rows.tolist()) & set(s.train_rows.tolist())
    assert not fam.split.new_item[d.item[s.train_rows]].any()
    table = fam.feature_table(torch.zeros(d.n_items, 3))
    stream = TrainStream(fam, table, base_steps=20, meta_steps=20, batch_size=8, meta_batch_size=3, seed=0)
    seen = set()
    for i in range(len(stream)):
        b = stream[i]
        seen |= set(b["item"].tolist())
    assert seen and not seen & test_items and not seen & {d.item_ids.index("7")}


def test_validation_items_leave_training_and_new_items_leave_everything(tmp_path):
    d = _write_log(tmp_path / "log")
    fam = _family(d, val_items=0.5, evaluate="validation", split_seed=1)
    data, s = fam.data, fam.split
    val = set(s.test_items.tolist())
    assert len(val) == 2 and not fam.split.new_item[s.test_items].any()  # 2 of the 4 old items
    used = set(data.item[s.train_rows].tolist())
    assert not val & used and not used & set(np.flatnonzero(fam.split.new_item).tolist())
    assert s.report["validation_items"] == 2 and s.report["train_rows"] == 16
    with pytest.raises(ValueError, match="val_items"):
        _family(d, evaluate="validation")


def test_warmup_batches_precede_the_query_in_time(fam):
    d, s = fam.data, fam.split
    assert len(s.test_items) == 2  # the loop below checks both test items
    for t in range(len(s.test_items)):
        sel = s.test_task == t
        times, phase = d.time[s.test_rows[sel]], s.test_phase[sel]
        assert [int((phase == p).sum()) for p in range(PHASE_QUERY)] == [K, K, K]
        for p in range(PHASE_QUERY):
            assert times[phase == p].max() <= times[phase > p].min()
        # The file lists these items newest first: time order, not file order, decides.
        assert (np.diff(times) >= 0).all() and (np.diff(d.line[s.test_rows[sel]]) < 0).all()


# -- metrics -----------------------------------------------------------------------------------------------
def test_auc_and_log_loss_match_hand_computation():
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2])
    y = np.array([1, 1, 0, 0, 1])
    # Positive-negative pairs ranked right: 0.9 and 0.8 beat both negatives, 0.2 beats none -> 4 of 6.
    assert auc(p, y) == pytest.approx(4 / 6)
    assert log_loss(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.7) + math.log(0.4)
                                             + math.log(0.2)) / 5)
    # A tie between a positive and a negative counts half: pairs (0.5+, 0.5-) -> 0.5, (0.5+, 0.1-) -> 1.
    assert auc(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0])) == pytest.approx(0.75)
    assert weighted_auc(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0]), np.ones((1, 3)))[0] == pytest.approx(0.75)
    assert math.isnan(auc(p, np.ones(5)))


def test_weighted_metrics_equal_recomputation_on_resampled_rows():
    rng = np.random.default_rng(1)
    p = np.round(rng.random(60), 1)  # many ties
    y = (rng.random(60) < 0.4).astype(float)
    item = np.repeat(np.arange(12), 5)
    counts = item_resamples(12, 4, seed=3)
    wa = weighted_auc(p, y, counts[:, item])
    wl = weighted_log_loss(p, y, counts[:, item])
    for r in range(4):
        idx = np.concatenate([np.flatnonzero(item == j) for j in range(12) for _ in range(int(counts[r, j]))])
        assert wa[r] == pytest.approx(auc(p[idx], y[idx]))
        assert wl[r] == pytest.approx(log_loss(p[idx], y[idx]))


# -- methods -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CTR_METHODS.list())
def test_every_method_predicts_every_phase_on_the_same_items(fam, tmp_path, name):
    torch.manual_seed(0)
    table = fam.feature_table(torch.randn(fam.data.n_items, 6))
    model = CTR_METHODS.create(name, schema=table.schema(), item_cat=table.item_cat, item_multi=table.item_multi,
                               item_text=table.item_text, train_ctr=fam.train_ctr(), emb_dim=4, hidden=[8],
                               base_steps=4, meta_steps=3)
    dm = CTRDataModule(fam, table, base_steps=model.base_steps, meta_steps=model.meta_steps, batch_size=8,
                       meta_batch_size=2)
    trainer = L.Trainer(max_steps=max(model.total_steps, 1), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
                        default_root_dir=str(tmp_path))
    if model.trains:
        before = model.base.top.weight.detach().clone()
        trainer.fit(model, datamodule=dm)
        assert trainer.global_step == model.total_steps
        assert not torch.equal(before, model.base.top.weight)
    trainer.test(model, datamodule=dm, verbose=False)
    recs = model.test_records
    assert [r["item"] for r in recs] == ["5", "6"]
    for r in recs:
        assert r["n_query"] == 2 and len(r["click"]) == 2
        for ph in ("cold", "a", "b", "c"):
            assert len(r[f"p_{ph}"]) == 2 and all(0.0 < v < 1.0 for v in r[f"p_{ph}"])
    if name == "ctr_popularity":
        # Cold: the training click rate; after a: (clicks_a + 10 * ctr) / (2 + 10).
        assert recs[0]["p_cold"][0] == pytest.approx(fam.train_ctr(), abs=1e-5)
        sel = fam.split.test_task == 0
        clicks_a = fam.data.click[fam.split.test_rows[sel]][:K].sum()
        assert recs[0]["p_a"][0] == pytest.approx((clicks_a + 10 * fam.train_ctr()) / (K + 10), abs=1e-5)

"""The feature cache on disk: memory-mapped and in-RAM reads agree bit for bit, corrupt or
concurrent caches are handled, and the build logs its progress."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from metarec.log import Progress
from metarec.models.features import FeatureStore
from tests.conftest import tiny_encoder

TEXTS = [" ".join(["word"] * n) + f" item{n}" for n in (3, 17, 1, 9, 30, 5, 12, 2, 21, 7, 14, 4)]


def _equal(a, b) -> bool:  # noqa: ANN001
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    return torch.equal(a, b) and a.dtype == b.dtype


@pytest.mark.parametrize("freeze", ["top_k", "frozen"])
def test_mmap_and_ram_batches_are_bit_identical(tmp_path, freeze):
    enc = tiny_encoder(freeze=freeze, top_k=1)
    mapped = FeatureStore(enc, TEXTS, cache_dir=tmp_path, memory="mmap", batch_size=5)
    in_ram = FeatureStore(enc, TEXTS, cache_dir=tmp_path, memory="ram", batch_size=5)
    no_disk = FeatureStore(enc, TEXTS, cache_dir=False, batch_size=5)
    assert mapped.cache_hits == 0 and in_ram.cache_hits == 1
    assert mapped._mmap is not None and in_ram._mmap is None
    for rows in (torch.tensor([4, 0, 11, 2]), torch.arange(len(TEXTS)), torch.tensor([8, 8, 1])):
        a = mapped(rows)
        assert _equal(a, in_ram(rows)) and _equal(a, no_disk(rows))
    # The lookup gives each row its own states: row 4 alone equals row 4 inside a batch.
    alone, batch = mapped(torch.tensor([4])), mapped(torch.tensor([2, 4]))
    if freeze == "top_k":
        n = int(alone["attention_mask"].sum())
        assert n == int(batch["attention_mask"][1].sum()) > int(batch["attention_mask"][0].sum())
        assert torch.equal(alone["hidden_states"][0, :n], batch["hidden_states"][1, :n])
    else:
        assert torch.equal(alone[0], batch[1])


def test_cached_states_equal_the_encoders_bottom(tmp_path):
    enc = tiny_encoder(freeze="top_k", top_k=1)
    store = FeatureStore(enc, TEXTS, cache_dir=tmp_path, store_dtype=torch.float32)
    rows = torch.tensor([4, 2])
    tokens = enc.tokenize([TEXTS[i] for i in rows.tolist()])
    with torch.no_grad():
        live = enc.bottom(tokens)
    x = store(rows)
    torch.testing.assert_close(x["hidden_states"], live * x["attention_mask"][..., None], atol=1e-6, rtol=1e-6)


def test_corrupt_cache_is_rebuilt_in_both_modes(tmp_path, caplog):
    enc = tiny_encoder(freeze="top_k", top_k=1)
    a = FeatureStore(enc, TEXTS, cache_dir=tmp_path, memory="ram")  # in RAM: its file is corrupted in place below
    states = a.cache_path() / "states.npy"
    raw = bytearray(states.read_bytes())
    raw[-3] ^= 0xFF  # one flipped byte: same size, wrong checksum
    states.write_bytes(bytes(raw))
    for memory in ("mmap", "ram"):
        caplog.clear()
        b = FeatureStore(enc, TEXTS, cache_dir=tmp_path, memory=memory)
        assert b.cache_hits == 0 and "does not match its checksum; rebuilding it" in caplog.text
        assert _equal(a(torch.arange(len(TEXTS))), b(torch.arange(len(TEXTS))))
        states.write_bytes(bytes(raw))
    (a.cache_path() / "index.npy").write_bytes(b"not an npy file")
    caplog.clear()
    c = FeatureStore(enc, TEXTS, cache_dir=tmp_path)
    assert c.cache_hits == 0 and "is unreadable" in caplog.text
    assert FeatureStore(enc, TEXTS, cache_dir=tmp_path).cache_hits == 1
    assert [p.name for p in tmp_path.iterdir()] == [a.cache_path().name]  # no temporary or stale leftovers


def test_concurrent_builders_share_one_cache(tmp_path):
    enc = tiny_encoder(freeze="top_k", top_k=1)
    stores: list[FeatureStore] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            stores.append(FeatureStore(enc, TEXTS, cache_dir=tmp_path, batch_size=3))
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [p.name for p in tmp_path.iterdir()] == [stores[0].cache_path().name]
    rows = torch.arange(len(TEXTS))
    assert all(_equal(stores[0](rows), s(rows)) for s in stores[1:])
    # A builder that finishes after another published the same cache uses the published one.
    late = FeatureStore(enc, TEXTS, cache_dir=False)
    late.cache_dir, late.memory = tmp_path, "mmap"
    tmp = tmp_path / "late.tmp"
    tmp.mkdir()
    late._publish(tmp, stores[0].cache_path())
    assert late._mmap is not None and _equal(late(rows), stores[0](rows))


def test_memory_option_is_checked(tmp_path):
    enc = tiny_encoder(freeze="top_k", top_k=1)
    with pytest.raises(ValueError, match="features.memory must be one of"):
        FeatureStore(enc, TEXTS, cache_dir=tmp_path, memory="disk")
    with pytest.raises(ValueError, match="cache_dir=False keeps no file"):
        FeatureStore(enc, TEXTS, cache_dir=False, memory="mmap")


def test_cache_build_logs_rows_per_second_and_eta(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("METAREC_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="metarec"):
        FeatureStore(tiny_encoder(freeze="top_k", top_k=1), TEXTS, cache_dir=tmp_path, batch_size=4)
    lines = [r.getMessage() for r in caplog.records if "caching hidden states" in r.getMessage()]
    assert len(lines) == 4  # 3 batches of 4 rows, and the final line
    assert lines[0].startswith("caching hidden states of 12 texts: 4/12 rows (33%)") and "ETA" in lines[0]
    assert "rows/s" in lines[0] and lines[-1].endswith("(done)") and "12/12 rows (100%)" in lines[-1]
    # every line also says how much memory the process holds, now and at its peak
    import re

    rss = re.search(r", RSS (\d+\.\d\d) GB \(peak (\d+\.\d\d) GB\)", lines[0])
    assert rss and 0 < float(rss.group(1)) <= float(rss.group(2)) + 0.01


def test_progress_is_silent_when_disabled_and_throttled(caplog):
    log = logging.getLogger("metarec.test_progress")
    with caplog.at_level(logging.INFO, logger="metarec.test_progress"):
        quiet = Progress(log, "x", 10, enabled=False, interval=0)
        quiet.update(5)
        quiet.close()
        slow = Progress(log, "fit", 10, unit="steps", enabled=True, interval=3600)
        slow.update(3)
    assert not caplog.records  # disabled: nothing; enabled: nothing before the interval
    assert slow.line().startswith("fit: 3/10 steps (30%)")
    with pytest.raises(ValueError, match="METAREC_PROGRESS_SECONDS must be a number"):
        import os

        os.environ["METAREC_PROGRESS_SECONDS"] = "often"
        try:
            Progress(log, "x", 1)
        finally:
            del os.environ["METAREC_PROGRESS_SECONDS"]


def test_the_eta_forgets_a_stall_once_it_leaves_the_window(caplog, monkeypatch):
    import metarec.log as mlog

    clock = [0.0]
    monkeypatch.setattr(mlog.time, "perf_counter", lambda: clock[0])
    log = logging.getLogger("metarec.test_progress")
    bar = Progress(log, "fit", 100, unit="steps", enabled=True, interval=0)

    def steps(n, seconds_each):
        for _ in range(n):
            clock[0] += seconds_each
            bar.update(1)

    steps(10, 1.0)
    assert bar.line().startswith("fit: 10/100 steps (10%), 1.0 steps/s, elapsed 10s, ETA 1m30s")
    clock[0] += 1000.0  # the process is suspended for 1000 s
    steps(1, 1.0)
    assert "ETA 1m30s" not in bar.line()  # the stall is inside the window: the ETA grows
    steps(Progress.WINDOW, 1.0)
    # 21 steps in 1021 s: the mean rate says so, the ETA runs on the last WINDOW lines' 1 step/s
    line = bar.line()
    assert line.startswith(f"fit: 21/100 steps (21%), 48.62 s/step (1.0 steps/s over the last {Progress.WINDOW}s)")
    assert "elapsed 17m01s, ETA 1m19s" in line
    # a steady rate shows no second figure
    steady = Progress(log, "test", 10, unit="episodes", enabled=True, interval=0)
    for _ in range(4):
        clock[0] += 2.0
        steady.update(1)
    assert steady.line().startswith("test: 4/10 episodes (40%), 2.00 s/episode, elapsed 8s, ETA 12s")


def test_a_killed_builds_leftovers_are_removed_but_a_live_ones_kept(tmp_path):
    enc = tiny_encoder(freeze="top_k", top_k=1)
    probe = FeatureStore(enc, TEXTS[:2], cache_dir=tmp_path)
    final = probe.cache_path()
    shutil.rmtree(final)
    dead, live = tmp_path / f"{final.name}.dead.tmp", tmp_path / f"{final.name}.live.tmp"
    for d in (dead, live):
        d.mkdir()
        (d / "states.npy").write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(dead / "states.npy", (old, old))
    os.utime(dead, (old, old))
    FeatureStore(enc, TEXTS[:2], cache_dir=tmp_path)
    assert not dead.exists() and live.exists() and final.exists()

"""Reports are built from a fixture store alone; mismatched episode sets are never paired."""

import json
from pathlib import Path

import numpy as np
import pytest

from metarec.bench.report import EpisodeMismatchError, collect, markdown_report, paired_cells, summarize, write_reports
from metarec.bench.store import RunStore
from metarec.bench.suite import Cell, Suite, SuiteError, load_suite


def _suite(tmp_path: Path) -> Suite:
    return Suite(name="fixture", path=tmp_path / "s.yaml", methods={"ref": [], "new": []},
                 families={"fam": []}, shots=[1, 5], seeds=[0], reference="ref", synthetic=True,
                 reported=[{"method": "Paper Net", "family": "fam", "n_shot": 5, "value": 80.5, "source": "Doe 2020"}])


def _write(store: RunStore, key: str, cell: Cell, accs, episode_set="E1"):
    eps = [{"index": i, "task": f"t{i}", "fingerprint": f"f{i}", "acc": a, "f1": a / 2, "adapt_s": 0.01}
           for i, a in enumerate(accs)]
    result = {"cell": cell.id, "n_way": 2, "episode_set": episode_set, "metrics": {"test/acc": float(np.mean(accs))},
              "adapt_s_per_episode": 0.01, "fit_seconds": 3.0, "peak_rss_mb": 100.0}
    store.prepare(key)
    store.write(key, result, eps, "cfg: 1\n", {"git_commit": None})


def _fixture(tmp_path, second_set="E1"):
    store = RunStore(tmp_path / "store")
    suite = _suite(tmp_path)
    keyed = []
    rng = np.random.default_rng(0)
    for shot in (1, 5):
        base = rng.uniform(0.4, 0.6, size=30)
        for method, accs, es in (("ref", base, "E1"), ("new", base + 0.1, second_set)):
            c = Cell(method, "fam", shot, 0, [])
            key = f"{method}{shot}"
            _write(store, key, c, list(accs), episode_set=es)
            keyed.append((c, key))
    return suite, store, collect(store, keyed)


def test_report_from_fixture_store(tmp_path):
    suite, store, results = _fixture(tmp_path)
    rows = summarize(suite, results)
    new5 = next(r for r in rows if r["method"] == "new" and r["n_shot"] == 5)
    assert new5["diff"] == pytest.approx(0.1) and new5["p_value"] < 1e-6
    # Macro-F1 beside accuracy, paired on the same episodes (the fixture's F1 is acc / 2).
    assert new5["f1"] == pytest.approx(new5["acc"] / 2) and new5["f1_ci95"] == pytest.approx(new5["acc_ci95"] / 2)
    assert new5["diff_f1"] == pytest.approx(0.05) and new5["p_value_f1"] < 1e-6
    md, files = write_reports(suite, store, results, latex=True)
    assert "synthetic" in md and "**Reported**" in md and "Paper Net" in md
    assert "| macro-F1" in md and "Δ F1 vs ref" in md and "+5.0 ±" in md
    # measured rows and reported rows live in separate tables
    measured, reported = md.split("**Reported**")
    assert "Paper Net" not in measured and "new" not in reported.split("\n", 3)[-1]
    names = {f.name for f in files}
    assert {"report.md", "report.csv", "report.tex", "shots-fam.png", "shots-fam.svg", "methods-fam-5shot.png"} <= names
    csv = (store.root / "report.csv").read_text()
    assert csv.startswith("family,") and csv.count("\n") == 5


def test_mismatched_episode_sets_are_refused(tmp_path):
    suite, store, results = _fixture(tmp_path, second_set="E2")
    with pytest.raises(EpisodeMismatchError, match="episode sets differ"):
        paired_cells(results[1], results[0])
    rows = summarize(suite, results)
    assert all(r["paired"].startswith("refused") for r in rows if r["method"] == "new")
    assert "refused (episodes differ)" in markdown_report(suite, rows)


def test_unfinished_cells_are_not_reported(tmp_path):
    store = RunStore(tmp_path)
    d = store.prepare("k")
    (d / "episodes.jsonl").write_text(json.dumps({"acc": 1.0}) + "\n")  # killed before result.json
    assert not store.finished("k") and collect(store, [(Cell("m", "f", 1, 0, []), "k")]) == []


def test_suite_file_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nmethods: {a: [algorithm=protonet]}\nfamilies: {f: []}\nshots: [one]\n")
    with pytest.raises(SuiteError, match=r"bad.yaml: shots must be a non-empty list of integers"):
        load_suite(p)
    p.write_text("name: x\nmethods: {a: []}\nfamilies: {f: []}\nreference: b\n")
    with pytest.raises(SuiteError, match=r"reference 'b' is not one of the methods"):
        load_suite(p)
    p.write_text("name: x\nmethod: {a: []}\n")
    with pytest.raises(SuiteError, match=r"unknown key\(s\) \['method'\]"):
        load_suite(p)


def test_shipped_suites_load():
    root = Path(__file__).resolve().parents[3] / "benchmarks" / "suites"
    suites = sorted(root.glob("*.yaml"))
    assert suites
    for p in suites:
        s = load_suite(p)
        assert s.cells()
        # Every method's and family's overrides compose (e.g. `+key=` for a key its config lacks).
        seen: set[str] = set()
        for c in s.cells():
            if c.method not in seen or c.family not in seen:
                assert c.config().algorithm.name, c.id
                seen |= {c.method, c.family}


def test_excluded_pairs_are_not_cells_and_are_named_in_the_report(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nmethods: {a: [], b: []}\nfamilies: {f: [], g: []}\n"
                 "exclude: [{method: b, family: g, reason: needs f's labels}]\n")
    suite = load_suite(p)
    assert sorted(c.id for c in suite.cells()) == ["a/f/5shot/seed0", "a/g/5shot/seed0", "b/f/5shot/seed0"]
    assert "- `b` on `g`: needs f's labels" in markdown_report(suite, [])
    p.write_text("name: x\nmethods: {a: []}\nfamilies: {f: []}\nexclude: [{method: c, family: f, reason: r}]\n")
    with pytest.raises(SuiteError, match=r"s.yaml: exclude\[0\] names method 'c'"):
        load_suite(p)

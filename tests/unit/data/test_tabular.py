import builtins
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from metarec.data.corpus import DataError
from metarec.data.sampler import EpisodeSampler, EpisodeSpec
from metarec.data.tabular import corpus_family, fixed_split, load_corpus, load_hf_dataset, read_table
from metarec.registry import FAMILIES

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INTENTS = FIXTURES / "intents.jsonl"
PRODUCTS = FIXTURES / "products.csv"


def _pyarrow_works() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_registered():
    assert "corpus" in FAMILIES


def test_reads_jsonl_fixture():
    t = read_table(INTENTS, text_column="text", label_column="intent", group_column="channel")
    assert len(t.texts) == 48 and t.unit == "line" and t.where[:3] == [1, 2, 3]
    assert t.labels[0] == "track_order" and t.groups[:4] == ["app", "web", "email", "chat"]
    c = load_corpus(path=str(INTENTS), label_column="intent", group_column="channel")
    assert len(c.label_names) == 12 and c.group_names == ["app", "chat", "email", "web"]
    assert c.origins[0] == f"{INTENTS}:1"
    assert c.label_map == {n: n for n in c.label_names}


def test_reads_csv_fixture_with_quoted_commas():
    t = read_table(PRODUCTS, text_column="title", label_column="category", group_column="department")
    assert len(t.texts) == 48
    assert t.texts[0] == "lightweight running shoes, breathable mesh, men size 10"
    assert t.where[0] == 2  # line 1 is the header


def test_tsv_and_label_map(tmp_path):
    p = tmp_path / "reviews.tsv"
    p.write_text("review\tstars\nlove it\t5\nbroke fast\t1\nfine\t5\n")
    c = load_corpus(path=str(p), text_column="review", label_column="stars", label_map={1: "negative", 5: "positive"})
    assert c.label_names == ["negative", "positive"] and c.labels.tolist() == [1, 0, 1]
    assert c.label_map == {"1": "negative", "5": "positive"}


def test_missing_column_names_file_and_columns_present(tmp_path):
    with pytest.raises(DataError, match=r"intents.jsonl: no column 'label' \(label_column\); columns present: "
                                        r"\['channel', 'intent', 'text'\]"):
        read_table(INTENTS)
    with pytest.raises(DataError, match=r"products.csv: no column 'dept' \(group_column\); columns present: "
                                        r"\['title', 'category', 'department'\]"):
        read_table(PRODUCTS, text_column="title", label_column="category", group_column="dept")


@pytest.mark.parametrize("row, reason", [
    ('{"text": "", "intent": "a"}', "empty text"),
    ('{"text": "hi", "intent": null}', "empty label"),
    ('{"text": "hi", "intent": "zzz"}', "label outside the declared set"),
    ('{"text": "hi"}', "no 'intent' field"),
    ('{"text": "hi", "intent": "a"', "invalid JSON"),
])
def test_bad_jsonl_rows(tmp_path, caplog, row, reason):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "ok", "intent": "a"}\n' + row + '\n{"text": "ok 2", "intent": "b"}\n')
    with pytest.raises(DataError) as e:
        read_table(p, label_column="intent", labels=["a", "b"])
    assert f"{p}, line 2: {reason}" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="metarec"):
        t = read_table(p, label_column="intent", labels=["a", "b"], lenient=True)
    assert t.texts == ["ok", "ok 2"] and t.where == [1, 3]
    assert t.report.n_skipped == 1 and t.report.skipped[0].line == 2
    assert sum("skipped 1 of 3 lines" in m for m in caplog.messages) == 1


def test_bad_csv_rows(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("text,label\nfine,a\n,b\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"x.csv, line 3: empty text"):
        read_table(p)
    t = read_table(p, lenient=True)
    assert t.texts == ["fine"]
    assert [(s.line, s.reason) for s in t.report.skipped] == [(3, "empty text"), (4, "row has 3 fields, the header has 2")]


def test_non_utf8_byte_in_csv(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(DataError, match=r"x.csv, line 3: non-UTF-8 byte 0xe9 at byte offset 19"):
        read_table(p)
    assert read_table(p, lenient=True).texts == ["ok"]


def test_parquet(tmp_path):
    if not _pyarrow_works():
        pytest.skip("pyarrow does not import in this environment (e.g. pyarrow built for NumPy 2)")
    import pandas as pd

    p = tmp_path / "titles.parquet"
    pd.DataFrame({"title": ["a phone case", "a lamp", ""], "cat": [1, 2, 2]}).to_parquet(p)
    with pytest.raises(DataError, match=r"titles.parquet, row 3: empty text"):
        read_table(p, text_column="title", label_column="cat")
    t = read_table(p, text_column="title", label_column="cat", lenient=True)
    assert t.texts == ["a phone case", "a lamp"] and t.labels == ["1", "2"] and t.unit == "row"


def test_parquet_without_pyarrow_is_a_clear_import_error(tmp_path, monkeypatch):
    p = tmp_path / "titles.parquet"
    p.write_bytes(b"PAR1")
    real_import = builtins.__import__

    def no_pyarrow(name, *a, **k):
        if name in ("pyarrow", "fastparquet") or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImportError, match="reading Parquet .*titles.parquet.* needs a working pyarrow"):
        read_table(p)


def test_hf_datasets_missing_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets"):
        load_hf_dataset("some/dataset")


def test_hf_dataset_from_local_path(tmp_path):
    pytest.importorskip("datasets")
    ds_dir = tmp_path / "hf"
    ds_dir.mkdir()
    shutil.copy(INTENTS, ds_dir / "train.jsonl")
    t = load_hf_dataset("json", label_column="intent", data_files=str(ds_dir / "train.jsonl"))
    assert len(t.texts) == 48 and t.unit == "row"


def test_split_file_created_once_then_read_as_is(tmp_path, caplog):
    path = tmp_path / "splits" / "names.json"
    names = [f"c{i}" for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="metarec"):
        first = fixed_split(path, names, "class", (0.6, 0.2, 0.2), seed=0, dataset="toy")
    assert any("created split file" in m for m in caplog.messages)
    content = json.loads(path.read_text())
    assert content["seed"] == 0 and content["split_by"] == "class" and content["dataset"] == "toy"
    assert [len(first[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sum(first.values(), [])) == sorted(names)
    raw = path.read_bytes()
    # A later run with another seed reads the file as it is: never reshuffled.
    assert fixed_split(path, names, "class", (0.6, 0.2, 0.2), seed=99, dataset="toy") == first
    assert path.read_bytes() == raw
    # The file wins over the seed: a hand edit is how a split is changed.
    content["test"], content["train"] = content["test"] + content["train"][:1], content["train"][1:]
    path.write_text(json.dumps(content))
    assert len(fixed_split(path, names, "class", (0.6, 0.2, 0.2), seed=0, dataset="toy")["test"]) == 3


def test_split_file_errors(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"split_by": "class", "train": ["a", "zz"], "val": ["b"], "test": ["c"]}))
    with pytest.raises(DataError, match=r"s.json: train lists classes the data lacks: \['zz'\]"):
        fixed_split(path, ["a", "b", "c"], "class", (0.6, 0.2, 0.2), 0, "x")
    path.write_text(json.dumps({"split_by": "class", "train": ["a", "b"], "val": ["b"], "test": ["c"]}))
    with pytest.raises(DataError, match=r"class 'b' is in both 'train' and 'val'"):
        fixed_split(path, ["a", "b", "c"], "class", (0.6, 0.2, 0.2), 0, "x")
    path.write_text(json.dumps({"split_by": "group", "train": ["a"], "val": ["b"], "test": ["c"]}))
    with pytest.raises(DataError, match="splits groups, but this family splits classes"):
        fixed_split(path, ["a", "b", "c"], "class", (0.6, 0.2, 0.2), 0, "x")


def test_class_split_family_from_jsonl(tmp_path):
    split = tmp_path / "intents.json"
    fam = corpus_family(split_file=str(split), dataset="intents", path=str(INTENTS), label_column="intent",
                        fractions=(0.5, 0.25, 0.25))
    assert fam.name == "intents" and split.is_file()
    classes = {s: {fam.class_names[c] for c in fam.split_classes(s)} for s in ("train", "val", "test")}
    assert [len(classes[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert classes == {s: set(v) for s, v in fam.metadata["split"].items()}
    e = EpisodeSampler(fam, "test", EpisodeSpec(3, 1, 2), seed=0).sample(0)
    assert set(e.classes) == classes["test"]
    again = corpus_family(split_file=str(split), dataset="intents", path=str(INTENTS), label_column="intent", seed=5)
    assert again.metadata["split"] == fam.metadata["split"]


def test_group_split_family_from_csv(tmp_path):
    fam = corpus_family(split_file=str(tmp_path / "products.json"), split_by="group", path=str(PRODUCTS),
                        text_column="title", label_column="category", group_column="department",
                        fractions=(0.34, 0.33, 0.33))
    assert fam.name == "products"
    for split in ("train", "val", "test"):
        assert len(fam.tasks(split)) == 2
    task = fam.tasks("test")[0]
    assert len(task.classes) == 2 and all(fam.class_names[c].startswith(task.name + ":") for c in task.classes)
    e = EpisodeSampler(fam, "test", EpisodeSpec(2, 2, 2), seed=0).sample(0)
    assert len(e.support_idx) == 4


def test_class_with_too_few_examples_through_the_family(tmp_path):
    fam = corpus_family(split_file=str(tmp_path / "s.json"), path=str(INTENTS), label_column="intent",
                        fractions=(0.5, 0.25, 0.25))
    with pytest.raises(DataError, match=r"n_shot \+ n_query = 2 \+ 3 = 5 examples per class needed, but in "
                                        r"family 'intents', split 'test', task 'test-classes' class .* has 4"):
        EpisodeSampler(fam, "test", EpisodeSpec(3, 2, 3), seed=0)


def test_family_option_errors(tmp_path):
    with pytest.raises(DataError, match="split_file is required"):
        corpus_family(path=str(INTENTS), label_column="intent")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['label_col'\]"):
        corpus_family(split_file=str(tmp_path / "s.json"), path=str(INTENTS), label_col="intent")
    with pytest.raises(DataError, match="exactly one of path and hf_dataset"):
        corpus_family(split_file=str(tmp_path / "s.json"))


def test_corpus_example_config_composes_and_reads_committed_split():
    from metarec.config import compose, config_dir
    from metarec.training import build_family

    cfg = compose(["experiment=corpus_example/protonet", f"family.path={INTENTS}"])
    committed = config_dir() / "splits" / "intents_example.json"
    raw = committed.read_bytes()
    fam = build_family(cfg)
    assert committed.read_bytes() == raw
    assert fam.metadata["split"] == {s: v for s, v in json.loads(raw).items() if s in ("train", "val", "test")}
    assert cfg.episodes.n_way <= len(fam.split_classes("test"))
    EpisodeSampler(fam, "test", EpisodeSpec(cfg.episodes.n_way, cfg.episodes.n_shot, cfg.episodes.n_query), 0).sample(0)
    assert sorted(set(fam.corpus.labels.tolist())) == list(range(12))  # every one of the 12 intents kept

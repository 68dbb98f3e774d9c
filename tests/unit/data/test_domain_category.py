import json
import logging
from pathlib import Path

import numpy as np
import pytest

from metarec.data.corpus import DataError
from metarec.data.domain_category import dedupe_by_class, domain_category
from metarec.data.sampler import EpisodeSampler, EpisodeSpec
from metarec.registry import FAMILIES
from tests.unit.data.test_arsc import make_arsc_dir

PRODUCTS = Path(__file__).resolve().parents[2] / "fixtures" / "products.csv"


def test_registered():
    assert "domain_category" in FAMILIES


def test_dedupe_drops_ambiguous_texts_and_repeats():
    keep, ambiguous, repeated = dedupe_by_class(["a", "b", "a", "c", "c"], ["x", "x", "y", "y", "y"])
    assert keep.tolist() == [1, 3] and ambiguous == 2 and repeated == 1


def test_groups_of_a_csv_are_the_classes(tmp_path):
    split = tmp_path / "departments.json"
    fam = domain_category(split_file=str(split), path=str(PRODUCTS), text_column="title", group_column="department",
                          fractions=(0.34, 0.33, 0.33))
    assert fam.corpus.label_names == ["apparel", "beauty", "electronics", "home", "kitchen", "sports"]
    assert json.loads(split.read_text())["split_by"] == "class"
    per_split = {s: [fam.class_names[c] for c in fam.split_classes(s)] for s in ("train", "val", "test")}
    assert per_split == fam.metadata["split"] and all(len(v) == 2 for v in per_split.values())
    sampler = EpisodeSampler(fam, "test", EpisodeSpec(2, 3, 5), seed=0)
    for i in range(5):
        e = sampler.sample(i)
        assert sorted(e.classes) == sorted(per_split["test"])
        for r, y in zip(e.query_idx.tolist(), e.query_y.tolist()):
            assert fam.corpus.label_names[fam.corpus.labels[r]] == e.classes[y]
    # too few examples per department for this episode shape: the sampler says which
    with pytest.raises(DataError, match=r"n_shot \+ n_query = 4 \+ 5 = 9 .* has 8"):
        EpisodeSampler(fam, "test", EpisodeSpec(2, 4, 5), seed=0)


def test_arsc_directory_domains_with_fixed_split(tmp_path, caplog):
    root = make_arsc_dir(tmp_path / "arsc", filtered=("apparel", "baby", "beauty", "camera_photo"), targets=("books",))
    # one review shared by two domains is ambiguous: dropped
    with open(root / "baby.t2.dev", "a") as f:
        f.write("apparel t2 train review 0 awful broke\t-1\n")
    split = tmp_path / "domains.json"
    split.write_text(json.dumps({"split_by": "class", "train": ["apparel", "baby"], "val": ["beauty"],
                                 "test": ["camera_photo", "books"]}))
    fam = domain_category(split_file=str(split), data_dir=str(root), max_per_class=20, seed=0)
    assert fam.corpus.label_names == ["apparel", "baby", "beauty", "books", "camera_photo"]
    assert fam.metadata["dropped_ambiguous"] == 2
    assert "apparel t2 train review 0 awful broke" not in fam.corpus.texts
    assert np.bincount(fam.corpus.labels).max() <= 20
    assert [fam.class_names[c] for c in fam.split_classes("test")] == ["books", "camera_photo"]
    e = EpisodeSampler(fam, "test", EpisodeSpec(2, 5, 5), seed=0).sample(0)
    assert sorted(e.classes) == ["books", "camera_photo"]
    assert split.read_text() == json.dumps({"split_by": "class", "train": ["apparel", "baby"], "val": ["beauty"],
                                            "test": ["camera_photo", "books"]})


def test_split_file_naming_unknown_domain(tmp_path):
    root = make_arsc_dir(tmp_path / "arsc", targets=())
    split = tmp_path / "domains.json"
    split.write_text(json.dumps({"train": ["apparel"], "val": ["baby"], "test": ["toys"]}))
    with pytest.raises(DataError, match=r"test lists classes the data lacks: \['toys'\]"):
        domain_category(split_file=str(split), data_dir=str(root))


def test_split_file_required():
    with pytest.raises(DataError, match="split_file is required"):
        domain_category(path=str(PRODUCTS))


def test_committed_arsc_split_on_shared_data(arsc_dir, caplog):
    from metarec.config import compose, config_dir
    from metarec.training import build_family

    committed = config_dir() / "splits" / "arsc_domains.json"
    raw = committed.read_bytes()
    content = json.loads(raw)
    filtered = (arsc_dir / "workspace.filtered.list").read_text().split()
    assert sorted(content["train"] + content["val"] + content["test"]) == sorted(filtered)
    cfg = compose(["experiment=arsc/category_protonet", f"family.data_dir={arsc_dir}", "family.max_per_class=40"])
    with caplog.at_level(logging.WARNING, logger="metarec"):
        fam = build_family(cfg)
    assert not any("created split file" in m for m in caplog.messages)
    assert committed.read_bytes() == raw
    for s in ("train", "val", "test"):
        assert [fam.class_names[c] for c in fam.split_classes(s)] == content[s]
    e = cfg.episodes
    sampler = EpisodeSampler(fam, "test", EpisodeSpec(e.n_way, e.n_shot, e.n_query), seed=0)
    assert set(sampler.sample(0).classes) <= set(content["test"])

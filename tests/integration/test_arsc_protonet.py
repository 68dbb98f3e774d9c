"""ProtoNet meta-trained on shared ARSC domains, tested with the official target protocol on a
small target directory made from two other shared domains (10-line .train support, .test queries)."""

from pathlib import Path

import pytest
import torch

from metarec.models.features import texts_hash

from metarec.data.arsc import ARSC_LABEL_MAP, make_target_fixture, per_task_table
from metarec.data.readers import read_labeled_lines
from metarec.episode import Episode

TRAIN_DOMAINS = ["apparel", "baby"]
TARGET_DOMAINS = ["automotive", "office_products"]  # small .test files: a fast test
TARGET_TASKS = [f"{d}.{t}" for d in TARGET_DOMAINS for t in ("t2", "t4", "t5")]


@pytest.fixture()
def target_dir(arsc_dir: Path, tmp_path: Path) -> Path:
    return make_target_fixture(arsc_dir, tmp_path / "arsc_target", TARGET_DOMAINS, train_domains=TRAIN_DOMAINS)


def test_fixture_layout(target_dir: Path, arsc_dir: Path):
    for task in TARGET_TASKS:
        support = read_labeled_lines(target_dir / f"{task}.train", labels=ARSC_LABEL_MAP)
        assert len(support) == 10 and sorted(support.labels) == ["-1"] * 5 + ["1"] * 5
        assert (target_dir / f"{task}.test").read_bytes() == (arsc_dir / f"{task}.test").read_bytes()
    assert (target_dir / "workspace.target.list").read_text().split() == TARGET_DOMAINS
    assert (target_dir / "workspace.filtered.list").read_text().split() == TRAIN_DOMAINS


def test_protonet_meta_trains_and_reports_per_target_task(target_dir: Path, tmp_path: Path):
    from metarec.config import compose
    from metarec.training import build_family, run_experiment

    cfg = compose([
        "experiment=arsc/protonet", "encoder=tiny_bert", f"family.data_dir={target_dir}",
        "family.max_per_class=20", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "episodes.val_episodes=4", "episodes.meta_batch_size=2", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'run'}",
    ])
    result = run_experiment(cfg)
    assert result.trained and result.fit_seconds > 0
    assert result.label_map == {"-1": "negative", "1": "positive"}

    family = build_family(cfg)  # the same (deterministic) family the run used
    assert family.metadata["protocol"] == "official"
    assert [t.name for t in family.tasks("train")] == [f"{d}.{t}" for d in TRAIN_DOMAINS for t in ("t2", "t4", "t5")]
    tasks = {t.name: t for t in family.tasks("test")}
    assert sorted(tasks) == sorted(TARGET_TASKS)

    # One test episode per target task (the ARSC protocol), whatever episodes.test_episodes says.
    got = sorted(r["task"] for r in result.episodes)
    assert got == sorted(TARGET_TASKS), (
        f"test episodes cover tasks {got}: every fixed target task must be evaluated exactly once "
        "(EpisodeSampler must take fixed task i for episode i)")
    assert result.metrics["test/episodes"] == len(TARGET_TASKS)

    for r in result.episodes:
        task = tasks[r["task"]]
        support_file = read_labeled_lines(target_dir / f"{task.name}.train", labels=ARSC_LABEL_MAP)
        query_file = read_labeled_lines(target_dir / f"{task.name}.test", labels=ARSC_LABEL_MAP)
        # The support rows are exactly the .train file's rows, in file order.
        assert [family.corpus.texts[i] for i in task.support.tolist()] == support_file.texts
        assert [family.corpus.origins[i] for i in task.support.tolist()] == [
            f"{target_dir / (task.name + '.train')}:{n}" for n in range(1, 11)]
        # ... and the episode the model was tested on used exactly them (same fingerprint).
        y = lambda rows: torch.as_tensor(family.corpus.labels[rows])  # noqa: E731  (negative=0, positive=1)
        expected = Episode(support_x=torch.empty(0), support_y=y(task.support), query_x=torch.empty(0),
                           query_y=y(task.query), classes=[f"{task.name}:negative", f"{task.name}:positive"],
                           family="arsc", task=task.name, corpus=texts_hash(family.corpus.texts),
                           support_idx=torch.as_tensor(task.support), query_idx=torch.as_tensor(task.query))
        assert r["fingerprint"] == expected.fingerprint()
        # The whole .test file is the query set.
        assert r["n_query"] == len(query_file)
        assert [family.corpus.texts[i] for i in r["query_idx"]] == query_file.texts
        assert r["query_y"] == [int(lab == "1") for lab in query_file.labels]
        assert r["classes"] == [f"{task.name}:negative", f"{task.name}:positive"]
        assert 0.0 <= r["acc"] <= 1.0

    mean = sum(r["acc"] for r in result.episodes) / len(result.episodes)
    assert result.metrics["test/acc"] == pytest.approx(mean)
    table = per_task_table(result.episodes)
    assert all(t in table for t in TARGET_TASKS) and "mean over 6 tasks" in table

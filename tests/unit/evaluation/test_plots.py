"""Per-task plots: grouped bars for a few methods, a methods x tasks heatmap (values written in
the cells) beyond that; nothing for families with repeated tasks (episodic sampling)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from metarec.bench.report import CellResult
from metarec.bench.suite import Cell
from metarec.evaluation import plots


def _results(n_methods: int, tasks: list[str]) -> list[CellResult]:
    out = []
    for m in range(n_methods):
        episodes = [{"index": i, "task": t, "acc": 0.5 + 0.01 * (m + i), "f1": 0.4 + 0.01 * m} for i, t in enumerate(tasks)]
        out.append(CellResult(Cell(f"method{m}", "fam", 5, 0, []), str(m), {"episode_set": "x"}, episodes))
    return out


@pytest.mark.parametrize("n_methods,kind", [(3, "bars"), (13, "heatmap")])
def test_task_plot_kind_follows_the_number_of_methods(n_methods, kind, tmp_path, monkeypatch):
    drawn = []
    for name in ("_task_bars", "_task_heatmap"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, _real=real, _name=name: drawn.append(_name) or _real(*a))
    files = plots.plot_task_bars(_results(n_methods, ["a.t2", "a.t4", "b.t2"]), tmp_path)
    assert drawn == [f"_task_{kind}"]
    assert sorted(f.name for f in files) == ["tasks-fam-5shot.png", "tasks-fam-5shot.svg"]
    assert all(f.stat().st_size > 1000 for f in files)


def test_heatmap_writes_every_value_in_its_cell():
    methods, tasks = ["m0", "m1"], ["a", "b", "c"]
    values = {m: {"acc": {t: 60.0 + i + 10 * j for j, t in enumerate(tasks)}, "f1": {t: 50.0 for t in tasks}}
              for i, m in enumerate(methods)}
    fig = plots._task_heatmap(methods, tasks, values, "title")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    plt.close(fig)
    assert sorted(texts[:6]) == sorted(["60", "70", "80", "61", "71", "81"]) and texts[6:] == ["50"] * 6


def test_repeated_tasks_get_no_per_task_plot(tmp_path):
    assert plots.plot_task_bars(_results(3, ["a", "a", "b"]), tmp_path) == []

"""benchmarks/layer_cost.py: one timed row per encoder, ratios to the first, bad specs in one line."""

from tests.integration.scripts import run_benchmark


def test_layer_cost_prints_a_row_per_encoder(monkeypatch, capsys):
    code = run_benchmark("layer_cost.py", ["default:1", "default:2", "--rows", "2", "--seq", "8", "--reps", "2"], monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| all-MiniLM-L6-v2")]
    assert [r.split("|")[2].strip() for r in rows] == ["top 1 of 6", "top 2 of 6"]
    cells = [[c.strip() for c in r.split("|")[1:-1]] for r in rows]
    med = [float(c[3]) for c in cells]
    for c, m in zip(cells, med):  # the median lies in the printed range of the repetitions
        lo, hi = (float(x) for x in c[4].split("–"))
        assert lo <= m <= hi and m > 0, c
    # each ratio is the row's median over the first row's (printed medians are rounded to 1 ms)
    assert [float(c[5]) for c in cells][0] == 1.0
    assert abs(float(cells[1][5]) - med[1] / med[0]) <= 0.01 + 0.0005 * (1 / med[0] + med[1] / med[0] ** 2), cells
    assert "2 rows x 8 tokens per chunk, forward + backward" in out


def test_layer_cost_refuses_a_bad_spec_in_one_line(monkeypatch, capsys, tmp_path):
    assert run_benchmark("layer_cost.py", ["default"], monkeypatch) == 2
    assert "'default': expected PATH:K with K >= 1" in capsys.readouterr().err
    assert run_benchmark("layer_cost.py", [f"{tmp_path / 'none'}:2"], monkeypatch) == 2
    assert f"encoder directory {tmp_path / 'none'} does not exist" in capsys.readouterr().err

"""benchmarks/layer_cost.py: one timed row per encoder, ratios to the first, bad specs in one line."""

from tests.integration.scripts import run_benchmark


def test_layer_cost_prints_a_row_per_encoder(monkeypatch, capsys):
    code = run_benchmark("layer_cost.py", ["default:1", "default:2", "--rows", "2", "--seq", "8", "--reps", "2"], monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| all-MiniLM-L6-v2")]
    assert [r.split("|")[2].strip() for r in rows] == ["top 1 of 6", "top 2 of 6"]
    assert rows[0].split("|")[-2].strip() == "1.00" and float(rows[1].split("|")[-2]) > 0
    assert "2 rows x 8 tokens per chunk, forward + backward" in out


def test_layer_cost_refuses_a_bad_spec_in_one_line(monkeypatch, capsys, tmp_path):
    assert run_benchmark("layer_cost.py", ["default"], monkeypatch) == 2
    assert "'default': expected PATH:K with K >= 1" in capsys.readouterr().err
    assert run_benchmark("layer_cost.py", [f"{tmp_path / 'none'}:2"], monkeypatch) == 2
    assert f"encoder directory {tmp_path / 'none'} does not exist" in capsys.readouterr().err

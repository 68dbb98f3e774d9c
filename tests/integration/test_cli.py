"""The `metarec` command: bad input gives one clear line (exit 2), never a library traceback."""

import pytest

from metarec.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "algorithm=protonett"], "unknown algorithm 'protonett' (no algorithm/protonett.yaml"),
        (["fit", "algorithm.name=protonett"], "unknown algorithm 'protonett'; known algorithms: "),
        (["fit", "experiment=nope/x"], "unknown experiment 'nope/x'"),
        (["fit", "encoder=tiny_bert", "family=synthetic_sentiment", "episodes.n_way=3"],
         "n_way=3 but family 'synthetic_sentiment', split 'train'"),
        (["fit", "encoder=tiny_bert", "episodes.n_shot=70", "episodes.n_query=20"], "90 examples per class needed"),
        (["fit", "encoder=hf", "+encoder.path=/nonexistent-encoder-dir/"], "cannot load encoder"),
        (["fit", "family.name=nope"], "unknown family 'nope'; known families|unknown family 'nope'; known familys"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path):
    code = main([*argv, f"run_dir={tmp_path}", "trainer.enable_progress_bar=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert any(m in err for m in message.split("|")), err


def test_encoder_dir_without_model_files(tmp_path, capsys):
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "vocab.txt").write_text("x")
    code = main(["fit", "encoder=hf", f"+encoder.path={tmp_path / 'enc'}", f"run_dir={tmp_path / 'run'}"])
    assert code == 2 and "has no config.json and no model weights" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("protonet", "maml", "fomaml", "anil", "synthetic_category", "minilm", "quickstart/protonet"):
        assert name in out

import logging

import pytest

from metarec.data.corpus import DataError
from metarec.data.readers import LineError, read_labeled_lines

LABELS = ("-1", "1")


def _write(tmp_path, data: bytes, name: str = "d.t2.train"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_reads_text_label_lines(tmp_path):
    p = _write(tmp_path, b"good shoes\t1\nbad  zipper \t-1\n")
    r = read_labeled_lines(p, labels=LABELS)
    assert r.texts == ["good shoes", "bad  zipper"]
    assert r.labels == ["1", "-1"] and r.lines == [1, 2]
    assert r.report.n_kept == 2 and r.report.n_skipped == 0


def test_crlf_bom_no_final_newline(tmp_path):
    p = _write(tmp_path, b"\xef\xbb\xbfa b text\t1\r\nsecond\t-1")
    r = read_labeled_lines(p, labels=LABELS)
    assert r.texts == ["a b text", "second"]
    assert r.labels == ["1", "-1"]


def test_a_tab_inside_the_text_is_an_error_not_a_merged_record(tmp_path):
    # Splitting on the last tab once let run-together records through as one text (issue 18).
    p = _write(tmp_path, b"a\tb text\t1\r\nsecond\t-1")
    with pytest.raises(LineError, match="line 1: 2 tabs, expected exactly one"):
        read_labeled_lines(p, labels=LABELS)


def test_any_label_when_none_declared(tmp_path):
    p = _write(tmp_path, b"x\tfoo\ny\tbar\n")
    assert read_labeled_lines(p).labels == ["foo", "bar"]


@pytest.mark.parametrize("data, line, reason, value", [
    (b"ok\t1\nno tab here 1\n", 2, "line without a tab", "no tab here 1"),
    (b"ok\t1\nfine\t-1\nneutral one\t0\n", 3, "label outside the declared set", "0"),
    (b"ok\t1\n   \t-1\n", 2, "empty text", "   \t-1"),
    (b"ok\t1\ntext\t\n", 2, "empty label", "text\t"),
])
def test_bad_lines_name_file_line_and_value(tmp_path, data, line, reason, value):
    p = _write(tmp_path, data)
    with pytest.raises(DataError) as e:
        read_labeled_lines(p, labels=LABELS)
    msg = str(e.value)
    assert str(p) in msg and f"line {line}" in msg and reason in msg and repr(value) in msg
    assert isinstance(e.value, LineError) and e.value.line == line


def test_non_utf8_byte_names_line_and_byte_offset(tmp_path):
    data = b"first ok\t1\nbad caf\xe9 here\t-1\n"
    p = _write(tmp_path, data)
    with pytest.raises(DataError, match=r"line 2: non-UTF-8 byte 0xe9 at byte offset 18") as e:
        read_labeled_lines(p, labels=LABELS)
    assert str(p) in str(e.value)
    assert data[18:19] == b"\xe9"


def test_lenient_skips_and_reports_where(tmp_path, caplog):
    p = _write(tmp_path, b"ok one\t1\nno tab\n \t1\nbad label\t2\ncaf\xe9\t1\nok two\t-1\n")
    with caplog.at_level(logging.WARNING, logger="metarec"):
        r = read_labeled_lines(p, labels=LABELS, lenient=True)
    assert r.texts == ["ok one", "ok two"] and r.lines == [1, 6]
    assert r.report.n_skipped == 4 and [s.line for s in r.report.skipped] == [2, 3, 4, 5]
    summary = r.report.summary()
    assert summary.startswith(f"skipped 4 of 6 lines of {p}")
    assert "line 2: line without a tab" in summary and "byte offset" in summary
    warnings = [m for m in caplog.messages if "lenient read" in m]
    assert len(warnings) == 1 and "skipped 4 of 6 lines" in warnings[0]
    assert r.report.as_dict()["skipped"] == 4


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.train"):
        read_labeled_lines(tmp_path / "nope.train")

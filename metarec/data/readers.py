"""Strict readers for labeled text files, with an opt-in lenient mode that reports what it skipped.

Every malformed line is an error that names the file, the line (and for a bad byte, its byte
offset) and the offending value. ``lenient=True`` skips such lines instead and returns a
:class:`ReadReport` saying how many and where; a summary is logged as one warning per file.

Files are only ever opened for reading (``Path.read_bytes``): a loader never modifies a data
directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Optional

from metarec.data.corpus import DataError
from metarec.log import get_logger

log = get_logger(__name__)

_BOM = b"\xef\xbb\xbf"


def shorten(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


@dataclass
class SkippedLine:
    """One line (or row) a lenient reader skipped.

    Attributes:
        line: 1-based line number (row number for formats without lines, e.g. Parquet).
        reason: what was wrong, e.g. ``"line without a tab"``.
        value: the offending value, shortened.
    """

    line: int
    reason: str
    value: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.reason}: {self.value!r}"


@dataclass
class ReadReport:
    """What a reader did with one file: lines kept and lines skipped (lenient mode only).

    Attributes:
        path: the file read.
        n_kept: lines (rows) turned into examples.
        skipped: the skipped lines, in file order.
    """

    path: str
    n_kept: int = 0
    skipped: list[SkippedLine] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self, limit: int = 5) -> str:
        """One line: ``"skipped 2 of 120 lines of f.tsv: line 4: ...; line 9: ..."``."""
        total = self.n_kept + self.n_skipped
        head = "; ".join(str(s) for s in self.skipped[:limit])
        more = f"; and {self.n_skipped - limit} more" if self.n_skipped > limit else ""
        unit = self.skipped[0].unit if self.skipped else "line"
        return f"skipped {self.n_skipped} of {total} {unit}s of {self.path}: {head}{more}"

    def as_dict(self) -> dict:
        """JSON-friendly form (for a family's metadata)."""
        return {"path": self.path, "kept": self.n_kept, "skipped": self.n_skipped,
                "where": [str(s) for s in self.skipped]}


class LineError(DataError):
    """A malformed line (or row); ``line``, ``reason`` and ``value`` say what was wrong."""

    def __init__(self, path: str, line: int, reason: str, value: str, unit: str = "line") -> None:
        self.path, self.line, self.reason, self.value, self.unit = path, line, reason, value, unit
        super().__init__(f"{path}, {unit} {line}: {reason}: {value!r}")

    def skipped(self) -> SkippedLine:
        """This error as a lenient reader's record of a skipped line."""
        return SkippedLine(self.line, self.reason, shorten(self.value), self.unit)


def decode_lines(path: Path | str, data: Optional[bytes] = None, lenient: bool = False,
                 report: Optional[ReadReport] = None) -> list[tuple[int, str]]:
    """Splits a UTF-8 file into ``(line_number, text)`` pairs, checking every byte.

    Line ends ``\\n`` and ``\\r\\n`` are removed; a UTF-8 byte-order mark at the start is
    dropped; the empty string after a final newline is not a line.

    Args:
        path: the file (also used in messages).
        data: the file's bytes, if already read.
        lenient: skip lines with a non-UTF-8 byte (recorded in ``report``) instead of raising.
        report: where skipped lines are recorded.

    Raises:
        LineError: for a byte that is not valid UTF-8, naming line, byte offset in the file
            and the byte.
    """
    path = Path(path)
    raw = path.read_bytes() if data is None else data
    start = 0
    if raw.startswith(_BOM):
        start = len(_BOM)
    out: list[tuple[int, str]] = []
    n = 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        stop = len(raw) if end < 0 else end
        chunk = raw[start:stop]
        n += 1
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
        try:
            out.append((n, chunk.decode("utf-8")))
        except UnicodeDecodeError as e:
            offset = start + e.start
            bad = raw[offset : offset + 1]
            err = LineError(str(path), n, f"non-UTF-8 byte 0x{bad.hex()} at byte offset {offset} "
                                          f"(column {e.start + 1})", chunk.decode("utf-8", errors="replace"))
            if not lenient:
                raise err from None
            if report is not None:
                report.skipped.append(SkippedLine(n, err.reason, shorten(err.value)))
        if end < 0:
            break
        start = end + 1
    return out


def data_warning(logger: logging.Logger, strict: bool, message: str, *args: Any) -> None:
    """A problem with the data that a run can go on with: a warning, or under ``strict`` an error.

    Raises:
        DataError: under ``strict``, with the message and how to allow it.
    """
    if strict:
        raise DataError((message % args if args else message) + " (strict=true makes this an error; "
                        "strict=false lets the run go on with a warning)")
    logger.warning(message, *args)


@dataclass
class LabeledLines:
    """The examples of one ``text<TAB>label`` file.

    Attributes:
        texts: text of every kept line.
        labels: raw label string of every kept line (as written in the file).
        lines: 1-based line number of every kept line.
        report: lines kept and skipped.
    """

    texts: list[str]
    labels: list[str]
    lines: list[int]
    report: ReadReport

    def __len__(self) -> int:
        return len(self.texts)


def read_labeled_lines(
    path: Path | str,
    labels: Optional[Collection[str]] = None,
    lenient: bool = False,
    log_skipped: bool = True,
) -> LabeledLines:
    """Reads a ``text<TAB>label`` file strictly.

    A line holds exactly one tab: the label follows it (stripped of surrounding spaces), the
    text precedes it (stripped). A second tab or a carriage return inside a line means records
    ran together (a lost newline, CR-only line ends) or a text field holds a tab: an error,
    or under ``lenient`` a counted skip — never a silently merged record.

    Args:
        path: the file.
        labels: the declared label set, e.g. ``{"-1", "1"}``; ``None`` accepts any non-empty label.
        lenient: skip malformed lines instead of raising; they are listed in the returned
            report and (with ``log_skipped``) summarized in one warning.
        log_skipped: log that warning when lines were skipped.

    Returns:
        Texts, raw labels, line numbers and the read report.

    Raises:
        LineError: (a :class:`DataError`) naming file, line and value, for a line without
            a tab, with more than one tab or a carriage return, an empty label or one outside
            ``labels``, an empty text, or a non-UTF-8 byte (with its byte offset). Not raised
            under ``lenient``.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    report = ReadReport(str(path))
    declared = None if labels is None else {str(x) for x in labels}
    texts: list[str] = []
    raw_labels: list[str] = []
    line_nos: list[int] = []
    for n, line in decode_lines(path, lenient=lenient, report=report):
        problem: Optional[tuple[str, str]] = None
        if "\r" in line:  # CR-only line ends, or records run together: many records in one "line"
            problem = ("carriage return inside the line (CR-only line ends or records run together?)", line)
        elif "\t" not in line:
            problem = ("line without a tab (expected text<TAB>label)", line)
        elif line.count("\t") > 1:  # a tab in the text, or a lost newline joining records
            problem = (f"{line.count(chr(9))} tabs, expected exactly one (text<TAB>label; records run together "
                       "or a tab inside the text?)", line)
        else:
            text, label = line.rsplit("\t", 1)
            text, label = text.strip(), label.strip()
            if not label:
                problem = ("empty label", line)
            elif declared is not None and label not in declared:
                problem = (f"label outside the declared set {sorted(declared)}", label)
            elif not text:
                problem = ("empty text", line)
        if problem is not None:
            if not lenient:
                raise LineError(str(path), n, problem[0], shorten(problem[1], 200))
            report.skipped.append(SkippedLine(n, problem[0], shorten(problem[1])))
            continue
        texts.append(text)
        raw_labels.append(label)
        line_nos.append(n)
    report.n_kept = len(texts)
    if report.skipped:
        report.skipped.sort(key=lambda s: s.line)
        if log_skipped:
            log.warning("lenient read: %s", report.summary())
    return LabeledLines(texts=texts, labels=raw_labels, lines=line_nos, report=report)


def read_json(path: Path, what: str) -> Any:
    """The JSON value in ``path``.

    Raises:
        DataError: ``"<what> <path>, line N: not valid JSON (...)"`` for a file that does not parse.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path}, line {e.lineno}: not valid JSON ({e.msg})") from None

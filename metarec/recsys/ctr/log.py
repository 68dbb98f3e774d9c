"""A click log streamed from an interaction file into numpy arrays.

The interaction file (RecBole ``<name>.inter`` or MovieLens ``u.data``) is read line by line into
fixed-size numpy chunks: no Python object per row survives the line it came from, so memory is
the arrays (~29 bytes a row) plus one dict entry per distinct user and item id. The user and
item feature files are small and go through the cold-start readers
(:mod:`metarec.recsys.interactions`).

The click label is a ``label`` field (0/1) when ``label_field`` is set, else the rule
``click_field >= click_threshold`` (MovieLens: rating >= 4, as Meta-Embedding binarizes ratings).

Bad input is an error naming the file, line and value (:class:`~metarec.data.readers.LineError`):
a wrong number of fields, a byte that is not UTF-8, a non-numeric time / rating / label, a rating
outside ``[rating_min, rating_max]``, a label other than 0/1, an id missing from the ``.user`` /
``.item`` file. ``lenient=True`` skips such lines and counts them (:class:`ReadReport`). Repeated
(user, item) pairs are kept: in a click log a repeated impression is data, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from metarec.data.corpus import DataError
from metarec.recsys.interactions import LogCounts, column_index, locate_interactions, read_movielens_tables, read_recbole_table, DelimitedTable
from metarec.data.readers import LineError, ReadReport, shorten
from metarec.log import get_logger

log = get_logger(__name__)

#: Rows per numpy chunk while streaming (memory granularity, not a limit).
CHUNK_ROWS = 1 << 16


@dataclass
class ClickLog(LogCounts):
    """Clicks of users on items, as arrays, with the raw feature tables.

    Attributes:
        user_ids, item_ids: raw id of every user / item index (first-seen order in the log).
        user: user index of every row, ``(n,)`` int32.
        item: item index of every row, ``(n,)`` int32.
        click: label of every row, ``(n,)`` float32 in {0, 1}.
        time: timestamp of every row, ``(n,)`` float64.
        line: line number of every row in the interaction file, ``(n,)`` int64 (messages, tie order).
        user_features, item_features: field → raw string value per user / item index.
        source: the interaction file.
        report: lines skipped under ``lenient``, one :class:`ReadReport` per file.
    """

    user_ids: list[str]
    item_ids: list[str]
    user: np.ndarray
    item: np.ndarray
    click: np.ndarray
    time: np.ndarray
    line: np.ndarray
    user_features: dict[str, list[str]] = field(default_factory=dict)
    item_features: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    report: list[ReadReport] = field(default_factory=list)

    def summary_extras(self) -> dict:
        return {"click_rate": float(self.click.mean()) if len(self) else float("nan")}


class _Chunks:
    """Growable column arrays filled row by row in fixed-size numpy chunks."""

    DTYPES = (np.int32, np.int32, np.float32, np.float64, np.int64)

    def __init__(self, rows: int = CHUNK_ROWS) -> None:
        self.rows = rows
        self.done: list[list[np.ndarray]] = [[] for _ in self.DTYPES]
        self._new()

    def _new(self) -> None:
        self.cur = [np.empty(self.rows, dtype=d) for d in self.DTYPES]
        self.k = 0

    def add(self, u: int, i: int, c: float, t: float, n: int) -> None:
        cur, k = self.cur, self.k
        cur[0][k], cur[1][k], cur[2][k], cur[3][k], cur[4][k] = u, i, c, t, n
        self.k = k + 1
        if self.k == self.rows:
            for col, arr in zip(self.done, cur):
                col.append(arr)
            self._new()

    def arrays(self) -> list[np.ndarray]:
        return [np.concatenate([*col, arr[: self.k]]) for col, arr in zip(self.done, self.cur)]


def _feature_dict(table: Optional[DelimitedTable], id_field: str, lenient: bool,
                  reports: dict[str, ReadReport]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """id → row position and field → values per row of a feature file; a duplicate id is an error."""
    if table is None:
        return {}, {}
    c = column_index(table, id_field)
    pos: dict[str, int] = {}
    keep: list[int] = []
    rep = reports.setdefault(table.path, ReadReport(table.path))
    for r, (n, row) in enumerate(zip(table.lines, table.rows)):
        if row[c] in pos:
            err = LineError(table.path, n, f"duplicate {id_field} (first on line {table.lines[keep[pos[row[c]]]]})",
                            row[c])
            if not lenient:
                raise err
            rep.skipped.append(err.skipped())
            continue
        pos[row[c]] = len(keep)
        keep.append(r)
    rep.n_kept = len(keep)
    cols = {name: [table.rows[r][j] for r in keep] for j, name in enumerate(table.names) if name != id_field}
    return pos, cols


def read_click_log(
    data_dir: Path | str,
    fmt: str = "auto",
    dataset: Optional[str] = None,
    label_field: Optional[str] = None,
    click_field: str = "rating",
    click_threshold: float = 4.0,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    lenient: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> ClickLog:
    """Streams a folder's interaction file into a :class:`ClickLog` (see module docstring).

    Args:
        data_dir: RecBole atomic (``*.inter`` + optional ``.user`` / ``.item``) or MovieLens folder.
        fmt: ``"recbole"``, ``"movielens"`` or ``"auto"``.
        dataset: RecBole file stem; default the folder's only ``*.inter``.
        label_field: a 0/1 click field of the ``.inter`` file; ``None``: use the rule below.
        click_field, click_threshold: click iff ``click_field >= click_threshold``.
        rating_min, rating_max: declared range of ``click_field`` (checked).
        user_field, item_field, time_field: RecBole field names.
        lenient: skip bad lines (counted) instead of raising.
        chunk_rows: rows per numpy chunk.

    Raises:
        LineError: a bad line (file, line, value).
        DataError: no usable row, a missing field, a bad option.
        FileNotFoundError: no interaction file.
    """
    data_dir, fmt, dataset = locate_interactions(data_dir, fmt, dataset)
    reports: dict[str, ReadReport] = {}
    if fmt == "recbole":
        path = data_dir / f"{dataset}.inter"

        def read(p: Path) -> Optional[DelimitedTable]:
            return read_recbole_table(p, lenient, reports.setdefault(str(p), ReadReport(str(p)))) if p.is_file() else None

        users, items = read(data_dir / f"{dataset}.user"), read(data_dir / f"{dataset}.item")
        header = True
    elif fmt == "movielens":
        path = data_dir / "u.data"
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        # The feature files go through the rating reader (which also parses u.data once: ml-100k is small).
        _, users, items = read_movielens_tables(data_dir, lenient, reports)
        reports.pop(str(path), None)
        user_field, item_field, time_field = "user_id", "item_id", "timestamp"
        header = False
    else:
        raise ValueError(f"interactions format must be 'recbole', 'movielens' or 'auto', got {fmt!r}")
    upos, ufeat = _feature_dict(users, user_field, lenient, reports)
    ipos, ifeat = _feature_dict(items, item_field, lenient, reports)
    rep = reports.setdefault(str(path), ReadReport(str(path)))
    chunks = _Chunks(chunk_rows)
    uidx: dict[str, int] = {}
    iidx: dict[str, int] = {}
    with open(path, "rb") as f:
        names = ["user_id", "item_id", "rating", "timestamp"]
        n = 0
        if header:
            n = 1
            first = f.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
            names = []
            for col in first.split("\t"):
                name, sep, _ = col.strip().partition(":")
                if not sep or not name:
                    raise LineError(str(path), 1, "header column is not `field:type`", col)
                names.append(name)
        where = {nm: j for j, nm in enumerate(names)}

        def col(name: str, what: str) -> int:
            if name not in where:
                raise DataError(f"{path}: no {what} field {name!r} in the header (fields: {names})")
            return where[name]

        cu, ci, ct = col(user_field, "user"), col(item_field, "item"), col(time_field, "time")
        if label_field:
            cl, lo, hi = col(label_field, "label"), 0.0, 1.0
        else:
            cl, lo, hi = col(click_field, "click"), float(rating_min), float(rating_max)
        width, thr, check_u, check_i = len(names), float(click_threshold), users is not None, items is not None
        for raw in f:
            n += 1
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
                vals = line.split("\t")
                if len(vals) != width:
                    raise LineError(str(path), n, f"{len(vals)} tab-separated values, expected {width}",
                                    shorten(line, 200))
                u, i = vals[cu].strip(), vals[ci].strip()
                try:
                    t = float(vals[ct])
                except ValueError:
                    raise LineError(str(path), n, f"{time_field} is not a number", vals[ct]) from None
                try:
                    v = float(vals[cl])
                except ValueError:
                    raise LineError(str(path), n, f"{names[cl]} is not a number", vals[cl]) from None
                if label_field and v not in (0.0, 1.0):
                    raise LineError(str(path), n, f"{label_field} is not 0 or 1", vals[cl])
                if not lo <= v <= hi:
                    raise LineError(str(path), n, f"{names[cl]} outside the declared range [{lo:g}, {hi:g}]", vals[cl])
                if check_u and u not in upos:
                    raise LineError(str(path), n, f"unknown {user_field} (not in {users.path})", u)  # type: ignore[union-attr]
                if check_i and i not in ipos:
                    raise LineError(str(path), n, f"unknown {item_field} (not in {items.path})", i)  # type: ignore[union-attr]
            except UnicodeDecodeError as e:
                err = LineError(str(path), n, f"non-UTF-8 byte at column {e.start + 1}",
                                raw.decode("utf-8", errors="replace"))
                if not lenient:
                    raise err from None
                rep.skipped.append(err.skipped())
                continue
            except LineError as err:
                if not lenient:
                    raise
                rep.skipped.append(err.skipped())
                continue
            click = v if label_field else float(v >= thr)
            chunks.add(uidx.setdefault(u, len(uidx)), iidx.setdefault(i, len(iidx)), click, t, n)
    user, item, click_a, time, lines = chunks.arrays()
    rep.n_kept = int(user.shape[0])
    if not rep.n_kept:
        raise DataError(f"{path}: no interactions")
    for r in reports.values():
        if r.skipped:
            log.warning("lenient read: %s", r.summary())
    user_ids, item_ids = list(uidx), list(iidx)
    return ClickLog(
        user_ids=user_ids, item_ids=item_ids, user=user, item=item, click=click_a, time=time, line=lines,
        user_features={k: [v[upos[u]] if u in upos else "" for u in user_ids] for k, v in ufeat.items()},
        item_features={k: [v[ipos[i]] if i in ipos else "" for i in item_ids] for k, v in ifeat.items()},
        source=f"{path} ({fmt})", report=list(reports.values()),
    )

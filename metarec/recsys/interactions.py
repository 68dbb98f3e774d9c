"""User–item interactions (user, item, rating, timestamp) with optional user and item features.

Two on-disk formats, one in-memory form (:class:`Interactions`):

* **RecBole atomic files** — ``<name>.inter`` (required), ``<name>.user`` and ``<name>.item``
  (optional), tab-separated, first line ``field:type`` headers (``user_id:token``,
  ``rating:float``, ``movie_title:token_seq`` …). The embedded ml-100k copy is the one the PyPI
  package ``recbole`` ships (``recbole/dataset_example/ml-100k/``), located with
  :func:`recbole_ml100k_dir` *without importing recbole*.
* **MovieLens ml-100k** — ``u.data`` (tab: user item rating timestamp), ``u.user``
  (``id|age|gender|occupation|zip``) and ``u.item`` (``id|title|release date|video date|url|``
  19 genre flags, latin-1). Its fields are renamed to RecBole's names (``age``, ``gender``,
  ``occupation``, ``movie_title``, ``release_year``, ``class``) so one config fits both.

Bad input is an error naming the file, line and value (:class:`~metarec.data.readers.LineError`):
a malformed line, a rating outside the declared range, a user or item id missing from the
``.user`` / ``.item`` file, a duplicate (user, item) pair. ``lenient=True`` skips such lines
instead and counts them in :attr:`Interactions.report` — never a silent drop.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from metarec.data.corpus import DataError
from metarec.data.readers import LineError, ReadReport, SkippedLine, shorten, decode_lines
from metarec.log import get_logger

log = get_logger(__name__)

#: The 19 genres of ml-100k's ``u.item`` flags, in column order (used when ``u.genre`` is absent).
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]


class LogCounts:
    """What every interaction log reports about itself: rows, users, items, lines skipped.

    Mixed into the log dataclasses (:class:`Interactions`, the CTR ``ClickLog``), which provide
    ``user`` (one entry per row), ``user_ids``, ``item_ids``, ``source`` and ``report``.
    """

    def __len__(self) -> int:
        return int(self.user.shape[0])  # type: ignore[attr-defined]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)  # type: ignore[attr-defined]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)  # type: ignore[attr-defined]

    def summary_extras(self) -> dict:
        """Counts a kind of log adds to :meth:`read_summary` (e.g. a click rate)."""
        return {}

    def read_summary(self) -> dict:
        """JSON-friendly counts of what was read and skipped (for a run's filter report)."""
        report = self.report  # type: ignore[attr-defined]
        return {"source": self.source, "interactions": len(self), "users": self.n_users,  # type: ignore[attr-defined]
                "items": self.n_items, **self.summary_extras(),
                "skipped_lines": {r.path: r.n_skipped for r in report if r.n_skipped},
                "skipped_where": [w for r in report for w in r.as_dict()["where"][:5]]}


@dataclass
class Interactions(LogCounts):
    """Ratings of users on items, with their feature tables.

    Attributes:
        user_ids: raw id of every user index (users that rated something, first-seen order).
        item_ids: raw id of every item index.
        user: user index of every interaction, shape ``(n,)``.
        item: item index of every interaction, shape ``(n,)``.
        rating: rating of every interaction, shape ``(n,)`` float32.
        timestamp: time of every interaction, shape ``(n,)`` float64 (seconds).
        user_features: field → raw string value per user index (``""`` = missing).
        item_features: field → raw string value per item index.
        rating_range: the declared ``(min, max)`` rating.
        source: where the data came from (for messages and run records).
        origins: ``"file:line"`` of every interaction.
        report: lines skipped under ``lenient`` (one :class:`ReadReport` per file).
    """

    user_ids: list[str]
    item_ids: list[str]
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    user_features: dict[str, list[str]] = field(default_factory=dict)
    item_features: dict[str, list[str]] = field(default_factory=dict)
    rating_range: tuple[float, float] = (1.0, 5.0)
    source: str = ""
    origins: list[str] = field(default_factory=list)
    report: list[ReadReport] = field(default_factory=list)



# -- locating the embedded data -----------------------------------------------------------------
def recbole_ml100k_dir() -> Path:
    """The ml-100k folder shipped inside the installed ``recbole`` package (not imported).

    ``importlib.util.find_spec`` only locates the package: recbole's ``__init__`` imports its
    whole stack, which metarec does not install (``pip install --no-deps recbole==1.2.1``).

    Raises:
        FileNotFoundError: recbole is not installed, or its copy lacks the ml-100k files.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded ml-100k data comes from the PyPI package recbole (not installed): run "
            "scripts/bootstrap.sh, or `pip install --no-deps recbole==1.2.1`, or pass family.data_dir=/path/to/ml-100k")
    d = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (d / "ml-100k.inter").is_file():
        raise FileNotFoundError(f"{d}/ml-100k.inter not found in the installed recbole package")
    return d


def detect_format(data_dir: Path) -> str:
    """``"recbole"`` when the folder has a ``*.inter`` file, ``"movielens"`` when it has ``u.data``."""
    if any(data_dir.glob("*.inter")):
        return "recbole"
    if (data_dir / "u.data").is_file():
        return "movielens"
    raise FileNotFoundError(f"{data_dir}: neither RecBole atomic files (*.inter) nor MovieLens ml-100k (u.data)")


# -- parsing ------------------------------------------------------------------------------------
@dataclass
class DelimitedTable:
    """Rows of one delimited file: header names, values per row, line number per row."""

    path: str
    names: list[str]
    rows: list[list[str]]
    lines: list[int]


def read_recbole_table(path: Path, lenient: bool, report: ReadReport) -> DelimitedTable:
    lines = decode_lines(path, lenient=lenient, report=report)
    if not lines:
        raise DataError(f"{path}: empty file (expected a `field:type` header line)")
    n0, header = lines[0]
    names = []
    for col in header.split("\t"):
        name, sep, _type = col.strip().partition(":")
        if not sep or not name:
            raise LineError(str(path), n0, "header column is not `field:type`", col)
        names.append(name)
    rows, nums = [], []
    for n, line in lines[1:]:
        if not line.strip():
            continue
        vals = line.split("\t")
        if len(vals) != len(names):
            err = LineError(str(path), n, f"{len(vals)} tab-separated values, the header has {len(names)}", line)
            if not lenient:
                raise err
            report.skipped.append(err.skipped())
            continue
        rows.append([v.strip() for v in vals])
        nums.append(n)
    return DelimitedTable(str(path), names, rows, nums)


def column_index(table: DelimitedTable, name: str) -> int:
    try:
        return table.names.index(name)
    except ValueError:
        raise DataError(f"{table.path}: no field {name!r} in the header (fields: {table.names})") from None


def read_movielens_tables(data_dir: Path, lenient: bool, reports: dict[str, ReadReport]) -> tuple[DelimitedTable, Optional[DelimitedTable], Optional[DelimitedTable]]:
    """ml-100k's u.data / u.user / u.item as tables with RecBole field names."""
    def split_file(path: Path, sep: str, n_cols: Optional[int], encoding: str) -> list[tuple[int, list[str]]]:
        rep = reports.setdefault(str(path), ReadReport(str(path)))
        out = []
        for n, raw in enumerate(path.read_bytes().decode(encoding).splitlines(), start=1):
            if not raw.strip():
                continue
            vals = [v.strip() for v in raw.split(sep)]
            if n_cols is not None and len(vals) != n_cols:
                err = LineError(str(path), n, f"{len(vals)} values separated by {sep!r}, expected {n_cols}", raw)
                if not lenient:
                    raise err
                rep.skipped.append(err.skipped())
                continue
            out.append((n, vals))
        return out

    data = split_file(data_dir / "u.data", "\t", 4, "utf-8")
    inter = DelimitedTable(str(data_dir / "u.data"), ["user_id", "item_id", "rating", "timestamp"],
                   [v for _, v in data], [n for n, _ in data])
    users = None
    if (data_dir / "u.user").is_file():
        rows = split_file(data_dir / "u.user", "|", 5, "latin-1")
        users = DelimitedTable(str(data_dir / "u.user"), ["user_id", "age", "gender", "occupation", "zip_code"],
                       [v for _, v in rows], [n for n, _ in rows])
    items = None
    if (data_dir / "u.item").is_file():
        genres = ML100K_GENRES
        if (data_dir / "u.genre").is_file():
            pairs = [ln.split("|") for ln in (data_dir / "u.genre").read_text("latin-1").splitlines() if ln.strip()]
            genres = [g for g, _ in sorted(pairs, key=lambda p: int(p[1]))]
        rows = split_file(data_dir / "u.item", "|", 5 + len(genres), "latin-1")
        out = []
        for n, v in rows:
            title = re.sub(r"\s*\(\d{4}\)\s*$", "", v[1])  # "Toy Story (1995)" → "Toy Story", as RecBole
            year = v[2][-4:] if re.search(r"\d{4}$", v[2]) else ""
            flags = v[5:]
            bad = [f for f in flags if f not in ("0", "1")]
            if bad:
                err = LineError(str(data_dir / "u.item"), n, "genre flag is not 0 or 1", bad[0])
                if not lenient:
                    raise err
                reports[str(data_dir / "u.item")].skipped.append(err.skipped())
                continue
            out.append((n, [v[0], title, year, " ".join(g for g, f in zip(genres, flags) if f == "1")]))
        items = DelimitedTable(str(data_dir / "u.item"), ["item_id", "movie_title", "release_year", "class"],
                       [v for _, v in out], [n for n, _ in out])
    return inter, users, items


def locate_interactions(data_dir: Path | str, fmt: str = "auto",
                        dataset: Optional[str] = None) -> tuple[Path, str, Optional[str]]:
    """``(folder, format, RecBole dataset stem)`` of an interaction folder, checked.

    Raises:
        FileNotFoundError: the folder, or its ``<dataset>.inter`` file, is missing.
        DataError: a RecBole folder with several ``*.inter`` files and no ``dataset``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"interactions folder {data_dir} does not exist")
    fmt = detect_format(data_dir) if fmt == "auto" else fmt
    if fmt == "recbole":
        if dataset is None:
            inters = sorted(data_dir.glob("*.inter"))
            if len(inters) != 1:
                raise DataError(f"{data_dir}: {len(inters)} *.inter files; say which with dataset=<stem>")
            dataset = inters[0].stem
        path = data_dir / f"{dataset}.inter"
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    return data_dir, fmt, dataset


def load_interactions(
    data_dir: Path | str,
    fmt: str = "auto",
    dataset: Optional[str] = None,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str = "rating",
    time_field: str = "timestamp",
    lenient: bool = False,
) -> Interactions:
    """Reads and validates interactions and feature files from a folder.

    Args:
        data_dir: the folder.
        fmt: ``"recbole"``, ``"movielens"`` or ``"auto"`` (:func:`detect_format`).
        dataset: RecBole file stem (``ml-100k`` for ``ml-100k.inter``); default: the only
            ``*.inter`` file's stem.
        rating_min, rating_max: the declared rating range; a rating outside it is an error.
        user_field, item_field, rating_field, time_field: RecBole field names.
        lenient: skip bad lines (counted in ``report`` and logged) instead of raising.

    Raises:
        LineError: a malformed line, a non-numeric or out-of-range rating or timestamp, an
            unknown user or item id, or a duplicate (user, item) pair (with both lines).
        FileNotFoundError: the folder or its interactions file is missing.
    """
    data_dir, fmt, dataset = locate_interactions(data_dir, fmt, dataset)
    reports: dict[str, ReadReport] = {}
    if fmt == "recbole":
        path = data_dir / f"{dataset}.inter"

        def read(p: Path) -> DelimitedTable:
            return read_recbole_table(p, lenient, reports.setdefault(str(p), ReadReport(str(p))))

        inter = read(path)
        users = read(data_dir / f"{dataset}.user") if (data_dir / f"{dataset}.user").is_file() else None
        items = read(data_dir / f"{dataset}.item") if (data_dir / f"{dataset}.item").is_file() else None
    elif fmt == "movielens":
        if not (data_dir / "u.data").is_file():
            raise FileNotFoundError(f"no such file: {data_dir / 'u.data'}")
        inter, users, items = read_movielens_tables(data_dir, lenient, reports)
        user_field, item_field, rating_field, time_field = "user_id", "item_id", "rating", "timestamp"
    else:
        raise ValueError(f"interactions format must be 'recbole', 'movielens' or 'auto', got {fmt!r}")

    def features(table: Optional[DelimitedTable], id_field: str) -> tuple[dict[str, dict[str, str]], list[str]]:
        """id → {field: value}; duplicate ids are an error."""
        if table is None:
            return {}, []
        c = column_index(table, id_field)
        out: dict[str, dict[str, str]] = {}
        first: dict[str, int] = {}
        rep = reports.setdefault(table.path, ReadReport(table.path))
        for n, row in zip(table.lines, table.rows):
            key = row[c]
            if key in out:
                err = LineError(table.path, n, f"duplicate {id_field} (first on line {first[key]})", key)
                if not lenient:
                    raise err
                rep.skipped.append(err.skipped())
                continue
            first[key] = n
            out[key] = {name: v for name, v in zip(table.names, row) if name != id_field}
        rep.n_kept = len(out)
        return out, [nm for nm in table.names if nm != id_field]

    user_tab, user_fields = features(users, user_field)
    item_tab, item_fields = features(items, item_field)

    cu, ci, cr = column_index(inter, user_field), column_index(inter, item_field), column_index(inter, rating_field)
    ct = column_index(inter, time_field)
    rep = reports.setdefault(inter.path, ReadReport(inter.path))
    uidx: dict[str, int] = {}
    iidx: dict[str, int] = {}
    seen: dict[tuple[int, int], int] = {}
    U, I, R, T, origins = [], [], [], [], []
    for n, row in zip(inter.lines, inter.rows):
        u, i = row[cu], row[ci]
        problem: Optional[tuple[str, str]] = None
        try:
            r = float(row[cr])
        except ValueError:
            problem = (f"{rating_field} is not a number", row[cr])
        try:
            t = float(row[ct])
        except ValueError:
            problem = problem or (f"{time_field} is not a number", row[ct])
        if problem is None and not (rating_min <= r <= rating_max):
            problem = (f"{rating_field} outside the declared range [{rating_min:g}, {rating_max:g}]", row[cr])
        if problem is None and users is not None and u not in user_tab:
            problem = (f"unknown {user_field} (not in {users.path})", u)
        if problem is None and items is not None and i not in item_tab:
            problem = (f"unknown {item_field} (not in {items.path})", i)
        if problem is None:
            key = (uidx.get(u, -1), iidx.get(i, -1))
            if key in seen and key[0] >= 0 and key[1] >= 0:
                problem = (f"duplicate ({user_field}, {item_field}) pair, first on line {seen[key]}", f"{u}\t{i}")
        if problem is not None:
            if not lenient:
                raise LineError(inter.path, n, problem[0], shorten(problem[1], 200))
            rep.skipped.append(SkippedLine(n, problem[0], shorten(problem[1])))
            continue
        a = uidx.setdefault(u, len(uidx))
        b = iidx.setdefault(i, len(iidx))
        seen[(a, b)] = n
        U.append(a)
        I.append(b)
        R.append(r)
        T.append(t)
        origins.append(f"{inter.path}:{n}")
    rep.n_kept = len(U)
    if not U:
        raise DataError(f"{inter.path}: no interactions")
    for r_ in reports.values():
        if r_.skipped:
            log.warning("lenient read: %s", r_.summary())
    user_ids, item_ids = list(uidx), list(iidx)
    return Interactions(
        user_ids=user_ids, item_ids=item_ids,
        user=np.asarray(U, dtype=np.int64), item=np.asarray(I, dtype=np.int64),
        rating=np.asarray(R, dtype=np.float32), timestamp=np.asarray(T, dtype=np.float64),
        user_features={f: [user_tab.get(u, {}).get(f, "") for u in user_ids] for f in user_fields},
        item_features={f: [item_tab.get(i, {}).get(f, "") for i in item_ids] for f in item_fields},
        rating_range=(float(rating_min), float(rating_max)), source=f"{data_dir} ({fmt})", origins=origins,
        report=list(reports.values()),
    )

"""Any labeled corpus: JSONL, CSV/TSV, Parquet files or a Hugging Face dataset, one config each.

:func:`read_table` reads a file with configurable text / label / group columns, strictly (a
malformed row is an error naming file, line and value) or leniently (such rows are skipped
and reported). :func:`load_hf_dataset` does the same for ``datasets.load_dataset`` (by hub
name or local path; ``datasets`` is an optional extra, imported only when used).

The family registered as ``corpus`` cuts such a corpus into meta-train / val / test by
classes (``split_by: class``, e.g. user intents or product categories: unseen classes at test
time) or by groups (``split_by: group``, e.g. sentiment per product domain: unseen domains).
The split lives in a split file (JSON) committed with the configs: created once from
``seed`` when it does not exist, read as it is ever after — never reshuffled per run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from metarec.data.corpus import DataError, LabeledCorpus
from metarec.data.family import SPLITS, TaskFamily, split_ids
from metarec.data.readers import LineError, ReadReport, shorten, decode_lines
from metarec.log import get_logger
from metarec.registry import FAMILIES

log = get_logger(__name__)

FORMATS = ("jsonl", "csv", "tsv", "parquet")
_SUFFIX_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
                  ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


def infer_format(path: Path | str) -> str:
    """``jsonl``, ``csv``, ``tsv`` or ``parquet`` from the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMAT:
        raise DataError(f"{path}: cannot tell the format from suffix {suffix!r}; set format to one of {FORMATS}")
    return _SUFFIX_FORMAT[suffix]


@dataclass
class _Record:
    where: int  # 1-based line (text formats) or row (Parquet, HF)
    values: Mapping[str, Any]
    error: Optional[tuple[str, str]] = None  # (reason, value) found while parsing


@dataclass
class Columns:
    """Which columns hold the text, the label and (optionally) the group of an example."""

    text: str = "text"
    label: str = "label"
    group: Optional[str] = None

    def wanted(self) -> list[tuple[str, str]]:
        out = [("text_column", self.text), ("label_column", self.label)]
        if self.group:
            out.append(("group_column", self.group))
        return out


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _as_label(v: Any) -> str:
    """Raw label as a string; integral floats (``1.0`` from a Parquet column) become ``"1"``."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalars
        return _as_label(v.item())
    return str(v).strip()


# ---------------------------------------------------------------------------------------
# Reading records
# ---------------------------------------------------------------------------------------
def _jsonl_records(path: Path, lenient: bool, report: ReadReport) -> list[_Record]:
    out = []
    for n, line in decode_lines(path, lenient=lenient, report=report):
        if not line.strip():
            continue  # blank lines carry no record
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            out.append(_Record(n, {}, (f"invalid JSON ({e.msg} at column {e.colno})", line)))
            continue
        if not isinstance(obj, dict):
            out.append(_Record(n, {}, ("a JSONL line must hold an object", line)))
            continue
        out.append(_Record(n, obj))
    return out


def _csv_records(path: Path, delimiter: str, lenient: bool, report: ReadReport) -> tuple[list[_Record], list[str]]:
    lines = decode_lines(path, lenient=lenient, report=report)
    physical = [n for n, _ in lines]
    reader = csv.DictReader(io.StringIO("\n".join(t for _, t in lines)), delimiter=delimiter, restkey="\0extra")
    header = list(reader.fieldnames or [])
    out = []
    for row in reader:
        n = physical[min(reader.line_num, len(physical)) - 1]
        extra = row.pop("\0extra", None)
        if extra is not None:
            value = delimiter.join([str(v) for v in row.values()] + extra)
            out.append(_Record(n, row, (f"row has {len(header) + len(extra)} fields, the header has {len(header)}",
                                        value)))
            continue
        out.append(_Record(n, row))
    return out, header


def _parquet_records(path: Path) -> tuple[list[_Record], list[str]]:
    try:
        import pandas as pd

        frame = pd.read_parquet(path)
    except ImportError as e:
        raise ImportError(f"reading Parquet ({path}) needs a working pyarrow or fastparquet: {e}") from e
    header = [str(c) for c in frame.columns]
    return [_Record(i + 1, rec) for i, rec in enumerate(frame.to_dict("records"))], header


def _check_columns(path: str, columns: Columns, present: Sequence[str]) -> None:
    for option, col in columns.wanted():
        if col not in present:
            raise DataError(f"{path}: no column {col!r} ({option}); columns present: {list(present)}")


@dataclass
class Table:
    """Validated rows of a labeled table, before labels become class ids.

    Attributes:
        texts, labels, groups: one entry per kept row (labels and groups as raw strings).
        where: 1-based line (or row) of every kept row.
        unit: ``"line"`` or ``"row"``.
        path: the source (file path or dataset name).
        report: rows kept and skipped.
    """

    texts: list[str]
    labels: list[str]
    groups: Optional[list[str]]
    where: list[int]
    unit: str
    path: str
    report: ReadReport = field(default_factory=lambda: ReadReport(""))


def _validate(records: Iterable[_Record], path: str, unit: str, columns: Columns,
              declared: Optional[set[str]], lenient: bool, report: ReadReport) -> Table:
    texts: list[str] = []
    labels: list[str] = []
    groups: list[str] = []
    where: list[int] = []
    for rec in records:
        v = rec.values
        problem = rec.error
        missing = [c for _, c in columns.wanted() if c not in v]
        if problem is not None:
            pass
        elif missing:
            problem = (f"no {missing[0]!r} field (fields: {sorted(map(str, v))})", json.dumps(v, default=str))
        else:
            text, label = v[columns.text], v[columns.label]
            group = v[columns.group] if columns.group else "-"
            if _is_missing(text) or not isinstance(text, str):
                problem = ("empty text" if _is_missing(text) else f"text is not a string ({type(text).__name__})",
                           str(text))
            elif _is_missing(label):
                problem = ("empty label", str(label))
            elif declared is not None and _as_label(label) not in declared:
                problem = (f"label outside the declared set {sorted(declared)}", _as_label(label))
            elif _is_missing(group):
                problem = ("empty group", str(group))
        if problem is not None:
            err = LineError(path, rec.where, problem[0], shorten(problem[1], 200), unit=unit)
            if not lenient:
                raise err
            report.skipped.append(err.skipped())
            continue
        texts.append(text.strip())
        labels.append(_as_label(label))
        if columns.group:
            groups.append(_as_label(group))
        where.append(rec.where)
    report.n_kept = len(texts)
    report.skipped.sort(key=lambda s: s.line)
    if report.skipped:
        log.warning("lenient read: %s", report.summary())
    return Table(texts=texts, labels=labels, groups=groups if columns.group else None, where=where, unit=unit,
                 path=path, report=report)


def read_table(
    path: Path | str,
    text_column: str = "text",
    label_column: str = "label",
    group_column: Optional[str] = None,
    format: Optional[str] = None,
    labels: Optional[Sequence[Any]] = None,
    lenient: bool = False,
) -> Table:
    """Reads a JSONL, CSV, TSV or Parquet file of labeled texts, strictly.

    Args:
        path: the file.
        text_column, label_column, group_column: the columns (JSON keys) to use.
        format: ``jsonl``, ``csv``, ``tsv`` or ``parquet``; default from the suffix.
        labels: the declared label set (compared as strings); ``None`` accepts any.
        lenient: skip malformed rows (reported in ``Table.report`` and one warning).

    Raises:
        DataError: for a column absent from the file (naming file and the columns present);
            for a row with an empty text / label / group, a label outside ``labels``, invalid
            JSON, a wrong field count or a non-UTF-8 byte (naming file, line, value) unless
            ``lenient``.
        ImportError: for Parquet without a working pyarrow.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    fmt = format or infer_format(path)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; known: {FORMATS}")
    columns = Columns(text_column, label_column, group_column)
    report = ReadReport(str(path))
    unit = "line"
    if fmt == "jsonl":
        records = _jsonl_records(path, lenient, report)
        present = sorted({str(k) for r in records for k in r.values})
        if any(r.error is None for r in records):
            _check_columns(str(path), columns, present)
    elif fmt in ("csv", "tsv"):
        records, present = _csv_records(path, "," if fmt == "csv" else "\t", lenient, report)
        _check_columns(str(path), columns, present)
    else:
        records, present = _parquet_records(path)
        _check_columns(str(path), columns, present)
        unit = "row"
    declared = None if labels is None else {_as_label(x) for x in labels}
    return _validate(records, str(path), unit, columns, declared, lenient, report)


def load_hf_dataset(
    name_or_path: str,
    text_column: str = "text",
    label_column: str = "label",
    group_column: Optional[str] = None,
    config_name: Optional[str] = None,
    split: str = "train",
    labels: Optional[Sequence[Any]] = None,
    lenient: bool = False,
    **load_kwargs: Any,
) -> Table:
    """Reads a Hugging Face dataset (``datasets.load_dataset``, by hub name or local path).

    ``ClassLabel`` columns are read as their class names. Needs the optional package
    ``datasets`` (``pip install datasets``); hub names need a network connection.

    Raises:
        ImportError: if ``datasets`` is not installed.
        DataError: as :func:`read_table` (rows are numbered from 1).
    """
    try:
        import datasets
    except ImportError as e:
        raise ImportError("loading a Hugging Face dataset needs the optional package `datasets`: "
                          "pip install datasets  (or: pip install 'metarec[hf]')") from e
    ds = datasets.load_dataset(name_or_path, config_name, split=split, **load_kwargs)
    where = f"{name_or_path}" + (f" ({config_name})" if config_name else "") + f" [{split}]"
    columns = Columns(text_column, label_column, group_column)
    _check_columns(where, columns, list(ds.column_names))
    data = {c: list(ds[c]) for _, c in columns.wanted()}
    for _, c in columns.wanted():
        feature = ds.features.get(c)
        if hasattr(feature, "int2str"):  # ClassLabel: ids → names
            data[c] = [None if v is None or v < 0 else feature.int2str(int(v)) for v in data[c]]
    n = len(ds)
    records = [_Record(i + 1, {c: data[c][i] for c in data}) for i in range(n)]
    declared = None if labels is None else {_as_label(x) for x in labels}
    return _validate(records, where, "row", columns, declared, lenient, ReadReport(where))


def table_to_corpus(table: Table, name: str, label_map: Optional[Mapping[Any, str]] = None,
                    labels: Optional[Sequence[Any]] = None) -> LabeledCorpus:
    """Turns validated rows into a :class:`LabeledCorpus`.

    Class names: ``label_map[raw]`` when a label map is given (in its order), else the
    declared ``labels`` (in their order), else the raw labels sorted. The map from raw label
    to class name is recorded in ``corpus.label_map``.
    """
    if label_map:
        mapping = {_as_label(k): str(v) for k, v in label_map.items()}
        names = list(dict.fromkeys(mapping.values()))
    elif labels is not None:
        mapping = {_as_label(x): _as_label(x) for x in labels}
        names = list(mapping.values())
    else:
        mapping = {x: x for x in sorted(set(table.labels))}
        names = list(mapping.values())
    unknown = sorted(set(table.labels) - set(mapping))
    if unknown:
        raise DataError(f"{table.path}: labels {unknown} are not in the label map {mapping}")
    cid = {n: i for i, n in enumerate(names)}
    y = np.array([cid[mapping[x]] for x in table.labels], dtype=np.int64)
    kw: dict[str, Any] = {}
    if table.groups is not None:
        group_names = sorted(set(table.groups))
        gid = {g: i for i, g in enumerate(group_names)}
        kw = dict(groups=np.array([gid[g] for g in table.groups], dtype=np.int64), group_names=group_names)
    return LabeledCorpus(texts=table.texts, labels=y, label_names=names, name=name, source=table.path,
                         origins=[f"{table.path}:{w}" for w in table.where],
                         label_map={k: v for k, v in mapping.items() if k in set(table.labels)}, **kw)


# ---------------------------------------------------------------------------------------
# Split files
# ---------------------------------------------------------------------------------------
def resolve_split_file(split_file: str | Path) -> Path:
    """An absolute path as is; a relative one from the working directory if it is there, else
    inside the config tree (``metarec/configs/``, e.g. ``splits/arsc_dev.json``)."""
    p = Path(split_file).expanduser()
    if p.is_absolute() or p.exists():
        return p
    from metarec.config import config_dir

    return config_dir() / p


def fixed_split(
    split_file: str | Path,
    names: Sequence[str],
    kind: str,
    fractions: Sequence[float],
    seed: int,
    dataset: str,
) -> dict[str, list[str]]:
    """The meta-train / val / test split of ``names`` (classes or groups), fixed in a file.

    If ``split_file`` exists it is read as it is (``seed`` and ``fractions`` are then unused:
    the file wins, so editing it by hand is how a split is changed). Otherwise the split is
    made once with :func:`metarec.data.family.split_ids` from ``seed`` and written there, to
    be committed.

    Args:
        split_file: the JSON file; relative paths are inside the config tree (``metarec/configs/``).
        names: every class (or group) name of the data.
        kind: ``"class"`` or ``"group"``: what the names are (checked against the file).
        fractions: train / val / test fractions used when the file is created.
        seed: seed used when the file is created.
        dataset: dataset name recorded in a new file.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` — names, each in one split.

    Raises:
        DataError: if the file is malformed, was made for the other kind, names something
            the data lacks, puts a name in two splits or leaves a split empty.
    """
    path = resolve_split_file(split_file)
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions must be {len(SPLITS)} non-negative numbers summing to 1, got {list(fractions)}")
    if not path.exists():
        parts = split_ids(sorted(names), list(fractions), seed=int(seed))
        content = {"dataset": dataset, "split_by": kind, "seed": int(seed), "fractions": [float(f) for f in fractions],
                   "note": "made once from the seed by metarec; read as it is by every run (edit by hand to change)",
                   **{s: list(p) for s, p in zip(SPLITS, parts)}}
        _validate_split(path, content, names, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x", encoding="utf-8") as f:  # "x": never overwrite a file made meanwhile
                json.dump(content, f, indent=2)
                f.write("\n")
            log.warning("created split file %s from seed %d (%s split of %d %s); commit it — later runs read it "
                        "as it is", path, seed, kind, len(names), "classes" if kind == "class" else "groups")
        except FileExistsError:
            pass
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"split file {path}: invalid JSON ({e})") from None
    return _validate_split(path, content, names, kind)


def _validate_split(path: Path, content: Any, names: Sequence[str], kind: str) -> dict[str, list[str]]:
    if not isinstance(content, dict) or any(not isinstance(content.get(s), list) for s in SPLITS):
        raise DataError(f"split file {path}: needs lists {list(SPLITS)}")
    if content.get("split_by", kind) != kind:
        other = "classes" if content["split_by"] == "class" else "groups"
        raise DataError(f"split file {path} splits {other}, but this family splits {'classes' if kind == 'class' else 'groups'}")
    known = set(names)
    plural = "classes" if kind == "class" else "groups"
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for s in SPLITS:
        entries = [str(x) for x in content[s]]
        unknown = [x for x in entries if x not in known]
        if unknown:
            raise DataError(f"split file {path}: {s} lists {plural} the data lacks: {unknown} "
                            f"(the data has {sorted(known)})")
        for x in entries:
            if x in seen:
                raise DataError(f"split file {path}: {kind} {x!r} is in both {seen[x]!r} and {s!r}")
            seen[x] = s
        if not entries:
            raise DataError(f"split file {path}: split {s!r} is empty")
        out[s] = entries
    unused = sorted(known - set(seen))
    if unused:
        log.warning("split file %s puts %d %s of the data in no split; they are unused: %s",
                    path, len(unused), plural, unused)
    return out


# ---------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------
def check_options(family: str, given: Mapping[str, Any], fn: Any, exclude: Sequence[str] = (),
                  also: Sequence[str] = ()) -> None:
    """Raises a DataError naming unknown options (a typo in a config) and the known ones.

    ``given`` are the options passed on to ``fn``; ``also`` are the family's own options.
    """
    import inspect

    known = list(also) + [k for k in inspect.signature(fn).parameters if k not in exclude]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DataError(f"{family}: unknown option(s) {unknown}; known: {known}")


def load_corpus(
    path: Optional[str] = None,
    hf_dataset: Optional[str] = None,
    hf_config: Optional[str] = None,
    hf_split: str = "train",
    hf_kwargs: Optional[Mapping[str, Any]] = None,
    format: Optional[str] = None,
    text_column: str = "text",
    label_column: str = "label",
    group_column: Optional[str] = None,
    labels: Optional[Sequence[Any]] = None,
    label_map: Optional[Mapping[Any, str]] = None,
    lenient: bool = False,
    name: str = "corpus",
) -> LabeledCorpus:
    """A :class:`LabeledCorpus` from a file (``path``) or a Hugging Face dataset (``hf_dataset``)."""
    if (path is None) == (hf_dataset is None):
        raise DataError(f"corpus {name!r}: give exactly one of path and hf_dataset (got path={path!r}, "
                        f"hf_dataset={hf_dataset!r})")
    declared = list(label_map) if label_map else labels
    if path is not None:
        table = read_table(Path(path).expanduser(), text_column, label_column, group_column, format=format,
                           labels=declared, lenient=lenient)
    else:
        table = load_hf_dataset(str(hf_dataset), text_column, label_column, group_column, config_name=hf_config,
                                split=hf_split, labels=declared, lenient=lenient, **dict(hf_kwargs or {}))
    if not table.texts:
        raise DataError(f"{table.path}: no examples")
    return table_to_corpus(table, name=name, label_map=label_map, labels=labels)


@FAMILIES.register("corpus")
def corpus_family(
    split_file: Optional[str] = None,
    dataset: Optional[str] = None,
    split_by: str = "class",
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    **source: Any,
) -> TaskFamily:
    """A task family from any labeled corpus (file or Hugging Face dataset).

    Args:
        split_file: the JSON split file (relative: inside ``metarec/configs/``), e.g.
            ``splits/my_intents.json``; created from ``seed`` if it does not exist.
        dataset: name of the dataset (family name, messages); default the file stem.
        split_by: ``"class"``: classes are divided between meta-train / val / test, one task
            per split; ``"group"``: one task per group (``group_column``, with the labels as
            classes), groups divided between splits.
        fractions: train / val / test fractions for a new split file.
        seed: seed for a new split file only.
        **source: :func:`load_corpus` arguments: ``path`` or ``hf_dataset`` (+ ``hf_config``,
            ``hf_split``, ``hf_kwargs``), ``format``, ``text_column``, ``label_column``,
            ``group_column``, ``labels`` (declared set), ``label_map`` (raw → class name),
            ``lenient``.

    Returns:
        The family; ``metadata`` records source, split file and split.
    """
    if split_by not in ("class", "group"):
        raise DataError(f"corpus: split_by must be 'class' or 'group', got {split_by!r}")
    check_options("corpus", source, load_corpus, exclude=("name",),
                  also=("split_file", "dataset", "split_by", "fractions", "seed"))
    name = dataset or (Path(source["path"]).stem if source.get("path") else str(source.get("hf_dataset", "corpus")))
    if not split_file:
        raise DataError(f"corpus {name!r}: split_file is required (a JSON file in splits/, created "
                        "once from the seed, then committed and read as it is)")
    corpus = load_corpus(name=name, **source)
    metadata: dict[str, Any] = {"source": corpus.source, "split_file": str(resolve_split_file(split_file)),
                                "split_by": split_by, "label_map": dict(corpus.label_map)}
    if split_by == "class":
        split = fixed_split(split_file, corpus.label_names, "class", fractions, seed, name)
        ids = {n: i for i, n in enumerate(corpus.label_names)}
        metadata["split"] = split
        return TaskFamily.from_class_split(name, corpus, {s: [ids[n] for n in v] for s, v in split.items()},
                                           metadata=metadata)
    if corpus.group_names is None:
        raise DataError(f"corpus {name!r}: split_by=group needs group_column")
    split = fixed_split(split_file, corpus.group_names, "group", fractions, seed, name)
    gid = {n: i for i, n in enumerate(corpus.group_names)}
    metadata["split"] = split
    return TaskFamily.from_group_split(name, corpus, {s: [gid[n] for n in v] for s, v in split.items()},
                                       metadata=metadata)


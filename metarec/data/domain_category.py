"""Product-domain categorization: "which product category is this review (or title) about?".

From any corpus with a group column — ARSC's review domain is one — an N-way K-shot family
whose classes are the groups. Meta-train / val / test domains are fixed in a committed split
file (``splits/arsc_domains.json`` for ARSC), made once from a seed and read as
it is by every run. Test episodes therefore ask for product domains never seen in training.

A text found in several domains cannot be categorized (it would be right in two classes):
such texts are dropped, and a text repeated within one domain is kept once; both counts are
logged and recorded in ``metadata``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from metarec.data.arsc import (FILTERED_LIST, TARGET_LIST, THRESHOLDS, arsc_path, read_domain_list,
                               resolve_data_dir, subsample_per_class)
from metarec.data.corpus import DataError, LabeledCorpus
from metarec.data.family import TaskFamily
from metarec.data.readers import ReadReport, read_labeled_lines
from metarec.data.tabular import check_options, fixed_split, load_corpus, resolve_split_file
from metarec.log import get_logger
from metarec.registry import FAMILIES

log = get_logger(__name__)

ARSC_SPLITS: tuple[str, ...] = ("train", "dev", "test")


def arsc_domain_table(data_dir: str | Path, lenient: bool = False) -> tuple[list[str], list[str], list[str]]:
    """Every review of an ARSC directory with its domain: ``(texts, domains, origins)``.

    Reads all ``<domain>.<t>.<split>`` files of the domains in the filtered list (and the
    target list when present) that exist; the sentiment labels are checked, then ignored.
    """
    root = resolve_data_dir(data_dir)
    domains = read_domain_list(root / FILTERED_LIST)
    if (root / TARGET_LIST).is_file():
        domains += [d for d in read_domain_list(root / TARGET_LIST) if d not in domains]
    texts: list[str] = []
    groups: list[str] = []
    origins: list[str] = []
    reports: list[ReadReport] = []
    for d in domains:
        files = [arsc_path(root, d, t, s) for t in THRESHOLDS for s in ARSC_SPLITS]
        files = [p for p in files if p.is_file()]
        if not files:
            raise DataError(f"domain_category: domain {d!r} is listed in {root} but has no files there")
        for p in files:
            lines = read_labeled_lines(p, labels=("-1", "1"), lenient=lenient, log_skipped=False)
            if lines.report.skipped:
                reports.append(lines.report)
            texts += lines.texts
            groups += [d] * len(lines)
            origins += [f"{p}:{n}" for n in lines.lines]
    if reports:
        log.warning("domain_category: lenient read skipped %d malformed lines: %s",
                    sum(r.n_skipped for r in reports), " | ".join(r.summary(limit=3) for r in reports))
    return texts, groups, origins


def dedupe_by_class(texts: Sequence[str], classes: Sequence[str]) -> tuple[np.ndarray, int, int]:
    """Rows to keep: texts of one class only, each once (first occurrence).

    Returns:
        ``(kept rows, texts dropped as ambiguous, repeated rows dropped)``.
    """
    owners: dict[str, set[str]] = {}
    for t, c in zip(texts, classes):
        owners.setdefault(t, set()).add(c)
    seen: set[str] = set()
    keep = []
    ambiguous = repeated = 0
    for i, t in enumerate(texts):
        if len(owners[t]) > 1:
            ambiguous += 1
        elif t in seen:
            repeated += 1
        else:
            seen.add(t)
            keep.append(i)
    return np.asarray(keep, dtype=np.int64), ambiguous, repeated


@FAMILIES.register("domain_category")
def domain_category(
    split_file: Optional[str] = None,
    data_dir: Optional[str] = None,
    group_column: str = "group",
    text_column: str = "text",
    dataset: Optional[str] = None,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    max_per_class: Optional[int] = None,
    dedupe: bool = True,
    lenient: bool = False,
    **source: Any,
) -> TaskFamily:
    """N-way K-shot categorization whose classes are the groups of a corpus (product domains).

    Args:
        split_file: the JSON file fixing which groups are meta-train / val / test (relative:
            inside ``metarec/configs/``), e.g. ``splits/arsc_domains.json``; created once from
            ``seed`` when it does not exist, read as it is ever after.
        data_dir: an ARSC directory: classes are its review domains. Without it, the corpus
            comes from ``**source`` (``path`` or ``hf_dataset``, ``format``, ...) and the
            classes are the values of ``group_column``.
        group_column, text_column: columns of a file / HF source.
        dataset: dataset name (family name, split file record); default ``"arsc_domains"``
            for ARSC, else the file stem.
        fractions: train / val / test fractions of groups for a new split file.
        seed: seed of a new split file and of ``max_per_class`` subsampling.
        max_per_class: keep at most this many texts per group (drawn once with ``seed``).
        dedupe: drop texts found in several groups and repeats within a group.
        lenient: skip malformed lines (reported) instead of raising.
        **source: more :func:`metarec.data.tabular.load_corpus` options for a file source.

    Returns:
        A class-split family (one task per split) named ``dataset``.
    """
    if not split_file:
        raise DataError("domain_category: split_file is required (e.g. splits/arsc_domains.json)")
    if data_dir is not None:
        if source:
            raise DataError(f"domain_category: options {sorted(source)} are for file sources; data_dir reads ARSC")
        name = dataset or "arsc_domains"
        texts, groups, origins = arsc_domain_table(data_dir, lenient=lenient)
        src = str(resolve_data_dir(data_dir))
    else:
        check_options("domain_category", source, load_corpus,
                      exclude=("name", "text_column", "label_column", "group_column", "labels", "label_map", "lenient"),
                      also=("split_file", "data_dir", "group_column", "text_column", "dataset", "fractions", "seed",
                            "max_per_class", "dedupe", "lenient"))
        name = dataset or (Path(source["path"]).stem if source.get("path") else str(source.get("hf_dataset")))
        base = load_corpus(text_column=text_column, label_column=group_column, lenient=lenient, name=name, **source)
        texts, origins = base.texts, list(base.origins or [base.where(i) for i in range(len(base))])
        groups = [base.label_names[c] for c in base.labels]
        src = base.source
    n_read = len(texts)
    rows = np.arange(n_read)
    ambiguous = repeated = 0
    if dedupe:
        rows, ambiguous, repeated = dedupe_by_class(texts, groups)
        if ambiguous or repeated:
            log.info("domain_category %s: dropped %d texts found in several groups and %d repeats within a group",
                     name, ambiguous, repeated)
    names = sorted(set(groups[i] for i in rows.tolist()))
    gid = {g: i for i, g in enumerate(names)}
    y = np.array([gid[groups[i]] for i in rows.tolist()], dtype=np.int64)
    if max_per_class is not None:
        keep = subsample_per_class(y, int(max_per_class), np.random.default_rng(int(seed)))
        rows, y = rows[keep], y[keep]
    corpus = LabeledCorpus(
        texts=[texts[i] for i in rows.tolist()], labels=y, label_names=names, name=name, source=src,
        origins=[origins[i] for i in rows.tolist()], label_map={g: g for g in names},
    )
    split = fixed_split(split_file, names, "class", fractions, seed, name)
    metadata: dict[str, Any] = {
        "source": src, "split_file": str(resolve_split_file(split_file)), "split": split,
        "texts_read": n_read, "dropped_ambiguous": ambiguous, "dropped_repeats": repeated,
        "max_per_class": max_per_class, "seed": seed,
    }
    return TaskFamily.from_class_split(name, corpus, {s: [gid[g] for g in v] for s, v in split.items()},
                                       metadata=metadata)

"""ARSC: Amazon Review Sentiment Classification (Yu et al., NAACL 2018, arXiv:1805.07513).

A directory in the ARSC layout holds ``<domain>.<t2|t4|t5>.<train|dev|test>`` files of
``text<TAB>label`` lines (label ``1`` or ``-1``), ``workspace.filtered.list`` (the
meta-training domains, one per line) and, in the full benchmark, ``workspace.target.list``
(the meta-test domains). The family registered here as ``arsc`` follows the paper's protocol:

* **meta-train**: one task per (domain, threshold) of the filtered list, 2-way
  (negative, positive), episodes sampled from its ``.train`` file;
* **meta-val**: the same tasks, episodes sampled from their ``.dev`` files;
* **meta-test** (official): one *fixed* task per (target domain, threshold): the ``.train``
  file IS the support set (5 per class, used as is, never resampled) and the whole ``.test``
  file is the query set. Accuracy is reported per task and as the mean over tasks.

Each protocol is one small function (:func:`official_protocol`, :func:`dev_protocol`,
:func:`fallback_protocol`) deciding which domains are tested and with which supports; the
files are read by shared readers. Without ``workspace.target.list`` (the public copy of the
training domains, bundled with metarec: :mod:`metarec.data.arsc_bundle`) there is no official
meta-test: with a development split file (``dev_split``) some filtered domains are held out with
fixed supports; otherwise the family says so in a warning and falls back to holding out some
filtered domains (``holdout_domains``): they are left out of meta-training and evaluated like
targets, with a support set of ``n_shot`` per class drawn once (seeded) from their ``.train``
file and their whole ``.test`` file as queries. Such numbers are NOT comparable with the
paper's. ``target_dir`` points the meta-test at another directory holding a target list (e.g.
a small fixture made by :func:`make_target_fixture`).

Labels are mapped once, ``-1 → negative`` and ``1 → positive``
(:data:`ARSC_LABEL_MAP`, recorded in ``corpus.label_map`` and so with every result). Class
names say which task they belong to: ``"apparel.t2:negative"``.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from metarec.data.arsc_bundle import bundled_arsc_dir
from metarec.data.corpus import DataError, LabeledCorpus
from metarec.data.family import Task, TaskFamily
from metarec.data.readers import LabeledLines, ReadReport, data_warning, read_json, read_labeled_lines
from metarec.data.tabular import resolve_split_file
from metarec.log import get_logger
from metarec.evaluation.tables import per_task_table  # noqa: F401  (re-exported)
from metarec.registry import FAMILIES

log = get_logger(__name__)

#: Raw ARSC label → class name. Class id = position in :data:`LABEL_NAMES`.
ARSC_LABEL_MAP: dict[str, str] = {"-1": "negative", "1": "positive"}
LABEL_NAMES: list[str] = ["negative", "positive"]
THRESHOLDS: tuple[str, ...] = ("t2", "t4", "t5")
FILTERED_LIST = "workspace.filtered.list"
TARGET_LIST = "workspace.target.list"
#: Filtered domains held out as a stand-in meta-test when a directory has no target list.
DEFAULT_HOLDOUT: tuple[str, ...] = ("camera_photo", "health_personal_care")
#: Support examples per class of an ARSC target task.
PROTOCOL_SHOT = 5
#: Name prefix of the meta-training tasks ``oracle_heldout_train`` adds (``oracle-baby.t5``).
ORACLE_PREFIX = "oracle-"

#: Files a meta-training task may train on (``train_files``); ``.dev`` is also meta-validation.
TRAIN_FILES: tuple[str, ...] = ("train", "test", "dev")
ENV_DIR = "METAREC_ARSC_DIR"
#: ``data_dir`` value naming the public training domains bundled with metarec.
BUNDLED = "bundled"


def arsc_path(directory: Path | str, domain: str, threshold: str, split: str) -> Path:
    """``<directory>/<domain>.<threshold>.<split>``, e.g. ``apparel.t2.train``."""
    return Path(directory) / f"{domain}.{threshold}.{split}"


def read_domain_list(path: Path | str) -> list[str]:
    """Domains of a ``workspace.*.list`` file, one per line (blank lines ignored).

    Raises:
        DataError: for a duplicated domain or a line with spaces, naming file and line.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    out: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if any(c.isspace() for c in name):
            raise DataError(f"{path}, line {n}: a domain name has no spaces: {name!r}")
        if name in out:
            raise DataError(f"{path}, line {n}: domain {name!r} is listed twice")
        out.append(name)
    if not out:
        raise DataError(f"{path}: lists no domains")
    return out


def resolve_data_dir(data_dir: Optional[str | Path]) -> Path:
    """The ARSC directory: ``data_dir``, else ``$METAREC_ARSC_DIR``, else the bundled copy.

    ``"bundled"`` (:data:`BUNDLED`) names the public training domains shipped with metarec,
    checked and unpacked on first use (:func:`~metarec.data.arsc_bundle.bundled_arsc_dir`; a
    directory of that name is ``./bundled``). Any other value is a directory, which must hold a
    filtered list.
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_DIR) or BUNDLED
    if str(data_dir) == BUNDLED:
        return bundled_arsc_dir()
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"arsc: data_dir {path} is not a directory (resolved to {path.resolve()})")
    if not (path / FILTERED_LIST).is_file():
        found = sorted(p.name for p in path.iterdir())[:8]
        raise DataError(f"arsc: {path} is not an ARSC directory: it has no {FILTERED_LIST} (found: {found})")
    return path


def _row_rng(seed: int, path: Path) -> np.random.Generator:
    # One generator per file, keyed by the file's name: a file's subsample does not depend on
    # which other files are read.
    return np.random.default_rng([int(seed), zlib.crc32(path.name.encode())])


def subsample_per_class(labels: np.ndarray, max_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Positions keeping at most ``max_per_class`` of each label, drawn by ``rng``, in file order."""
    keep = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        if len(pos) > max_per_class:
            pos = rng.choice(pos, size=max_per_class, replace=False)
        keep.append(pos)
    return np.sort(np.concatenate(keep)) if keep else np.empty(0, dtype=np.int64)


@dataclass
class _CorpusBuilder:
    """Accumulates the rows of the files a family uses; row ``i`` of the corpus is row ``i`` here."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    group_names: list[str] = field(default_factory=list)
    _gid: dict[str, int] = field(default_factory=dict)

    def group(self, name: str) -> int:
        if name not in self._gid:
            self._gid[name] = len(self.group_names)
            self.group_names.append(name)
        return self._gid[name]

    def add(self, path: Path, lines: LabeledLines, task: str, positions: Optional[np.ndarray] = None) -> np.ndarray:
        """Adds lines (all, or those at ``positions``) of ``path``; returns their corpus rows."""
        g = self.group(task)
        pos = range(len(lines)) if positions is None else positions.tolist()
        start = len(self.texts)
        for p in pos:
            self.texts.append(lines.texts[p])
            self.labels.append(LABEL_NAMES.index(ARSC_LABEL_MAP[lines.labels[p]]))
            self.groups.append(g)
            self.origins.append(f"{path}:{lines.lines[p]}")
        return np.arange(start, len(self.texts), dtype=np.int64)

    def class_ids(self, rows: np.ndarray) -> np.ndarray:
        """Family class id of corpus rows: ``group * 2 + label`` (``"<task>:<label>"``)."""
        g = np.asarray(self.groups, dtype=np.int64)[rows]
        y = np.asarray(self.labels, dtype=np.int64)[rows]
        return g * len(LABEL_NAMES) + y


def _read(path: Path, lenient: bool, reports: list[ReadReport]) -> LabeledLines:
    lines = read_labeled_lines(path, labels=ARSC_LABEL_MAP, lenient=lenient, log_skipped=False)
    if lines.report.skipped:
        reports.append(lines.report)
    return lines


def _labels_of(lines: LabeledLines) -> np.ndarray:
    return np.array([LABEL_NAMES.index(ARSC_LABEL_MAP[x]) for x in lines.labels], dtype=np.int64)


def _check_known(option: str, names: Sequence[str], known: Sequence[str], list_path: Path) -> None:
    unknown = [d for d in names if d not in known]
    if unknown:
        raise DataError(f"arsc: {option} {unknown} not in {list_path} (it lists {list(known)})")


@dataclass(frozen=True)
class _Options:
    """The protocol-independent options of :func:`arsc`, checked once."""

    root: Path
    filtered: list[str]
    thresholds: list[str]
    train_files: list[str]
    domains: Optional[list[str]]
    n_shot: Optional[int]
    n_query: Optional[int]
    max_per_class: Optional[int]
    strict: bool
    lenient: bool
    seed: int

    @property
    def filtered_list(self) -> Path:
        return self.root / FILTERED_LIST


@dataclass
class _Protocol:
    """What a protocol decides: which domains are tested, from where, with which supports.

    ``support_rows(task, path, lines)`` gives the positions of a test task's support in its
    ``.train`` file (``None``: the whole file, as in the official protocol).
    """

    name: str
    held: list[str]
    test_domains: list[str]
    test_dir: Path
    support_rows: Callable[[str, Path, LabeledLines], Optional[np.ndarray]]
    expect_shot: Optional[int] = None
    dev_split: Optional[str] = None
    oracle: bool = False


def official_protocol(opts: _Options, target_dir: Path, holdout_domains: Optional[Sequence[str]]) -> _Protocol:
    """The paper's meta-test: the target list's domains, each target's ``.train`` file IS its support."""
    targets = read_domain_list(target_dir / TARGET_LIST)
    overlap = [d for d in targets if d in opts.filtered]
    if overlap:
        data_warning(log, opts.strict, "arsc: target domains %s of %s are also in %s; they are left out of "
                     "meta-training", overlap, target_dir / TARGET_LIST, opts.filtered_list)
    held = list(dict.fromkeys(overlap + list(holdout_domains or [])))
    return _Protocol("official", held, targets, target_dir, support_rows=lambda task, path, lines: None,
                     expect_shot=opts.n_shot)


def dev_protocol(opts: _Options, dev_split: str, holdout_domains: Optional[Sequence[str]],
                 oracle: bool = False) -> _Protocol:
    """The development protocol: the split file's held-out filtered domains with its fixed supports
    (``oracle``: their ``.train`` files are also meta-trained on, see :func:`arsc`)."""
    path = resolve_split_file(dev_split)
    spec = read_dev_split(path)
    _check_known(f"dev_split {path} holdout_domains", spec["holdout_domains"], opts.filtered, opts.filtered_list)
    if sorted(spec["thresholds"]) != sorted(opts.thresholds):
        raise DataError(f"arsc: dev_split {path} was drawn for thresholds {spec['thresholds']}, "
                        f"the family uses {opts.thresholds}")
    held = list(dict.fromkeys(list(spec["holdout_domains"]) + list(holdout_domains or [])))
    test_domains = list(spec["holdout_domains"])
    log.info("arsc: development protocol of %s: held-out domains %s, fixed supports from the split file",
             path, test_domains)
    return _Protocol("dev", held, test_domains, opts.root, dev_split=str(path), oracle=bool(oracle),
                     support_rows=lambda task, sup, lines: _dev_support_rows(spec, path, task, sup, lines))


def fallback_protocol(opts: _Options, holdout_domains: Optional[Sequence[str]]) -> _Protocol:
    """No target list: some filtered domains are held out and tested with seeded supports."""
    held = list(holdout_domains) if holdout_domains is not None else list(DEFAULT_HOLDOUT)
    _check_known("holdout_domains" if holdout_domains is not None else "default holdout_domains (set "
                 "family.holdout_domains)", held, opts.filtered, opts.filtered_list)
    if not held:
        raise DataError(f"arsc: {opts.root} has no {TARGET_LIST} and holdout_domains is empty: "
                        "there would be no meta-test tasks")
    shot = opts.n_shot if opts.n_shot is not None else PROTOCOL_SHOT
    log.warning(
        "arsc: no %s in %s, so this is NOT the official ARSC meta-test. Fallback: filtered domains %s are "
        "held out of meta-training and evaluated like targets (support: %d per class drawn once with seed "
        "%d from their .train files; queries: their whole .test files). For the official protocol set "
        "family.data_dir (or family.target_dir) to a directory with %s.",
        TARGET_LIST, opts.root, held, shot, opts.seed, TARGET_LIST)

    def support_rows(task: str, path: Path, lines: LabeledLines) -> np.ndarray:
        return subsample_per_class(_labels_of(lines), shot, _row_rng(opts.seed, path))

    return _Protocol("fallback", held, held, opts.root, support_rows=support_rows)


@FAMILIES.register("arsc")
def arsc(
    data_dir: Optional[str] = None,
    target_dir: Optional[str] = None,
    holdout_domains: Optional[Sequence[str]] = None,
    domains: Optional[Sequence[str]] = None,
    thresholds: Sequence[str] = THRESHOLDS,
    n_shot: Optional[int] = None,
    n_query: Optional[int] = None,
    max_per_class: Optional[int] = None,
    strict: bool = False,
    lenient: bool = False,
    seed: int = 0,
    dev_split: Optional[str] = None,
    train_files: Sequence[str] = ("train",),
    oracle_heldout_train: bool = False,
) -> TaskFamily:
    """The ARSC task family: 2-way sentiment tasks per (domain, threshold).

    Picks the protocol — :func:`dev_protocol` with ``dev_split``, else :func:`official_protocol`
    when a target list exists, else :func:`fallback_protocol` — and reads the files with the
    shared readers.

    Args:
        data_dir: an ARSC directory, or ``"bundled"`` (default: ``$METAREC_ARSC_DIR``, else
            the bundled public training domains, see :func:`resolve_data_dir`). Pointing it at a
            full ARSC directory with ``workspace.target.list`` gives the official meta-test.
        target_dir: where the meta-test tasks are read (its ``workspace.target.list`` and the
            targets' ``.train`` / ``.test`` files); default ``data_dir``. Target domains that
            also appear in the filtered list are left out of meta-training.
        holdout_domains: filtered domains left out of meta-training. Without a target list
            they are the meta-test (the fallback; ``None`` = :data:`DEFAULT_HOLDOUT`); with
            one, ``None`` holds out nothing beyond the target domains.
        domains: restrict meta-training (and meta-validation) to these filtered domains (quick
            runs, tests); ``None`` = all.
        thresholds: rating thresholds to use, default all of ``t2``, ``t4``, ``t5``.
        n_shot, n_query: the episode shape the family is used with (the experiment configs
            pass ``episodes.n_shot`` / ``n_query``). Meta-train / meta-val tasks with a class
            of fewer than ``n_shot + n_query`` lines cannot fill an episode: they are dropped
            with one warning naming them. ``None``: nothing is dropped (the episode sampler
            then raises for such a task). ``n_shot`` is also the support size per class of
            fallback meta-test tasks (default 5, as in the protocol).
        max_per_class: keep at most this many lines of each label per meta-train ``.train``
            and ``.dev`` file, drawn once with ``seed`` (quick runs; feature caching of all
            ~60k training lines takes minutes on a CPU). Target files are always read whole.
        strict: every data warning is an error: a listed file that is missing, a task dropped for
            too few lines (e.g. an empty file), lines skipped under ``lenient``, uneven target
            supports, target domains also listed for meta-training.
        lenient: skip malformed lines (reported in one warning and in ``metadata``) instead
            of raising.
        seed: seed of ``max_per_class`` subsampling and of fallback support sets; never the
            training seed, so every run sees the same tasks.
        dev_split: a development split file (:func:`make_dev_split`, e.g.
            ``splits/arsc_dev.json``): its held-out filtered domains are the
            meta-test, each task with the fixed support lines the file names and its whole
            ``.test`` file as queries (protocol ``"dev"``); a target list is then ignored.
        train_files: which files of a meta-training (domain, threshold) hold its training
            lines: ``["train"]`` (the protocol's meta-training data), or ``["train", "test"]``
            to add the meta-training domains' ``.test`` files, which the protocol leaves unused
            (they are never a target's or a held-out domain's; a domain without a ``.train``
            file, like ``music`` and ``video`` in the shared copy, then trains on its ``.test``).
            ``"dev"`` adds the ``.dev`` files too; they stay the meta-validation tasks, so
            validation is then in-sample (a warning says so): use it only when nothing is
            selected on ``val/acc``, as in the ARSC recipe.
        oracle_heldout_train: development protocol only. Also meta-train on every tested
            (split-file) domain's labelled ``.train`` file (tasks ``oracle-<domain>.<threshold>``,
            1,100-1,900 lines each on ARSC, the 10 support lines among them; ``max_per_class``
            caps them like every meta-training file) and test on its ``.test``
            file as usual: an in-domain ceiling of what the representation can reach with
            110-190x the labels, never a few-shot result (a warning says so, the metadata and
            the printed result are marked ``oracle``).

    Returns:
        The family ``"arsc"`` with splits ``train`` / ``val`` (sampled episodes) and ``test``
        (fixed support / query tasks). ``metadata`` records the protocol (``"official"``,
        ``"dev"`` or ``"fallback"``), directories, label map, tasks, missing files and dropped tasks.

    Raises:
        DataError: for a malformed line (file, line, value), unknown domains in an option,
            missing files under ``strict``, a target support set without both classes, or a
            split left without tasks.
    """
    opts = _options(data_dir, domains, thresholds, n_shot, n_query, max_per_class, strict, lenient, seed, train_files)
    if oracle_heldout_train and not dev_split:
        raise DataError("arsc: oracle_heldout_train=true trains on the held-out domains' .train files, which only the "
                        "development protocol keeps (set family.dev_split, e.g. experiment=arsc/multitask_dev); "
                        "an official target's .train file is its support")
    if holdout_domains is not None:
        _check_known("holdout_domains", list(holdout_domains), opts.filtered, opts.filtered_list)
    tdir = Path(target_dir).expanduser() if target_dir else opts.root
    if target_dir and not (tdir / TARGET_LIST).is_file():
        raise DataError(f"arsc: target_dir {tdir} has no {TARGET_LIST}")
    if dev_split:
        if target_dir:
            raise DataError("arsc: set either dev_split (development protocol) or target_dir (official), not both")
        protocol = dev_protocol(opts, dev_split, holdout_domains, oracle=oracle_heldout_train)
    elif (tdir / TARGET_LIST).is_file():
        protocol = official_protocol(opts, tdir, holdout_domains)
    else:
        protocol = fallback_protocol(opts, holdout_domains)
    return _build_family(opts, protocol)


def _options(data_dir: Optional[str], domains: Optional[Sequence[str]], thresholds: Sequence[str],
             n_shot: Optional[int], n_query: Optional[int], max_per_class: Optional[int], strict: bool,
             lenient: bool, seed: int, train_files: Sequence[str]) -> _Options:
    root = resolve_data_dir(data_dir)
    files = [str(f) for f in train_files]
    if not files or len(set(files)) != len(files) or not set(files) <= set(TRAIN_FILES):
        raise DataError(f"arsc: train_files must be distinct names among {list(TRAIN_FILES)}, got {files}")
    if "dev" in files:
        log.warning("arsc: train_files=%s includes the meta-training domains' .dev files, which are also the "
                    "meta-validation tasks: val/acc is in-sample (do not select checkpoints on it)", files)
    filtered = read_domain_list(root / FILTERED_LIST)
    thresholds = [str(t) for t in thresholds]
    if not thresholds:
        raise DataError("arsc: thresholds is empty")
    if domains is not None:
        _check_known("domains", list(domains), filtered, root / FILTERED_LIST)
    return _Options(root=root, filtered=filtered, thresholds=thresholds, train_files=files,
                    domains=list(domains) if domains is not None else None,
                    n_shot=int(n_shot) if n_shot is not None else None,
                    n_query=int(n_query) if n_query is not None else None,
                    max_per_class=int(max_per_class) if max_per_class is not None else None,
                    strict=bool(strict), lenient=bool(lenient), seed=int(seed))


def _plan(opts: _Options, protocol: _Protocol, train_domains: list[str]) -> tuple[list, list, list[Path]]:
    """The files of every task: ``(train tasks, test tasks, missing files)``; missing ones reported."""
    missing: list[Path] = []
    train_tasks = []  # (task name, training paths, dev path or None)
    for d in train_domains:
        for t in opts.thresholds:
            trs, dev = [arsc_path(opts.root, d, t, f) for f in opts.train_files], arsc_path(opts.root, d, t, "dev")
            missing.extend(p for p in (*trs, dev) if not p.is_file())
            present = [p for p in trs if p.is_file()]
            if present:
                train_tasks.append((f"{d}.{t}", present, dev if dev.is_file() else None))
    if protocol.oracle:  # the held-out domains' own labelled .train files: an in-domain ceiling, not few-shot
        for d in protocol.test_domains:
            for t in opts.thresholds:
                path = arsc_path(protocol.test_dir, d, t, "train")
                if path.is_file():
                    train_tasks.append((f"{ORACLE_PREFIX}{d}.{t}", [path], None))
    test_tasks = []  # (task name, support path, query path)
    for d in protocol.test_domains:
        for t in opts.thresholds:
            sup, qry = arsc_path(protocol.test_dir, d, t, "train"), arsc_path(protocol.test_dir, d, t, "test")
            gaps = [p for p in (sup, qry) if not p.is_file()]
            missing.extend(gaps)
            if not gaps:
                test_tasks.append((f"{d}.{t}", sup, qry))
    if missing:
        names = ", ".join(p.name for p in missing)
        if opts.strict:
            raise DataError(f"arsc: {len(missing)} listed files are missing (strict=true): {names} "
                            f"in {sorted({str(p.parent) for p in missing})}")
        log.warning("arsc: %d listed files are missing in %s; the (domain, threshold) tasks that need them are "
                    "skipped (a task is skipped when none of its training files %s exists; a missing .dev only "
                    "leaves it out of meta-validation; strict=true makes this an error): %s",
                    len(missing), ", ".join(sorted({str(p.parent) for p in missing})), opts.train_files, names)
    return train_tasks, test_tasks, missing


def _build_family(opts: _Options, protocol: _Protocol) -> TaskFamily:
    """Reads every task's files for ``protocol`` and assembles the family (shared by all protocols)."""
    train_domains = [d for d in opts.filtered
                     if d not in protocol.held and (opts.domains is None or d in opts.domains)]
    train_tasks, test_tasks, missing = _plan(opts, protocol, train_domains)
    if protocol.oracle:
        log.warning("arsc: oracle_heldout_train=true: meta-training also reads the held-out domains' labelled .train "
                    "files (%s); the result is an in-domain ceiling, not a few-shot result",
                    ", ".join(n for n, _, _ in train_tasks if n.startswith(ORACLE_PREFIX)))
    builder = _CorpusBuilder()
    reports: list[ReadReport] = []
    splits: dict[str, list[Task]] = {"train": [], "val": [], "test": []}
    for name, trs, dev in train_tasks:
        for split, paths in (("train", trs), ("val", [dev] if dev is not None else [])):
            if not paths:
                continue
            parts = []
            for path in paths:
                lines = _read(path, opts.lenient, reports)
                pos = None
                if opts.max_per_class is not None:
                    pos = subsample_per_class(_labels_of(lines), opts.max_per_class, _row_rng(opts.seed, path))
                parts.append(builder.add(path, lines, name, pos))
            splits[split].append(Task(name=name, indices=np.concatenate(parts), labels=np.empty(0, dtype=np.int64)))
    for name, sup, qry in test_tasks:
        s_lines = _read(sup, opts.lenient, reports)
        s_rows = builder.add(sup, s_lines, name, protocol.support_rows(name, sup, s_lines))
        q_rows = builder.add(qry, _read(qry, opts.lenient, reports), name)
        splits["test"].append(Task(name=name, indices=np.concatenate([s_rows, q_rows]),
                                   labels=np.empty(0, dtype=np.int64), support=s_rows, query=q_rows))
    if reports:
        n_skip = sum(r.n_skipped for r in reports)
        data_warning(log, opts.strict, "arsc: lenient read skipped %d malformed lines in %d files: %s", n_skip, len(reports),
                    " | ".join(r.summary(limit=3) for r in reports))

    root, test_dir = opts.root, protocol.test_dir
    corpus = LabeledCorpus(
        texts=builder.texts, labels=np.asarray(builder.labels, dtype=np.int64), label_names=list(LABEL_NAMES),
        groups=np.asarray(builder.groups, dtype=np.int64), group_names=builder.group_names, name="arsc",
        source=str(root) if test_dir == root else f"{root} (targets: {test_dir})", origins=builder.origins,
        label_map=dict(ARSC_LABEL_MAP),
    )
    for tasks in splits.values():
        for task in tasks:
            task.labels = builder.class_ids(task.indices)

    dropped = _drop_small(splits, opts.n_shot, opts.n_query, builder, opts.strict)
    _check_targets(splits["test"], builder, protocol.expect_shot, opts.strict)
    for split, tasks in splits.items():
        if not tasks:
            raise DataError(f"arsc: split {split!r} has no tasks (data_dir {root}, target_dir {test_dir}, "
                            f"meta-train domains {train_domains}, test domains {protocol.test_domains}, "
                            f"missing files {[p.name for p in missing]}, dropped {dropped.get(split, [])})")

    class_names = [f"{g}:{c}" for g in builder.group_names for c in LABEL_NAMES]
    metadata: dict[str, Any] = {
        "protocol": protocol.name,
        "dev_split": protocol.dev_split,
        "data_dir": str(root),
        "target_dir": str(test_dir),
        "label_map": dict(ARSC_LABEL_MAP),
        "thresholds": opts.thresholds,
        "holdout_domains": protocol.held,
        "test_domains": protocol.test_domains,
        "tasks": {k: [t.name for t in v] for k, v in splits.items()},
        "missing_files": [str(p) for p in missing],
        "dropped_tasks": dropped,
        "max_per_class": opts.max_per_class,
        "train_files": opts.train_files,
        "oracle_heldout_train": protocol.oracle,
        "seed": opts.seed,
        "skipped_lines": [r.as_dict() for r in reports],
    }
    log.info("arsc: %d meta-train, %d meta-val, %d meta-test tasks (%s protocol), %d texts",
             len(splits["train"]), len(splits["val"]), len(splits["test"]), metadata["protocol"], len(corpus))
    return TaskFamily(name="arsc", corpus=corpus, class_names=class_names, splits=splits, metadata=metadata)


def _drop_small(splits: dict[str, list[Task]], n_shot: Optional[int], n_query: Optional[int],
                builder: _CorpusBuilder, strict: bool = False) -> dict[str, list[str]]:
    """Drops train/val tasks with a class of fewer than ``n_shot + n_query`` lines (one warning)."""
    if n_shot is None or n_query is None:
        return {}
    need = int(n_shot) + int(n_query)
    labels = np.asarray(builder.labels, dtype=np.int64)
    dropped: dict[str, list[str]] = {}
    for split in ("train", "val"):
        keep = []
        for task in splits[split]:
            counts = np.bincount(labels[task.indices], minlength=len(LABEL_NAMES))
            if counts.min() < need:
                detail = "/".join(f"{int(n)} {c}" for n, c in zip(counts, LABEL_NAMES))
                dropped.setdefault(split, []).append(f"{task.name} ({detail})")
            else:
                keep.append(task)
        splits[split] = keep
    if dropped:
        data_warning(log, strict, "arsc: n_shot + n_query = %d lines per class are needed for an episode; dropped %s",
                     need, "; ".join(f"{split} tasks {', '.join(v)}" for split, v in dropped.items()))
    return dropped


def _check_targets(tasks: list[Task], builder: _CorpusBuilder, expect_shot: Optional[int], strict: bool = False) -> None:
    """A fixed task must have both classes in its support and no query class outside it."""
    uneven = []
    labels = np.asarray(builder.labels)
    for task in tasks:
        assert task.support is not None and task.query is not None
        s = np.bincount(labels[task.support], minlength=len(LABEL_NAMES))
        where = builder.origins[int(task.support[0])].rsplit(":", 1)[0] if len(task.support) else task.name
        if s.min() == 0:
            raise DataError(f"arsc: target support {where} must hold both classes, it has "
                            + ", ".join(f"{int(n)} {c}" for n, c in zip(s, LABEL_NAMES)))
        if len(task.query) == 0:
            raise DataError(f"arsc: target task {task.name} has an empty query (.test) file")
        if expect_shot is not None and (s != expect_shot).any():
            uneven.append(f"{task.name} ({'/'.join(f'{int(n)} {c}' for n, c in zip(s, LABEL_NAMES))})")
    if uneven:
        data_warning(log, strict, "arsc: target support sets differ from n_shot=%d per class; they are used as "
                     "they are: %s", expect_shot, ", ".join(uneven))


#: Version of the development split file format (see :func:`make_dev_split`).
DEV_SPLIT_FORMAT = 1


def _line_sha(text: str, label: str) -> str:
    return hashlib.sha256(f"{text}\t{label}".encode()).hexdigest()[:16]


def make_dev_split(
    data_dir: Path | str,
    n_domains: int = 4,
    min_test: int = 100,
    thresholds: Sequence[str] = THRESHOLDS,
    n_per_class: int = PROTOCOL_SHOT,
    seed: int = 0,
) -> dict[str, Any]:
    """The ARSC development protocol, drawn once: held-out domains and their fixed supports.

    ``n_domains`` domains are drawn with ``seed`` among the filtered domains that have a
    ``.train`` and at least ``min_test`` ``.test`` lines for every threshold. For each held-out
    (domain, threshold), ``n_per_class`` lines of each label of its ``.train`` file are drawn
    (the fixed 10-line support of the protocol); its whole ``.test`` file is the query set.
    The result names every support line by its 1-based line number and a hash of its content,
    so a run refuses a data directory whose files differ from the ones the split was drawn from.

    Returns:
        A JSON-ready dict (written to ``splits/arsc_dev.json`` by
        ``metarec arsc-dev-split DATA_DIR OUT``).
    """
    root = resolve_data_dir(data_dir)
    filtered = read_domain_list(root / FILTERED_LIST)
    eligible = []
    for d in filtered:
        ok = all(arsc_path(root, d, t, "train").is_file() and arsc_path(root, d, t, "test").is_file()
                 and len(read_labeled_lines(arsc_path(root, d, t, "test"), labels=ARSC_LABEL_MAP)) >= min_test
                 for t in thresholds)
        if ok:
            eligible.append(d)
    if len(eligible) < n_domains:
        raise DataError(f"arsc: only {len(eligible)} domains of {root / FILTERED_LIST} have a .train and "
                        f">= {min_test} .test lines per threshold ({eligible}); {n_domains} requested")
    rng = np.random.default_rng(seed)
    held = sorted(rng.choice(eligible, size=n_domains, replace=False).tolist())
    supports: dict[str, Any] = {}
    for d in held:
        for t in thresholds:
            path = arsc_path(root, d, t, "train")
            lines = read_labeled_lines(path, labels=ARSC_LABEL_MAP)
            pos = subsample_per_class(_labels_of(lines), n_per_class, _row_rng(seed, path))
            supports[f"{d}.{t}"] = {
                "file": path.name,
                "lines": [int(lines.lines[p]) for p in pos.tolist()],
                "sha256": [_line_sha(lines.texts[p], lines.labels[p]) for p in pos.tolist()],
            }
    return {
        "format": DEV_SPLIT_FORMAT,
        "protocol": "arsc-dev",
        "note": (f"ARSC development protocol: {n_domains} filtered domains (drawn with seed {seed} among those "
                 f"with >= {min_test} .test lines per threshold) held out of meta-training; per task a fixed "
                 f"support of {n_per_class} lines per label of its .train file, queries = the whole .test file. "
                 "Made once by `metarec arsc-dev-split`; read as it is by every run."),
        "seed": seed,
        "eligible_domains": eligible,
        "holdout_domains": held,
        "thresholds": list(thresholds),
        "supports": supports,
    }


def read_dev_split(path: Path | str) -> dict[str, Any]:
    """Reads a development split file written by :func:`make_dev_split` (checked, not trusted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"arsc: dev_split {path} does not exist")
    split = read_json(path, "arsc: dev_split")
    for key in ("holdout_domains", "thresholds", "supports"):
        if key not in split:
            raise DataError(f"arsc: dev_split {path} has no {key!r} field (is it a file from make_dev_split?)")
    if split.get("format") != DEV_SPLIT_FORMAT:
        raise DataError(f"arsc: dev_split {path} has format {split.get('format')!r}, expected {DEV_SPLIT_FORMAT}")
    return split


def _dev_support_rows(split: dict[str, Any], split_path: Path, task: str, path: Path,
                      lines: LabeledLines) -> np.ndarray:
    """Positions in ``lines`` of the fixed support of ``task``; DataError if the file changed."""
    entry = split["supports"].get(task)
    if entry is None:
        raise DataError(f"arsc: dev_split {split_path} has no support for task {task!r}")
    by_line = {n: i for i, n in enumerate(lines.lines)}
    pos = []
    for n, sha in zip(entry["lines"], entry["sha256"]):
        i = by_line.get(int(n))
        if i is None or _line_sha(lines.texts[i], lines.labels[i]) != sha:
            raise DataError(f"arsc: {path}, line {n} differs from the line dev_split {split_path} was drawn from "
                            "(different ARSC copy?); regenerate the split or use the data it was made from")
        pos.append(i)
    return np.asarray(pos, dtype=np.int64)


def make_target_fixture(
    src: Path | str,
    dst: Path | str,
    target_domains: Sequence[str],
    train_domains: Sequence[str] = (),
    thresholds: Sequence[str] = THRESHOLDS,
    n_per_class: int = PROTOCOL_SHOT,
    max_query: Optional[int] = None,
    seed: int = 0,
) -> Path:
    """Writes a small directory in the full ARSC layout (with a target list) from an ARSC dir.

    For each target (domain, threshold): ``.train`` = ``n_per_class`` lines of each label of
    the source ``.train`` file (drawn with ``seed``, file order kept) — the fixed support set —
    and ``.test`` = the source ``.test`` file (its first ``max_query`` lines if given). Train
    domains are linked (symlinks to the source files) and listed in the filtered list. The
    source directory is only read.

    Returns:
        ``dst``.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for d in target_domains:
        for t in thresholds:
            s_path = arsc_path(src, d, t, "train")
            lines = read_labeled_lines(s_path, labels=ARSC_LABEL_MAP)
            pos = subsample_per_class(_labels_of(lines), n_per_class, _row_rng(seed, s_path))
            arsc_path(dst, d, t, "train").write_text(
                "".join(f"{lines.texts[p]}\t{lines.labels[p]}\n" for p in pos.tolist()), encoding="utf-8")
            q = arsc_path(src, d, t, "test").read_bytes()
            if max_query is not None:
                q = b"".join(q.splitlines(keepends=True)[:max_query])
            arsc_path(dst, d, t, "test").write_bytes(q)
    (dst / TARGET_LIST).write_text("".join(f"{d}\n" for d in target_domains), encoding="utf-8")
    if train_domains:
        for d in train_domains:
            for t in thresholds:
                for split in ("train", "dev", "test"):
                    p = arsc_path(src, d, t, split)
                    if p.is_file() and not arsc_path(dst, d, t, split).exists():
                        arsc_path(dst, d, t, split).symlink_to(p.resolve())
        (dst / FILTERED_LIST).write_text("".join(f"{d}\n" for d in train_domains), encoding="utf-8")
    return dst


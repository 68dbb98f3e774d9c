"""``metarec tune SUITE``: an equal-budget Optuna study per method × family × shot on meta-validation.

Every method of the suite gets the same budget: ``trials`` finished trials (COMPLETE or PRUNED),
each meta-training ``max_steps`` outer steps with a validation every ``val_check_interval``.
A trial is the run ``metarec fit`` would make with the trial's values as overrides, except that
it never builds the test split (:func:`metarec.training.run_experiment` with ``test=False``): it
returns the best ``val/acc`` of its fit. The first trial of every study is the config's own
defaults, so "tuned vs default" compares two runs of the same budget.

When a study has its ``trials``, its winner (best val/acc among the first ``trials`` finished) and
its default trial are tested once each, from the checkpoints their trials kept, on the fixed test
episodes; the report gives the budget, the winning values, the winner's val and test accuracy
and the paired Δ against the default on the same episodes.

Storage (Optuna's RDB storage; see docs/tuning.md and docs/scaling-out.md):
    <store>/tune.db                                   studies (SQLite), unless --storage URL
    <store>/<method>/<family>/<shot>shot/trial-NNNN/  one run directory per trial
    <store>/<method>/<family>/<shot>shot/test-{winner,default}/result.json, episodes.jsonl
    <store>/tune-report.{md,json}, <store>/plots/*.png

Resuming: a rerun loads the studies and runs only the missing trials. A trial left RUNNING by a
killed process on this machine (its recorded pid is gone) is marked FAIL and its values are
queued again; on shared storage, trials of other machines whose heartbeat stopped are failed and
retried by Optuna (``RetryHeartbeatStaleTrialCallback``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import optuna
from omegaconf import OmegaConf
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from metarec.bench.space import Param, parse_space, to_override
from metarec.files import atomic_write_text
from metarec.bench.suite import Cell, Suite, SuiteError, load_suite
from metarec.config import compose
from metarec.evaluation.stats import paired_test
from metarec.log import get_logger
from metarec.registry import ALGORITHMS, method_kind

log = get_logger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TuneSpec:
    """The equal budget and sampler of a suite's studies (the suite's ``tune:`` block).

    Attributes:
        trials: finished trials (COMPLETE or PRUNED) per study.
        max_steps: meta-training steps per trial.
        val_check_interval: steps between validations of a trial (pruning and the best checkpoint).
        seed: seeds the TPE sampler (trial ``n`` samples with ``seed * 1_000_003 + n``).
        startup_trials: random trials before TPE models the results (and before pruning starts).
        prune: stop trials whose intermediate ``val/acc`` is below the median (Optuna MedianPruner).
        storage: an Optuna RDB URL; default ``sqlite:///<store>/tune.db``.
        search: per-method search spaces replacing the algorithm config's ``search:`` block.
    """

    trials: int = 12
    max_steps: int = 100
    val_check_interval: int = 25
    seed: int = 0
    startup_trials: int = 5
    prune: bool = False
    storage: Optional[str] = None
    search: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_suite(cls, suite: Suite) -> "TuneSpec":
        raw = dict(suite.tune or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SuiteError(f"{suite.path}: unknown key(s) tune.{unknown}; known: {sorted(known)}")
        spec = cls(**raw)
        for key in ("trials", "max_steps", "val_check_interval"):
            if not isinstance(getattr(spec, key), int) or getattr(spec, key) < 1:
                raise SuiteError(f"{suite.path}: tune.{key} must be an integer >= 1, got {getattr(spec, key)!r}")
        unknown_methods = sorted(set(spec.search) - set(suite.methods))
        if unknown_methods:
            raise SuiteError(f"{suite.path}: tune.search names {unknown_methods}, not methods of the suite "
                             f"{sorted(suite.methods)}")
        return spec

    def budget(self) -> dict[str, int]:
        return {"trials": self.trials, "max_steps": self.max_steps, "val_check_interval": self.val_check_interval}


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_local(owner: Optional[str]) -> bool:
    """Whether ``owner`` ("host:pid") is a process of this machine that no longer runs."""
    if not owner or ":" not in owner:
        return False
    host, pid = owner.rsplit(":", 1)
    if host != socket.gethostname() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _ReportValAcc(L.Callback):
    """Reports each validation's ``val/acc`` to the trial; stops the fit when Optuna prunes it."""

    def __init__(self, trial: optuna.Trial, prune: bool) -> None:
        self.trial = trial
        self.prune = prune
        self.pruned_at: Optional[int] = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or score is None:
            return
        self.trial.report(float(score), step=trainer.global_step)
        if self.prune and self.trial.should_prune():
            self.pruned_at = trainer.global_step
            trainer.should_stop = True


class SealedSplitError(RuntimeError):
    """Tuning code asked for a test task: selection on test data would follow."""


class SealedSplits(dict):
    """A family's splits as tuning sees them: asking for ``test`` raises instead of answering."""

    def __init__(self, splits: dict[str, Any], family: str) -> None:
        super().__init__(splits)
        self.family = family

    def __getitem__(self, split: str) -> Any:
        if split == "test":
            raise SealedSplitError(f"family {self.family!r}: the test split was asked for during tuning; "
                                       "tuning sees meta-train and meta-validation tasks only")
        return super().__getitem__(split)

    def get(self, split: str, default: Any = None) -> Any:
        return self[split] if split in self else default

    def values(self) -> Any:  # type: ignore[override]
        return [self[k] for k in self]

    def items(self) -> Any:  # type: ignore[override]
        return [(k, self[k]) for k in self]


@dataclass
class Study:
    """One method × family × shot of a suite: its base overrides, search space and directory."""

    cell: Cell
    name: str
    overrides: list[str]
    space: list[Param]
    defaults: dict[str, Any]
    root: Path
    _families: dict[str, Any] = field(default_factory=dict, repr=False)

    def family(self, cfg: Any) -> Any:
        """The task family of ``cfg``, built once per study (trials never vary the family)."""
        from metarec.runtime import build_family

        key = json.dumps(OmegaConf.to_container(cfg.family, resolve=True), sort_keys=True, default=str)
        if key not in self._families:
            self._families.clear()
            family = build_family(cfg)
            family.splits = SealedSplits(family.splits, family.name)
            self._families[key] = family
        return self._families[key]

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        return [*self.overrides, *(to_override(p, v) for p, v in params.items())]


def plan_studies(suite: Suite, spec: TuneSpec, store: Path, extra: Sequence[str] = ()) -> list[Study]:
    """One study per method × family × shot, trained with the suite's first seed."""
    import metarec.training  # noqa: F401  (registers every method)

    budget = [f"trainer.max_steps={spec.max_steps}", f"trainer.val_check_interval={spec.val_check_interval}"]
    studies = []
    seeds = suite.seeds[:1]
    for cell in suite.cells(list(extra)):
        if cell.seed not in seeds:
            continue
        overrides = [*cell.overrides, *budget]
        cfg = compose(overrides)
        kind = method_kind(cfg.algorithm.name)
        if kind != ALGORITHMS.kind:
            raise SuiteError(f"{suite.path}: method {cell.method} is the {kind} {cfg.algorithm.name!r}; metarec tune "
                             "tunes text algorithms only (the cold-start family has no validation split yet)")
        raw = spec.search.get(cell.method)
        if raw is None:
            node = cfg.algorithm.get("search")
            raw = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        assert isinstance(raw, dict)
        space = parse_space(raw, f"search space of method {cell.method} (algorithm {cfg.algorithm.name})")
        defaults = {}
        for p in space:
            v = OmegaConf.select(cfg, p.path, default=None)
            if v is not None:
                defaults[p.path] = v
        name = f"{suite.name}/{cell.method}/{cell.family}/{cell.n_shot}shot"
        studies.append(Study(cell, name, overrides, space, defaults,
                             store / cell.method / cell.family / f"{cell.n_shot}shot"))
    return studies


def _storage(url: str) -> RDBStorage:
    # The heartbeat lets other workers on shared storage fail (and retry) a trial whose process died.
    return RDBStorage(url, heartbeat_interval=30, grace_period=120,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))


def _load(study: Study, storage: RDBStorage, spec: TuneSpec, n: int = 0) -> optuna.Study:
    sampler = optuna.samplers.TPESampler(seed=spec.seed * 1_000_003 + n, n_startup_trials=spec.startup_trials)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials) if spec.prune
              else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=study.name, storage=storage, direction="maximize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def _check_identity(study: Study, ostudy: optuna.Study, spec: TuneSpec) -> None:
    """A study keeps one budget and one base config: resuming with others would mix trials."""
    identity = {"budget": spec.budget(), "overrides": study.overrides,
                "space": [p.__dict__ for p in study.space]}
    identity = json.loads(json.dumps(identity, default=str))
    stored = ostudy.user_attrs.get("identity")
    if stored is None:
        ostudy.set_user_attr("identity", identity)
    elif stored != identity:
        changed = sorted(k for k in identity if identity[k] != stored.get(k))
        raise ValueError(f"study {study.name!r} in {spec.storage} was made with another {', '.join(changed)} "
                         f"(stored {json.dumps({k: stored.get(k) for k in changed})}); use a new --store "
                         f"or --storage to tune with these settings")


def recover_orphans(ostudy: optuna.Study, root: Path) -> int:
    """Marks RUNNING trials of dead processes on this machine FAIL and queues their values again.

    Returns:
        The number of trials recovered.
    """
    n = 0
    for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead_local(t.user_attrs.get("owner")):
            continue
        ostudy._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)  # public API has no "fail"
        ostudy.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        shutil.rmtree(root / f"trial-{t.number:04d}", ignore_errors=True)
        log.warning("study %s: trial %d was left RUNNING by a killed process (%s); marked FAIL, its values "
                    "queued again", ostudy.study_name, t.number, t.user_attrs.get("owner"))
        n += 1
    return n


def _finished(ostudy: optuna.Study, limit: Optional[int] = None) -> list[FrozenTrial]:
    done = sorted(ostudy.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number)
    return done[:limit] if limit else done


def _objective(study: Study, spec: TuneSpec) -> Any:
    from metarec.training import run_experiment

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", _owner())
        params = {p.path: p.suggest(trial) for p in study.space}
        overrides = study.trial_overrides(params)
        trial.set_user_attr("overrides", overrides)
        d = study.root / f"trial-{trial.number:04d}"
        if d.exists():
            shutil.rmtree(d)
        cfg = compose(overrides)
        cfg.run_dir = str(d)
        cfg.trainer.enable_progress_bar = False
        cb = _ReportValAcc(trial, spec.prune)
        t0 = time.perf_counter()
        res = run_experiment(cfg, run_dir=d, test=False, callbacks=[cb], family=study.family(cfg))
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        trial.set_user_attr("best_checkpoint", res.best_checkpoint)
        last = d / "checkpoints" / "last.ckpt"
        if last.exists():
            last.unlink()  # only the best checkpoint is ever tested; last.ckpt serves resuming a fit
        score = res.metrics["val/acc"]
        log.info("study %s trial %d: %s -> val/acc %.4f (%.0f s)", study.name, trial.number,
                 " ".join(to_override(k, v) for k, v in params.items()) or "(defaults)", score,
                 trial.user_attrs.get("seconds", 0.0))
        if cb.pruned_at is not None:
            raise optuna.TrialPruned(f"val/acc {score:.4f} below the median at step {cb.pruned_at}")
        return score

    return objective


def run_study(study: Study, storage: RDBStorage, spec: TuneSpec, poll_s: float = 5.0) -> optuna.Study:
    """Runs trials until the study has ``spec.trials`` finished ones (all it needs when resumed)."""
    study.root.mkdir(parents=True, exist_ok=True)
    ostudy = _load(study, storage, spec)
    _check_identity(study, ostudy, spec)
    # An empty space has one configuration: one trial is its whole study.
    target = spec.trials if study.space else 1
    if not ostudy.trials and study.defaults:
        ostudy.enqueue_trial(study.defaults, user_attrs={"default": True}, skip_if_exists=True)
    recover_orphans(ostudy, study.root)
    objective = _objective(study, spec)
    while True:
        trials = ostudy.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if done >= target:
            break
        if done + running >= target:  # the rest runs elsewhere (shared storage): wait for it
            time.sleep(poll_s)
            optuna.storages.fail_stale_trials(ostudy)
            recover_orphans(ostudy, study.root)
            continue
        log.info("study %s: trial %d of %d", study.name, done + 1, target)
        # A sampler seeded by the trial count: a resumed study draws what an uninterrupted one would.
        ostudy = _load(study, storage, spec, n=len(trials))
        ostudy.optimize(objective, n_trials=1)
    return ostudy


def _test_trial(study: Study, trial: FrozenTrial, which: str) -> dict[str, Any]:
    """Tests one trial's kept checkpoint (or its values, for methods without meta-training) once."""
    from metarec.bench.store import environment
    from metarec.training import run_experiment

    d = study.root / f"test-{which}"
    result_path = d / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    cfg = compose(study.trial_overrides(trial.params))
    cfg.run_dir = str(d)
    cfg.trainer.enable_progress_bar = False
    ckpt = trial.user_attrs.get("best_checkpoint")
    if ckpt and not Path(ckpt).is_file():
        raise FileNotFoundError(f"study {study.name}: trial {trial.number}'s checkpoint {ckpt} is gone; "
                                "rerun the trial or tune into a new store")
    res = run_experiment(cfg, run_dir=d, ckpt_path=ckpt or None)
    record = {"trial": trial.number, "params": trial.params, "val_acc": trial.value, "metrics": res.metrics,
              "episode_set": res.episode_set, "checkpoint": ckpt, "overrides": study.trial_overrides(trial.params)}
    atomic_write_text(d / "episodes.jsonl", "".join(json.dumps(e) + "\n" for e in res.episodes))
    atomic_write_text(d / "env.json", json.dumps(environment(), indent=2))
    atomic_write_text(result_path, json.dumps(record, indent=2))  # last: marks the test done
    return record


def _accs(study: Study, which: str) -> list[float]:
    lines = (study.root / f"test-{which}" / "episodes.jsonl").read_text().splitlines()
    return [json.loads(line)["acc"] for line in lines if line.strip()]


def summarize_study(study: Study, ostudy: optuna.Study, spec: TuneSpec, test: bool = True) -> dict[str, Any]:
    """Winner (best val/acc among the first ``trials`` finished) and default, each tested once."""
    target = spec.trials if study.space else 1
    done = _finished(ostudy, target)
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    if len(done) < target or not complete:  # --report-only on a study still running: its progress only
        return {"study": study.name, "method": study.cell.method, "family": study.cell.family,
                "n_shot": study.cell.n_shot, "budget": spec.budget(), "finished": len(done),
                "pruned": sum(t.state == TrialState.PRUNED for t in done),
                "best_val_acc": max((t.value for t in complete), default=None), "winner": None}
    winner = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    default = next((t for t in done if t.params == study.defaults), None) if study.defaults else winner
    row: dict[str, Any] = {
        "study": study.name, "method": study.cell.method, "family": study.cell.family, "n_shot": study.cell.n_shot,
        "budget": spec.budget(), "finished": len(done),
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "winner": {"trial": winner.number, "params": winner.params, "val_acc": winner.value},
        "default": ({"trial": default.number, "params": default.params, "val_acc": default.value}
                    if default is not None else None),
    }
    if not test:
        return row
    w = _test_trial(study, winner, "winner")
    row["winner"]["test_acc"] = w["metrics"]["test/acc"]
    row["winner"]["test_ci95"] = w["metrics"].get("test/acc_ci95")
    row["episode_set"] = w["episode_set"]
    if default is not None and default.state == TrialState.COMPLETE:
        dflt = _test_trial(study, default, "default") if default.number != winner.number else w
        if dflt["episode_set"] != w["episode_set"]:
            raise RuntimeError(f"study {study.name}: winner and default were tested on different episodes")
        row["default"]["test_acc"] = dflt["metrics"]["test/acc"]
        row["default"]["test_ci95"] = dflt["metrics"].get("test/acc_ci95")
        a = _accs(study, "winner")
        b = _accs(study, "winner" if default.number == winner.number else "default")
        pr = paired_test(a, b)
        row["delta"] = {"mean": pr.mean_diff, "ci95": pr.ci95, "p": pr.p_value, "n": pr.n}
    return row


def write_plots(ostudy: optuna.Study, out: Path, stem: str) -> list[Path]:
    """Optuna's optimization-history and parameter-importance plots (matplotlib) of one study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    files = []
    complete = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = [("history", ovm.plot_optimization_history)]
    if len(complete) >= 2 and complete[0].params:
        plots.append(("importance", ovm.plot_param_importances))
    else:
        log.info("study %s: no parameter-importance plot (needs >= 2 complete trials with parameters)",
                 ostudy.study_name)
    for kind, fn in plots:
        ax = fn(ostudy)
        fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
        path = out / f"{stem}-{kind}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        files.append(path)
    return files


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def markdown(rows: list[dict[str, Any]], spec: TuneSpec) -> str:
    lines = [f"Budget per method: {spec.trials} finished trials × {spec.max_steps} meta-training steps "
             f"(validation every {spec.val_check_interval}); TPE seed {spec.seed}, {spec.startup_trials} random "
             f"start-up trials, pruning {'on' if spec.prune else 'off'}. Selection on meta-validation only; "
             "winner and default (trial with the config's values) tested once on the same test episodes.",
             "",
             "| method | family | shot | trials (pruned) | winning values | val winner | val default "
             "| test default | test tuned | Δ tuned − default (95% CI, p) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["winner"] is None:
            best = r["best_val_acc"]
            lines.append(f"| {r['method']} | {r['family']} | {r['n_shot']} | {r['finished']} ({r['pruned']}) of "
                         f"{r['budget']['trials']}: unfinished | best so far: "
                         f"{'—' if best is None else f'{100 * best:.1f}'} | | | | |")
            continue
        w, d = r["winner"], r.get("default") or {}
        vals = ", ".join(f"{k.removeprefix('algorithm.')}={_fmt(v)}" for k, v in w["params"].items()) or "(no space)"
        pct = (lambda x, ci=None: "—" if x is None else f"{100 * x:.1f}" + (f" ± {100 * ci:.1f}" if ci else ""))
        delta = r.get("delta")
        dtxt = (f"{100 * delta['mean']:+.1f} ± {100 * delta['ci95']:.1f} (p={delta['p']:.2g})" if delta else "—")
        lines.append(f"| {r['method']} | {r['family']} | {r['n_shot']} | {r['finished']} ({r['pruned']}) | {vals} "
                     f"| {pct(w['val_acc'])} | {pct(d.get('val_acc'))} | {pct(d.get('test_acc'), d.get('test_ci95'))} "
                     f"| {pct(w.get('test_acc'), w.get('test_ci95'))} | {dtxt} |")
    return "\n".join(lines) + "\n"


def run_tune(path: Path, store: Optional[Path] = None, storage: Optional[str] = None, only: Optional[str] = None,
             overrides: Sequence[str] = (), trials: Optional[int] = None, max_steps: Optional[int] = None,
             test: bool = True, report_only: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """Runs (or resumes) the suite's studies, tests the winners, writes report and plots.

    Returns:
        The Markdown report and its rows.
    """
    suite = load_suite(path)
    spec = TuneSpec.from_suite(suite)
    if trials is not None:
        spec.trials = trials
    if max_steps is not None:
        spec.max_steps = max_steps
    root = Path(store or Path("runs") / "tune" / suite.name)
    root.mkdir(parents=True, exist_ok=True)
    spec.storage = storage or spec.storage or f"sqlite:///{(root / 'tune.db').resolve()}"
    studies = plan_studies(suite, spec, root, overrides)
    if only:
        studies = [s for s in studies if only in s.name]
        if not studies:
            raise ValueError(f"--only {only!r} matches no study of {path}")
    rdb = _storage(spec.storage)
    log.info("tune %s: %d studies, budget %s, storage %s", suite.name, len(studies), spec.budget(), spec.storage)
    rows, files = [], []
    for study in studies:
        ostudy = run_study(study, rdb, spec) if not report_only else _load(study, rdb, spec)
        rows.append(summarize_study(study, ostudy, spec, test=test))
        stem = f"{study.cell.method}-{study.cell.family}-{study.cell.n_shot}shot"
        files += write_plots(ostudy, root / "plots", stem)
    md = markdown(rows, spec)
    atomic_write_text(root / "tune-report.md", md)
    atomic_write_text(root / "tune-report.json", json.dumps(rows, indent=2, default=str))
    log.info("tune %s: wrote %s, %s and %d plots", suite.name, root / "tune-report.md", root / "tune-report.json",
             len(files))
    return md, rows

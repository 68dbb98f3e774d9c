"""How far a test-time head on the ARSC recipe's encoder can go: the recipe's head (prior + the
10-review support) next to heads fitted on every labeled review of the held-out task's ``.train``
file, scored on the same query sets.

    python benchmarks/head_ceiling.py runs/lm_seed0_c16/checkpoints/last.ckpt -- experiment=arsc/multitask_dev

A diagnostic, not a method: the whole-file heads read about 1,100 labels per task, which no
few-shot method has. They bound what a linear head on the trained encoder's embeddings reaches on
these queries; what the recipe misses below that bound is the 10-review support's share, what the
bound misses is the encoder's. Columns:

* ``recipe`` — the recipe's test head exactly as ``metarec test`` computes it (cached inputs); it
  equals the fit's printed table.
* ``recipe, from text`` — the same head with support and queries embedded from their text (every
  layer run here, not the state cache): the offset of the path the whole-file columns use.
* ``file, pull P`` — the prior head refitted on the task's whole ``.train`` file (the 10 support
  reviews are among its lines) with an L2 pull of strength ``P`` towards the prior, no logit
  adjustment (a head fitted on the file's natural label shares has learned them); ``P = 30`` is
  the recipe's pull, ``0.01`` is close to a free logistic regression.

Needs the development protocol (``family.dev_split``): its held-out domains keep their whole
``.train`` files, from which the split file drew the 10-review supports. An official target's
``.train`` file *is* its 10-review support, so other protocols are refused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torchmetrics.functional.classification import multiclass_accuracy

from metarec.algorithms.multitask_prior import MultiTaskPrior
from metarec.algorithms.task_prior import map_head
from metarec.cli import parse_script_args
from metarec.signals import run_script
from metarec.config import compose
from metarec.data.arsc import ARSC_LABEL_MAP, LABEL_NAMES, arsc_path, resolve_data_dir
from metarec.data.readers import read_labeled_lines
from metarec.episode import Episode
from metarec.evaluation.stats import mean_ci95
from metarec.evaluation.tables import markdown_table
from metarec.training import (build_algorithm, build_datamodule, build_encoder, build_family, build_features,
                              check_run)

PULLS = (30.0, 1.0, 0.01)


def embed_texts(model: MultiTaskPrior, texts: list[str], batch: int = 64) -> torch.Tensor:
    """Embeddings ``(len(texts), dim)`` from the text, every encoder layer run (longest first)."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), model.encoder.dim)
    with torch.no_grad():
        for s in range(0, len(order), batch):
            rows = order[s:s + batch]
            out[rows] = model.encoder(model.encoder.tokenize([texts[i] for i in rows])).float()
    return out


def file_rows(data_dir: Path, episode: Episode) -> tuple[list[str], torch.Tensor]:
    """Texts and episode labels of every line of the episode task's ``.train`` file."""
    domain, threshold = episode.task.rsplit(".", 1)
    path = arsc_path(data_dir, domain, threshold, "train")
    if not path.is_file():
        raise SystemExit(f"head_ceiling.py: error: {path} does not exist: the whole-file heads need the held-out "
                         "task's .train file (run it on the development protocol, experiment=arsc/multitask_dev)")
    lines = read_labeled_lines(path, labels=ARSC_LABEL_MAP, lenient=False, log_skipped=False)
    label_of = {name.rsplit(":", 1)[1]: k for k, name in enumerate(episode.classes)}
    unknown = sorted(set(LABEL_NAMES) - set(label_of))
    if unknown:
        raise SystemExit(f"head_ceiling.py: error: episode {episode.task!r} has classes {episode.classes}, none for {unknown}")
    y = torch.tensor([label_of[ARSC_LABEL_MAP[raw]] for raw in lines.labels])
    return list(lines.texts), y


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    # the accuracy every test record holds (MetaLearner._accuracy)
    return float(multiclass_accuracy(logits.argmax(-1), y, num_classes=logits.shape[-1], average="micro"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s CKPT -- [config overrides of its run]")
    p.add_argument("ckpt", help="a multitask_prior checkpoint (e.g. runs/<run>/checkpoints/last.ckpt)")
    args, overrides = parse_script_args(p, sys.argv[1:])
    try:
        cfg = compose(overrides)
    except ValueError as e:
        p.error(str(e))
    if cfg.algorithm.name != "multitask_prior":
        p.error(f"algorithm {cfg.algorithm.name!r}: the ceiling is of multitask_prior's test head (experiment=arsc/...)")
    try:  # before any work, what `metarec test` checks: every option, then the checkpoint's checksum and identity
        ckpt = check_run(cfg, args.ckpt, fit=False)
    except ValueError as e:  # ConfigError, CheckpointError
        p.error(str(e))
    t0 = time.perf_counter()
    family = build_family(cfg)
    if family.metadata.get("protocol") != "dev":
        p.error(f"family {family.name!r} runs the {family.metadata.get('protocol')!r} protocol; the whole-file heads need "
                "the development protocol (family.dev_split=splits/arsc_dev.json, as experiment=arsc/multitask_dev)")
    encoder = build_encoder(cfg)
    features = build_features(cfg, encoder, family)
    dm = build_datamodule(cfg, family, features)
    dm.setup("test")
    model = build_algorithm(cfg, encoder)
    assert isinstance(model, MultiTaskPrior)
    model.bind_family(family)
    try:
        model.on_load_checkpoint(ckpt)  # refuses a checkpoint of other trainable layers
    except ValueError as e:  # CheckpointError
        p.error(str(e))
    model.load_state_dict(ckpt["state_dict"], strict=False)
    model.eval()
    data_dir = resolve_data_dir(cfg.family.data_dir)
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    header = ["task", "queries", "train lines", "recipe", "recipe, from text", *(f"file, pull {q:g}" for q in PULLS)]
    rows, columns = [], [[] for _ in range(len(header) - 3)]
    dataset = dm.eval_dataset("test")
    for i in range(len(dataset)):
        episode = dataset[i]
        texts, y_file = file_rows(data_dir, episode)
        queries = [family.corpus.texts[j] for j in episode.query_idx.tolist()]
        support = [family.corpus.texts[j] for j in episode.support_idx.tolist()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, logits = model.episode_forward(episode)  # what `metarec test` computes
            z_query, z_support, z_file = (embed_texts(model, t) for t in (queries, support, texts))
        accs = [accuracy(logits, episode.query_y)]
        w0, b0 = model.prior_head(episode, z_support)
        head = map_head(w0, b0, z_support, episode.support_y, model.prior_l2, model.max_iter)
        with torch.no_grad():
            accs.append(accuracy(model.logit_adjustment(episode, head(z_query)), episode.query_y))
        for pull in PULLS:
            head = map_head(w0, b0, z_file, y_file, pull, max_iter=500)
            with torch.no_grad():
                accs.append(accuracy(head(z_query), episode.query_y))
        for col, a in zip(columns, accs):
            col.append(a)
        rows.append([episode.task, len(queries), len(texts), *(f"{100 * a:.1f}" for a in accs)])
        print(f"head_ceiling: {i + 1}/{len(dataset)} {episode.task} done, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    stats = [mean_ci95(c) for c in columns]
    rows.append(["mean over tasks", sum(r[1] for r in rows), sum(r[2] for r in rows),
                 *(f"{100 * m:.1f} ± {100 * ci:.1f}" for m, ci in stats)])
    t5 = [k for k, r in enumerate(rows[:-1]) if r[0].endswith(".t5")]
    if t5:
        rows.append(["mean of the t5 tasks", sum(rows[k][1] for k in t5), sum(rows[k][2] for k in t5),
                     *(f"{100 * sum(c[k] for k in t5) / len(t5):.1f}" for c in columns)])
    print(f"checkpoint: {args.ckpt}")
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))

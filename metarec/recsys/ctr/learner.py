"""The base of the cold-start CTR methods: pre-train, meta-train, then warm up on each new item.

:class:`CTRLearner` (an :class:`~metarec.learner.EpisodeLearner`: its DDP gather of the test records
and ``test_metrics``) owns what every CTR method shares, once:

1. **Pre-training** (the first ``base_steps`` training steps): the DeepFM base network and the old
   items' ID embeddings on the training rows (binary cross-entropy, Adam ``base_lr``). Every
   method with the same seed gets the same base network (same draws, same steps).
2. **Meta-training** (the next ``meta_steps``): the base is frozen; the method's own parameters
   (:meth:`method_parameters`, Adam ``meta_lr``) are trained by :meth:`meta_loss` on item tasks.
3. **Test**: for every new item an initial ID embedding (:meth:`init_embedding`) → predictions on
   the item's query rows (phase ``cold``) → an update on warm-up batch ``a`` → predictions
   (phase ``a``) → ``b`` → ``c``. The default update is ``warm_steps`` SGD steps of ``warm_lr``
   on the item's ID embedding only (the paper's warm-up); MAML and the popularity reference
   override :meth:`phase_probs`.

Test records, one per item: query clicks, predicted probabilities per phase, per-item log-loss;
:meth:`summarize_test` turns them into the pooled AUC and log-loss per phase.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Optional, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.learner import EpisodeLearner
from metarec.recsys.ctr.metrics import auc, log_loss
from metarec.recsys.ctr.model import DeepFM
from metarec.recsys.ctr.split import PHASE_QUERY, PHASES


class CTRLearner(EpisodeLearner):
    """Base class of the cold-start CTR methods (module docstring).

    Args:
        schema: input widths and vocabularies (:meth:`FeatureTable.schema`).
        item_cat, item_multi, item_text: the item feature table, ``(n_items, ·)``.
        train_ctr: click rate of the training rows.
        emb_dim, hidden, id_init_std: the DeepFM network (:class:`DeepFM`).
        base_lr, base_steps: pre-training.
        meta_lr, meta_steps: meta-training (methods without it force ``meta_steps=0``).
        warm_lr, warm_steps: the test-time warm-up update per batch.
        weight_decay: Adam weight decay of both stages.
    """

    #: False: the method has no meta-training stage (its ``meta_steps`` is 0).
    meta_trains: ClassVar[bool] = True
    #: False: nothing is trained at all (the popularity reference).
    trains: ClassVar[bool] = True

    def __init__(self, schema: dict[str, Any], item_cat: Tensor, item_multi: Tensor, item_text: Tensor,
                 train_ctr: float, emb_dim: int = 16, hidden: tuple[int, ...] | list[int] = (64, 32),
                 id_init_std: float = 0.01, base_lr: float = 1e-3, base_steps: int = 2000, meta_lr: float = 1e-3,
                 meta_steps: int = 500, warm_lr: float = 0.1, warm_steps: int = 1, weight_decay: float = 0.0) -> None:
        super().__init__(outer_lr=base_lr, weight_decay=weight_decay, lr_schedule="constant", optimizer="adam")
        # Two stages with their own parameters and optimizers (pre-training, then meta-training).
        self.automatic_optimization = False
        self.register_buffer("item_cat", item_cat, persistent=False)
        self.register_buffer("item_multi", item_multi, persistent=False)
        self.register_buffer("item_text", item_text, persistent=False)
        self.train_ctr = float(train_ctr)
        self.base = DeepFM(schema["user_vocab"], schema["item_vocab"], schema["n_multi"], schema["text_dim"],
                           n_items=int(item_cat.shape[0]), emb_dim=emb_dim, hidden=list(hidden), id_init_std=id_init_std)
        with torch.no_grad():
            # Start the logits at the training click rate (the deep part then learns deviations).
            self.base.bias.fill_(float(np.log(train_ctr / (1 - train_ctr))))
        self.emb_dim, self.id_init_std = int(emb_dim), float(id_init_std)
        self.base_lr, self.base_steps = float(base_lr), int(base_steps)
        self.meta_lr, self.meta_steps = float(meta_lr), int(meta_steps) if self.meta_trains else 0
        self.warm_lr, self.warm_steps = float(warm_lr), int(warm_steps)
        self.seed = 0

    @property
    def total_steps(self) -> int:
        return self.base_steps + self.meta_steps if self.trains else 0

    # -- what a method defines -----------------------------------------------------------------
    def method_parameters(self) -> list[nn.Parameter]:
        """Parameters of the meta-training stage (empty: no such stage)."""
        return []

    def meta_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Loss of one meta-training batch of items (``item (m,)``, ``user_a/b (m, k, F)``, ``click_a/b (m, k)``)."""
        raise NotImplementedError

    def init_embedding(self, items: Tensor, fields: Tensor) -> Tensor:
        """Initial ID embeddings ``(n, d)`` of new items ``(n,)`` with feature fields ``(n, f, d)``."""
        raise NotImplementedError

    def on_meta_start(self) -> None:
        """Called once, before the first meta-training step (e.g. to copy pre-trained weights)."""

    # -- shared pieces ---------------------------------------------------------------------------
    def fields(self, items: Tensor) -> Tensor:
        """Item feature-field embeddings ``(n, f, d)`` of items ``(n,)``."""
        return self.base.item_fields(self.item_cat[items], self.item_multi[items], self.item_text[items])

    def task_logits(self, user: Tensor, fields: Tensor, emb: Tensor, top: Optional[nn.Module] = None) -> Tensor:
        """Logits ``(m, k)`` of ``m`` items' batches: users ``(m, k, F)``, fields ``(m, f, d)``, emb ``(m, d)``."""
        m, k = user.shape[:2]
        rep = lambda x: x[:, None].expand(m, k, *x.shape[1:]).reshape(m * k, *x.shape[1:])  # noqa: E731
        return self.base(user.reshape(m * k, -1), rep(fields), rep(emb), top=top).view(m, k)

    def item_loss(self, logits: Tensor, click: Tensor) -> Tensor:
        """Sum over items of each item's mean BCE, ``()``: its gradient w.r.t. one item's embedding is that
        item's own mean-loss gradient (items do not share the step size)."""
        return F.binary_cross_entropy_with_logits(logits, click, reduction="none").mean(1).sum()

    # -- training ----------------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches are dicts of tensors (row batches, item tasks, the test set): Lightning moves them.
        return L.LightningModule.transfer_batch_to_device(self, batch, device, dataloader_idx)

    def configure_optimizers(self) -> Any:
        opts = [torch.optim.Adam(self.base.parameters(), lr=self.base_lr, weight_decay=self.weight_decay)]
        extra = self.method_parameters()
        if extra:
            opts.append(torch.optim.Adam(extra, lr=self.meta_lr, weight_decay=self.weight_decay))
        return opts

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        if batch["kind"] == "rows":
            logits = self.base(batch["user"], self.fields(batch["item"]), self.base.id_table(batch["item"]))
            loss = F.binary_cross_entropy_with_logits(logits, batch["click"])
            opt = opts[0]
            self.log("train/base_loss", loss, prog_bar=True, batch_size=len(batch["click"]))
        else:
            if self.base.bias.requires_grad:
                self.base.requires_grad_(False)  # frozen from here on: only the method's parameters learn
                self.on_meta_start()
            loss = self.meta_loss(batch)
            opt = opts[1]
            self.log("train/meta_loss", loss, prog_bar=True, batch_size=len(batch["item"]))
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss.detach()

    # -- test ----------------------------------------------------------------------------------------
    def warm_up(self, state: Tensor, batch: dict[str, Tensor], fields: Tensor) -> Tensor:
        """The ID embeddings ``(n, d)`` after ``warm_steps`` SGD steps on one warm-up batch per item."""
        with torch.enable_grad():
            emb = state.detach().requires_grad_(True)
            for _ in range(self.warm_steps):
                loss = self.item_loss(self.task_logits(batch["user"], fields, emb), batch["click"])
                (g,) = torch.autograd.grad(loss, emb)
                emb = (emb - self.warm_lr * g).detach().requires_grad_(True)
        return emb.detach()

    def phase_probs(self, items: Tensor, warm: list[dict[str, Tensor]], query: dict[str, Tensor]) -> list[Tensor]:
        """Click probabilities of the query rows ``(n, q)`` per phase (cold, after a, b, c).

        Args:
            items: the test items ``(n,)``.
            warm: warm-up batches a, b, c: ``user (n, k, F)``, ``click (n, k)``.
            query: ``user (q_total, F)``, ``task (q_total,)`` — the query rows of all items.
        """
        fields = self.fields(items)
        emb = self.init_embedding(items, fields)
        out = []
        for p in range(len(PHASES)):
            if p:
                emb = self.warm_up(emb, warm[p - 1], fields)
            t = query["task"]
            out.append(torch.sigmoid(self.base(query["user"], fields[t], emb[t])))
        return out

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        items, task, phase = batch["items"], batch["task"], batch["phase"]
        n = len(items)
        warm = []
        for ph in range(PHASE_QUERY):
            sel = phase == ph
            # Rows are in item-then-time order and every item has exactly k rows per warm-up phase.
            warm.append({"user": batch["user"][sel].view(n, -1, batch["user"].shape[1]),
                         "click": batch["click"][sel].view(n, -1)})
        q = phase == PHASE_QUERY
        query = {"user": batch["user"][q], "task": task[q]}
        t0 = time.perf_counter()
        probs = [p.detach().cpu().numpy() for p in self.phase_probs(items, warm, query)]
        adapt_s = (time.perf_counter() - t0) / max(n, 1)
        qt, qc = task[q].cpu().numpy(), batch["click"][q].cpu().numpy()
        bounds = np.searchsorted(qt, np.arange(n + 1))  # query rows are grouped by task
        for j in range(n):
            sel = slice(bounds[j], bounds[j + 1])
            y = qc[sel]
            rec: dict[str, Any] = {"index": j, "task": batch["item_ids"][j], "item": batch["item_ids"][j],
                                   "fingerprint": batch["fingerprints"][j], "n_query": int(bounds[j + 1] - bounds[j]),
                                   "adapt_s": adapt_s, "click": y.astype(int).tolist()}
            for name, p in zip(PHASES, probs):
                rec[f"p_{name}"] = [round(float(v), 5) for v in p[sel]]
                rec[f"logloss_{name}"] = log_loss(p[sel], y)
            rec["acc"] = float(((p[sel] >= 0.5) == (y >= 0.5)).mean())  # after warm-up c
            self.test_records.append(rec)

    def summarize_test(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        """``test/auc_<phase>`` and ``test/logloss_<phase>`` over all items' query rows pooled; ``test/acc``
        (accuracy at probability 0.5 after warm-up c, mean over items); ``test/items``."""
        if not records:
            return {}
        y = np.concatenate([r["click"] for r in records])
        out = {"test/items": float(len(records)), "test/acc": float(np.mean([r["acc"] for r in records]))}
        for name in PHASES:
            p = np.concatenate([r[f"p_{name}"] for r in records])
            out[f"test/auc_{name}"] = auc(p, y)
            out[f"test/logloss_{name}"] = log_loss(p, y)
        return out

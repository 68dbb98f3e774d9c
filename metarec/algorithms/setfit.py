"""SetFit per episode (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts",
arXiv:2209.11055), run by the ``setfit`` library itself.

Per test episode, on its support set only: contrastive fine-tuning of a fresh copy of the
sentence-transformer body (the encoder's own weights, mean pooling, L2 normalization) on pairs
drawn from the support (same class → cosine 1, different class → 0, CosineSimilarityLoss), then
a logistic-regression head on the fine-tuned embeddings; the query texts are predicted with
both. The budget is SetFit's default :class:`setfit.TrainingArguments` (one epoch of
oversampled pairs, batch 16, body lr 2e-5) unless the config overrides it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.algorithms.base import MetaLearner
from metarec.algorithms.fitting import seeded
from metarec.data.sampler import stream_seed
from metarec.episode import Episode
from metarec.registry import ALGORITHMS


@contextlib.contextmanager
def restored_global_rng(device: torch.device) -> Iterator[None]:
    """Restores Python's, NumPy's and torch's global generators after the block.

    ``setfit.Trainer`` seeds all three globally (``transformers.set_seed``); without this an
    episode would change the random stream of whatever runs after it.
    """
    py, np_state = random.getstate(), np.random.get_state()
    with seeded(0, device):  # forks (and restores) torch's generators
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silences transformers' and setfit's per-call reports and bars (one per episode would bury the log)."""
    from transformers.utils import logging as hf_logging

    import datasets

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    data_bars = datasets.is_progress_bar_enabled()
    # sentence-transformers shows an encode() bar whenever its logger is at INFO (setfit's head fit
    # encodes the support without passing show_progress_bar), and logs a "No `loss` passed, using
    # CoSENTLoss" line for the trainer setfit builds before it sets its own loss.
    loggers = [logging.getLogger(name) for name in ("setfit", "sentence_transformers")]
    levels = [log.level for log in loggers]
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()  # the "Map:" bar of every episode's support set
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        # transformers' PrinterCallback prints the trainer's loss dicts to stdout whatever the logging
        # strategy: keep them out of a suite's log (metarec reports the episode's results itself).
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if data_bars:
            datasets.enable_progress_bars()
        for log, lvl in zip(loggers, levels):
            log.setLevel(lvl)


@ALGORITHMS.register("setfit")
class SetFit(MetaLearner):
    """SetFit on every test episode's support set; nothing is meta-trained (``trains = False``).

    The body is built once from the encoder's pretrained weights and deep-copied for every
    episode (the body is reset per episode; the encoder is never written). Everything, copy
    included, happens inside :meth:`episode_forward` and counts in ``test/adapt_s``.

    SetFit trains on texts, so the algorithm reads the support and query texts of an episode from
    the family's corpus by their rows (``episode.support_idx`` / ``query_idx``); the texts are
    bound in :meth:`setup` from the data module's family (or by :meth:`bind_texts`).

    Args:
        batch_size: pairs per body step (SetFit default 16).
        num_epochs: epochs over the sampled pairs (SetFit default 1).
        body_learning_rate: AdamW learning rate of the body (SetFit default 2e-5).
        num_iterations: SetFit's pair budget (``None``: its default oversampling of the unique pairs).
        body_max_steps: cap on body steps (-1: none; SetFit's ``max_steps``, renamed apart from the
            meta-training ``max_steps`` every algorithm gets).
        normalize: end the body with L2 normalization, as the all-MiniLM-L6-v2 sentence
            transformer does.
        seed: seeds each episode's run (``stream_seed(seed, "SetFit", episode.index)``).
        **kwargs: see :class:`MetaLearner`.
    """

    trains = False

    def __init__(self, batch_size: int = 16, num_epochs: int = 1, body_learning_rate: float = 2e-5,
                 num_iterations: Optional[int] = None, body_max_steps: int = -1, normalize: bool = True,
                 seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if batch_size < 1 or num_epochs < 1:
            raise ValueError(f"setfit batch_size and num_epochs must be >= 1, got {batch_size}, {num_epochs}")
        if body_learning_rate <= 0:
            raise ValueError(f"setfit body_learning_rate must be > 0, got {body_learning_rate}")
        self.batch_size = int(batch_size)
        self.num_epochs = int(num_epochs)
        self.body_learning_rate = float(body_learning_rate)
        self.num_iterations = None if num_iterations is None else int(num_iterations)
        self.body_max_steps = int(body_max_steps)
        self.normalize = bool(normalize)
        self.seed = int(seed)
        self.texts: Optional[Sequence[str]] = None
        self._body: Any = None  # the pristine sentence-transformer body (built on first use)
        self._tmp = tempfile.TemporaryDirectory(prefix="metarec-setfit-")

    # -- inputs ------------------------------------------------------------------------------
    def bind_texts(self, texts: Sequence[str]) -> None:
        """The corpus texts that ``episode.support_idx`` / ``query_idx`` index into."""
        self.texts = texts

    def setup(self, stage: str) -> None:
        family = getattr(getattr(self.trainer, "datamodule", None), "family", None)
        if family is None:
            raise RuntimeError("setfit needs the corpus texts: run it with an EpisodicDataModule or call bind_texts()")
        self.bind_texts(family.corpus.texts)

    def episode_texts(self, rows: Tensor) -> list[str]:
        if self.texts is None:
            raise RuntimeError("setfit: no corpus texts bound (bind_texts() or run through a data module)")
        return [self.texts[int(i)] for i in rows.tolist()]

    # -- the body ----------------------------------------------------------------------------
    def pristine_body(self) -> Any:
        """A sentence transformer with the encoder's pretrained weights, pooling and length."""
        if self._body is None:
            from sentence_transformers import SentenceTransformer

            try:  # sentence-transformers >= 6.3 moved the modules here (and deprecates the old path)
                from sentence_transformers.sentence_transformer import modules as models
            except ImportError:  # older releases (pyproject allows >= 3)
                from sentence_transformers import models

            path = Path(self._tmp.name) / "body"
            with quiet_libraries():
                # The encoder's own weights and tokenizer (MiniLM, or a tiny test model) — not a download.
                self.encoder.model.save_pretrained(path)
                self.encoder.tokenizer.save_pretrained(path)
                transformer = models.Transformer(str(path), max_seq_length=self.encoder.max_length)
            modules = [transformer, models.Pooling(self.encoder.dim, pooling_mode=self.encoder.pooling)]
            if self.normalize:
                modules.append(models.Normalize())
            self._body = SentenceTransformer(modules=modules, device="cpu")
            self._body.eval()
        return self._body

    def fit_episode(self, episode: Episode) -> Any:
        """Runs SetFit on the support set and returns the fitted ``setfit.SetFitModel``."""
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
        from sklearn.linear_model import LogisticRegression

        device = episode.support_y.device
        body = copy.deepcopy(self.pristine_body()).to(device)
        model = SetFitModel(model_body=body, model_head=LogisticRegression())
        args = TrainingArguments(
            output_dir=str(Path(self._tmp.name) / "trainer"), batch_size=self.batch_size, num_epochs=self.num_epochs,
            body_learning_rate=self.body_learning_rate, num_iterations=self.num_iterations, max_steps=self.body_max_steps,
            # numpy's global seed (set by setfit) must fit in 32 bits.
            seed=stream_seed(self.seed, type(self).__name__, episode.index) % 2**32, report_to="none",
            show_progress_bar=False, save_strategy="no", logging_strategy="no",
        )
        data = Dataset.from_dict({"text": self.episode_texts(episode.support_idx),
                                  "label": episode.support_y.tolist()})
        # fp32 outside the test loop's autocast: SetFit's default recipe trains in fp32, and its
        # scikit-learn head needs fp32 NumPy embeddings.
        with quiet_libraries(), restored_global_rng(device), torch.enable_grad(), \
                torch.autocast(device.type, enabled=False):
            Trainer(model=model, args=args, train_dataset=data).train()
        return model

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        model = self.fit_episode(episode)
        with torch.no_grad(), torch.autocast(episode.query_y.device.type, enabled=False), quiet_libraries():
            proba = model.predict_proba(self.episode_texts(episode.query_idx), as_numpy=True, show_progress_bar=False)
        classes = list(model.model_head.classes_)
        if classes != list(range(episode.n_way)):
            raise RuntimeError(f"setfit: the head learned classes {classes}, expected 0..{episode.n_way - 1} "
                               f"(episode {episode.index}, task {episode.task!r})")
        logits = torch.log(torch.as_tensor(proba, dtype=torch.float32).clamp_min(1e-12)).to(episode.query_y.device)
        return F.nll_loss(logits, episode.query_y), logits

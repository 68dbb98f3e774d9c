"""Click-through prediction for cold-start items: each new item is a task (Meta-Embedding protocol).

Pan et al., "Warm Up Cold-start Advertisements: Improving CTR Predictions via Learning to Learn ID
Embeddings", SIGIR 2019, arXiv:1904.11547. Layers, lowest first:

* ``log`` — a click log streamed from RecBole atomic or MovieLens files into numpy arrays.
* ``split`` — old items (training) vs new items (test tasks: warm-up batches a, b, c, query).
* ``family`` — the ``ctr_coldstart`` family: log + split + feature tables.
* ``datamodule`` — the seeded training stream (row batches, then item tasks) and the test set.
* ``model`` — the DeepFM base network with the item ID embedding as one field.
* ``metrics`` — AUC and log-loss, item-bootstrap confidence intervals.
* ``learner`` — :class:`CTRLearner`, the base of the methods; ``methods`` — the five methods.
* ``run`` — from a config to a tested method; ``report`` — a suite's per-phase table and plot.

Importing this package registers the family, the methods and their run path.
"""

from metarec.recsys.ctr import family  # noqa: F401  (registers the family)
from metarec.recsys.ctr import methods  # noqa: F401  (registers the methods)
from metarec.recsys.ctr import run  # noqa: F401  (registers the run path)

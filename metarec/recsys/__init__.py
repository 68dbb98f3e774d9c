"""Cold-start recommendation, each user a task (MeLU protocol): the whole rating path.

Layers, lowest first (a module imports only modules above it in this list, or lower layers of
metarec):

* ``interactions`` — (user, item, rating, time) readers: RecBole atomic files, MovieLens ml-100k.
* ``split`` — MeLU's four states (existing/new users × existing/new items) and the user tasks.
* ``episode`` — :class:`RatingEpisode`, what a recommender sees.
* ``family`` — the ``coldstart`` family: interactions + split + feature table.
* ``datamodule`` — seeded training user tasks, the fixed test tasks.
* ``networks`` — the MeLU network (embeddings, decision layers, rating and like heads).
* ``metrics`` — per-user MAE, RMSE, nDCG@k, AUC.
* ``learner`` — :class:`RatingLearner`, the base of recommenders; ``recommenders`` — MeLU and baselines.
* ``run`` — from a config to a tested recommender; ``report`` — a suite's per-state tables.
* ``ctr/`` — click-through prediction for cold-start items, each new item a task (Meta-Embedding
  protocol): its own click-log reader, item split, DeepFM base and methods (see its ``__init__``).

Importing this package registers the ``coldstart`` and ``ctr_coldstart`` families, their methods and run paths.
"""

from metarec.recsys import family, recommenders, run  # noqa: F401  (register the family, recommenders, run path)
from metarec.recsys import ctr  # noqa: F401  (registers the ctr_coldstart family, the CTR methods, their run path)
from metarec.recsys.episode import RatingEpisode
from metarec.recsys.family import ColdStartFamily
from metarec.recsys.learner import RatingLearner
from metarec.recsys.split import STATES

__all__ = ["ColdStartFamily", "RatingEpisode", "RatingLearner", "STATES"]

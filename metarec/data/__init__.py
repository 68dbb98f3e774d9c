"""Corpora, task families, episode sampling and the episodic DataModule.

Importing this package registers the built-in task families.
"""

from metarec.data.corpus import DataError, LabeledCorpus
from metarec.data.family import Task, TaskFamily
from metarec.data import synthetic  # noqa: F401  (registers synthetic families)
from metarec.data import arsc, domain_category, tabular  # noqa: F401  (register arsc, domain_category, corpus)

__all__ = ["DataError", "LabeledCorpus", "Task", "TaskFamily"]

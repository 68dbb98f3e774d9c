"""Corpora, task families, episode sampling and the episodic DataModule.

Importing this package registers the built-in task families.
"""

from metarec.data.corpus import DataError, LabeledCorpus
from metarec.data.family import Task, TaskFamily
from metarec.data import synthetic  # noqa: F401  (registers synthetic families)

__all__ = ["DataError", "LabeledCorpus", "Task", "TaskFamily"]

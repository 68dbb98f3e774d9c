"""Algorithms and baselines. Importing this package registers them all.

Adding one: a file here with a ``MetaLearner`` subclass decorated by
``@ALGORITHMS.register("name")``, an import line below, and ``metarec/configs/algorithm/name.yaml``.
"""

from metarec.algorithms.base import MetaLearner
from metarec.algorithms.protonet import NearestPrototype, ProtoNet
from metarec.algorithms.maml import FOMAML, MAML
from metarec.algorithms.anil import ANIL
from metarec.algorithms.linear_probe import LinearProbe
from metarec.algorithms.finetune import FineTune
from metarec.algorithms.lora import LoRA
from metarec.algorithms.transfer import Baseline, BaselinePP
from metarec.algorithms.multitask_prior import MultiTaskPrior
from metarec.algorithms.metasgd import MetaSGD
from metarec.algorithms.zero_shot import ZeroShot
from metarec.algorithms.setfit import SetFit

__all__ = ["MetaLearner", "ProtoNet", "NearestPrototype", "MAML", "FOMAML", "ANIL"]
__all__ += ["LinearProbe", "FineTune", "LoRA", "Baseline", "BaselinePP", "MultiTaskPrior", "MetaSGD", "ZeroShot", "SetFit"]

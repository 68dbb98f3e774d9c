"""Zero-shot ("dataless") classification: Chang et al., AAAI 2008, "Importance of Semantic
Representation: Dataless Classification"; with sentence encoders see Yin et al., EMNLP 2019,
"Benchmarking Zero-shot Text Classification", arXiv:1909.00161.

The prompting baseline in the form a sentence encoder allows: each class is described in words,
the descriptions are embedded by the same encoder as the texts, and a query goes to the nearest
description. No support example is used: not its texts, not its labels.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.algorithms.base import MetaLearner
from metarec.episode import Episode
from metarec.registry import ALGORITHMS

#: ARSC class names: ``"<domain>.<threshold>:<label>"``, e.g. ``"apparel.t2:negative"``.
ARSC_CLASS = re.compile(r"^(?P<domain>[^:]+)\.(?P<threshold>t\d+):(?P<label>[^:]+)$")

Templates = Mapping[str, Mapping[str, Union[str, Sequence[str]]]]


def _as_list(value: Union[str, Sequence[str]]) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def describe(class_name: str, templates: Optional[Templates], class_template: Union[str, Sequence[str]]) -> list[str]:
    """The description(s) of one class.

    An ARSC class ``"<domain>.<threshold>:<label>"`` whose threshold is in ``templates`` gets
    ``templates[threshold][label]`` with ``{domain}`` filled in (underscores read as spaces);
    any other class gets ``class_template`` with ``{name}`` (the class name, underscores and
    dots read as spaces).

    Raises:
        ValueError: an ARSC threshold with templates but none for this label.
    """
    m = ARSC_CLASS.match(class_name)
    if m and templates and m["threshold"] in templates:
        per_label = templates[m["threshold"]]
        if m["label"] not in per_label:
            raise ValueError(f"zero_shot templates.{m['threshold']} has no entry for label {m['label']!r} "
                             f"(class {class_name!r}); it has {sorted(per_label)}")
        domain = m["domain"].replace("_", " ")
        return [t.format(domain=domain) for t in _as_list(per_label[m["label"]])]
    name = re.sub(r"[_.]+", " ", class_name).strip()
    return [t.format(name=name) for t in _as_list(class_template)]


@ALGORITHMS.register("zero_shot")
class ZeroShot(MetaLearner):
    """Queries go to the nearest class description; the support set is never read.

    Each class's description(s) (:func:`describe`) are embedded by the episode's encoder (the
    same pretrained weights and pooling that embed the queries; several descriptions of a class
    are averaged after L2 normalization), and the logits are ``scale`` times the cosine
    similarity of query and class embeddings. Embedding the descriptions happens inside
    :meth:`episode_forward`, so it counts in ``test/adapt_s``. Nothing is trained
    (``trains = False``).

    Args:
        templates: per ARSC rating threshold (``t2``, ``t4``, ``t5``), a description (or a list)
            per label (``negative``, ``positive``) with a ``{domain}`` placeholder.
        class_template: the description (or a list) of any other class, with ``{name}``.
        scale: logit temperature (cosine × scale); argmax and accuracy do not depend on it.
        **kwargs: see :class:`MetaLearner`.
    """

    trains = False

    def __init__(self, templates: Optional[dict[str, dict[str, Any]]] = None,
                 class_template: Union[str, Sequence[str]] = "{name}", scale: float = 20.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if scale <= 0:
            raise ValueError(f"zero_shot scale must be > 0, got {scale}")
        for key, per_label in (templates or {}).items():
            if not isinstance(per_label, Mapping):
                raise ValueError(f"zero_shot templates.{key} must map labels to descriptions, got {per_label!r}")
        self.templates = templates or {}
        self.class_template = class_template
        self.scale = float(scale)

    def class_embeddings(self, classes: list[str], device: torch.device) -> Tensor:
        """One unit-norm embedding per class, ``(n_way, H)``, from its descriptions."""
        texts = [describe(c, self.templates, self.class_template) for c in classes]
        flat = [t for ts in texts for t in ts]
        tokens = {k: v.to(device) for k, v in self.encoder.tokenize(flat).items()}
        z = F.normalize(self.encoder(tokens).float(), dim=-1)
        out, start = [], 0
        for ts in texts:
            out.append(F.normalize(z[start:start + len(ts)].mean(0), dim=-1))
            start += len(ts)
        return torch.stack(out)

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            query = F.normalize(self.encoder(episode.query_x).float(), dim=-1)
            classes = self.class_embeddings(episode.classes, query.device)
        logits = self.scale * query @ classes.T
        return F.cross_entropy(logits, episode.query_y), logits

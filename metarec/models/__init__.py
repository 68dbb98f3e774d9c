"""Models: the text encoder (HF AutoModel + pooling + freeze policy) and heads."""

from metarec.models.encoder import FreezePolicy, TextEncoder
from metarec.models.heads import LinearHead, PrototypeHead, class_means

__all__ = ["FreezePolicy", "TextEncoder", "LinearHead", "PrototypeHead", "class_means"]

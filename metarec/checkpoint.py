"""Checkpoints that can be trusted: a content checksum and the run's identity in every file.

Every checkpoint metarec writes goes through :class:`VerifiedCheckpointIO`, Lightning's public
``CheckpointIO`` extension point (a :class:`~lightning.fabric.plugins.io.torch_io.TorchCheckpointIO`
subclass). On save it records

* ``metarec_identity``: algorithm, encoder, its trainable layers, ``n_way`` and family of the run
  (:func:`run_identity`);
* ``metarec_sha256``: a SHA-256 over the checkpoint's *content* (every tensor's dtype, shape and
  bytes, every key and plain value; :func:`content_digest`),

and writes the file atomically (temporary name, fsync, rename). On load the digest is recomputed
and the identity compared with the run's, so a file with flipped bytes or one written by another
algorithm, encoder, trainable layers, ``n_way`` or family is refused with a
:class:`CheckpointError` that names the file and the mismatch — by ``metarec test``, by
``resume_from`` and by Lightning's own loads.

Why a content digest and not a hash of the file bytes: the digest travels inside the file (a
copied ``.ckpt`` stays verifiable, no side file to lose) and does not depend on how a torch
version lays out its zip archive. Bytes that change no value (zip padding) are harmless; bytes
that change a value change the digest; bytes that break the archive fail ``torch.load``.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig

from metarec.files import atomic_write
from metarec.log import get_logger
from metarec.registry import ALGORITHMS, RECOMMENDERS

log = get_logger(__name__)

IDENTITY_KEY = "metarec_identity"
DIGEST_KEY = "metarec_sha256"
#: Identity fields compared on load, in message order.
IDENTITY_FIELDS = ("algorithm", "encoder", "trainable", "n_way", "family")


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, corrupt, or written by a different kind of run."""


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint must match to be used by the run of ``cfg``.

    The encoder is its config name plus, for encoders loaded from a path (``encoder=hf``),
    that path: two ``hf`` encoders from different files are different encoders. ``trainable`` is
    its freeze policy, with the layer count under ``top_k`` (``"top_k=4"``): a checkpoint of two
    trained layers tested with four would otherwise fail later on missing weights, and one of four
    tested with two would cache the lower four layers' states from pretrained weights, two of which
    it trained.
    """
    enc = str(cfg.encoder.name)
    if cfg.encoder.get("path"):
        enc = f"{enc}:{cfg.encoder.path}"
    trainable = trainable_layers(str(cfg.encoder.get("freeze", "frozen")), int(cfg.encoder.get("top_k", 0)))
    return {"algorithm": str(cfg.algorithm.name), "encoder": enc, "trainable": trainable,
            "n_way": int(cfg.episodes.n_way), "family": str(cfg.family.name)}


def trainable_layers(freeze: str, top_k: int) -> str:
    """The identity's ``trainable`` field for a freeze policy: ``"top_k=4"``, ``"frozen"`` or ``"full"``."""
    return f"top_k={int(top_k)}" if freeze == "top_k" else str(freeze)


#: A trainable encoder layer's weights in a MetaLearner's state_dict (``TextEncoder.layers``, the
#: whole block list, so the index is the layer's depth).
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")


def recorded_trainable(checkpoint: Mapping[str, Any]) -> Optional[str]:
    """The trainable layers a checkpoint was written with, or ``None`` when it cannot tell.

    Checkpoints record them in their identity; older ones are read from what metarec kept: the
    freeze policy (``checkpoint["metarec"]["freeze"]``) and, under ``top_k``, the encoder layers
    whose weights were saved — a writer that omits frozen weights (``frozen_params_omitted``)
    saves exactly the top ``k`` blocks, so ``k`` is their depth span.
    """
    identity = checkpoint.get(IDENTITY_KEY) or {}
    if "trainable" in identity:
        return str(identity["trainable"])
    meta = checkpoint.get("metarec") or {}
    freeze = meta.get("freeze")
    if freeze in ("frozen", "full"):
        return str(freeze)
    if freeze != "top_k" or "frozen_params_omitted" not in meta:
        return None
    depths = {int(m.group(1)) for key in checkpoint.get("state_dict", {}) if (m := _LAYER_KEY.match(key))}
    return trainable_layers("top_k", max(depths) - min(depths) + 1) if depths else None


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Feeds a canonical byte form of ``obj`` into ``h`` (order-independent for mappings)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        h.update(f"N{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, Enum):
        h.update(f"E{type(obj).__name__}.{obj.name}".encode())
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, Path)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    else:
        # Other objects (Lightning's AttributeDict is a Mapping): their public attributes.
        state = getattr(obj, "__dict__", None)
        h.update(f"O{type(obj).__qualname__}".encode())
        if isinstance(state, dict):
            _feed(h, {k: v for k, v in state.items() if not k.startswith("_")})


def content_digest(checkpoint: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of a checkpoint's content, without its own digest entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in checkpoint.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _first_line(e: BaseException) -> str:
    """``Type: first sentence`` of an exception (torch's zip errors run to a paragraph)."""
    text = str(e).strip().splitlines()
    first = text[0].split(". ")[0].rstrip(".") if text else ""
    return f"{type(e).__name__}: {first}".rstrip(": ")


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes a checksum + identity and verifies both on load.

    Args:
        identity: the run's identity (:func:`run_identity`); ``None`` skips the identity check
            on load (the checksum is always checked).
    """

    def __init__(self, identity: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.identity = identity

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        checkpoint = dict(checkpoint)
        if self.identity is not None:
            checkpoint[IDENTITY_KEY] = dict(self.identity)
        checkpoint[DIGEST_KEY] = content_digest(checkpoint)
        # Atomic: a killed process leaves the previous file (e.g. last.ckpt), never half of a new one.
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f), binary=True)

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        checkpoint = read_checkpoint(path, map_location=map_location, weights_only=weights_only)
        if self.identity is not None:
            check_identity(path, checkpoint, self.identity)
        return checkpoint


def read_checkpoint(path: Any, map_location: Optional[Any] = "cpu", weights_only: Optional[bool] = None) -> dict[str, Any]:
    """Loads a checkpoint and verifies its checksum.

    Raises:
        CheckpointError: naming the file, if it cannot be loaded (empty, truncated, not a torch
            file), is not a Lightning checkpoint, or its content does not match its checksum.
        FileNotFoundError: if there is no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        checkpoint = TorchCheckpointIO.load_checkpoint(TorchCheckpointIO(), path, map_location=map_location,
                                                       weights_only=weights_only)
    except Exception as e:  # torch raises many types for a damaged archive; all mean the same here
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated, damaged or not a checkpoint "
                              f"file): {_first_line(e)}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict)")
    recorded = checkpoint.get(DIGEST_KEY)
    if recorded is None:
        log.warning("checkpoint %s carries no metarec checksum (written by another program or before metarec "
                    "checked checkpoints): its content is not verified", path)
        return checkpoint
    actual = content_digest(checkpoint)
    if actual != recorded:
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its checksum "
                              f"(sha256 {actual[:12]}…, recorded {str(recorded)[:12]}…)")
    return checkpoint


def check_identity(path: Any, checkpoint: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuses a checkpoint written by a run of another algorithm, encoder, trainable layers,
    ``n_way`` or family — before the run builds anything. A checkpoint that does not record its
    trainable layers (written before that field) is compared on the layers read from its content
    (:func:`recorded_trainable`); one whose layers cannot be read is checked when its weights load.

    Raises:
        CheckpointError: naming the file and every mismatching field.
    """
    recorded = checkpoint.get(IDENTITY_KEY)
    if recorded is None:
        # Older metarec checkpoints record only the algorithm's class name.
        old = checkpoint.get("metarec") or {}
        cls = _algorithm_class_name(str(expected.get("algorithm", "")))
        if old.get("algorithm") and cls and old["algorithm"] != cls:
            raise CheckpointError(f"checkpoint {path} was written by algorithm class {old['algorithm']}, "
                                  f"this run is algorithm={expected['algorithm']} ({cls})")
    recorded = dict(recorded or {})
    if "trainable" not in recorded and (trainable := recorded_trainable(checkpoint)) is not None:
        recorded["trainable"] = trainable
    diffs = [f"{k}={recorded.get(k)!r} (this run: {expected[k]!r})"
             for k in IDENTITY_FIELDS if k in expected and k in recorded and recorded[k] != expected[k]]
    if diffs:
        raise CheckpointError(f"checkpoint {path} belongs to another kind of run: {'; '.join(diffs)}")


def _algorithm_class_name(name: str) -> Optional[str]:

    for reg in (ALGORITHMS, RECOMMENDERS):
        if name in reg:
            return getattr(reg.get(name), "__name__", None)
    return None


def verify_checkpoint(path: Any, cfg: DictConfig) -> dict[str, Any]:
    """Reads ``path``, checks its checksum and that it matches the run of ``cfg``; returns it."""
    checkpoint = read_checkpoint(path)
    check_identity(path, checkpoint, run_identity(cfg))
    return checkpoint

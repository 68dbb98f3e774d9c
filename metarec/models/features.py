"""Model inputs for corpus rows: token ids, or encoder states cached once per text.

A :class:`FeatureStore` turns the corpus rows of an episode into the inputs the encoder's
freeze policy needs:

* ``tokens``    token ids, padded per batch (full fine-tuning, or no cache);
* ``hidden``    hidden states below the first trainable layer (``top_k`` policy): training then
  runs only the top ``k`` layers, which is what makes meta-training a transformer on a CPU fast;
* ``embedding`` pooled embeddings of a frozen encoder.

Cached states live on disk keyed by everything they depend on (encoder identity and weights
hash, pooling, max length, split layer, texts hash, dtype) and carry a checksum: a mismatched
or corrupt file is rebuilt with a warning, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metarec.episode import Inputs
from metarec.log import get_logger
from metarec.models.encoder import TextEncoder

log = get_logger(__name__)

KINDS = ("tokens", "hidden", "embedding")


def default_cache_dir() -> Path:
    return Path(os.environ.get("METAREC_CACHE_DIR", Path.home() / ".cache" / "metarec"))


def texts_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _tensor_checksum(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class FeatureStore:
    """Model inputs for rows of a text corpus.

    Args:
        encoder: the encoder whose frozen part produces cached states.
        texts: the corpus texts (row ``i`` of the corpus is ``texts[i]``).
        kind: ``"tokens"``, ``"hidden"`` or ``"embedding"``; default: what the encoder's
            freeze policy allows (``encoder.feature_kind``).
        cache_dir: where cached states are stored; ``None`` = ``$METAREC_CACHE_DIR`` or
            ``~/.cache/metarec``. ``False`` keeps them in memory only.
        batch_size: batch size for computing states.
        store_dtype: dtype of stored hidden states (float16 halves memory; embeddings are fp32).
        autocast: compute the cached states under bf16 autocast (about 3x faster on a CPU
            with AVX-512 BF16; the states then differ from fp32 ones in the 3rd digit, so the
            flag is part of the cache key). ``build_features`` sets it for bf16 runs.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        texts: list[str],
        kind: Optional[str] = None,
        cache_dir: Path | str | None | bool = None,
        batch_size: int = 64,
        store_dtype: torch.dtype = torch.float16,
        autocast: bool = False,
    ) -> None:
        self.kind = kind or encoder.feature_kind
        if self.kind not in KINDS:
            raise ValueError(f"feature kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "hidden" and encoder.freeze.value != "top_k":
            raise ValueError("hidden-state features need the top_k freeze policy")
        if self.kind == "embedding" and encoder.freeze.value != "frozen":
            raise ValueError("embedding features need the frozen freeze policy")
        self.encoder = encoder
        self.texts = texts
        self.batch_size = batch_size
        self.autocast = bool(autocast)
        self.store_dtype = store_dtype if self.kind == "hidden" else torch.float32
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.cache_hits = 0
        self.texts_hash = texts_hash(texts)  # also the corpus identity in episode fingerprints
        self._key: Optional[dict[str, Any]] = None
        self._tokens: Optional[list[Tensor]] = None
        self._data: Optional[dict[str, Tensor]] = None
        self._build()

    # -- cache key ------------------------------------------------------------------------
    def key(self) -> dict[str, Any]:
        """What the cached states depend on (computed once: the frozen weights never change)."""
        if self._key is not None:
            return self._key
        e = self.encoder
        self._key = {
            "kind": self.kind,
            "encoder": e.identity,
            "weights": e.weights_hash(),
            "pooling": e.pooling,
            "normalize": e.normalize,
            "max_length": e.max_length,
            "split_layer": e.n_frozen_layers,
            "texts": self.texts_hash,
            "n": len(self.texts),
            "dtype": str(self.store_dtype),
        }
        if self.autocast:  # absent when off: caches written before the option keep their key
            self._key["autocast"] = "bf16"
        if e.truncation != "head":  # likewise
            self._key["truncation"] = e.truncation
        return self._key

    def cache_path(self) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:20]
        return self.cache_dir / f"{self.kind}-{digest}.pt"

    # -- building ---------------------------------------------------------------------------
    def _tokenize_all(self) -> list[Tensor]:
        return [torch.tensor(ids, dtype=torch.long) for ids in self.encoder.token_ids(self.texts)]

    def _build(self) -> None:
        self._tokens = self._tokenize_all()
        if self.kind == "tokens":
            return
        path = self.cache_path()
        if path is not None and path.exists():
            loaded = self._load(path)
            if loaded is not None:
                self._data = loaded
                self.cache_hits += 1
                return
        self._data = self._compute()
        if path is not None:
            atomic_torch_save({"key": self.key(), "checksum": _tensor_checksum(self._data), "data": self._data}, path)

    def _load(self, path: Path) -> Optional[dict[str, Tensor]]:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            ok = blob["key"] == self.key() and blob["checksum"] == _tensor_checksum(blob["data"])
        except Exception as e:  # any unreadable file is treated as corrupt and rebuilt
            log.warning("feature cache %s is unreadable (%s: %s); rebuilding it", path, type(e).__name__, e)
            return None
        if not ok:
            log.warning("feature cache %s does not match its key or checksum; rebuilding it", path)
            return None
        return blob["data"]

    @torch.no_grad()
    def _compute(self) -> dict[str, Tensor]:
        assert self._tokens is not None
        enc = self.encoder
        was_training = enc.training
        enc.eval()
        n = len(self._tokens)
        lengths = torch.tensor([len(t) for t in self._tokens])
        order = torch.argsort(lengths, descending=True)  # similar lengths → little padding
        dim = enc.dim
        device_type = next(enc.parameters()).device.type
        if self.kind == "embedding":
            out = torch.empty(n, dim, dtype=torch.float32)
        else:
            offsets = torch.zeros(n + 1, dtype=torch.long)
            offsets[1:] = torch.cumsum(lengths, 0)
            flat = torch.empty(int(offsets[-1]), dim, dtype=self.store_dtype)
        for start in tqdm(range(0, n, self.batch_size), desc=f"caching {self.kind} states", unit="batch",
                          disable=None, leave=False):
            rows = order[start : start + self.batch_size]
            batch = self._pad([self._tokens[i] for i in rows.tolist()])
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.autocast):
                if self.kind == "embedding":
                    out[rows] = enc(batch).float()
                    continue
                hidden = enc.bottom(batch)
                for j, r in enumerate(rows.tolist()):
                    flat[offsets[r] : offsets[r + 1]] = hidden[j, : lengths[r]].to(self.store_dtype)
        enc.train(was_training)
        if self.kind == "embedding":
            return {"embedding": out}
        return {"flat": flat, "offsets": offsets}

    def _pad(self, seqs: list[Tensor]) -> dict[str, Tensor]:
        pad_id = self.encoder.tokenizer.pad_token_id or 0
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    # -- lookup -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.texts)

    def __call__(self, rows: Tensor) -> Inputs:
        """Model inputs for corpus ``rows`` ``(m,)``."""
        rows_l = rows.tolist()
        if self.kind == "tokens":
            assert self._tokens is not None
            return self._pad([self._tokens[i] for i in rows_l])
        assert self._data is not None
        if self.kind == "embedding":
            return self._data["embedding"][rows]
        flat, offsets = self._data["flat"], self._data["offsets"]
        lens = [int(offsets[i + 1] - offsets[i]) for i in rows_l]
        width = max(lens)
        hidden = torch.zeros(len(rows_l), width, flat.shape[1], dtype=torch.float32)
        mask = torch.zeros(len(rows_l), width, dtype=torch.long)
        for j, (i, L) in enumerate(zip(rows_l, lens)):
            hidden[j, :L] = flat[offsets[i] : offsets[i] + L]
            mask[j, :L] = 1
        return {"hidden_states": hidden, "attention_mask": mask}

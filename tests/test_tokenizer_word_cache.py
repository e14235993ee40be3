"""The per-word id cache in front of SentencePiece (`siglip.text.word_cache`): exact, or not used.

The cache-free path is itself tested against transformers in test_tokenizer.py; here every cached result is
compared with it (and with transformers once), on batches built so that words get learned and reused, with the
inputs that could make a cached word's ids depend on its context.
"""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from spm_model import sentences, train_sentencepiece_model

from siglip.text import encoding as tokenizer_encoding
from siglip.text import word_cache
from siglip.text.tokenizer import SiglipTokenizer
from siglip.text.vocabulary import train_spiece_model

transformers = pytest.importorskip("transformers")
pytest.importorskip("google.protobuf", reason="transformers' SiglipTokenizer needs protobuf")

KWARGS = dict(padding="max_length", truncation=True, return_tensors="np")


@pytest.fixture(scope="module", params=["unk", "byte_fallback"])
def vocab(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("spm_cache")
    return train_sentencepiece_model(directory, byte_fallback=request.param == "byte_fallback")


@pytest.fixture
def eager_cache(monkeypatch):
    """The cache on every batch of 64+ texts, learning fast: what these tests exercise is its exactness."""
    monkeypatch.setattr(tokenizer_encoding, "_CACHED_BATCH", 64)
    monkeypatch.setattr(word_cache, "_CAPTIONS_PER_LEARNED_WORD", 4)
    monkeypatch.setattr(word_cache, "_WORTHWHILE_FRACTION", 0.0)


def uncached(vocab) -> SiglipTokenizer:
    tokenizer = SiglipTokenizer(vocab)
    tokenizer._word_cache = None
    return tokenizer


def awkward_captions(rng: random.Random, count: int) -> list[str]:
    """Captions mixing frequent words with the inputs that could defeat a word cache."""
    tricky = [
        "333", "3333", "33333", "2024", "¨b", "a¨", "ﬁsh", "e\u0301", "\u0301x", "猫", "猫猫", "😀", "straße",
        "surfboard", "skateboarding", "abcdefgh", "abcdefghi", "abcdefghij", "kakarikakari", "x" * 70, "ka" * 33,
        "mokasa", "sashimi", "brûlée", "İstanbul", "ǅ", "ΣΑΣ", "u.s.a.", "it's", "a-b",
    ]  # fmt: skip
    frequent = sentences(50, seed=7)
    captions = []
    for index in range(count):
        words = rng.choice(frequent).split()
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(tricky))
        caption = " ".join(words)
        if index % 97 == 0:
            caption = " " + caption  # leading whitespace: the reference keeps a lone "▁" piece
        if index % 211 == 0:
            caption = " ".join([caption] * 40)  # longer than MAX_CAPTION_BYTES: always SentencePiece
        captions.append(caption)
    return captions + ["", " ", "333 333", "a " * 30]


def test_cached_ids_equal_sentencepiece_and_transformers(vocab, eager_cache):
    rng = random.Random(0)
    cached, plain = SiglipTokenizer(vocab), uncached(vocab)
    for _ in range(4):  # words met in one batch are learned, then reused in the next ones
        batch = awkward_captions(rng, 1500)
        got, expected = cached(batch, **KWARGS), plain(batch, **KWARGS)
        np.testing.assert_array_equal(got["input_ids"], expected["input_ids"])
        np.testing.assert_array_equal(got["attention_mask"], expected["attention_mask"])
    assert len(cached._word_cache) > 100
    reference = transformers.SiglipTokenizer(str(vocab))
    batch = awkward_captions(rng, 500)
    assert cached(batch, padding=True) == dict(reference(batch, padding=True))
    captions = cached._canonical(batch, b"")
    resolved = cached._word_cache.lookup(captions, budget=0)[3]
    assert resolved.mean() > 0.3  # the cache was really used (many captions hold a word it must not learn)
    assert not resolved[[len(caption) > word_cache.MAX_CAPTION_BYTES for caption in captions]].any()


def test_words_whose_ids_could_depend_on_context_are_not_learned(vocab):
    cache = SiglipTokenizer(vocab)._word_cache
    learned = dict(cache._segment([b"333", "¨b".encode(), b"the", b"photo"]))  # a tie, a normalisation
    assert set(learned) == {b"the", b"photo"}
    too_long = b"x" * (word_cache.MAX_WORD_BYTES + 1)
    assert not cache._learn([too_long] * 3, budget=10) and len(cache) == 0
    tried = []
    segment = cache._segment
    cache._segment = lambda words: tried.append(list(words)) or segment(words)
    assert not cache._learn([b"333"] * 5, budget=10)  # refused once ...
    assert cache._learn([b"333"] * 5 + [b"cat"] * 2, budget=1)  # ... then never a candidate again
    assert tried == [[b"333"], [b"cat"]] and len(cache) == 1
    sentencepiece = SiglipTokenizer(vocab).sp_model
    best = sentencepiece.nbest_encode("333", nbest_size=2, return_type="proto").nbests
    assert best[0].score == best[1].score  # "333" really is a tie in this model


def test_short_word_keys_are_exact_and_long_word_collisions_are_caught():
    rng = random.Random(1)
    words = sorted({bytes(rng.choice(b"ab\xe7\x8c\xab") for _ in range(rng.randint(1, 8))) for _ in range(3000)})
    text = b" ".join(words)
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
    keys = word_cache._word_keys(word_cache._as_words(text), starts, np.array([len(w) for w in words]))
    assert len(set(keys.tolist())) == len(words)  # distinct words of <= 8 bytes never share a key

    first, second = b"abcdefghijk", b"abcdefghijz"  # same length: only the bytes tell them apart
    tables = word_cache._extended(word_cache._EMPTY, [(first, np.array([7, 8]))])
    words8 = word_cache._as_words(second)
    start, length = np.array([0]), np.array([len(second)])
    forged = word_cache._word_keys(word_cache._as_words(first), start, length)  # as if the hashes collided
    assert word_cache._find(tables, words8, start, length, forged).tolist() == [-1]
    own = word_cache._word_keys(word_cache._as_words(first), start, length)
    assert word_cache._find(tables, word_cache._as_words(first), start, length, own).tolist() == [0]


def test_vocabularies_with_pieces_across_words_disable_the_cache(tmp_path):
    prefix = tmp_path / "spiece"
    path = train_spiece_model(sentences(2000), str(prefix), 800, split_by_whitespace=False)
    tokenizer = SiglipTokenizer(path)
    pieces = [tokenizer.sp_model.IdToPiece(i) for i in range(tokenizer.sp_model.GetPieceSize())]
    assert any("▁" in piece[1:] for piece in pieces)
    assert tokenizer._word_cache is None
    batch = sentences(300, seed=3) * 2
    assert tokenizer(batch, padding=True) == dict(transformers.SiglipTokenizer(str(path))(batch, padding=True))
    unknown_underline = SimpleNamespace(
        GetPieceSize=lambda: 2, IdToPiece=["<unk>", "a"].__getitem__, PieceToId=lambda piece: 0, unk_id=lambda: 0
    )
    assert not word_cache.supports_word_cache(unknown_underline)


def test_sampling_disables_the_cache(vocab):
    tokenizer = SiglipTokenizer(vocab, sp_model_kwargs={"enable_sampling": True, "alpha": 0.1, "nbest_size": -1})
    assert tokenizer._word_cache is None


def test_batches_of_unseen_words_go_to_sentencepiece(vocab, monkeypatch):
    tokenizer = SiglipTokenizer(vocab)
    looked_up = []
    lookup = tokenizer._word_cache.lookup
    monkeypatch.setattr(
        tokenizer._word_cache,
        "lookup",
        lambda captions, budget: looked_up.append(len(captions)) or lookup(captions, budget),
    )
    rng = random.Random(2)
    unique = [" ".join(f"w{rng.random()}" for _ in range(6)) for _ in range(4096)]
    sample = len(unique[:: max(tokenizer_encoding._PROBE_STEP, len(unique) // tokenizer_encoding._PROBE)])
    plain = uncached(vocab)
    tokenizer(unique[: tokenizer_encoding._CACHED_BATCH - 1], padding=True)
    assert looked_up == []  # small batches never pay for the cache
    assert tokenizer(unique, padding=True) == plain(unique, padding=True)
    assert looked_up == [sample]  # only the sample: the batch went to SentencePiece
    words = "a photo of the cat dog train on grass near two red small bus street".split()
    frequent = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) for _ in range(4096)]
    looked_up.clear()
    assert tokenizer(frequent, padding=True) == plain(frequent, padding=True)
    assert looked_up == []  # backing off: the batch after a failed sample skips the sample
    assert tokenizer(frequent, padding=True) == plain(frequent, padding=True)
    assert looked_up == [sample, len(frequent)]  # the sample taught it the words; then the whole batch
    assert tokenizer._word_cache.lookup(tokenizer._canonical(frequent, b""), 0)[3].all()


def test_concurrent_calls_learn_and_read_consistently(vocab, eager_cache):
    tokenizer, plain = SiglipTokenizer(vocab), uncached(vocab)
    batches = [awkward_captions(random.Random(seed), 400) for seed in range(8)]
    expected = [plain(batch, **KWARGS)["input_ids"] for batch in batches]
    results: dict[int, np.ndarray] = {}

    def run(index: int) -> None:
        for _ in range(3):
            results[index] = tokenizer(batches[index], **KWARGS)["input_ids"]

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, ids in enumerate(expected):
        np.testing.assert_array_equal(results[index], ids)
    assert len(tokenizer._word_cache) > 50


def test_a_tokenizer_with_a_learned_cache_pickles(vocab, eager_cache):
    import pickle

    tokenizer = SiglipTokenizer(vocab)
    batch = awkward_captions(random.Random(3), 600)
    expected = tokenizer(batch, **KWARGS)["input_ids"]
    assert len(tokenizer._word_cache) > 0
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert len(copy._word_cache) == len(tokenizer._word_cache)
    np.testing.assert_array_equal(copy(batch, **KWARGS)["input_ids"], expected)

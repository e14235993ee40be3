"""SiglipTokenizer against transformers' (slow, SentencePiece) SiglipTokenizer on a model trained here.

Parity is exact: identical ids and masks for every padding / truncation / max_length combination on a corpus of
~1200 strings built to hit every quirk (literal special tokens, leading whitespace, `▁`, Unicode whitespace and
case mappings, unknown characters, 10k-character texts). Round trips go through both libraries' save/load.
"""

from __future__ import annotations

import itertools
import json
import random
import warnings

import numpy as np
import pytest
import torch
from spm_model import sentences, train_sentencepiece_model

from siglip.errors import InputError
from siglip.hub import store_in_cache
from siglip.text.tokenizer import SiglipTokenizer, canonicalize_text

transformers = pytest.importorskip("transformers")
pytest.importorskip("google.protobuf", reason="transformers' SiglipTokenizer needs protobuf")

EXTRA_TOKENS = ["<extra>", "hello", "photo"]


def reference(path, **kwargs):
    """transformers' SiglipTokenizer; silences its per-sequence 'already has </s>' warning."""
    warnings.filterwarnings("ignore", message="This sequence already has")
    return transformers.SiglipTokenizer(str(path), **kwargs)


@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("spm")
    train_sentencepiece_model(directory)
    train_sentencepiece_model(directory, byte_fallback=True)
    return directory


@pytest.fixture(scope="session")
def vocab(spm_dir):
    return spm_dir / "spiece.model"


@pytest.fixture(scope="session", params=["unk", "byte_fallback"])
def any_vocab(request, spm_dir):
    return spm_dir / ("spiece.model" if request.param == "unk" else "spiece_bytes.model")


def corpus() -> list[str]:
    """~1200 deterministic strings: captions plus every kind of awkward input."""
    rng = random.Random(1234)
    captions = sentences(600, seed=99)
    texts = list(captions[:400])
    texts += [c.upper() for c in captions[400:430]] + [c.title() for c in captions[430:460]]
    texts += ["", " ", "  ", "\t\n", "\u3000", "\u00a0x\u00a0", "\x1c\x1d\x1e\x1f", "\u2028a\u2029b\x85c", "\u200b"]
    texts += [
        "a\x00b",
        "x \x00 y",
        "\x00",
        "a\x01b ▁c",
        "“quoted” — dash… ’s",
        "a\u2003\u2003b\u202fc\u205fd",
        "\u3000\u3000猫",
    ]
    texts += ["!!!", "...", "?!", "'\"", "-_-", "@#$%^&*()", "<>", "a.b,c;d", "(a photo)", "it's", "U.S.A."]
    texts += ["▁", "▁▁", "▁a", "a▁b", " ▁ ", "▁</s>", "▁ </s>"]
    texts += ["ΣΑΣ ΟΔΟΣ", "İstanbul", "ǅ ǈ ǋ", "ﬁ ﬂ", "ß ẞ", "Ⅻ", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ", "e\u0301 é", "Å Å"]
    texts += ["猫", "一只猫的照片", "東京の写真", "한국어 사진", "ᚠᚢᚦ", "鬱龘𠀀", "😀", "👍🏽❤️", "🐱 cat 🐶 dog", "ᄀ"]
    texts += ["a" * 10_000, "photo of a cat " * 700, "猫" * 10_000, "</s>" * 100, ("x " * 80).strip()]
    specials = ["</s>", "<unk>", "<pad>", "</S>", "<UNK>", "</s", "<unk", "s>", "</s></s>", "<unk></s>", "<extra>"]
    for index in range(260):
        words = rng.choice(captions).split()
        for _ in range(rng.randint(1, 3)):
            spaces = rng.choice(["", " ", "  ", "\t"])
            words.insert(rng.randint(0, len(words)), spaces + rng.choice(specials) + rng.choice(["", " ", "!"]))
        text = rng.choice(["", " ", "  "]) + " ".join(words) if index % 3 else "".join(words)
        texts.append(text)
    for _ in range(240):  # random unicode soup, including characters never seen in training
        alphabet = "abcXYZ 09 ,.!?\t\n▁<>/sunk猫写ᚠ😀Σßİé\u0301\u00a0\u3000" + chr(rng.randint(0x100, 0x2FFFF))
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))))
    texts += [f"{a} {b}" for a, b in itertools.product(["A photo of", "THE", "a"], ["a cat.", "</s>", "DOG!"])]
    return texts


CORPUS = corpus()
# Padding the whole corpus to its 10k-token texts would make every "longest" combination slow: they get their own batch.
LONG = [text for text in CORPUS if len(text) > 1000]
SHORT = [text for text in CORPUS if len(text) <= 1000]
PADDINGS = [False, True, "longest", "max_length"]
TRUNCATIONS = [True, False, None]
MAX_LENGTHS = [None, 16, 64]


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 1000
    assert any(len(t) >= 10_000 for t in CORPUS) and "" in CORPUS
    assert sum("</s>" in t for t in CORPUS) > 50 and sum("<unk>" in t for t in CORPUS) > 50


def test_canonicalize_matches_reference(vocab):
    ref = reference(vocab)
    for text in CORPUS:
        assert canonicalize_text(text) == ref.canonicalize_text(text)


def test_tokenize_and_ids_parity(any_vocab):
    ours, ref = SiglipTokenizer(any_vocab), reference(any_vocab)
    for text in CORPUS:
        assert ours.tokenize(text) == ref.tokenize(text), text[:80]
        assert ours(text) == dict(ref(text)), text[:80]


@pytest.mark.parametrize("padding", PADDINGS)
def test_batch_parity_every_combination(vocab, padding):
    ours, ref = SiglipTokenizer(vocab), reference(vocab)
    for truncation, max_length, batch in itertools.product(TRUNCATIONS, MAX_LENGTHS, (SHORT, LONG)):
        kwargs = dict(padding=padding, truncation=truncation, max_length=max_length)
        expected = dict(ref(batch, **kwargs))
        assert ours(batch, **kwargs) == expected, kwargs
        rectangular = len({len(ids) for ids in expected["input_ids"]}) == 1
        for tensor_type in ("pt", "np"):
            if not rectangular:
                with pytest.raises(InputError, match="different lengths"):
                    ours(batch, return_tensors=tensor_type, **kwargs)
                continue
            got = ours(batch, return_tensors=tensor_type, **kwargs)
            for key, value in expected.items():
                assert np.array_equal(np.asarray(got[key]), np.asarray(value)), (kwargs, key)


@pytest.mark.parametrize("tensor_type", ["pt", "np", None])
@pytest.mark.parametrize("kwargs", [dict(padding="max_length"), dict(padding=True, max_length=16, truncation=True)])
def test_tensor_types_and_single_string(vocab, tensor_type, kwargs):
    ours, ref = SiglipTokenizer(vocab), reference(vocab)
    for text in (CORPUS[:50], CORPUS[0], "a </s>", ""):
        got = ours(text, return_tensors=tensor_type, **kwargs)
        expected = ref(text, return_tensors=tensor_type, **kwargs)
        assert set(got) == set(expected) == {"input_ids", "attention_mask"}
        for key in expected:
            assert type(got[key]) is type(expected[key])
            if tensor_type is None:
                assert got[key] == expected[key]
            else:
                assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape
                assert (got[key] == expected[key]).all()


def test_return_attention_mask_and_other_options(vocab):
    ours, ref = SiglipTokenizer(vocab), reference(vocab)
    batch = CORPUS[:200]
    for kwargs in (
        dict(return_attention_mask=False),
        dict(return_attention_mask=True, padding=True),
        dict(add_special_tokens=False, padding=True),
        dict(add_special_tokens=False, truncation=True, max_length=8),
        dict(padding="max_length", max_length=16, truncation=True, pad_to_multiple_of=8),
        dict(padding="max_length", max_length=10, pad_to_multiple_of=8),
        dict(padding=True, pad_to_multiple_of=5),
        dict(truncation="only_first", max_length=5),
        dict(truncation="longest_first", padding="longest", max_length=1),
        dict(padding="do_not_pad", max_length=3),
    ):
        assert ours(batch, **kwargs) == dict(ref(batch, **kwargs)), kwargs


def test_left_padding_and_truncation(vocab):
    ours = SiglipTokenizer(vocab, padding_side="left", truncation_side="left")
    ref = reference(vocab, padding_side="left", truncation_side="left")
    for kwargs in (dict(padding="max_length", truncation=True, max_length=12), dict(padding=True)):
        assert ours(CORPUS[:300], **kwargs) == dict(ref(CORPUS[:300], **kwargs))


def test_additional_special_tokens_parity(vocab):
    ours, ref = (
        SiglipTokenizer(vocab, additional_special_tokens=EXTRA_TOKENS),
        reference(vocab, additional_special_tokens=EXTRA_TOKENS),
    )
    texts = CORPUS + ["Hello hello photo <extra>x", "photography", "<extra><extra> hello!", "a photo"]
    assert ours(texts, padding=True) == dict(ref(texts, padding=True))
    assert ours.all_special_ids == ref.all_special_ids and len(ours) == len(ref)
    assert ours.get_vocab() == ref.get_vocab()


def test_decode_parity(any_vocab):
    ours, ref = SiglipTokenizer(any_vocab), reference(any_vocab)
    rng = random.Random(0)
    sequences = [ref(t)["input_ids"] for t in CORPUS[::3]]
    sequences += [[rng.randrange(ours.vocab_size) for _ in range(rng.randint(0, 30))] for _ in range(200)]
    sequences += [[0, 1, 2, 3], [1, 1, 2], [], [5, 1, 6, 2, 2, 7]]
    for ids in sequences:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), ids
    padded = ours(CORPUS[:20], padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    assert ours.batch_decode(padded, skip_special_tokens=True) == ref.batch_decode(padded, skip_special_tokens=True)
    assert ours.decode(torch.tensor(sequences[0])) == ref.decode(sequences[0])
    assert ours.decode(np.int64(5)) == ref.decode(5)


def test_vocabulary_and_special_token_helpers(vocab):
    ours, ref = SiglipTokenizer(vocab), reference(vocab)
    assert ours.get_vocab() == ref.get_vocab()
    assert (ours.vocab_size, len(ours)) == (ref.vocab_size, len(ref))
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (ref.pad_token_id, ref.eos_token_id, 2)
    assert ours.model_input_names == ref.model_input_names == ["input_ids", "attention_mask"]
    assert ours.all_special_tokens == ref.all_special_tokens and ours.all_special_ids == ref.all_special_ids
    pieces = ["▁a", "</s>", "<unk>", "<pad>", "zzz", "▁photo", "▁"]
    assert ours.convert_tokens_to_ids(pieces) == ref.convert_tokens_to_ids(pieces)
    assert ours.convert_tokens_to_ids("▁a") == ref.convert_tokens_to_ids("▁a")
    ids = list(range(0, ours.vocab_size, 7))
    assert ours.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == ref.convert_ids_to_tokens(ids, True)
    assert ours.convert_ids_to_tokens(3) == ref.convert_ids_to_tokens(3)
    for a, b in (([5, 6], None), ([5, 6], [7]), ([], None), ([5, 1], [1])):
        assert ours.build_inputs_with_special_tokens(a, b) == ref.build_inputs_with_special_tokens(a, b)
        assert ours.get_special_tokens_mask(a, b) == ref.get_special_tokens_mask(a, b)
        assert ours.create_token_type_ids_from_sequences(a, b) == ref.create_token_type_ids_from_sequences(a, b)
    formatted = [5, 1, 6, 2, 0, 1]
    assert ours.get_special_tokens_mask(formatted, already_has_special_tokens=True) == ref.get_special_tokens_mask(
        formatted, already_has_special_tokens=True
    )


def assert_same_ids(ours: SiglipTokenizer, ref) -> None:
    assert ours(CORPUS, padding="max_length", truncation=True) == dict(
        ref(CORPUS, padding="max_length", truncation=True)
    )
    assert ours(SHORT, padding=True) == dict(ref(SHORT, padding=True))


@pytest.mark.parametrize("extra", [None, EXTRA_TOKENS])
def test_save_load_round_trips_with_transformers(vocab, tmp_path, extra):
    ours = SiglipTokenizer(vocab, additional_special_tokens=extra, model_max_length=32)
    ours.save_pretrained(tmp_path / "ours")
    assert {p.name for p in (tmp_path / "ours").iterdir()} == {
        "spiece.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    ref = transformers.SiglipTokenizer.from_pretrained(tmp_path / "ours")
    assert type(ref).__name__ == "SiglipTokenizer" and ref.model_max_length == 32
    assert_same_ids(ours, ref)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "ours").model_max_length == 32

    ref.save_pretrained(tmp_path / "theirs")
    again = SiglipTokenizer.from_pretrained(tmp_path / "theirs")
    assert again.model_max_length == 32 and again.additional_special_tokens == (extra or [])
    assert_same_ids(again, ref)
    saved = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    theirs = json.loads((tmp_path / "theirs" / "tokenizer_config.json").read_text())
    assert {key: theirs[key] for key in saved} == saved  # theirs also records its load options (is_local, ...)


def test_loads_transformers_4_style_folder(vocab, tmp_path):
    """Hub checkpoints saved by transformers 4.x: AddedToken dicts with lstrip/rstrip, additional_special_tokens."""
    (tmp_path / "spiece.model").write_bytes(vocab.read_bytes())
    token = lambda content: dict(content=content, lstrip=True, normalized=False, rstrip=True, single_word=False)  # noqa: E731
    config = {
        "added_tokens_decoder": {"1": {**token("</s>"), "special": True}, "2": {**token("<unk>"), "special": True}},
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "</s>",
        "model_input_names": ["input_ids"],
        "model_max_length": 64,
        "pad_token": "</s>",
        "sp_model_kwargs": {},
        "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>",
    }
    special_map = {name: token(content) for name, content in (("eos_token", "</s>"), ("pad_token", "</s>"))}
    special_map["unk_token"] = token("<unk>")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(special_map))
    ours, ref = SiglipTokenizer.from_pretrained(tmp_path), transformers.SiglipTokenizer.from_pretrained(tmp_path)
    assert ours.model_input_names == ref.model_input_names == ["input_ids"]
    assert_same_ids(ours, ref)
    assert set(ours("a cat", padding="max_length")) == {"input_ids"}


def test_from_pretrained_hub_cache_and_overrides(vocab, tmp_path, monkeypatch):
    SiglipTokenizer(vocab).save_pretrained(tmp_path / "folder")
    store_in_cache(tmp_path / "folder", "tiny-org/siglip-tokenizer", tmp_path / "cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = SiglipTokenizer.from_pretrained(
        "tiny-org/siglip-tokenizer", cache_dir=tmp_path / "cache", local_files_only=True, model_max_length=16
    )
    assert loaded.model_max_length == 16
    assert loaded("a photo of a cat " * 20, truncation=True)["input_ids"][-1] == loaded.eos_token_id
    assert len(loaded("a photo of a cat " * 20, truncation=True)["input_ids"]) == 16


def test_long_text_truncates_keeping_eos(vocab):
    ours = SiglipTokenizer(vocab)
    batch = ours(["a" * 10_000, "photo " * 5000, ""], padding="max_length", truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape == (3, 64) and batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"][0, -1] == ours.eos_token_id and batch["attention_mask"][0].all()
    assert batch["input_ids"][2].tolist() == [1] * 64 and batch["attention_mask"][2].tolist() == [1] + [0] * 63


@pytest.mark.parametrize("bad", [[1, 2], ["a cat", None], ["ok", b"bytes"], 42, None, [], ["a", ["nested"]]])
def test_bad_input_raises_typed_error(vocab, bad):
    with pytest.raises(InputError, match="string") as info:
        SiglipTokenizer(vocab)(bad)
    assert isinstance(info.value, ValueError)


def test_unpaired_surrogate_raises_typed_error(vocab):
    with pytest.raises(InputError, match="surrogate"):
        SiglipTokenizer(vocab)(["fine", "bad \ud800 text"])


def test_bad_options_raise_typed_error(vocab):
    tokenizer = SiglipTokenizer(vocab)
    with pytest.raises(InputError, match="padding"):
        tokenizer("a", padding="sideways")
    with pytest.raises(InputError, match="multiple"):
        tokenizer("a", padding=True, truncation=True, max_length=10, pad_to_multiple_of=8)
    with pytest.raises(InputError, match="return_tensors"):
        tokenizer("a", return_tensors="tf")
    with pytest.raises(InputError, match="outside the vocabulary"):
        tokenizer.decode([10**6])


def test_buffer_encoding_equals_list_encoding(any_vocab, monkeypatch):
    """SentencePiece's int32-buffer batch API (used when present) gives the same ids as its list API."""
    from siglip.text import encoding as tokenizer_encoding

    texts = [text for text in SHORT if "\x00" not in text] + sentences(300, seed=5)
    tokenizer = SiglipTokenizer(any_vocab)
    if getattr(getattr(tokenizer.sp_model, "_processor", None), "_EncodeAsBufferBatch", None) is None:
        pytest.skip("this sentencepiece build has no buffer API")
    jobs = tokenizer_encoding.canonicalize_batch(texts, True, b"<unk>")
    flat, sizes = tokenizer._encode_jobs_flat(jobs, threads=2)
    monkeypatch.setattr(tokenizer_encoding, "_THREADED_BATCH", 10**9)  # forces the list path
    list_flat, list_sizes = tokenizer._encode_jobs_flat(jobs, threads=2)
    assert flat.dtype == list_flat.dtype == np.int64
    np.testing.assert_array_equal(sizes, list_sizes)
    np.testing.assert_array_equal(flat, list_flat)


def test_large_plain_batch_parity_threaded_path(any_vocab):
    """Batches without special tokens take the chunked, threaded path."""
    ours, ref = SiglipTokenizer(any_vocab), reference(any_vocab)
    plain = [
        text for text in SHORT if not any(token in text for token in ref.all_special_tokens) and "\x00" not in text
    ]
    # "333" has equal-scoring segmentations ("3"+"33", "33"+"3"); SentencePiece's tie-break depends on float sums
    # that include the "<unk>" prefix's score, so the prefix must stay even where no piece could cross it.
    plain += ["straße of night moka_ 333 猫 brûlée Deka train", "333", "a 3333 33333"]
    batch = (plain * (3000 // len(plain) + 1))[:3000]  # several chunks of 1024
    for kwargs in (
        dict(padding="max_length", truncation=True),
        dict(padding=True, truncation=True, max_length=16),
        dict(padding=False),
    ):
        assert ours(batch, **kwargs) == dict(ref(batch, **kwargs)), kwargs
    tensors = ours(batch, padding="max_length", truncation=True, return_tensors="pt")
    expected = ref(batch, padding="max_length", truncation=True, return_tensors="pt")
    assert torch.equal(tensors["input_ids"], expected["input_ids"])
    assert torch.equal(tensors["attention_mask"], expected["attention_mask"])
    left = SiglipTokenizer(any_vocab, padding_side="left", truncation_side="left")
    left_ref = reference(any_vocab, padding_side="left", truncation_side="left")
    kwargs = dict(padding="max_length", truncation=True, max_length=12)
    assert left(batch, **kwargs) == dict(left_ref(batch, **kwargs))

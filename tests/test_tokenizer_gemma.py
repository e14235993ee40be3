"""Gemma / SigLIP2 tokenizer parity with transformers on a small Gemma-style byte-fallback BPE built here.

The checkpoint folder mirrors what SigLIP2 checkpoints ship: a `tokenizer.json` laid out like Gemma's (vocab
`<pad>=0, <eos>=1, <bos>=2, <unk>=3, <mask>=4`, control/unused tokens, 256 `<0xNN>` byte tokens, then BPE pieces;
normaliser replacing spaces with `▁`, no pre-tokenizer, byte fallback, post-processor appending `<eos>`), a
`tokenizer_config.json` like the Hub's (GemmaTokenizer, padding right, only `input_ids`) and a
`special_tokens_map.json`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from siglip.batch import BatchFeature
from siglip.errors import InputError
from siglip.text.gemma import GemmaTokenizer, Siglip2Tokenizer

transformers = pytest.importorskip("transformers")

WORDS = "the a cat dog photo of an image with two three on in red blue green Pallas lion tiger Siberian This is".split()
FOREIGN = ["café", "naïve", "Zürich", "東京", "日本語", "привет", "こんにちは", "🙂", "Straße"]
CONTROL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[@BOS@]", "<unused0>", "<unused1>"]
TURN = ["<start_of_turn>", "<end_of_turn>"]


def _corpus(count: int = 2000, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(count):
        sentence = " ".join(rng.choice(WORDS + FOREIGN) for _ in range(rng.randint(3, 14)))
        yield (sentence.capitalize() if rng.random() < 0.3 else sentence) + rng.choice([".", "", "!", "?"])


def _template(bos: bool, eos: bool) -> dict:
    """Gemma's TemplateProcessing post-processor: `[<bos>] $A [<eos>]` (pairs: the same again, type 1)."""

    def sequence(name: str, type_id: int) -> list[dict]:
        items = [{"Sequence": {"id": name, "type_id": type_id}}]
        if bos:
            items.insert(0, {"SpecialToken": {"id": "<bos>", "type_id": type_id}})
        if eos:
            items.append({"SpecialToken": {"id": "<eos>", "type_id": type_id}})
        return items

    special = {}
    if bos:
        special["<bos>"] = {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}
    if eos:
        special["<eos>"] = {"id": "<eos>", "ids": [1], "tokens": ["<eos>"]}
    return {"type": "TemplateProcessing", "single": sequence("A", 0), "pair": sequence("A", 0) + sequence("B", 1),
            "special_tokens": special}  # fmt: skip


def build_gemma_checkpoint(folder: Path, *, bos: bool = False, eos: bool = True, with_mask: bool = True) -> Path:
    """Train a tiny BPE and lay it out like a SigLIP2 Hub checkpoint's Gemma tokenizer files."""
    trainer_model = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_model.normalizer = normalizers.Replace(" ", "▁")
    trainer_model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    trainer_model.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=600, show_progress=False))
    data = json.loads(trainer_model.to_str())
    control = [token for token in CONTROL if with_mask or token != "<mask>"]
    vocab = {token: index for index, token in enumerate(control + TURN)}
    vocab.update({f"<0x{byte:02X}>": len(vocab) + byte for byte in range(256)})
    for piece, _ in sorted(data["model"]["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    vocab.setdefault("▁▁", len(vocab))
    added = [
        dict(id=vocab[t], content=t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
        for t in control + TURN
    ]
    data.update(
        model={**data["model"], "vocab": vocab},
        added_tokens=added,
        normalizer={"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        pre_tokenizer=None,
        post_processor=_template(bos, eos),
        decoder={
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
            ],
        },
    )
    Tokenizer.from_str(json.dumps(data))  # the file must be valid for the tokenizers library
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config = {
        "add_bos_token": bos,
        "add_eos_token": eos,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        "additional_special_tokens": TURN,
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "do_lower_case": True,
        "eos_token": "<eos>",
        "model_input_names": ["input_ids"],
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "padding_side": "right",
        "processor_class": "Siglip2Processor",
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    specials = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps({**specials, "additional_special_tokens": TURN}))
    return folder


def parity_texts(count: int = 400, seed: int = 1) -> list[str]:
    """Mixed case, unicode, emoji, unseen scripts (byte fallback), odd whitespace, literal special tokens, long."""
    rng = random.Random(seed)
    fixed = [
        "",
        " ",
        "This is a photo of a Pallas cat.",
        "  leading and trailing  ",
        "tabs\tand\nnewlines\r\n",
        "ÀÉÎÕÜ ÇA VA? İstanbul ǅ",
        "🙂🙃 👩‍👩‍👧 🇫🇷 ✨",
        "<eos> in the middle <bos> and <EOS> <Start_Of_Turn> <start_of_turn>x<end_of_turn>",
        "<mask><pad><unk>",
        "ฉันรักแมว 한국어 العربية עברית",
        "A" * 300,
        " ".join(["photo"] * 200),
        "\u00a0non\u2009breaking\u3000spaces",
        "emoji🙂inside words",
    ]
    alphabet = WORDS + FOREIGN + ["DOG", "Cat", "PHOTO", "  ", "\n", "123", "😀", "ß", "Ω", "ﬁ", ",", "!!"]
    random_texts = []
    for _ in range(count - len(fixed)):
        length = rng.choice([1, 3, 8, 20, 60, 150])
        words = [rng.choice(alphabet) for _ in range(length)]
        words = [w.upper() if rng.random() < 0.1 else w for w in words]
        random_texts.append(rng.choice([" ", "", "  "]).join(words))
    return fixed + random_texts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_gemma_checkpoint(tmp_path_factory.mktemp("gemma_tok"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return parity_texts()


CALL_KWARGS = [
    dict(padding="max_length", max_length=64, truncation=True),  # the Siglip2Processor default
    dict(),
    dict(padding=True),
    dict(padding="longest", truncation=True, max_length=16),
    dict(max_length=7),
    dict(padding="max_length", max_length=8, truncation=True, return_attention_mask=True),
    dict(padding=True, pad_to_multiple_of=8, return_attention_mask=True),
    dict(truncation=True, max_length=2),
    dict(padding="max_length", max_length=64, truncation=True, add_special_tokens=False),
    dict(padding="max_length", max_length=16, truncation=True, padding_side="left", return_attention_mask=True),
]

PAIRS = [(Siglip2Tokenizer, "Siglip2Tokenizer"), (GemmaTokenizer, "GemmaTokenizer")]


@pytest.mark.parametrize(("ours_cls", "ref_name"), PAIRS)
@pytest.mark.parametrize("kwargs", CALL_KWARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "none")
def test_ids_and_masks_match_reference(checkpoint, texts, ours_cls, ref_name, kwargs):
    ours = ours_cls.from_pretrained(checkpoint)
    reference = getattr(transformers, ref_name).from_pretrained(checkpoint)
    for chunk in (texts[:1], texts[:37], texts):
        expected = reference(chunk, **kwargs)
        got = ours(chunk, **kwargs)
        assert sorted(got) == sorted(expected)
        for key in expected:
            assert got[key] == expected[key], key
    for text in texts[:60]:  # single strings: unbatched lists
        assert dict(ours(text, **kwargs)) == dict(reference(text, **kwargs))


def test_lowercasing_is_the_only_difference(checkpoint):
    siglip2, gemma = Siglip2Tokenizer.from_pretrained(checkpoint), GemmaTokenizer.from_pretrained(checkpoint)
    assert siglip2("A Photo OF a Cat").input_ids == gemma("a photo of a cat").input_ids
    assert siglip2("A Photo OF a Cat").input_ids != gemma("A Photo OF a Cat").input_ids


@pytest.mark.parametrize(("bos", "eos", "with_mask"), [(True, False, True), (True, True, False), (False, False, True)])
def test_post_processor_and_added_tokens_follow_the_files(tmp_path, texts, bos, eos, with_mask):
    folder = build_gemma_checkpoint(tmp_path / "ckpt", bos=bos, eos=eos, with_mask=with_mask)
    for ours_cls, ref_name in PAIRS:
        ours, reference = ours_cls.from_pretrained(folder), getattr(transformers, ref_name).from_pretrained(folder)
        assert len(ours) == len(reference)  # without <mask> in the vocab, both append it as an added token
        kwargs = dict(padding="max_length", max_length=24, truncation=True, return_attention_mask=True)
        assert dict(ours(texts, **kwargs)) == dict(reference(texts, **kwargs))


def test_auto_tokenizer_reference_choices(checkpoint, texts):
    """transformers picks GemmaTokenizer for model_type "siglip" and Siglip2Tokenizer for "siglip2"."""
    for model_type, ours_cls in (("siglip", GemmaTokenizer), ("siglip2", Siglip2Tokenizer)):
        (checkpoint / "config.json").write_text(json.dumps({"model_type": model_type}))
        try:
            reference = transformers.AutoTokenizer.from_pretrained(checkpoint)
        finally:
            (checkpoint / "config.json").unlink()
        assert type(reference).__name__ == ours_cls.__name__
        kwargs = dict(padding="max_length", max_length=64, truncation=True)
        assert dict(ours_cls.from_pretrained(checkpoint)(texts, **kwargs)) == dict(reference(texts, **kwargs))


def test_decode_and_tokens_match_reference(checkpoint, texts):
    ours, reference = (
        Siglip2Tokenizer.from_pretrained(checkpoint),
        transformers.Siglip2Tokenizer.from_pretrained(checkpoint),
    )
    batch = reference(texts, padding="max_length", max_length=64, truncation=True)["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(batch, skip_special_tokens=skip) == reference.batch_decode(
            batch, skip_special_tokens=skip
        )
        assert ours.convert_ids_to_tokens(batch[3], skip_special_tokens=skip) == reference.convert_ids_to_tokens(
            batch[3], skip_special_tokens=skip
        )
    assert ours.decode(torch.tensor(batch[2])) == reference.decode(batch[2])
    assert ours.convert_ids_to_tokens(5) == reference.convert_ids_to_tokens(5)
    for text in texts[:50]:
        assert ours.tokenize(text) == reference.tokenize(text)
    assert (ours.pad_token_id, ours.eos_token_id, ours.bos_token_id, ours.unk_token_id) == (0, 1, 2, 3)
    assert (ours.vocab_size, len(ours)) == (reference.vocab_size, len(reference))
    assert sorted(ours.all_special_ids) == sorted(reference.all_special_ids)
    assert ours.get_vocab() == reference.get_vocab()
    assert ours.decode(ours("Crème brûlée 🙂").input_ids, skip_special_tokens=True) == "crème brûlée 🙂"


def test_tensors_and_batch_feature(checkpoint):
    tokenizer = Siglip2Tokenizer.from_pretrained(checkpoint)
    batch = tokenizer(["a cat", "a photo of two dogs"], padding="max_length", max_length=64, return_tensors="pt")
    assert isinstance(batch, BatchFeature) and batch.input_ids.shape == (2, 64) and batch.input_ids.dtype == torch.long
    assert "attention_mask" not in batch  # the checkpoint lists only input_ids, like the Hub's SigLIP2 files
    single = tokenizer("a cat", padding="max_length", max_length=64, return_tensors="np", return_attention_mask=True)
    assert isinstance(single["input_ids"], np.ndarray) and single["attention_mask"].shape == (1, 64)
    reference = transformers.Siglip2Tokenizer.from_pretrained(checkpoint)
    expected = reference("a cat", padding="max_length", max_length=64, return_tensors="pt")
    assert torch.equal(tokenizer("a cat", padding="max_length", max_length=64, return_tensors="pt").input_ids,
                       expected["input_ids"])  # fmt: skip
    with pytest.raises(InputError):
        tokenizer(["a", "a photo of a cat"], return_tensors="pt")
    with pytest.raises(InputError):
        tokenizer(["a"], padding="sideways")
    with pytest.raises(InputError):
        tokenizer([1, 2])


def test_save_round_trip_both_directions(checkpoint, texts, tmp_path):
    kwargs = dict(padding="max_length", max_length=64, truncation=True, return_attention_mask=True)
    ours = Siglip2Tokenizer.from_pretrained(checkpoint)
    ours.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Siglip2Tokenizer" and config["processor_class"] == "Siglip2Processor"
    reloaded_by_reference = transformers.Siglip2Tokenizer.from_pretrained(tmp_path / "ours")
    reloaded_by_auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "ours")
    assert type(reloaded_by_auto).__name__ == "Siglip2Tokenizer"
    expected = dict(transformers.Siglip2Tokenizer.from_pretrained(checkpoint)(texts, **kwargs))
    assert dict(reloaded_by_reference(texts, **kwargs)) == expected
    assert dict(reloaded_by_auto(texts, **kwargs)) == expected
    assert dict(Siglip2Tokenizer.from_pretrained(tmp_path / "ours")(texts, **kwargs)) == expected
    assert reloaded_by_reference.padding_side == "right" and reloaded_by_reference.model_input_names == ["input_ids"]

    transformers.Siglip2Tokenizer.from_pretrained(checkpoint).save_pretrained(tmp_path / "theirs")
    assert dict(Siglip2Tokenizer.from_pretrained(tmp_path / "theirs")(texts, **kwargs)) == expected
    gemma_saved = tmp_path / "gemma"
    GemmaTokenizer.from_pretrained(checkpoint).save_pretrained(gemma_saved)
    reference_gemma = transformers.GemmaTokenizer.from_pretrained(checkpoint)
    assert dict(transformers.GemmaTokenizer.from_pretrained(gemma_saved)(texts, **kwargs)) == dict(
        reference_gemma(texts, **kwargs)
    )


def test_defaults_without_tokenizer_config(checkpoint, texts, tmp_path):
    """Only tokenizer.json: class defaults (padding left, attention mask returned), added tokens from the file."""
    (tmp_path / "tokenizer.json").write_bytes((checkpoint / "tokenizer.json").read_bytes())
    ours, reference = (
        Siglip2Tokenizer.from_pretrained(tmp_path),
        transformers.Siglip2Tokenizer.from_pretrained(tmp_path),
    )
    assert ours.padding_side == reference.padding_side == "left"
    for kwargs in (dict(padding=True), dict(padding="max_length", max_length=32, truncation=True)):
        assert dict(ours(texts, **kwargs)) == dict(reference(texts, **kwargs))


@pytest.mark.parametrize(
    "overrides",
    [dict(add_eos_token=True), dict(add_bos_token=True), dict(add_bos_token=True, add_eos_token=True),
     dict(padding_side="left"), dict(truncation_side="left")],
)  # fmt: skip
def test_from_pretrained_overrides_match_reference(checkpoint, texts, overrides):
    ours = Siglip2Tokenizer.from_pretrained(checkpoint, **overrides)
    reference = transformers.Siglip2Tokenizer.from_pretrained(checkpoint, **overrides)
    for kwargs in (dict(padding=True, return_attention_mask=True), dict(padding="max_length", max_length=12)):
        assert dict(ours(texts, **kwargs)) == dict(reference(texts, **kwargs))

"""The converted Marian `tokenizer.json` against `MarianTokenizer` (sentencepiece + vocab.json)."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
import sentencepiece as spm
import transformers  # noqa: F401  (the reference implementation: an export-side test module)
from tokenizers import Tokenizer

from models.marian_tokenizer import (
    TARGET_TOKENIZER_FILE,
    TOKENIZER_FILE,
    convert_marian_tokenizer,
)
from models.tiny import _french_words, corpus_sentences

UNICODE = [
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\nnew lines\r\n here",
    "multiple     inner   spaces",
    "Ünïcödé façade café naïve résumé Straße",
    "ÀÉÎÕÜ àéîõü ñ ç",
    "日本語のテキスト",
    "Привет мир, как дела?",
    "مرحبا بالعالم",
    "emoji 😀🎉 test 🤖🤖",
    "ＦＵＬＬ　ＷＩＤＴＨ ｔｅｘｔ",
    "ligatures ﬁ ﬂ and ½ ² ™",
    "zero\u200bwidth and nbsp\u00a0here",
    "combining e\u0301 vs é",
    "€100 — “quotes” ‘single’ … «guillemets»",
    "x</s>y and a <unk> b <pad> c",
    "I'm sure it's fine, isn't it?",
    "Ω≈ç√∫ ∑∏ ≠ ≤",
    "a" * 300,
]


def marian_tokenizer(folder: Path):
    from transformers import MarianTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses" (unused)
        return MarianTokenizer.from_pretrained(str(folder))


def sample_texts() -> list[str]:
    # Every 8th corpus sentence: 500 sentences. (Two of the 4,000 differ: an exact tie between
    # segmentations, which spm and tokenizers break differently; see models/marian_tokenizer.py.)
    return corpus_sentences()[::8] + UNICODE


def random_id_sequences(vocab_size: int, count: int = 1500) -> list[list[int]]:
    rng = random.Random(0)
    sequences = []
    for i in range(count):
        high = 12 if i % 3 == 0 else vocab_size  # often the low ids: the special tokens
        sequences.append([rng.randrange(high) for _ in range(rng.randint(0, 14))])
    return sequences


def assert_same_encoding(slow, fast: Tokenizer, texts: list[str]) -> None:
    for text in texts:
        assert fast.encode(text).ids == slow(text)["input_ids"], text


def assert_same_decoding(slow, fast: Tokenizer, sequences: list[list[int]]) -> None:
    for ids in sequences:
        assert fast.decode(ids, skip_special_tokens=True) == slow.decode(
            ids, skip_special_tokens=True
        ), ids


@pytest.fixture(scope="module")
def tiny_marian(tiny_checkpoint, tiny_exported):
    """(MarianTokenizer, converted tokenizer, exported folder) for the tiny Marian checkpoint."""
    folder = tiny_exported("marian")
    assert (folder / TOKENIZER_FILE).exists()  # written by export_onnx
    assert not (tiny_checkpoint("marian") / TOKENIZER_FILE).exists()
    return (
        marian_tokenizer(tiny_checkpoint("marian")),
        Tokenizer.from_file(str(folder / TOKENIZER_FILE)),
        folder,
    )


def test_export_gives_marian_a_tokenizer_json(tiny_marian):
    _, _, folder = tiny_marian
    # One spm and a vocab in spm order: one file serves encoding and decoding.
    assert not (folder / TARGET_TOKENIZER_FILE).exists()
    from service.runtime.text_tokenizer import TextTokenizer

    loaded = TextTokenizer.load(folder)
    assert (loaded.eos_id, loaded.pad_id, loaded.model_max_length) == (0, 2, 128)


def test_ids_match_marian_tokenizer_on_corpus_and_unicode(tiny_marian):
    slow, fast, _ = tiny_marian
    assert_same_encoding(slow, fast, sample_texts())


def test_decode_matches_marian_tokenizer_decode(tiny_marian):
    slow, fast, _ = tiny_marian
    assert_same_decoding(slow, fast, random_id_sequences(len(slow.encoder)))
    assert_same_decoding(slow, fast, [slow(t)["input_ids"] for t in sample_texts()])


@pytest.fixture(scope="module")
def shared_vocab_checkpoint(tmp_path_factory) -> Path:
    """Like opus-mt: different source and target spm, one vocab.json holding both, in an order
    unrelated to either spm's ids (</s>, <unk> first, <pad> last), with language codes."""
    from transformers import MarianTokenizer

    folder = tmp_path_factory.mktemp("marian-shared-vocab")
    sentences = corpus_sentences()
    models = {}
    for name, lines, size in (
        ("source", sentences[:2000], 700),
        ("target", sentences[2000:] + _french_words(), 500),
    ):
        corpus = folder / f"{name}.txt"
        corpus.write_text("\n".join(lines), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(folder / name),
            vocab_size=size,
            model_type="unigram",
            num_threads=1,
            minloglevel=2,
        )
        (folder / f"{name}.model").rename(folder / f"{name}.spm")
        models[name] = spm.SentencePieceProcessor(model_file=str(folder / f"{name}.spm"))
    pieces: list[str] = []
    for model in models.values():
        for i in range(model.get_piece_size()):
            piece = model.id_to_piece(i)
            if not (model.is_control(i) or model.is_unknown(i)) and piece not in pieces:
                pieces.append(piece)
    random.Random(1).shuffle(pieces)
    vocab = {"</s>": 0, "<unk>": 1, ">>fr<<": 2, ">>de<<": 3, "<s>": 4}
    for piece in pieces + ["<pad>"]:
        vocab[piece] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = MarianTokenizer(
        source_spm=str(folder / "source.spm"),
        target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"),
    )
    tokenizer.save_pretrained(folder)
    return folder


def test_shared_vocab_and_separate_target_spm(shared_vocab_checkpoint, tmp_path):
    written = convert_marian_tokenizer(shared_vocab_checkpoint, tmp_path)
    assert [p.name for p in written] == [TOKENIZER_FILE, TARGET_TOKENIZER_FILE]
    slow = marian_tokenizer(shared_vocab_checkpoint)
    source = Tokenizer.from_file(str(tmp_path / TOKENIZER_FILE))
    target = Tokenizer.from_file(str(tmp_path / TARGET_TOKENIZER_FILE))

    texts = sample_texts() + [">>fr<< Hello there", ">>de<< Guten Tag"]  # codes in the vocab
    assert_same_encoding(slow, source, texts)
    assert_same_decoding(slow, target, random_id_sequences(len(vocab_of(shared_vocab_checkpoint))))
    # Target ids decode with target.spm's view: the source-side file would not do.
    assert any(
        source.decode(ids, skip_special_tokens=True) != slow.decode(ids, skip_special_tokens=True)
        for ids in random_id_sequences(len(slow.encoder), 200)
    )


def vocab_of(folder: Path) -> dict[str, int]:
    return json.loads((folder / "vocab.json").read_text(encoding="utf-8"))

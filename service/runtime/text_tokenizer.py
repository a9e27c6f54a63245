"""A model's tokenizer without `transformers`: `tokenizer.json` plus its Hugging Face config files.

`tokenizers.Tokenizer` does the real work (it is what `transformers`' fast tokenizers wrap);
this module adds the few things `transformers` layers on top and that outputs depend on: special
tokens from `tokenizer_config.json`, `model_max_length`, the decode clean-up rule and the chat
template, so that our text equals the pipeline's text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenizers import Encoding, Tokenizer

from service.runtime.errors import InvalidInput

# transformers uses a huge sentinel when a tokenizer declares no limit.
_NO_LIMIT = 10**12


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def clean_up_tokenization(text: str) -> str:
    """The same spacing rule as `PreTrainedTokenizerBase.clean_up_tokenization`."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def require_unicode(text: str, field: str | None = "inputs") -> str:
    """Refuse text that is not valid Unicode: a lone surrogate (JSON can carry "\\ud800") has
    no UTF-8 form, and `tokenizers` raises a TypeError on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        where = f"{field}: " if field else ""
        raise InvalidInput(
            f"{where}text is not valid Unicode: lone surrogate "
            f"U+{ord(text[err.start]):04X} at character {err.start}",
            field=field,
        ) from None
    return text


@dataclass
class TextTokenizer:
    tokenizer: Tokenizer
    config: dict[str, Any] = field(default_factory=dict)
    special_tokens: dict[str, str] = field(default_factory=dict)
    chat_template: str | None = None

    @classmethod
    def load(cls, model_dir: Path) -> TextTokenizer:
        model_dir = Path(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The fast tokenizer's own truncation/padding settings must not leak into encodes.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        config = _read_json(model_dir / "tokenizer_config.json")
        specials: dict[str, str] = {}
        for source in (_read_json(model_dir / "special_tokens_map.json"), config):
            for key in (
                "bos_token",
                "eos_token",
                "unk_token",
                "sep_token",
                "pad_token",
                "cls_token",
                "mask_token",
            ):
                content = _token_content(source.get(key))
                if content is not None:
                    specials[key] = content
        template = config.get("chat_template")
        template_file = model_dir / "chat_template.jinja"
        if template_file.exists():
            template = template_file.read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return cls(
            tokenizer=tokenizer, config=config, special_tokens=specials, chat_template=template
        )

    # --- special tokens -------------------------------------------------------------------------
    def token_id(self, name: str) -> int | None:
        """Id of a special token by role (`"eos_token"`, `"pad_token"`, ...), or None."""
        content = self.special_tokens.get(name)
        return None if content is None else self.tokenizer.token_to_id(content)

    @property
    def pad_id(self) -> int | None:
        return self.token_id("pad_token")

    @property
    def eos_id(self) -> int | None:
        return self.token_id("eos_token")

    @property
    def model_max_length(self) -> int:
        value = self.config.get("model_max_length")
        return int(value) if value is not None and value < _NO_LIMIT else _NO_LIMIT

    # --- encode / decode ------------------------------------------------------------------------
    def encode(
        self, text: str, pair: str | None = None, add_special_tokens: bool = True
    ) -> Encoding:
        require_unicode(text)
        if pair is not None:
            require_unicode(pair)
        return self.tokenizer.encode(text, pair, add_special_tokens=add_special_tokens)

    def encode_batch(
        self, texts: list[str | tuple[str, str]], add_special_tokens: bool = True
    ) -> list[Encoding]:
        """Texts, or (text, text_pair) pairs encoded as one sequence with the model's separator
        (what a cross-encoder or a pair classifier reads)."""
        for index, text in enumerate(texts):
            field = f"inputs[{index}]" if len(texts) > 1 else "inputs"
            for part in text if isinstance(text, tuple) else (text,):
                require_unicode(part, field)
        return self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)

    def decode(
        self,
        ids: list[int],
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = bool(self.config.get("clean_up_tokenization_spaces"))
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    # --- chat -----------------------------------------------------------------------------------
    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """Render messages with the model's own template, in the sandbox `transformers` uses
        (`tools` as transformers passes them: undefined in the template when None)."""
        if not self.chat_template:
            raise ValueError("this model has no chat template")
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(
            x, ensure_ascii=False, indent=indent
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        template = env.from_string(self.chat_template)
        extra = {"tools": tools} if tools is not None else {}
        return template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            **extra,
            **self.special_tokens,
        )

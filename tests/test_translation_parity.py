"""The torch-free translator against the transformers translation pipeline on the same weights.

The contract (docs/api.md): greedy and beam-search tokens identical. Random tiny models rarely
emit their real `</s>`, so the search options that only matter once hypotheses finish
(early_stopping, length_penalty, several eos ids) are checked with frequent tokens declared as
eos, passed identically to the pipeline and to our settings.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch  # noqa: F401  (the reference implementation: an export-side test module)
import transformers

from models.tiny import corpus_sentences
from service.runtime.errors import InvalidInput, ModelLoadError
from service.runtime.tasks.translation import TranslationParameters, Translator

# kind -> (pipeline task, our parameters for the same language pair)
TASKS = {
    "t5": ("translation_en_to_fr", {"src_lang": "en", "tgt_lang": "fr"}),
    "marian": ("translation", {}),
}
# Tokens the random models produce often; declared as eos they end hypotheses early.
FREQUENT = {"t5": (149, 771, 828), "marian": (621, 557, 161)}

_CORPUS = corpus_sentences()
INPUTS = [
    "Hi",
    "Yes.",
    "The cat sat on the mat.",
    "I loved this movie, the acting was superb and the ending made me cry.",
    "Where is the train station?",
    "Ünïcödé façade, café crème & naïve résumé",
    "日本語のテキストと English mixed",
    "emoji 😀🎉 time",
    "ＦＵＬＬ　ＷＩＤＴＨ text",
    "tabs\tand\nnew lines   and   spaces ",
    "Prices rose 12.5% to €1,234 on 2024-03-01.",
    '"Quoted" — dashes… and ‘curly’ quotes',
    "",
    *_CORPUS[5:14],
    max((s for s in _CORPUS[:400] if len(s) < 300), key=len),
]
MAX_NEW_TOKENS = (3, 9, 16)


@pytest.fixture(scope="module")
def translators(tiny_exported) -> dict[str, Translator]:
    return {kind: Translator.load(tiny_exported(kind), threads=1) for kind in TASKS}


@pytest.fixture(scope="module")
def pipelines(tiny_checkpoint):
    from transformers import pipeline

    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            kind: pipeline(task, model=str(tiny_checkpoint(kind)))
            for kind, (task, _) in TASKS.items()
        }


def reference(pipe, text: str, **generate_kwargs) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pipe(text, return_tensors=True, **generate_kwargs)
    return out[0]["translation_token_ids"].tolist()


def pipeline_text(pipe, ids: list[int]) -> str:
    """The pipeline's own postprocess step on `ids`."""
    return pipe.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("num_beams", [1, 2, 4])
@pytest.mark.parametrize("kind", list(TASKS))
def test_tokens_and_text_match_transformers_pipeline(kind, num_beams, translators, pipelines):
    translator, pipe = translators[kind], pipelines[kind]
    pair = TASKS[kind][1]
    for i, text in enumerate(INPUTS):
        max_new = MAX_NEW_TOKENS[i % len(MAX_NEW_TOKENS)]
        params = TranslationParameters(max_new_tokens=max_new, num_beams=num_beams, **pair)
        expected = reference(pipe, text, max_new_tokens=max_new, num_beams=num_beams)
        ours = translator.translate_ids([text], params)[0]
        assert ours == expected, (text, max_new)
        assert translator.translate([text], params) == [pipeline_text(pipe, expected)]


# Search options (beyond num_beams) with frequent tokens as eos, so hypotheses really finish;
# "eos" is how many of them count as eos (more eos ids widen transformers' top-k).
OPTION_SETS = [
    {"num_beams": 1, "min_length": 4},
    {"num_beams": 1, "no_repeat_ngram_size": 2, "eos": 2},
    {"num_beams": 2, "early_stopping": True},
    {"num_beams": 2, "early_stopping": False, "length_penalty": 2.0, "eos": 2},
    {"num_beams": 2, "early_stopping": True, "eos": 3},
    {"num_beams": 4, "early_stopping": "never", "length_penalty": 1.5, "eos": 2},
    {"num_beams": 4, "early_stopping": False, "length_penalty": 0.0},
    {"num_beams": 4, "early_stopping": "never", "length_penalty": -0.5},
    {"num_beams": 4, "early_stopping": True, "length_penalty": -1.0, "min_length": 3},
    {"num_beams": 3, "no_repeat_ngram_size": 3, "eos": 2},
    {"num_beams": 4, "early_stopping": False, "eos": 3},
]


def _overrides(option: dict) -> dict:
    return {k: v for k, v in option.items() if k not in ("num_beams", "eos")}


@pytest.mark.parametrize(
    "option", OPTION_SETS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
@pytest.mark.parametrize("kind", list(TASKS))
def test_search_options_match_transformers_pipeline(kind, option, translators, pipelines):
    translator, pipe = translators[kind], pipelines[kind]
    eos = FREQUENT[kind][: option.get("eos", 1)]
    generate_kwargs = {
        **_overrides(option),
        "num_beams": option["num_beams"],
        "eos_token_id": list(eos),
    }
    ended_by_eos = hit_limit = 0
    for i, text in enumerate(INPUTS[2:]):
        max_new = (6, 12, 20)[i % 3]
        params = TranslationParameters(
            max_new_tokens=max_new, num_beams=option["num_beams"], **TASKS[kind][1]
        )
        settings = translator.generation_settings(params).with_overrides(
            eos_token_ids=eos, **_overrides(option)
        )
        expected = reference(pipe, text, max_new_tokens=max_new, **generate_kwargs)
        assert translator.translate_ids([text], params, settings=settings)[0] == expected, text
        ended_by_eos += expected[-1] in eos
        hit_limit += len(expected) == max_new + 1 and expected[-1] not in eos
    assert ended_by_eos and hit_limit, "the inputs should exercise both ways of stopping"


# The HF translation spec's `generate_parameters`, as the pipeline takes them: applied over its
# resolved config (T5 keeps the pipeline's max_new_tokens=256 over a bare max_length, Marian,
# whose config sets max_length, does not), sampling-only knobs inert without do_sample.
SPEC_GENERATE_PARAMETERS = [
    {"max_length": 6},
    {"max_length": 6, "max_new_tokens": 9},
    {"max_new_tokens": 9, "min_new_tokens": 7},
    {"max_new_tokens": 9, "min_length": 8},
    {"max_new_tokens": 10, "num_beams": 3, "early_stopping": True},
    {
        "max_new_tokens": 5,
        "do_sample": False,
        "temperature": 0.5,
        "top_k": 5,
        "top_p": 0.9,
        "use_cache": True,
    },
]


@pytest.mark.parametrize(
    "generate", SPEC_GENERATE_PARAMETERS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
@pytest.mark.parametrize("kind", list(TASKS))
def test_spec_generate_parameters_match_transformers_pipeline(
    kind, generate, translators, pipelines
):
    translator, pipe = translators[kind], pipelines[kind]
    # T5's pipeline default (256 new tokens) would make the bare max_length case slow to compare
    # on every input: one input is enough to show which limit wins.
    texts = INPUTS[2:5] if "max_new_tokens" in generate else INPUTS[3:4]
    for text in texts:
        params = TranslationParameters(generate_parameters=generate, **TASKS[kind][1])
        expected = reference(pipe, text, **generate)
        assert translator.translate_ids([text], params)[0] == expected, text


def test_spec_clean_up_and_truncation_match_transformers_pipeline(translators, pipelines):
    translator, pipe = translators["marian"], pipelines["marian"]
    text = "I loved this movie , the acting was superb ."
    for clean in (False, True):
        params = TranslationParameters(
            clean_up_tokenization_spaces=clean, generate_parameters={"max_new_tokens": 12}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = pipe(text, clean_up_tokenization_spaces=clean, max_new_tokens=12)
        assert translator.translate([text], params) == [expected[0]["translation_text"]]
    long_text = " ".join(INPUTS[3:8]) * 40
    with pytest.raises(InvalidInput, match="tokens"):
        translator.translate([long_text], TranslationParameters(truncation="do_not_truncate"))
    cut = TranslationParameters(truncation="longest_first", max_new_tokens=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pipe(
            long_text, truncation="longest_first", max_new_tokens=4, return_tensors=True
        )[0]["translation_token_ids"].tolist()
    assert translator.translate_ids([long_text], cut)[0] == expected


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"generate_parameters": {"do_sample": True}}, "generate_parameters.do_sample"),
        ({"generate_parameters": {"num_beam_groups": 2}}, "generate_parameters.num_beam_groups"),
        ({"generate_parameters": {"penalty_alpha": 0.6}}, "generate_parameters.penalty_alpha"),
        ({"generate_parameters": {"seed": 1}}, "generate_parameters.seed"),
        ({"truncation": "only_second"}, "truncation"),
        ({"max_new_tokens": 4, "generate_parameters": {"max_new_tokens": 5}}, ""),
    ],
)
def test_spec_options_we_do_not_run_are_refused_naming_the_field(parameters, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        TranslationParameters.model_validate(parameters)
    assert ".".join(map(str, caught.value.errors()[0]["loc"])) == field


def test_spec_limits_name_the_field(translators):
    translator = translators["t5"]
    limit = translator.max_new_tokens_limit
    for params, field in (
        (
            {"generate_parameters": {"max_new_tokens": limit + 1}},
            "parameters.generate_parameters.max_new_tokens",
        ),
        ({"max_new_tokens": limit + 1}, "parameters.max_new_tokens"),
        (
            {"generate_parameters": {"num_beams": translator.max_beams + 1}},
            "parameters.generate_parameters.num_beams",
        ),
    ):
        with pytest.raises(InvalidInput) as caught:
            translator.generation_settings(TranslationParameters.model_validate(params))
        assert caught.value.field == field


@pytest.mark.parametrize("num_beams", [1, 4])
@pytest.mark.parametrize("kind", list(TASKS))
def test_batch_equals_one_by_one(kind, num_beams, translators):
    translator = translators[kind]
    texts = INPUTS[:10]
    params = TranslationParameters(max_new_tokens=14, num_beams=num_beams, **TASKS[kind][1])
    # Frequent eos: sentences finish at different steps and leave the batch one by one.
    settings = translator.generation_settings(params).with_overrides(
        eos_token_ids=FREQUENT[kind][:1]
    )
    batch = translator.translate_ids(texts, params, settings=settings)
    single = [translator.translate_ids([t], params, settings=settings)[0] for t in texts]
    assert batch == single
    assert len({len(ids) for ids in batch}) > 1
    assert translator.translate(texts, params) == [
        translator.translate([t], params)[0] for t in texts
    ]


def test_defaults_are_the_pipelines(translators, pipelines, tiny_checkpoint):
    """No parameters: T5 gets its task's beams/early_stopping and the pipeline's 256 new tokens,
    Marian its generation_config (4 beams, max_length 64, bad words, forced eos)."""
    t5 = translators["t5"].generation_settings(TranslationParameters(src_lang="en", tgt_lang="fr"))
    assert (t5.num_beams, t5.early_stopping, t5.max_length) == (4, True, 257)
    marian = translators["marian"].generation_settings()
    assert (marian.num_beams, marian.max_length, marian.forced_eos_token_ids) == (4, 64, (0,))
    assert marian.bad_words_ids == ((2,),)

    text = "Good morning!"
    expected = reference(pipelines["marian"], text)
    assert translators["marian"].translate_ids([text])[0] == expected
    assert translators["marian"].translate([text]) == [pipeline_text(pipelines["marian"], expected)]
    t5_params = TranslationParameters(**TASKS["t5"][1])
    expected = reference(pipelines["t5"], text)
    assert translators["t5"].translate_ids([text], t5_params)[0] == expected


def test_language_pair_selects_the_t5_task(translators, tiny_checkpoint):
    from transformers import pipeline

    translator = translators["t5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default_pipe = pipeline("translation", model=str(tiny_checkpoint("t5")))
    # pipeline("translation") takes the first translation_* entry of config.json, and so do we.
    assert (
        default_pipe.task == f"translation_{translator.default_pair.src}_to_"
        f"{translator.default_pair.tgt}"
    )
    text = "The weather is nice today."
    expected = reference(default_pipe, text, max_new_tokens=8, num_beams=2)
    params = TranslationParameters(max_new_tokens=8, num_beams=2)
    assert translator.translate_ids([text], params)[0] == expected
    explicit = TranslationParameters(max_new_tokens=8, num_beams=2, src_lang="en", tgt_lang="de")
    assert translator.translate_ids([text], explicit)[0] == expected
    only_target = TranslationParameters(max_new_tokens=8, num_beams=2, tgt_lang="de")
    assert translator.translate_ids([text], only_target)[0] == expected


def test_truncate_matches_pipeline_truncation(translators, pipelines):
    text = " ".join(INPUTS[3:12]) * 3
    for kind, translator in translators.items():
        params = TranslationParameters(
            max_new_tokens=5, num_beams=2, truncate=True, **TASKS[kind][1]
        )
        expected = reference(pipelines[kind], text, max_new_tokens=5, num_beams=2, truncation=True)
        assert translator.translate_ids([text], params)[0] == expected


def test_too_long_input_names_the_token_limit(translators):
    text = " ".join(INPUTS[3:12]) * 3
    for kind, translator in translators.items():
        with pytest.raises(InvalidInput) as error:
            translator.translate(["short", text], TranslationParameters(**TASKS[kind][1]))
        assert error.value.field == "inputs"
        assert str(translator.max_input_tokens) in error.value.message
        assert translator.max_input_tokens == 128


def test_unsupported_pair_lists_supported_pairs(translators):
    with pytest.raises(InvalidInput) as error:
        translators["t5"].translate(["Hello"], TranslationParameters(src_lang="en", tgt_lang="ja"))
    assert error.value.field == "parameters.tgt_lang"
    assert "en->fr" in error.value.message and "en->de" in error.value.message
    with pytest.raises(InvalidInput) as error:
        translators["t5"].translate(["Hello"], TranslationParameters(src_lang="xx"))
    assert error.value.field == "parameters.src_lang"


def test_marian_pair_checked_only_when_the_model_names_it(translators, tiny_exported, tmp_path):
    params = TranslationParameters(src_lang="de", tgt_lang="ja", max_new_tokens=3, num_beams=1)
    assert translators["marian"].translate(["Hello"], params)  # languages unknown: ignored

    named = tmp_path / "marian-en-fr"
    shutil.copytree(tiny_exported("marian"), named)
    config_path = named / "tokenizer_config.json"
    config = config_path.read_text().replace('"source_lang": null', '"source_lang": "en"')
    config_path.write_text(config.replace('"target_lang": null', '"target_lang": "fr"'))
    translator = Translator.load(named, threads=1)
    ok = TranslationParameters(src_lang="en", tgt_lang="fr", max_new_tokens=3, num_beams=1)
    assert translator.translate(["Hello"], ok)
    with pytest.raises(InvalidInput) as error:
        translator.translate(["Hello"], params)
    assert error.value.field == "parameters.tgt_lang" and "en->fr" in error.value.message


def test_parameter_limits(translators, tiny_exported):
    translator = Translator.load(
        tiny_exported("t5"), threads=1, max_new_tokens_limit=32, max_beams=4
    )
    assert translator.generation_settings().max_length == 33  # the pipeline's 256, capped
    with pytest.raises(InvalidInput) as error:
        translator.translate(["Hi"], TranslationParameters(max_new_tokens=33))
    assert error.value.field == "parameters.max_new_tokens" and "32" in error.value.message
    with pytest.raises(InvalidInput) as error:
        translator.translate(["Hi"], TranslationParameters(num_beams=5))
    assert error.value.field == "parameters.num_beams"
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TranslationParameters(num_beams=0)
    with pytest.raises(ValidationError):
        TranslationParameters(temperature=0.5)
    assert translators["marian"].max_new_tokens_limit == 127  # 128 positions


def test_configured_default_pair(tiny_exported):
    translator = Translator.load(tiny_exported("t5"), threads=1, default_pair=("en", "fr"))
    assert str(translator.default_pair) == "en->fr"
    assert translator.generation_settings().max_length == 257
    with pytest.raises(ModelLoadError):
        Translator.load(tiny_exported("t5"), threads=1, default_pair=("en", "ja"))


def test_the_deployments_preferred_pair_reaches_the_loaded_model(tiny_exported):
    """`models.translation_pair` goes through the task's loader (the one the service uses);
    a pair the model lacks leaves its first."""
    from service.config import Settings
    from service.runtime.registry import TASKS

    settings = Settings()
    first = Translator.load(tiny_exported("t5"), threads=1).default_pair
    for pair, expected in (("en-fr", "en->fr"), ("en-de", "en->de"), ("en-ja", str(first))):
        settings.models.translation_pair = pair
        loaded = TASKS["translation"].load(tiny_exported("t5"), settings)
        assert str(loaded.default_pair) == expected, pair


def test_merged_decoder_gives_the_same_tokens(translators, tiny_exported, tmp_path):
    source = tiny_exported("t5")
    merged_only = tmp_path / "t5-merged"
    merged_only.mkdir()
    for path in source.iterdir():
        if path.name not in ("decoder_model.onnx", "decoder_with_past_model.onnx"):
            (merged_only / path.name).symlink_to(path)
    translator = Translator.load(merged_only, threads=1)
    assert translator.graphs.merged
    for num_beams in (1, 3):
        params = TranslationParameters(max_new_tokens=10, num_beams=num_beams, **TASKS["t5"][1])
        texts = INPUTS[:6]
        assert translator.translate_ids(texts, params) == translators["t5"].translate_ids(
            texts, params
        )


def test_warmup_and_empty_batch(translators):
    for translator in translators.values():
        translator.warmup()
        assert translator.translate([]) == []


def test_serving_module_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; import service.runtime.tasks.translation; "
        "bad = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]; "
        "sys.exit(bool(bad))"
    )
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0

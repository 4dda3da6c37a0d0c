"""Masked-LM substitution and back-translation on tiny random models built locally (the real code path)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.augment_fixtures import bt_routes
from tests.tiny_models import example_texts
from workers.augment.base import Variant

PROTECTED = re.compile(r"https?://\S+|@\w+|#\w+|\d+")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mlm(tiny_mlm_dir):  # type: ignore[no-untyped-def]
    from core.settings import Settings
    from workers.augment.masked_lm import MaskedLMAugmenter
    from workers.augment.models import load_masked_lm

    return MaskedLMAugmenter(load_masked_lm(str(tiny_mlm_dir), Settings(augment_device="cpu")), batch_tokens=2048)


@pytest.fixture(scope="module")
def bt(tiny_marian_dirs):  # type: ignore[no-untyped-def]
    from core.settings import Settings
    from workers.augment.back_translation import BackTranslationAugmenter
    from workers.augment.models import load_seq2seq

    settings = Settings(augment_device="cpu")
    return BackTranslationAugmenter(
        bt_routes(*tiny_marian_dirs, pivots=("de", "fr")),
        lambda name: load_seq2seq(name, settings),
        batch_tokens=4096,
    )


def _count_calls(module):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def hook(_module, args, kwargs, _out):  # type: ignore[no-untyped-def]
        first = args[0] if args else next(iter(kwargs.values()))
        calls.append(int(first.shape[0]))

    return calls, module.register_forward_hook(hook, with_kwargs=True)


def test_mlm_one_forward_per_batch_head_only_at_masks(mlm) -> None:
    from workers.augment.params import MaskedLMParams

    texts = example_texts(80)
    params = MaskedLMParams(min_prob=0.0, aug_p=0.3)
    batches = mlm.prepare(texts, [3] * len(texts), seed=0, language="en", params=params)
    rows = sum(len(b.rows) for b in batches)
    masks = sum(int((b.input_ids == mlm.mask_id).sum()) for b in batches)
    assert len(batches) < rows and masks > rows  # several words masked per row, several rows per batch
    assert all(b.input_ids.numel() <= 2048 or len(b.rows) == 1 for b in batches)  # token budget
    encoder_calls, h1 = _count_calls(mlm.base)
    head_rows, h2 = _count_calls(mlm.head)
    try:
        result = mlm.augment(texts, [3] * len(texts), seed=0, language="en", params=params)
    finally:
        h1.remove()
        h2.remove()
    assert len(encoder_calls) == len(batches)  # one forward per batch, not one per substituted word
    assert sum(head_rows) == masks  # the vocabulary head ran on the masked positions only
    assert sum(len(v) for v in result) > rows * 0.8


def test_mlm_replaces_whole_words_and_keeps_the_rest(mlm) -> None:
    texts = example_texts(60)
    from workers.augment.params import MaskedLMParams

    result = mlm.augment(texts, [2] * len(texts), seed=5, language="en", params=MaskedLMParams(min_prob=0.0))
    vocab_words = {w for w in mlm.words if w}
    n = 0
    for text, variants in zip(texts, result, strict=True):
        for v in variants:
            n += 1
            assert v.method == "mlm" and v.model_name == mlm.model_name and v.params["min_prob"] == 0.0
            for e in v.edits:
                assert text[e["start"] : e["end"]] == e["from"] and e["from"].isalpha()
                assert e["to"].isalpha() and e["to"].lower() != e["from"].lower()
                assert e["to"] in vocab_words or e["to"].lower() in {w.lower() for w in vocab_words}
                assert not e["to"].startswith("##")
            assert PROTECTED.findall(v.text) == PROTECTED.findall(text)
            assert len(v.text.split()) == len(text.split())  # one word for one word, spacing kept
    assert n > 60


def test_mlm_source_texts_holding_special_tokens(mlm) -> None:
    """A post that contains "[MASK]", "<mask>" or "[SEP]" literally is augmented like any other: the model sees
    exactly the masks chosen for it, and the variant keeps the literal text."""
    from workers.augment.params import MaskedLMParams

    texts = [
        "Type [MASK] in the search box and vote for the farm bill today",
        "The <mask> mandate [SEP] is a tax on working families [CLS] again",
        "Nothing special about this school budget vote \ue000 tonight",
    ]
    params = MaskedLMParams(min_prob=0.0, aug_p=0.5)
    batches = mlm.prepare(texts, [2] * len(texts), seed=1, language="en", params=params)
    for batch in batches:
        for i, row in enumerate(batch.rows):
            masks = int((batch.input_ids[i] == mlm.mask_id).sum())
            assert masks == len(row.words), "a literal special token became a mask"
            assert int((batch.input_ids[i] == mlm.tokenizer.sep_token_id).sum()) == 1
    result = mlm.augment(texts, [2] * len(texts), seed=1, language="en", params=params)
    assert all(len(v) == 2 for v in result)
    assert all("[MASK]" in v.text for v in result[0]) and all("[SEP]" in v.text for v in result[1])


def test_mlm_determinism_is_independent_of_batching(mlm, tiny_mlm_dir) -> None:
    from workers.augment.masked_lm import MaskedLMAugmenter
    from workers.augment.params import MaskedLMParams

    texts = example_texts(50)
    params = MaskedLMParams(min_prob=0.0)
    small = MaskedLMAugmenter(mlm.loaded, batch_tokens=256)
    a = mlm.augment(texts, [2] * len(texts), seed=11, language="en", params=params)
    b = small.augment(texts, [2] * len(texts), seed=11, language="en", params=params)
    c = mlm.augment(texts, [2] * len(texts), seed=12, language="en", params=params)

    def as_text(r: list[list[Variant]]) -> list[list[str]]:
        return [[v.text for v in vs] for vs in r]

    assert len(small.prepare(texts, [2] * len(texts), seed=11, language="en", params=params)) > len(
        mlm.prepare(texts, [2] * len(texts), seed=11, language="en", params=params)
    )
    assert as_text(a) == as_text(b)
    assert as_text(a) != as_text(c)


def test_mlm_probability_floor(mlm) -> None:
    from workers.augment.params import MaskedLMParams

    texts = example_texts(30)
    # A random model spreads its probability thinly: with a floor of 0.5 nothing qualifies, so no variant.
    assert all(
        v == [] for v in mlm.augment(texts, [2] * 30, seed=0, language="en", params=MaskedLMParams(min_prob=0.5))
    )


def test_backtranslation_k_variants_over_pivots_with_a_length_cap(bt) -> None:
    from workers.augment.params import BackTranslationParams

    texts = example_texts(12)
    params = BackTranslationParams(max_new_tokens=12, sample_back=True)
    seen: list[tuple[int, int]] = []
    models = [bt.loader(bt.routes["de"][leg]).model for leg in ("forward", "backward")]

    def recording(generate):  # type: ignore[no-untyped-def]
        def wrapper(**kwargs):  # type: ignore[no-untyped-def]
            out = generate(**kwargs)
            seen.append((kwargs["max_new_tokens"], out.shape[1]))
            return out

        return wrapper

    for model in models:
        model.generate = recording(model.generate)
    try:
        result = bt.augment(texts, [3] * len(texts), seed=4, language="en", params=params)
    finally:
        for model in models:
            del model.generate
    # max_new_tokens is always passed and binds: a random model never emits EOS, so it runs to the cap.
    assert seen and all(cap <= 12 and length == cap + 1 for cap, length in seen)  # +1: the decoder start token
    for variants in result:
        assert [v.variant_index for v in variants] == [0, 1, 2]
        assert [v.params["pivot"] for v in variants] == ["de", "fr", "de"]  # round-robin over the pivots
        for v in variants:
            assert v.method == "backtranslation" and "→" in v.model_name and v.details["pivot_text"]
    again = bt.augment(texts, [3] * len(texts), seed=4, language="en", params=params)
    other = bt.augment(texts, [3] * len(texts), seed=5, language="en", params=params)

    def as_text(r: list[list[Variant]]) -> list[list[str]]:
        return [[v.text for v in vs] for vs in r]

    assert as_text(result) == as_text(again) and as_text(result) != as_text(other)


def test_backtranslation_beams_and_length_buckets(bt) -> None:
    from workers.augment.params import BackTranslationParams

    params = BackTranslationParams(decoding="beam", num_beams=3, max_new_tokens=8, pivots=["de"])
    texts = ["short one", "a much longer text " * 12, "another short one", "medium sized text for testing"]
    encoded = bt.loader(bt.routes["de"]["forward"]).tokenizer(texts)["input_ids"]
    batches = bt._batches(
        sorted(range(4), key=lambda i: len(encoded[i])), encoded, 3, BackTranslationParams(max_new_tokens=64)
    )
    assert [i for b in batches for i in b] == sorted(range(4), key=lambda i: len(encoded[i]))
    result = bt.augment(texts, [2, 2, 2, 2], seed=0, language="en", params=params)
    assert all(len(v) == 2 for v in result) and all(x.params["decoding"] == "beam" for v in result for x in v)


def test_missing_model_names_the_model_and_the_setting(tmp_path: Path) -> None:
    from core.settings import Settings
    from workers.augment.models import ModelUnavailable, load_masked_lm, load_seq2seq

    with pytest.raises(ModelUnavailable) as err:
        load_masked_lm(str(tmp_path / "no-such-model"), Settings(augment_device="cpu"))
    assert "no-such-model" in str(err.value) and "AUGLOOP_MLM_MODEL" in str(err.value)
    with pytest.raises(ModelUnavailable) as err:
        load_seq2seq("Helsinki-NLP/opus-mt-xx-yy-missing", Settings(augment_device="cpu"))
    assert "opus-mt-xx-yy-missing" in str(err.value) and "AUGLOOP_BT_ROUTES" in str(err.value)


def test_a_damaged_masked_lm_fails_at_once_naming_the_model_and_the_setting(tiny_mlm_dir, tmp_path: Path) -> None:
    """A truncated model.safetensors raised safetensors' own error, which a job retried three times, naming
    neither the model nor the setting."""
    import shutil

    from core.settings import Settings
    from workers.augment.models import ModelUnavailable, load_masked_lm

    damaged = tmp_path / "damaged-mlm"
    shutil.copytree(tiny_mlm_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(ModelUnavailable) as err:
        load_masked_lm(str(damaged), Settings(augment_device="cpu"))
    assert "damaged-mlm" in str(err.value) and "AUGLOOP_MLM_MODEL" in str(err.value), str(err.value)


def test_a_similarity_encoder_it_cannot_use_is_unavailable_naming_why(tiny_mlm_dir, tmp_path: Path) -> None:
    """The folder the trainer refuses (no tokenizer files: a TypeError retried as a crash) and a T5 (failing at
    its first batch) are ModelUnavailable at load, naming the setting: the job fails once, saying why."""
    import shutil

    from transformers import AutoTokenizer, T5Config, T5Model

    from core.settings import Settings
    from workers.augment.models import ModelUnavailable, get_sentence_encoder

    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_mlm_dir) / name, no_tokenizer / name)
    # a copy cut short (a download or a disk that filled): safetensors' own error escaped, and the optional
    # encoder failed every WordNet job three times (an attacker's find)
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_mlm_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_mlm_dir))
    t5 = tmp_path / "t5"
    T5Model(
        T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).save_pretrained(t5)
    tokenizer.save_pretrained(t5)
    for folder, said in (
        (no_tokenizer, "cannot load encoder model"),
        (t5, "encoder-decoder model (t5)"),
        (truncated, "cannot load encoder model"),
    ):
        with pytest.raises(ModelUnavailable) as err:
            get_sentence_encoder(Settings(_env_file=None, similarity_model=str(folder), augment_device="cpu"))
        assert said in str(err.value) and "AUGLOOP_SIMILARITY_MODEL" in str(err.value), str(err.value)

"""Method and filter parameters: pydantic models with defaults and bounds, validated from a job's JSON before
any model loads (the API's request schema, the API and the worker share them).

Strict: a JSON string "5" for a count or 1 for a flag is a client's mistake, not a value to coerce; NaN and
±Infinity are refused (a NaN threshold compares false with everything and would switch its filter off).
Kept free of torch/transformers imports so that the API validates a request in microseconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ParamError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class MaskedLMParams(_Params):
    aug_p: float = Field(default=0.15, gt=0, le=1)  # share of the candidate words masked in one variant
    max_words: int = Field(default=6, ge=1, le=64)  # at most this many words replaced per variant
    # sample the replacement among the k most probable whole words ...
    top_k: int = Field(default=20, ge=1, le=1000)
    # ... whose probability is at least this (random test models need 0)
    min_prob: float = Field(default=0.01, ge=0, le=1)
    temperature: float = Field(default=1.0, ge=0.05, le=10)
    max_length: int = Field(default=256, ge=8, le=4096)  # tokens per row; masks beyond it are left unreplaced
    protect_capitalized: bool = True


class BackTranslationParams(_Params):
    # None: every pivot configured for the dataset's language
    pivots: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    decoding: Literal["sample", "beam"] = "sample"  # how the first leg diversifies the k variants
    sample_back: bool = False  # sample the way back too (more diverse, less faithful); default greedy/beam
    temperature: float = Field(default=0.9, ge=0.05, le=10)
    top_p: float = Field(default=0.95, gt=0, le=1)
    num_beams: int = Field(default=4, ge=1, le=32)
    # hard cap per leg: a model that never emits EOS stops here
    max_new_tokens: int = Field(default=128, ge=1, le=1024)
    # per-batch cap: length_factor × longest source + 8, at most max_new_tokens
    length_factor: float = Field(default=2.0, ge=0.5, le=10)
    max_source_tokens: int = Field(default=256, ge=8, le=1024)


class WordNetParams(_Params):
    aug_p: float = Field(default=0.3, gt=0, le=1)  # share of the replaceable words replaced in one variant
    max_words: int = Field(default=6, ge=1, le=64)
    # synonyms from the word's most frequent senses only: keeps the meaning
    max_senses: int = Field(default=3, ge=1, le=50)
    use_pos: bool = True  # POS-tag first (needs the tagger from `make nltk-data`)
    protect_capitalized: bool = True
    # Frequency floor (wordfreq's Zipf scale: 3 ≈ once per million words): a synonym rarer than `min_zipf`,
    # or more than `max_zipf_drop` below the word it replaces, is archaic or technical ("workfellows",
    # "juridical", "forenoon" for "morning") and never offered.
    min_zipf: float = Field(default=3.0, ge=0, le=8)
    max_zipf_drop: float = Field(default=2.0, ge=0, le=8)
    # WordNet's multi-word lemmas are mostly glosses ("adult females" for "women", "work forces", "turning
    # tail") and no word frequency can tell them from idioms: one word by default ("co-workers" is one); never
    # one holding the replaced word itself ("morning time", "right fields").
    max_phrase_words: int = Field(default=1, ge=1, le=8)
    # Re-tag the variant and undo each replacement the tagger reads as another part of speech or inflection
    # than the word it replaced (needs use_pos and the tagger).
    check_pos: bool = True
    # Senses in context: draw `context_alternatives` choices of synonyms for the same words and keep the one
    # whose sentence reads most like the source (sentence-encoder cosine). "auto": when the encoder runs on a
    # GPU; on a CPU it costs up to that many encoder passes per variant, so it runs there only when asked.
    context: Literal["auto", "encoder", "off"] = "auto"
    context_alternatives: int = Field(default=4, ge=2, le=16)


class ParaphraseParams(_Params):
    temperature: float = Field(default=0.8, ge=0.05, le=5)  # sampling: k rewrites of one text differ
    top_p: float = Field(default=0.95, gt=0, le=1)
    # hard cap per rewrite: a model that never stops (a random test model, a repetition loop) stops here
    max_new_tokens: int = Field(default=192, ge=1, le=4096)
    # per-batch cap: length_factor × the longest source's tokens + 16, at most max_new_tokens
    length_factor: float = Field(default=2.0, ge=0.5, le=10)
    max_source_tokens: int = Field(default=512, ge=8, le=8192)  # a longer source is cut in the prompt
    include_guidelines: bool = True  # the dataset's annotation guidelines go into the prompt
    max_guideline_chars: int = Field(default=2000, ge=0, le=50_000)


class FilterParams(_Params):
    min_length_ratio: float = Field(default=0.5, ge=0, le=1)  # variant chars / source chars
    max_length_ratio: float = Field(default=2.0, ge=1, le=100)
    # Jaccard of character n-gram sets with any val/test text
    leakage_threshold: float = Field(default=0.8, gt=0, le=1)
    # Share of the smaller text's n-grams found in one val/test text. 0.7 catches a one-word variant of a
    # retweet of a 60-character test tweet (0.73); on the example dataset 7 of 4,000 train posts reach it.
    leakage_containment: float = Field(default=0.7, gt=0, le=1)
    leakage_ngram: int = Field(default=5, ge=2, le=12)
    # to the source (same n-gram Jaccard); 0 keeps everything
    min_similarity: float = Field(default=0.0, ge=0, le=1)
    # Sentence-encoder cosine with the source (workers/augment/encoder.py); 0 keeps everything. Above 0 the
    # job needs the encoder: it fails at once, naming AUGLOOP_SIMILARITY_MODEL, where it cannot load.
    min_semantic_similarity: float = Field(default=0.0, ge=0, le=1)


class MethodParams(_Params):
    """A request's `params`: each method's parameters, under the method's name (omitted: its defaults)."""

    backtranslation: BackTranslationParams | None = None
    mlm: MaskedLMParams | None = None
    wordnet: WordNetParams | None = None
    paraphrase: ParaphraseParams | None = None


METHOD_PARAMS: dict[str, type[_Params]] = {
    "mlm": MaskedLMParams,
    "backtranslation": BackTranslationParams,
    "wordnet": WordNetParams,
    "paraphrase": ParaphraseParams,
}

P = TypeVar("P", bound=BaseModel)


def parse(cls: type[P], raw: dict[str, Any] | None) -> P:
    """Build `cls` from JSON: unknown keys, wrong types and values out of bounds are errors naming the key."""
    try:
        return cls.model_validate(raw or {})
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        why = first["msg"]
        if first["type"] == "extra_forbidden":
            why = f"unknown parameter; known: {sorted(cls.model_fields)}"
        raise ParamError(f"{field}: {why}" if field else why, field) from None

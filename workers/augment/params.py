"""Method and filter parameters: dataclasses with defaults, validated from a job's JSON before any model
loads (the API and the worker share them).

Kept free of torch/transformers imports so that the API validates a request in microseconds.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar


class ParamError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class MaskedLMParams:
    aug_p: float = 0.15  # share of the candidate words masked in one variant
    max_words: int = 6  # at most this many words replaced per variant
    top_k: int = 20  # sample the replacement among the k most probable whole words ...
    min_prob: float = 0.01  # ... whose probability is at least this (random test models need 0)
    temperature: float = 1.0
    max_length: int = 256  # tokens per row; masks beyond it are left unreplaced
    protect_capitalized: bool = True

    def check(self) -> None:
        _range("aug_p", self.aug_p, 0.0, 1.0, low_open=True)
        _range("max_words", self.max_words, 1, 64)
        _range("top_k", self.top_k, 1, 1000)
        _range("min_prob", self.min_prob, 0.0, 1.0)
        _range("temperature", self.temperature, 0.05, 10.0)
        _range("max_length", self.max_length, 8, 4096)


@dataclass(frozen=True)
class BackTranslationParams:
    pivots: list[str] | None = None  # None: every pivot configured for the dataset's language
    decoding: Literal["sample", "beam"] = "sample"  # how the first leg diversifies the k variants
    sample_back: bool = False  # sample the way back too (more diverse, less faithful); default greedy/beam
    temperature: float = 0.9
    top_p: float = 0.95
    num_beams: int = 4
    max_new_tokens: int = 128  # hard cap per leg: a model that never emits EOS stops here
    length_factor: float = 2.0  # per-batch cap: length_factor × longest source + 8, at most max_new_tokens
    max_source_tokens: int = 256

    def check(self) -> None:
        _range("temperature", self.temperature, 0.05, 10.0)
        _range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _range("num_beams", self.num_beams, 1, 32)
        _range("max_new_tokens", self.max_new_tokens, 1, 1024)
        _range("length_factor", self.length_factor, 0.5, 10.0)
        _range("max_source_tokens", self.max_source_tokens, 8, 1024)
        if self.pivots is not None and not self.pivots:
            raise ParamError("pivots must name at least one language (or be omitted)", "pivots")


@dataclass(frozen=True)
class WordNetParams:
    aug_p: float = 0.3  # share of the replaceable words replaced in one variant
    max_words: int = 6
    max_senses: int = 3  # synonyms from the word's most frequent senses only: keeps the meaning
    use_pos: bool = True  # POS-tag first (needs the tagger from `make nltk-data`)
    protect_capitalized: bool = True

    def check(self) -> None:
        _range("aug_p", self.aug_p, 0.0, 1.0, low_open=True)
        _range("max_words", self.max_words, 1, 64)
        _range("max_senses", self.max_senses, 1, 50)


@dataclass(frozen=True)
class FilterParams:
    min_length_ratio: float = 0.5  # variant chars / source chars
    max_length_ratio: float = 2.0
    leakage_threshold: float = 0.8  # Jaccard of character n-gram sets with any val/test text
    # Share of the smaller text's n-grams found in one val/test text. 0.7 catches a one-word variant of a
    # retweet of a 60-character test tweet (0.73); on the example dataset 7 of 4,000 train posts reach it.
    leakage_containment: float = 0.7
    leakage_ngram: int = 5
    min_similarity: float = 0.0  # to the source (same n-gram Jaccard); 0 keeps everything

    def check(self) -> None:
        _range("min_length_ratio", self.min_length_ratio, 0.0, 1.0)
        _range("max_length_ratio", self.max_length_ratio, 1.0, 100.0)
        _range("leakage_threshold", self.leakage_threshold, 0.0, 1.0, low_open=True)
        _range("leakage_containment", self.leakage_containment, 0.0, 1.0, low_open=True)
        _range("leakage_ngram", self.leakage_ngram, 2, 12)
        _range("min_similarity", self.min_similarity, 0.0, 1.0)


METHOD_PARAMS: dict[str, type] = {
    "mlm": MaskedLMParams,
    "backtranslation": BackTranslationParams,
    "wordnet": WordNetParams,
}

P = TypeVar("P")


def _range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ParamError(f"{name} must be in {bracket}{low}, {high}]; got {value}", name)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(name, value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        if value not in args:
            raise ParamError(f"{name} must be one of {list(args)}; got {value!r}", name)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ParamError(f"{name} must be a list", name)
        return [_coerce(name, v, args[0]) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamError(f"{name} must be true or false", name)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{name} must be an integer", name)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"{name} must be a number", name)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamError(f"{name} must be a string", name)
        return value
    raise ParamError(f"{name}: unsupported parameter type", name)  # pragma: no cover - a dataclass bug


def parse(cls: type[P], raw: dict[str, Any] | None) -> P:
    """Build `cls` from JSON: unknown keys and wrong types are errors naming the key, not silent defaults."""
    raw = dict(raw or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ParamError(f"unknown parameter(s) {unknown}; known: {sorted(known)}", unknown[0])
    values = {key: _coerce(key, value, hints[key]) for key, value in raw.items()}
    obj = cls(**values)
    obj.check()  # type: ignore[attr-defined]
    return obj


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)

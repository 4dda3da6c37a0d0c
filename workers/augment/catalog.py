"""Which augmentation methods a dataset's language allows, and validation of an augmentation request.

WordNet is English only. The masked LM covers the languages of its model (AUGLOOP_MLM_LANGUAGES, or the table
below for known models). Back-translation covers the source languages of AUGLOOP_BT_ROUTES. Paraphrasing covers
AUGLOOP_PARAPHRASE_LANGUAGES (any language by default: instruction-tuned LMs are multilingual, and the
prompt asks for the text's own language).
"""

from __future__ import annotations

from typing import Any

from core.errors import ValidationFailed
from core.settings import Settings
from workers.augment.params import METHOD_PARAMS, BackTranslationParams, FilterParams, ParamError, parse

METHODS = ("backtranslation", "mlm", "wordnet", "paraphrase")

# The 104 Wikipedia languages mBERT was trained on (ISO 639-1 where one exists).
_MBERT_TEXT = """
af an ar ast az azb ba bar be bg bn bpy br bs ca ce ceb cs cv cy da de el en es et eu fa fi fr fy ga
gl gu he hi hr ht hu hy id io is it ja jv ka kk kn ko ky la lb lmo lt lv mg min mk ml mn mr ms my
nds ne new nl nn no oc pa pl pms pnb pt ro ru scn sco sh sk sl sq sr su sv sw ta te tg th tl tr tt
uk ur uz vi vo war yo zh
"""
_MBERT = frozenset(_MBERT_TEXT.split())
_ENGLISH = frozenset({"en"})
KNOWN_MLM_LANGUAGES: dict[str, frozenset[str]] = {
    "bert-base-multilingual-cased": _MBERT,
    "google-bert/bert-base-multilingual-cased": _MBERT,
    "bert-base-multilingual-uncased": _MBERT,
    "distilbert-base-multilingual-cased": _MBERT,
    "bert-base-cased": _ENGLISH,
    "bert-base-uncased": _ENGLISH,
    "distilbert-base-uncased": _ENGLISH,
    "roberta-base": _ENGLISH,
    "distilroberta-base": _ENGLISH,
}
ROUTE_KEYS = {"source", "pivot", "forward", "backward"}
# Written without spaces between words: a word-level method finds no words in them (a run of letters is a clause)
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu", "dz"})


def base_language(code: str) -> str:
    """`en-US`, `en_GB`, `EN` → `en`."""
    return code.strip().replace("_", "-").split("-")[0].lower()


def mlm_languages(settings: Settings) -> frozenset[str] | None:
    """The MLM's languages; None means any (a model we know nothing about and no declared list)."""
    if settings.mlm_languages:
        declared = {base_language(x) for x in settings.mlm_languages}
        return None if "*" in declared else frozenset(declared)
    return KNOWN_MLM_LANGUAGES.get(settings.mlm_model)


def bt_routes(settings: Settings, language: str) -> list[dict[str, str]]:
    routes = []
    for i, route in enumerate(settings.bt_routes):
        missing = ROUTE_KEYS - set(route)
        if missing:
            raise ValidationFailed(
                f"AUGLOOP_BT_ROUTES[{i}] lacks {sorted(missing)}; each route needs source, pivot, forward and backward",
                field="methods",
            )
        if base_language(route["source"]) == language:
            routes.append(route)
    return routes


def unsupported_reason(method: str, language: str, settings: Settings) -> str | None:
    """Why `method` cannot augment texts in `language`, or None when it can."""
    if method == "wordnet":
        return (
            None if language == "en" else f"WordNet synonyms are English only; the dataset's language is {language!r}"
        )
    if method == "mlm":
        if language in UNSPACED_LANGUAGES:
            return (
                f"the masked LM replaces single words, and language {language!r} is written without spaces between "
                "words, so augloop cannot find them; use back-translation or paraphrasing"
            )
        covered = mlm_languages(settings)
        if covered is None or language in covered:
            return None
        return (
            f"the masked LM {settings.mlm_model!r} does not cover language {language!r} "
            "(set AUGLOOP_MLM_MODEL to a model that does, and AUGLOOP_MLM_LANGUAGES to its languages)"
        )
    if method == "backtranslation":
        if bt_routes(settings, language):
            return None
        sources = sorted({base_language(r.get("source", "?")) for r in settings.bt_routes})
        return (
            f"no back-translation route for language {language!r} (configured sources: {sources}); "
            "add one to AUGLOOP_BT_ROUTES"
        )
    if method == "paraphrase":
        declared = {base_language(x) for x in settings.paraphrase_languages}
        if "*" in declared or language in declared:
            return None
        return (
            f"the paraphrase model covers {sorted(declared)}, not {language!r} "
            "(set AUGLOOP_PARAPHRASE_LANGUAGES, and AUGLOOP_PARAPHRASE_MODEL to a model that covers it)"
        )
    return f"unknown method {method!r}; choose from {list(METHODS)}"


def valid_methods(language: str, settings: Settings) -> list[str]:
    return [m for m in METHODS if unsupported_reason(m, base_language(language), settings) is None]


def validate_request(
    methods: list[str],
    language: str,
    method_params: dict[str, Any] | None,
    filters: dict[str, Any] | None,
    settings: Settings,
) -> dict[str, Any]:
    """Check methods against the language and every parameter; return them normalised (defaults filled in)."""
    language = base_language(language)
    if not methods:
        raise ValidationFailed("name at least one method", field="methods")
    chosen: list[str] = []
    for method in methods:
        reason = unsupported_reason(method, language, settings)
        if reason:
            raise ValidationFailed(reason, field="methods")
        if method not in chosen:
            chosen.append(method)
    method_params = dict(method_params or {})
    stray = sorted(set(method_params) - set(chosen))
    if stray:
        raise ValidationFailed(f"parameters given for method(s) {stray} that the request does not run", field="params")
    params: dict[str, Any] = {}
    for method in chosen:
        raw = method_params.get(method) or {}
        if not isinstance(raw, dict):
            raise ValidationFailed(f"params.{method} must be an object", field=f"params.{method}")
        try:
            parsed = parse(METHOD_PARAMS[method], raw)
        except ParamError as err:
            raise _failed(f"params.{method}", err) from None
        if isinstance(parsed, BackTranslationParams) and parsed.pivots:
            available = {base_language(r["pivot"]) for r in bt_routes(settings, language)}
            missing = sorted({base_language(p) for p in parsed.pivots} - available)
            if missing:
                raise ValidationFailed(
                    f"no back-translation route {language}→{missing[0]}→{language}; "
                    f"configured pivots: {sorted(available)} (AUGLOOP_BT_ROUTES)",
                    field="params.backtranslation.pivots",
                )
        params[method] = parsed.model_dump()
    try:
        filter_params = parse(FilterParams, filters)
    except ParamError as err:
        raise _failed("filters", err) from None
    return {"methods": chosen, "params": params, "filters": filter_params.model_dump(), "language": language}


def _failed(prefix: str, err: ParamError) -> ValidationFailed:
    """`params.mlm.aug_p: Input should be a finite number`, field `params.mlm.aug_p`."""
    if not err.field:
        return ValidationFailed(f"{prefix}: {err}", field=prefix)
    return ValidationFailed(f"{prefix}.{err}", field=f"{prefix}.{err.field}")

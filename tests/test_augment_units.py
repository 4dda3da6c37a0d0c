"""Augmentation building blocks without models: word spans, parameters, language rules, filters, planner."""

from __future__ import annotations

import csv
import math
from collections import Counter

import pytest

from tests.tiny_models import EXAMPLE_CSV

TWEET = "RT @nowthisnews: Rep. Trey Radel (R- #FL) slams #Obamacare. #politics https://t.co/zvywMG8yIH"


# -- word spans ---------------------------------------------------------------------------------------------


def test_candidates_skip_mentions_hashtags_urls_numbers_names_and_stop_words() -> None:
    from workers.augment.textspans import candidates

    assert [w.text for w in candidates(TWEET, "en")] == ["slams"]
    text = "Proud to support the U.S. Senate bill. Great news for 2014 families! Visit www.house.gov and he said."
    words = [w.text for w in candidates(text, "en")]
    assert words == ["Proud", "support", "bill", "Great", "news", "families", "Visit", "said"]
    # "Senate" follows the abbreviation "U.S.", so it is inside a sentence: a name, protected.
    assert "Senate" not in words and "he" not in words and "2014" not in words


def test_links_inside_a_token_and_emoji_names_are_protected() -> None:
    """A markdown link or a bracketed address puts the scheme mid-token: WordNet rewrote `evil.example` to
    `evil.instance` there, and `:smile:` to `:grinning:`."""
    from workers.augment.textspans import candidates

    text = "Read [the bill](http://congress.example/bill) and (www.house.gov/vote) :smile: proudly"
    # the token `bill](http://…)` as a whole stays, its word too
    assert [w.text for w in candidates(text, "en")] == ["Read", "proudly"]


def test_spans_point_into_the_original_text() -> None:
    from workers.augment.textspans import words

    text = "Tax  relief\tfor   working families — now!"
    for w in words(text):
        assert text[w.start : w.end] == w.text


def test_languages_without_a_stop_list_protect_short_words() -> None:
    from workers.augment.textspans import candidates

    assert [w.text for w in candidates("Wir haben die neue Reform heute beschlossen", "de")] == [
        "haben",
        "neue",
        "heute",
        "beschlossen",
    ]


# -- parameters and language rules --------------------------------------------------------------------------


def test_params_reject_unknown_keys_wrong_types_and_ranges() -> None:
    from workers.augment.params import MaskedLMParams, ParamError, parse

    assert parse(MaskedLMParams, {"top_k": 5}).top_k == 5
    for bad, field in (
        ({"topk": 5}, "topk"),
        ({"top_k": "5"}, "top_k"),
        ({"aug_p": 0}, "aug_p"),
        ({"protect_capitalized": 1}, "protect_capitalized"),
    ):
        with pytest.raises(ParamError) as err:
            parse(MaskedLMParams, bad)
        assert err.value.field == field


def test_params_refuse_nan_and_infinity_naming_the_key(settings) -> None:
    """NaN compares false with every bound: a NaN leakage threshold used to pass and switch the leak filter off,
    a NaN aug_p to pass and crash the augmenter."""
    from core.errors import ValidationFailed
    from workers.augment.catalog import validate_request
    from workers.augment.params import (
        BackTranslationParams,
        FilterParams,
        MaskedLMParams,
        ParamError,
        WordNetParams,
        parse,
    )

    for cls, key in (
        (MaskedLMParams, "aug_p"),
        (MaskedLMParams, "temperature"),
        (WordNetParams, "aug_p"),
        (BackTranslationParams, "top_p"),
        (FilterParams, "leakage_threshold"),
        (FilterParams, "min_similarity"),
    ):
        for value in (math.nan, math.inf, -math.inf, "NaN"):
            with pytest.raises(ParamError) as err:
                parse(cls, {key: value})
            assert err.value.field == key, (cls, key, value)
    for method_params, filters, field in (
        (None, {"leakage_threshold": math.nan}, "filters.leakage_threshold"),
        ({"mlm": {"aug_p": math.nan}}, None, "params.mlm.aug_p"),
        ({"wordnet": {"aug_p": math.inf}}, None, "params.wordnet.aug_p"),
    ):
        with pytest.raises(ValidationFailed) as failed:
            validate_request(list(method_params or ["wordnet"]), "en", method_params, filters, settings)
        assert failed.value.field == field and field in failed.value.message


def test_language_decides_the_valid_methods(settings) -> None:
    from core.errors import ValidationFailed
    from workers.augment.catalog import valid_methods, validate_request

    assert valid_methods("en-US", settings) == ["backtranslation", "mlm", "wordnet", "paraphrase"]
    # mBERT covers German; no de→x→de route; WordNet is English; the paraphraser covers any language by default
    assert valid_methods("de", settings) == ["mlm", "paraphrase"]
    assert valid_methods("zu", settings) == ["paraphrase"]  # Zulu: not among mBERT's languages
    # mBERT covers Chinese, Japanese and Thai, but their words have no spaces between them: a word-level masked
    # LM masked a whole clause as one "word"
    for unspaced in ("zh", "zh-TW", "ja", "th"):
        assert valid_methods(unspaced, settings) == ["paraphrase"], unspaced
    with pytest.raises(ValidationFailed, match="written without spaces between words") as err:
        validate_request(["mlm"], "zh", None, None, settings)
    assert err.value.field == "methods"
    narrowed = settings.model_copy(update={"paraphrase_languages": ["en", "fr"]})
    assert valid_methods("zu", narrowed) == []
    with pytest.raises(ValidationFailed, match="AUGLOOP_PARAPHRASE_LANGUAGES"):
        validate_request(["paraphrase"], "de", None, None, narrowed)
    with pytest.raises(ValidationFailed, match="English only") as err:
        validate_request(["wordnet"], "de", None, None, settings)
    assert err.value.field == "methods"
    with pytest.raises(ValidationFailed, match="no back-translation route for language 'fr'"):
        validate_request(["backtranslation"], "fr", None, None, settings)
    with pytest.raises(ValidationFailed, match="pivots"):
        validate_request(["backtranslation"], "en", {"backtranslation": {"pivots": ["ja"]}}, None, settings)
    with pytest.raises(ValidationFailed) as err:
        validate_request(["mlm"], "en", {"mlm": {"top_k": 0}}, None, settings)
    assert err.value.field == "params.mlm.top_k"
    checked = validate_request(["mlm", "mlm"], "EN", {}, {"leakage_threshold": 0.9}, settings)
    assert checked["methods"] == ["mlm"] and checked["filters"]["leakage_threshold"] == 0.9


# -- filters ------------------------------------------------------------------------------------------------


def _shingles(text: str, n: int = 5) -> set[str]:
    from core.textnorm import normalize_text

    t = normalize_text(text)
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def test_every_filter_drops_what_it_should_and_counts_it() -> None:
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    source = "We passed the farm bill today to help rural families across the state."
    test_text = "Today we passed the farm bill to help rural families across our whole state!"
    existing = "We passed the farm bill today to support rural families across the state."
    from core.textnorm import content_hash

    f = CandidateFilter(
        {content_hash(existing)},
        [test_text, "unrelated words about a parade"],
        FilterParams(leakage_threshold=0.5, min_similarity=0.2),
    )
    candidates = [
        "   ",  # empty
        "we passed the FARM bill today to help rural families across the state.",  # identical, normalised
        "We  passed the farm bill today to support rural families across the state.",  # in the dataset
        "We passed the bill.",  # length ratio 0.27
        "Today we passed the farm bill to help rural families across our entire state!",  # near the test text
        "Quilts, kites and lemonade: the county fair opens at noon with music for all.",  # unlike its source
        "We approved the farm bill today to aid rural households across the state.",  # kept
        "We approved the farm bill today to aid rural households across the state.",  # a job duplicate
        # a byte-level model's output: one NUL failed the whole job's insert on Postgres
        "We passed the farm\x00 bill today to aid rural families across the state.",
        "We passed the farm bill today\x1b[2J to aid rural families across the state.",
        "We passed the \u202efarm bill today to aid rural families across the state.",
        "We passed the farm bill today \ud800 to aid rural families across the state.",  # cannot even be hashed
    ]
    verdicts = f.check([(source, c) for c in candidates])
    assert [v.reason for v in verdicts] == [
        "empty",
        "identical_to_source",
        "duplicate",
        "length_ratio",
        "leakage",
        "low_similarity",
        None,
        "duplicate",
        "control_characters",
        "control_characters",
        "control_characters",
        "control_characters",
    ]
    assert f.counts() == {
        "empty": 1,
        "control_characters": 4,
        "identical_to_source": 1,
        "duplicate": 2,
        "length_ratio": 1,
        "leakage": 1,
        "low_similarity": 1,
        "low_semantic_similarity": 0,  # no encoder given: meaning is not judged
    }
    assert f.kept == 1
    kept = verdicts[6]
    expected = len(_shingles(source) & _shingles(candidates[6])) / len(_shingles(source) | _shingles(candidates[6]))
    assert kept.similarity == pytest.approx(expected, abs=1e-3)
    assert verdicts[4].scores["leakage_ref"] == 0 and verdicts[4].scores["leakage"] >= 0.5


def test_dataset_duplicates_are_asked_for_batch_by_batch() -> None:
    """The filter holds no hash of the dataset: each check asks which of its batch's hashes the dataset holds,
    once, and remembers only what the job itself kept."""
    from core.textnorm import content_hash
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    stored = content_hash("The county fair opens at noon with music for everyone.")
    asked: list[list[str]] = []

    def known(batch):  # type: ignore[no-untyped-def]
        asked.append(list(batch))
        return {h for h in batch if h == stored}

    guard = CandidateFilter(known, ["an unrelated test text about the harbour"], FilterParams())
    source = "The county fair opens at noon with music for all."
    first = [
        "The county fair opens at noon with music for everyone.",
        "The county fair starts at noon with music for all.",
        "The county fair starts at noon with music for all.",
    ]
    second = [
        "The county fair opens at twelve with music for all.",
        "The county fair starts at noon with music for all.",
    ]
    assert [v.reason for v in guard.check([(source, c) for c in first])] == ["duplicate", None, "duplicate"]
    assert [v.reason for v in guard.check([(source, c) for c in second])] == [None, "duplicate"]
    assert asked == [sorted({content_hash(c) for c in first}), sorted({content_hash(c) for c in second})]


def test_leakage_index_matches_brute_force_jaccard() -> None:
    from core.ngrams import MIN_SHARED, NgramIndex

    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    refs = [r["text"] for r in rows if r["split"] == "test"][:300]
    queries = [r["text"] for r in rows if r["split"] == "train"][:60] + refs[:5]
    index = NgramIndex(5).fit(refs)
    best, where = index.max_jaccard(*index.vectors(queries))
    ref_sets = [_shingles(r) for r in refs]
    for q, b, _w in zip(queries, best, where, strict=True):
        qs = _shingles(q)
        exact, shared = max((len(qs & r) / len(qs | r), len(qs & r)) if qs | r else (0.0, 0) for r in ref_sets)
        if shared >= MIN_SHARED:  # fewer shared n-grams are incidental overlaps, not reported
            assert b == pytest.approx(exact, abs=0.02)  # hashed n-grams: a rare collision may add one
        else:
            assert b <= exact + 0.02
    assert list(best[-5:]) == [1.0] * 5 and list(where[-5:]) == [0, 1, 2, 3, 4]


# -- planner ------------------------------------------------------------------------------------------------


def _example_plan(**kwargs):  # type: ignore[no-untyped-def]
    from workers.augment.planner import PlanTarget, SourceSample, make_plan

    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [(t, sorted({r[t] for r in rows})) for t in ("bias", "message", "audience")]
    sources = [SourceSample(i, {t: r[t] for t, _ in tasks}) for i, r in enumerate(rows) if r["split"] == "train"]
    defaults = {"target": PlanTarget(0.4, 10.0), "methods": ["wordnet", "mlm"], "per_source_cap": 5}
    return tasks, sources, make_plan(tasks, sources, {}, **{**defaults, **kwargs})


def test_a_plan_of_millions_of_variants_is_made_in_seconds_with_exact_accounting() -> None:
    """One variant per pass over every combination: a lead's dry run asking for 10,000,000 per class at 1,000
    per source (4,000,000 variants) held an API thread for 221 s (an attacker's find). The allocation now grants
    up to a thousandth of the least need at once; its accounting stays exact."""
    import time

    from workers.augment.planner import PlanTarget

    started = time.monotonic()
    _, sources, plan = _example_plan(target=PlanTarget(0.4, 1000.0, 10_000_000), per_source_cap=1000)
    assert time.monotonic() - started < 30  # 221 s before; about 2 s on 2 cores
    assert plan["total_variants"] == 3_996_000  # as the one-at-a-time allocation planned it
    for combo in plan["combinations"]:
        assert combo["variants"] <= 1000 * combo["sources"]
    assert len(sources) == 4000
    assert all(c["expected"] == c["current"] + c["planned"] for c in plan["classes"])


def test_plan_arithmetic_on_the_example_dataset() -> None:
    tasks, _, plan = _example_plan()
    classes = {(c["task"], c["label"]): c for c in plan["classes"]}
    # Targets: 40% of the task's largest class, capped at 10× the class's originals.
    assert classes["message", "policy"]["original"] == 1129
    for label in ("attack", "constituency", "media", "mobilization", "other"):
        c = classes["message", label]
        assert c["target"] == min(math.ceil(0.4 * 1129), 10 * c["original"]) == 452
        assert c["deficit"] == 452 - c["original"] and c["shortfall"] == 0 and c["expected"] >= 452
    assert classes["bias", "partisan"]["target"] == math.ceil(0.4 * 2951) == 1181
    assert classes["bias", "partisan"]["expected"] >= 1181
    assert classes["audience", "constituency"]["target"] == math.ceil(0.4 * 3177)
    for label in ("policy", "personal", "support", "information"):
        assert classes["message", label]["planned"] == 0  # never grows a message class that needs nothing
    # Joint accounting: every task's planned counts are exactly the combinations' variants, label by label.
    from_combos: Counter[tuple[str, str]] = Counter()
    for combo in plan["combinations"]:
        for task, label in combo["labels"].items():
            from_combos[task, label] += combo["variants"]
        assert combo["variants"] <= 5 * combo["sources"]  # per-source cap
        assert combo["per_source"] <= 5
    assert all(classes[k]["planned"] == from_combos.get(k, 0) for k in classes)
    assert all(c["expected"] == c["current"] + c["planned"] for c in plan["classes"])
    # Every message variant serves a rare class, so the total equals the sum of message deficits...
    assert plan["total_variants"] == sum(
        classes["message", y]["deficit"] for y in ("attack", "constituency", "media", "mobilization", "other")
    )
    # ... and the largest classes grow less than the minorities they come with: each task's imbalance shrinks.
    for task, labels in tasks:
        before = max(classes[task, y]["original"] for y in labels) / min(classes[task, y]["original"] for y in labels)
        after = max(classes[task, y]["expected"] for y in labels) / min(classes[task, y]["expected"] for y in labels)
        assert after < before
    # Methods share the work evenly; jobs hold exactly the planned variants, sources spread within the cap.
    assert plan["methods"]["wordnet"] + plan["methods"]["mlm"] == plan["total_variants"]
    assert abs(plan["methods"]["wordnet"] - plan["methods"]["mlm"]) <= 1
    per_source: Counter[int] = Counter()
    for job in plan["jobs"]:
        assert job["variants"] == sum(i["n"] for i in job["items"]) <= 2000
        for item in job["items"]:
            per_source[item["sample_id"]] += item["n"]
    assert sum(per_source.values()) == plan["total_variants"] and max(per_source.values()) <= 5


def test_plan_respects_caps_and_reports_shortfall() -> None:
    _, _, plan = _example_plan(per_source_cap=1, methods=["wordnet"])
    classes = {(c["task"], c["label"]): c for c in plan["classes"]}
    other = classes["message", "other"]
    assert other["planned"] == other["original"] == 99  # one variant per source at most
    assert other["shortfall"] == other["target"] - 2 * 99
    from workers.augment.planner import PlanTarget

    _, _, capped = _example_plan(target=PlanTarget(0.4, 2.0))
    for c in capped["classes"]:
        assert c["target"] <= max(c["current"], 2 * c["original"])


def test_a_plan_brings_every_rare_class_up_to_a_count() -> None:
    """ "Bring every rare class up to N": the fraction of the largest class was the only target, so N had to be
    worked out per task by hand. The count is a floor beside the fraction, within the multiplier's cap."""
    from workers.augment.planner import PlanTarget

    _, _, plan = _example_plan(target=PlanTarget(0.01, 10.0, min_count=300))
    for c in plan["classes"]:
        assert c["target"] >= min(300, 10 * c["original"]), c
    rare = next(c for c in plan["classes"] if c["task"] == "message" and c["label"] == "other")
    assert rare["original"] == 99 and rare["target"] == 300
    _, _, default = _example_plan()
    assert next(c for c in default["classes"] if c["task"] == "message" and c["label"] == "other")["target"] != 300


def test_plan_counts_existing_variants_and_can_balance_a_subset_of_tasks() -> None:
    from workers.augment.planner import PlanTarget, make_plan

    tasks, sources, _ = _example_plan()
    existing = {"message": Counter({"other": 353})}
    plan = make_plan(tasks, sources, existing, target=PlanTarget(), methods=["wordnet"], per_source_cap=5)
    other = next(c for c in plan["classes"] if c["label"] == "other")
    assert other["variants"] == 353 and other["deficit"] == 0 and other["planned"] == 0
    only_bias = make_plan(
        tasks, sources, {}, target=PlanTarget(), methods=["wordnet"], per_source_cap=5, balance_tasks=["bias"]
    )
    assert only_bias["total_variants"] == 132  # partisan's deficit, nothing else
    assert all(c["deficit"] == 0 for c in only_bias["classes"] if c["task"] != "bias")


def test_a_plan_counts_the_variants_each_source_has_against_its_cap_and_asks_the_least_used_first() -> None:
    """A plan run again asked the same few sources as the first one (the cap counted one plan's variants): an
    engineer's second plan for a rare class asked 21 variants of 5 texts that had 5 each, whose WordNet candidates
    were spent (kept 0 of 21), and left 11 of the class's 20 texts unused. A source's variants count against
    `per_source_cap` whatever plan made them, and each variant goes to a source with the fewest."""
    from workers.augment.planner import PlanTarget, SourceSample, make_plan

    tasks = [("topic", ["health", "other"])]
    rare = [SourceSample(i, {"topic": "health"}, variants=5 if i < 4 else 2 if i < 8 else 0) for i in range(20)]
    common = [SourceSample(100 + i, {"topic": "other"}) for i in range(100)]
    earlier = Counter({"health": 4 * 5 + 4 * 2})
    plan = make_plan(
        tasks, rare + common, {"topic": earlier}, target=PlanTarget(0.6), methods=["wordnet"], per_source_cap=5
    )
    asked = {item["sample_id"]: item["n"] for job in plan["jobs"] for item in job["items"]}
    health = next(c for c in plan["classes"] if c["label"] == "health")
    assert health["target"] == 60 and health["planned"] == 60 - 20 - 28 == sum(asked.values())
    assert asked == dict.fromkeys(range(8, 20), 1)  # the twelve unused texts first, none of those at the cap
    assert plan["sources_at_cap"] == 4
    # Needing more, the plan fills up the least used: every text ends within one variant of the others.
    levelled = make_plan(
        tasks, rare + common, {"topic": earlier}, target=PlanTarget(0.8), methods=["wordnet"], per_source_cap=5
    )
    asked = {item["sample_id"]: item["n"] for job in levelled["jobs"] for item in job["items"]}
    held = {s.sample_id: s.variants + asked.get(s.sample_id, 0) for s in rare if s.variants < 5}
    assert sum(asked.values()) == 80 - 48 and max(held.values()) - min(held.values()) <= 1, held
    # The class's room is its sources' spare: 4 × 0 + 4 × 3 + 12 × 5 = 72; asked for more, the plan stops there.
    more = make_plan(
        tasks,
        rare + common,
        {"topic": earlier},
        target=PlanTarget(min_count=150),
        methods=["wordnet"],
        per_source_cap=5,
    )
    health = next(c for c in more["classes"] if c["label"] == "health")
    assert health["planned"] == 72 and health["shortfall"] == 150 - 20 - 28 - 72


def test_a_text_in_decomposed_unicode_keeps_its_words_whole() -> None:
    """Text typed in NFD writes "ü" as "u" + U+0308, which is no letter: "Bürgermeisterin" read as the words
    "Bu" and "rgermeisterin" (both replaceable), and a protected "café" did not cover "cafe" + U+0301."""
    from workers.augment.textspans import ProtectedTerms, words

    text = "The Bu\u0308rgermeisterin met the nai\u0308ve cafe\u0301 owner's son."
    assert [w.text for w in words(text)] == [
        "The",
        "Bu\u0308rgermeisterin",
        "met",
        "the",
        "nai\u0308ve",
        "cafe\u0301",
        "owner's",
        "son",
    ]
    assert ProtectedTerms(["café"]).covers("Cafe\u0301") and ProtectedTerms(["cafe\u0301"]).covers("café")


def test_a_word_broken_by_a_zero_width_or_soft_hyphen_character_is_left_whole() -> None:
    """A zero-width joiner, non-joiner or space, or a soft hyphen, inside a word split it in two replaceable
    words: the masked LM turned "vo\u200dte" into "org\u200dte" (an attacker's find); Persian writes a
    non-joiner inside one word. Neither side is replaced now."""
    from workers.augment.textspans import words

    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want": a non-joiner inside one word
    text = f"Please vo\u200dte for the good\u200b people and co\u00adoperation, {persian} today"
    assert [w.text for w in words(text)] == ["Please", "for", "the", "people", "and", "today"]


def test_a_protected_term_typed_in_decomposed_unicode_or_with_a_dotted_capital_is_a_term() -> None:
    """Café typed as "cafe" + U+0301, or "İstanbul" (its case fold carries a combining dot), was "not a
    term"; both are, read in NFC (so the two spellings of café are one term)."""
    from core.errors import ValidationFailed
    from services.protected_terms import normalise_term

    assert normalise_term("Cafe\u0301", "add") == normalise_term("café", "add") == "café"
    assert normalise_term("İstanbul", "add") == "İstanbul".casefold()
    for bad in ("\u0301x", "no#tag", "9lives"):
        with pytest.raises(ValidationFailed):
            normalise_term(bad, "add")


def test_words_and_terms_hold_every_scripts_combining_marks_and_seeds_read_one_spelling() -> None:
    """Hindi's vowel signs and viramas, Arabic's vowel marks are combining marks: "हिन्दी" read as five one-letter
    words (each replaceable) and was "not a term"; a corpus with "Bürgermeisterin" typed both ways seeded it
    twice (each below the document floor)."""
    from services.protected_terms import class_terms, normalise_term
    from workers.augment.textspans import words

    assert [w.text for w in words("हिन्दी भाषा और مُحَمَّد")] == ["हिन्दी", "भाषा", "और", "مُحَمَّد"]
    assert normalise_term("हिन्दी", "add") == "हिन्दी"
    texts = [f"Die Bürgermeisterin sprach {i}" if i % 2 else f"Die Bu\u0308rgermeisterin sprach {i}" for i in range(6)]
    texts += [f"Ein anderer Text über Schulen {i}" for i in range(6)]
    labels = [{"topic": "city"}] * 6 + [{"topic": "school"}] * 6
    seeded = class_terms(texts, labels, [{"name": "topic", "labels": ["city", "school"]}], "de", min_docs=4, max_p=1.0)
    assert [t.term for t in seeded if t.label == "city" and "rgermeisterin" in t.term] == ["bürgermeisterin"]


def test_a_control_character_its_source_holds_is_no_reason_to_drop_a_variant() -> None:
    """Imported texts may hold control characters (real data does): a WordNet variant keeps them, and is kept."""
    from core.textnorm import generated_text_problem

    source = "Vote\x07 for the farm bill tomorrow"
    assert generated_text_problem(source, "Ballot\x07 for the farm bill tomorrow") is None
    assert (
        generated_text_problem(source, "Ballot\x07 for the farm\x01 bill tomorrow")
        == "holds U+0001, which its source does not"
    )
    assert generated_text_problem(source, "Vote\x00 for it") == "holds a NUL character"


def test_a_written_text_keeps_the_invisible_characters_scripts_need_and_no_others() -> None:
    """An edit could hold C1 controls, DEL and tag characters, invisible on the card that approves it; the
    joiners of emoji and of Persian or Indic words, a region's flag and the direction marks are written text."""
    from core.textnorm import generated_text_problem, written_text_problem

    needed = (
        "family 👨\u200d👩\u200d👧 day",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian "I want": ZWNJ inside a word
        "Wales 🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f today",  # a region's flag
        "שלום\u200f world",  # RLM
    )
    for text in needed:
        assert written_text_problem(text) is None, text
    assert written_text_problem("a\x9bb") == "holds a control character (U+009B)"
    assert written_text_problem("a\x7fb") == "holds a control character (U+007F)"
    assert written_text_problem("x\U000e0041y") == "holds an invisible format character (U+E0041)"
    assert written_text_problem("\U000e0067\U000e007f no flag") == "holds an invisible format character (U+E0067)"
    assert written_text_problem("a\ufeffb") == "holds an invisible format character (U+FEFF)"
    # an edit may keep what the text it rewrites held (a scraped text's mojibake), not add more
    scraped = "It\u00e2\u0080\u0099s a great day for farmers"
    assert written_text_problem("It\u00e2\u0080\u0099s a great day for Iowa farmers", before=scraped) is None
    assert written_text_problem("It\u00e2\u0080\u0099s a great\x85 day", before=scraped) == (
        "holds a control character (U+0085)"
    )
    # as many as it held, no more: one bidi override in a text was spread over the edit
    assert written_text_problem("\u202e" * 5 + "Dear friend", before="Dear \u202eevil\u202c friend") == (
        "holds a bidirectional override or isolate (U+202E)"
    )
    assert written_text_problem("x\x80y\x80z", before="a\x80b") == "holds a control character (U+0080)"
    # a model's output may not bring them in either (its source may hold them: imported data is taken as it is)
    assert generated_text_problem("Vote today", "Vote\x85 today") == "holds U+0085, which its source does not"
    assert generated_text_problem("Vote\x85 today", "Ballot\x85 today") is None


def test_a_run_of_a_script_written_without_spaces_is_no_word_to_replace() -> None:
    """In a text of a dataset declared English (or any spaced language), a run of Chinese, Japanese or Thai is a
    clause: the masked LM replaced "这是一个很好的决定" ("this is a good decision") with one word."""
    from workers.augment.textspans import candidates

    text = "We voted for the new law today, 这是一个很好的决定 and ในวันนี้ เราลงคะแนน, すばらしい"
    assert [w.text for w in candidates(text, "en")] == ["voted", "new", "law"]
    assert [w.text for w in candidates("Wir haben heute gewählt", "de")] == ["haben", "heute", "gewählt"]


def test_a_combinations_most_per_source_is_what_its_busiest_source_is_asked() -> None:
    """The plan's combinations (`augment plan`'s "≤/source" column) said ceil(variants / sources): with 9 of a
    class's 10 texts at the cap, a plan asked 5 variants of the tenth and said "≤/source 1"."""
    from workers.augment.planner import PlanTarget, SourceSample, make_plan

    tasks = [("topic", ["health", "other"])]
    rare = [SourceSample(i, {"topic": "health"}, variants=5 if i else 0) for i in range(10)]
    common = [SourceSample(100 + i, {"topic": "other"}) for i in range(100)]
    plan = make_plan(
        tasks,
        rare + common,
        {"topic": Counter({"health": 45})},
        target=PlanTarget(0.6),
        methods=["wordnet"],
        per_source_cap=5,
    )
    asked = [item["n"] for job in plan["jobs"] for item in job["items"]]
    assert asked == [5] and plan["sources_at_cap"] == 9
    assert plan["combinations"] == [{"labels": {"topic": "health"}, "sources": 10, "variants": 5, "per_source": 5}]


def test_every_reason_a_job_drops_a_candidate_has_advice() -> None:
    """A job whose candidates mostly came out empty (or held control characters) had advice naming its minor
    reason only ("kept 2 of 20: 3 they repeat variants already stored"), or none: DROP_ADVICE lacked two of the
    filters' reasons."""
    from services.variant_generation import DROP_ADVICE, drop_advice
    from workers.augment.filters import FILTER_NAMES

    assert set(DROP_ADVICE) == {*FILTER_NAMES, "no_candidate", "protected_term"}
    advice = drop_advice(20, 2, {"empty": 15, "duplicate": 3})
    assert advice is not None and advice.startswith("kept 2 of 20: 15 they came out empty"), advice
    advice = drop_advice(20, 2, {"control_characters": 18})
    assert advice is not None and advice.startswith("kept 2 of 20: 18 they hold control characters"), advice

"""WordNet synonyms: offline data install, the POS tagger, protected tokens, determinism, a missing corpus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import example_texts
from workers.augment.base import Variant

TWEET = "RT @nowthisnews: Rep. Trey Radel (R- #FL) slams #Obamacare. #politics https://t.co/zvywMG8yIH"
PROTECTED = re.compile(r"https?://\S+|@\w+|#\w+|\d+")


@pytest.fixture(scope="module")
def wordnet_augmenter(augment_nltk_dir):  # type: ignore[no-untyped-def]
    from workers.augment.wordnet import WordNetAugmenter

    return WordNetAugmenter(augment_nltk_dir)


def test_install_copies_wordnet_with_lexnames_and_converts_the_tagger(augment_nltk_dir, tmp_path) -> None:
    from workers.augment.wordnet_data import LEXNAMES, install, missing_wordnet_files, tagger_installed

    assert missing_wordnet_files(augment_nltk_dir) == [] and tagger_installed(augment_nltk_dir)
    lexnames = (augment_nltk_dir / "corpora" / "wordnet" / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[3] == "03\tnoun.Tops\t1" and lexnames[44] == "44\tadj.ppl\t3"
    assert not any(p.is_symlink() for p in (augment_nltk_dir / "corpora" / "wordnet").iterdir())
    assert LEXNAMES.read_text() == "\n".join(lexnames) + "\n"
    assert install(augment_nltk_dir)["wordnet_files_copied"] == 0  # idempotent
    # The command line: `check` fails on an empty directory and passes after `install`.
    cmd = [sys.executable, "-m", "workers.augment.wordnet_data"]
    target = tmp_path / "nltk"
    assert subprocess.run([*cmd, "check", "--dest", str(target)], capture_output=True, check=False).returncode == 1
    done = subprocess.run(
        [*cmd, "install", "--dest", str(target), "--no-tagger"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert subprocess.run([*cmd, "check", "--dest", str(target)], capture_output=True, check=False).returncode == 0
    missing_source = subprocess.run(
        [*cmd, "install", "--dest", str(tmp_path / "x"), "--source", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing_source.returncode == 2 and "wordnet-base" in missing_source.stderr


def test_fast_tagger_gives_nltks_tags(augment_nltk_dir, wordnet_augmenter) -> None:
    import json

    from nltk.tag.perceptron import PerceptronTagger

    from workers.augment.wordnet import _TAG_TOKEN
    from workers.augment.wordnet_data import TAGGER_DIR, TAGGER_FILES

    reference = PerceptronTagger(load=False)
    folder = augment_nltk_dir / TAGGER_DIR
    reference.decode_json_params(json.loads((folder / f).read_text()) for f in TAGGER_FILES)
    for text in example_texts(400):
        tokens = [m.group() for m in _TAG_TOKEN.finditer(text)]
        expected = [tag for _, tag in reference.tag(tokens)]
        assert wordnet_augmenter.tagger.tag(tokens) == expected
        if len(tokens) > 4:  # stopping early leaves the earlier tags unchanged
            assert wordnet_augmenter.tagger.tag(tokens, upto=3) == expected[:4]
        for start in (1, 2, len(tokens) // 2):  # starting inside, from the tags before: the same tags
            if 0 < start < len(tokens):
                history = (expected[start - 2] if start >= 2 else "-START-", expected[start - 1])
                assert wordnet_augmenter.tagger.tag(tokens, start=start, history=history) == expected[start:]
    assert reference.tag(["The", "quick", "brown", "fox", "jumps"])[1][1] == "JJ"  # the converted model is a real one


def test_variants_change_only_plain_words_and_keep_everything_else(wordnet_augmenter) -> None:
    texts = [TWEET, *example_texts(300)]
    results = wordnet_augmenter.augment(texts, [2] * len(texts), seed=7, language="en")
    produced = 0
    for text, variants in zip(texts, results, strict=True):
        for v in variants:
            produced += 1
            assert v.method == "wordnet" and v.model_name == "wordnet-3.0" and v.seed == 7
            assert v.params["pos_tagger"] == "perceptron" and v.edits
            # Outside the edited spans the text is the source byte for byte: spacing, URLs, mentions, tags.
            rebuilt, last = [], 0
            for e in sorted(v.edits, key=lambda e: e["start"]):
                rebuilt.append(text[last : e["start"]])
                rebuilt.append(e["to"])
                last = e["end"]
                assert e["from"] == text[e["start"] : e["end"]] and e["from"].isalpha()
                assert e["from"].lower() not in {"he", "she", "they", "we", "i", "you", "it", "the", "a"}
            rebuilt.append(text[last:])
            assert "".join(rebuilt) == v.text
            assert PROTECTED.findall(v.text) == PROTECTED.findall(text)
    assert produced > 300
    # The tweet's only plain word is "slams" (the tagger says past tense, its form says third person): its
    # synonyms take the third person ("bangs"), which the tagger then reads as a plural noun, so the check undoes
    # them. Whatever is left changes that word alone.
    assert all([e["from"] for e in v.edits] == ["slams"] for v in results[0])


def test_pos_and_inflection(wordnet_augmenter) -> None:
    from workers.augment.wordnet import form_tag, inflect

    # lemminflect rebuilds number, tense, person and comparatives, irregular ones too; the head word inflects.
    assert inflect("small business", "NNS") == "small businesses" and inflect("get up", "VBZ") == "gets up"
    assert inflect("policy", "NNS") == "policies" and inflect("get up", "VBD") == "got up"
    assert inflect("choose", "VBD") == "chose" and inflect("take", "VBN") == "taken"
    assert inflect("large", "JJR") == "larger" and inflect("good", "JJS") == "best"
    assert inflect("well known", "JJR") is None  # a phrase's comparative is not guessed
    # The tag a word's form actually has: the tagger's when it fits, else the one that does.
    assert form_tag("slams", "slam", "v", "VBD") == "VBZ" and form_tag("voted", "vote", "v", "VBD") == "VBD"
    nouns = dict(wordnet_augmenter.synonyms("families", "NNS", 3))
    assert "households" in nouns and all(f.endswith("s") for f in nouns)
    assert dict(wordnet_augmenter.synonyms("bigger", "JJR", 3)).get("larger", 0) > 0.5
    past = dict(wordnet_augmenter.synonyms("helped", "VBN", 3))
    assert {"aided", "assisted"} <= set(past) and all(f.endswith("ed") for f in past)
    assert all(not any(c.isupper() for c in f) for f, _ in wordnet_augmenter.synonyms("capital", "NN", 3))
    # nlpaug's traps: "He" → "Helium", "Boston" → "Capital of Massachusetts". Pronouns are stop words and
    # names are capitalised inside a sentence, so neither is ever a candidate.
    text = "He said that Boston will vote on the new transit plan tomorrow morning."
    variants = wordnet_augmenter.augment([text], [10], seed=3, language="en")[0]
    assert variants and all(v.text.startswith("He ") and " Boston will " in v.text for v in variants)


def test_a_replacement_the_tagger_reads_as_another_form_is_undone(wordnet_augmenter) -> None:
    """The tagger re-reads each variant: a replacement tagged otherwise than the word it replaced ("talk" →
    "talking", "thoroughly" → "good") is undone; without the check such variants reach review."""
    from workers.augment.params import WordNetParams
    from workers.augment.wordnet import _TAG_TOKEN, same_form

    def changed_tags(text, variant):  # type: ignore[no-untyped-def]
        def tagged(t):  # type: ignore[no-untyped-def]
            tokens = list(_TAG_TOKEN.finditer(t))
            return {
                m.start(): tag
                for m, tag in zip(tokens, wordnet_augmenter.tagger.tag([m.group() for m in tokens]), strict=True)
            }

        src, var, shift, out = tagged(text), tagged(variant.text), 0, 0
        for e in sorted(variant.edits, key=lambda e: e["start"]):
            at = e["start"] + shift
            shift += len(e["to"]) - (e["end"] - e["start"])
            if " " not in e["to"] and "-" not in e["to"] and not same_form(src[e["start"]], var.get(at, "?")):
                out += 1
        return out

    texts = example_texts(400)[200:400]
    unchecked = wordnet_augmenter.augment(
        texts, [2] * len(texts), seed=3, language="en", params=WordNetParams(check_pos=False)
    )
    checked = wordnet_augmenter.augment(texts, [2] * len(texts), seed=3, language="en")
    before = sum(changed_tags(t, v) for t, vs in zip(texts, unchecked, strict=True) for v in vs)
    after = sum(changed_tags(t, v) for t, vs in zip(texts, checked, strict=True) for v in vs)
    assert before > 20 and after <= before // 10
    assert sum(len(vs) for vs in checked) > 0.8 * sum(len(vs) for vs in unchecked)  # undone edits, few lost variants


def test_rare_archaic_and_gloss_synonyms_are_never_offered(wordnet_augmenter) -> None:
    """The review page's examples: "colleagues" → "workfellows", "judicial" → "juridical", "Observations" →
    "Watchings", "women" → "adult females", "morning" → "morning time"."""
    from workers.augment.params import WordNetParams
    from workers.augment.wordnet import zipf

    colleagues = dict(wordnet_augmenter.synonyms("colleagues", "NNS", 3))
    assert "co-workers" in colleagues and "workfellows" not in colleagues
    assert "juridical" not in dict(wordnet_augmenter.synonyms("judicial", "JJ", 3))
    assert "watchings" not in dict(wordnet_augmenter.synonyms("observations", "NNS", 10))
    assert "adult females" not in dict(wordnet_augmenter.synonyms("women", "NNS", 3))
    assert not any("morning" in f for f, _ in wordnet_augmenter.synonyms("morning", "NN", 5))
    # The floor follows the parameters: with none, the rare forms come back.
    lenient = WordNetParams(min_zipf=0, max_zipf_drop=8, max_phrase_words=3)
    assert "workfellows" in dict(wordnet_augmenter.synonyms("colleagues", "NNS", lenient))
    assert "adult females" in dict(wordnet_augmenter.synonyms("women", "NNS", lenient))
    assert zipf("workfellows") < 3 <= zipf("colleagues")
    # Capitalisation follows the replaced word, at the start of a sentence too.
    text = "Observations from colleagues: FAMILIES need help."
    for v in wordnet_augmenter.augment([text], [6], seed=1, language="en")[0]:
        for e in v.edits:
            assert e["to"][0].isupper() == e["from"][0].isupper()
            assert e["to"].isupper() == e["from"].isupper()


def test_protected_terms_are_never_replaced_in_any_inflection(wordnet_augmenter) -> None:
    from workers.augment.base import SourceHints
    from workers.augment.textspans import ProtectedTerms

    text = "Women support abortion rights and voted against abortions being banned in their families."
    hints = SourceHints(protected=ProtectedTerms(["abortion", "vote", "family"]))
    free = wordnet_augmenter.augment([text], [30], seed=2, language="en")[0]
    changed_free = {e["from"] for v in free for e in v.edits}
    assert changed_free & {"voted", "families"}  # without protection these words do change
    guarded = wordnet_augmenter.augment([text], [30], seed=2, language="en", hints=hints)[0]
    changed = {e["from"] for v in guarded for e in v.edits}
    assert guarded and not changed & {"abortion", "abortions", "voted", "families"}


def test_same_seed_same_variants_other_seed_others(wordnet_augmenter) -> None:
    texts = example_texts(120)
    a = wordnet_augmenter.augment(texts, [3] * len(texts), seed=1, language="en")
    b = wordnet_augmenter.augment(texts[::-1], [3] * len(texts), seed=1, language="en")[::-1]
    c = wordnet_augmenter.augment(texts, [3] * len(texts), seed=2, language="en")

    def as_text(r: list[list[Variant]]) -> list[list[str]]:
        return [[v.text for v in vs] for vs in r]

    assert as_text(a) == as_text(b)  # independent of batch order
    assert as_text(a) != as_text(c)


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    from workers.augment.models import ModelUnavailable
    from workers.augment.wordnet import WordNetAugmenter

    with pytest.raises(ModelUnavailable) as err:
        WordNetAugmenter(tmp_path)
    message = str(err.value)
    assert "WordNet corpus not found" in message and "make nltk-data" in message
    assert "wordnet-base" in message and "AUGLOOP_NLTK_DATA" in message
    # The augment job fails permanently on it: tests/test_augment_api.py
    # test_missing_wordnet_corpus_fails_the_job_with_install_hint.


# -- variants that add nothing or change the facts (the review of the example plan's 1,223 WordNet variants) ----


def _edits(augmenter, text: str, count: int = 30, seed: int = 0) -> list[dict]:  # type: ignore[no-untyped-def]
    variants = augmenter.augment([text], [count], seed=seed, language="en")[0]
    assert variants
    return [e for v in variants for e in v.edits]


def test_parts_of_hyphenated_compounds_are_never_replaced(wordnet_augmenter) -> None:
    """ "co-sponsor" → "cobalt-sponsor", "in-person" → "in-someone", "full-time" → "total-time", "law-abiding" →
    "law-suffering": a part of a compound is no word of its own."""
    from workers.augment.textspans import candidates, words

    text = "Proud co-sponsor of the full-time law-abiding in-person hearing bill"
    assert [w.text for w in candidates(text, "en")] == ["Proud", "hearing", "bill"]
    assert {e["from"] for e in _edits(wordnet_augmenter, text)} <= {"Proud", "hearing", "bill"}
    # The parts are still words (the seeded protected terms count them), marked as parts.
    assert [(w.text, w.compound) for w in words("co-sponsor bill")] == [
        ("co", True),
        ("sponsor", True),
        ("bill", False),
    ]


def test_numbers_ordinals_and_words_of_time_are_never_replaced(wordnet_augmenter) -> None:
    """ "millions" → "trillions", "billions" → "millions", "last day" → "terminal day", "next week" → "adjacent
    week", "ever" → "always": the fact stated changes."""
    from workers.augment.textspans import candidates

    kept = {"millions", "billions", "thousands", "last", "next", "first", "two", "half", "ever", "never", "still"}
    texts = [
        "Millions of families lost coverage, billions in taxes and thousands of jobs gone.",
        "The last day to register is next week, the first of two deadlines; half still wait.",
        "Nobody should ever have to choose between food and medicine, and we will never stop.",
    ]
    for text in texts:
        assert not {w.text.lower() for w in candidates(text, "en")} & kept
        assert not {e["from"].lower() for e in _edits(wordnet_augmenter, text)} & kept


def test_short_words_broken_words_and_abbreviations_are_never_replaced_or_offered(wordnet_augmenter) -> None:
    """ "cc" → "mil", "ag" → "silver", "vs" → "volts", "pol\ufffdtico" → "politico\ufffdtico", "hour" → "hr",
    "equivalent" → "eq"."""
    from workers.augment.textspans import candidates

    text = "Send the cc to the ag panel vs the co chair this yr and write the bill"
    assert all(len(e["from"]) >= 3 for e in _edits(wordnet_augmenter, text, count=40))
    assert "pol" not in {w.text for w in candidates("Un pol\ufffdtico speaks today about the reform", "en")}
    for word, tag, short in (("equivalent", "NN", "eq"), ("hour", "NN", "hr"), ("minute", "NN", "min")):
        assert short not in dict(wordnet_augmenter.synonyms(word, tag, 3))


def test_same_stem_and_spelling_variants_are_never_offered(wordnet_augmenter) -> None:
    """ "defense" → "defence", "organizations" → "organisations", "photo" → "photograph", "vote" → "voting":
    edits that add nothing (12% of the variants held one)."""
    from tests.tiny_models import example_texts
    from workers.augment.wordnet import near_form

    for word, tag, variant in (
        ("defense", "NN", "defence"),
        ("organizations", "NNS", "organisations"),
        ("photo", "NN", "photograph"),
        ("photos", "NNS", "photographs"),
        ("vote", "NN", "voting"),
        ("lunch", "NN", "luncheon"),
        ("phone", "NN", "telephone"),
    ):
        offered = dict(wordnet_augmenter.synonyms(word, tag, 3))
        assert variant not in offered and near_form(word, variant)
    assert "picture" in dict(wordnet_augmenter.synonyms("photo", "NN", 3))  # a real synonym stays
    assert not near_form("photo", "picture") and not near_form("support", "endorse")
    texts = example_texts(300)
    for variants in wordnet_augmenter.augment(texts, [2] * len(texts), seed=5, language="en"):
        for v in variants:
            assert not any(near_form(e["from"].lower(), e["to"].lower()) for e in v.edits), v.edits


def test_mentions_hashtags_and_domains_are_protected_wherever_they_start() -> None:
    """ ".@energy" → ".@zip", "today!#jobs" → "today!#tasks", "goo.gl/vagtuf" → "slime.gl/vagtuf"."""
    from workers.augment.textspans import candidates

    text = "Thanks to .@energy for the briefing today!#jobs - watch goo.gl/vagtuf youtu.be/watch fb.me/events now"
    assert [w.text for w in candidates(text, "en")] == ["briefing", "watch"]


def test_a_synonym_never_repeats_a_word_of_the_text(wordnet_augmenter) -> None:
    """ "support and defend" → "support and support", "implementing or enforcing" → "enforcing or enforcing",
    and two words replaced by one synonym: "applying or applying"."""
    texts = [
        "We will support and defend the Constitution of the United States.",
        "Thanks to the officers implementing or enforcing the new rules.",
    ]
    for text in texts:
        for seed in range(3):
            for v in wordnet_augmenter.augment([text], [20], seed=seed, language="en")[0]:
                tokens = re.findall(r"[a-z]+", v.text.lower())
                for e in v.edits:
                    assert tokens.count(e["to"].lower()) == 1, v.text


EXPRESSIONS = [
    ("Hearing from neighborhood small business owners about how to improve health care in our district.", 2),
    ("Good morning! Looking forward to the debate in the House of Representatives about the budget.", 2),
    ("Check out our new website to learn about the farm bill and the minimum wage hearing.", 1),
]


def test_multi_word_expressions_are_never_broken(wordnet_augmenter) -> None:
    """ "health care" → "health attention", "small business" → "small concern", "Good morning" → "Full
    morning", "Looking forward" → "Appearing forward", "house of representatives" → "house of voices", "check
    out" → "see out": no word of a WordNet multi-word lemma (or of a verb and its particle) is replaced alone,
    while the other words of the sentence still are."""
    kept = {
        "small",
        "business",
        "health",
        "care",
        "good",
        "morning",
        "looking",
        "forward",
        "house",
        "representatives",
        "check",
        "farm",
        "bill",
        "minimum",
        "wage",
    }
    for text, _ in EXPRESSIONS:
        replaced: set[str] = set()
        for seed in range(4):
            for v in wordnet_augmenter.augment([text], [20], seed=seed, language="en")[0]:
                replaced.update(e["from"].lower() for e in v.edits)
        assert replaced and not replaced & kept, (text, replaced & kept)
    # The words around them still change: "owners", "district", "debate", "website", "hearing", ...
    assert {w.text.lower() for w, _ in wordnet_augmenter._slots(EXPRESSIONS[0][0], _params())[0]} >= {
        "owners",
        "district",
    }


def test_a_verb_followed_by_its_particle_is_never_replaced(wordnet_augmenter) -> None:
    """ "check out" → "see out", "stop by" → "halt by", "Gearing up" → "Pitching up", "kicks off" → "bangs
    off", "run out" → "escaped out": the verb of a phrasal verb stays; a passive's "by" and a preposition leave
    the verb a candidate."""

    def slots(text: str) -> list[str]:
        return [w.text for w, _ in wordnet_augmenter._slots(text, _params())[0]]

    assert "stop" not in slots("Be sure to stop by the office this afternoon")
    assert "Gearing" not in slots("Gearing up for coffee with constituents this afternoon")
    assert "kicks" not in slots("The program kicks off its second year")
    assert "run" not in slots("Has your unemployment insurance run out already?")
    assert "check" not in slots("Please check out the photos from the parade")
    # Not a particle: the agent of a passive, a preposition.
    assert "approved" in slots("The measure was approved by the committee")
    assert "voted" in slots("Members voted against the measure")
    for seed in range(3):
        for v in wordnet_augmenter.augment(
            ["Be sure to stop by the office this afternoon"], [10], seed=seed, language="en"
        )[0]:
            assert "stop by" in v.text, v.text


def test_expression_spans_need_adjacent_words() -> None:
    """Only words with nothing but spaces between them form an expression: "stop by..looking" holds "stop by"
    but no "by looking"; a comma or a line's end parts them."""
    from workers.augment.textspans import candidates, phrase_words, words

    seen: list[tuple[str, ...]] = []

    def is_phrase(span: tuple[str, ...]) -> bool:
        seen.append(span)
        return span in {("health", "care"), ("by", "looking")}

    assert [w.text for w in candidates("Health care, care health", "en", phrase=is_phrase)] == ["care", "health"]
    assert ("care", "care") not in seen and ("health", "care") in seen
    text = "stop by..looking ahead"
    found = words(text)
    assert phrase_words(text, found, [True] * len(found), is_phrase) == set()
    # Spans with no word that could be replaced are not looked up at all.
    seen.clear()
    assert phrase_words("in the by", words("in the by"), [False] * 3, is_phrase) == set() and not seen


def _params():  # type: ignore[no-untyped-def]
    from workers.augment.params import WordNetParams

    return WordNetParams()


def test_a_text_in_another_language_gets_no_wordnet_variant(wordnet_augmenter) -> None:
    """WordNet is English: in the Spanish and German posts of an English dataset it replaced the words that are
    English too ("die Steuern" → "expire Steuern", "para nuestra" → "parity nuestra"). Such a text gets no
    variant; an English text with a Spanish name or phrase in it still does."""
    from workers.augment.language import other_language_share

    foreign = [
        "Die Regierung muss die Steuern für die Familien senken, sagt der Abgeordnete",
        "Es una prioridad para nuestra comunidad: la educación de los niños y las familias",
        "Llegando a reunirme con el Presidente Bill Clinton",
    ]
    english = [
        "Happy Cinco de Mayo to all across MD & US celebrating today with our families!",
        "Update: Las Vegas man vandalizes El Paso billboards, police said on Monday",
    ]
    results = wordnet_augmenter.augment(foreign + english, [3] * 5, seed=2, language="en")
    assert [len(r) for r in results[:3]] == [0, 0, 0], results[:3]
    assert all(results[3:]), "English texts with foreign names keep their variants"
    assert [other_language_share(t, "en") > 0.5 for t in foreign + english] == [True] * 3 + [False] * 2
    # names vote too: half the words of a short English post naming a Spanish paper; it stays English
    assert other_language_share("ICYMI: my op-ed in El Nuevo Dia on Medicaid", "en") == 0.5
    assert other_language_share("Vote today", "en") is None  # too few words to tell
    # read as wordfreq's lists hold words: case-folded ("Straße" is "strasse" there)
    assert other_language_share("Die Straße heißt weiß, sagt der Bürgermeister", "en") == 1.0

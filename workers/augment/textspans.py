"""Which words of a text an augmenter may replace, as character spans of the original string.

Working on spans (never on re-joined tokens) keeps the original spacing, URLs, @mentions and #hashtags
intact: nlpaug's tokenise-then-join turns `RT @nowthisnews: ... https://t.co/x` into
`RT @ nowthisnews : ... http: / / x`.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from core.textnorm import combining_marks, term_key, term_match_key

_TOKEN = re.compile(r"\S+")
# A letter and what follows it: letters and combining marks (a text typed in decomposed Unicode, NFD, writes
# "ü" as "u" + U+0308, which is no letter: "Bürgermeisterin" split into "Bu" and "rgermeisterin"; Hindi's vowel
# signs are marks too: "हिन्दी" split into single letters)
_MARKS = combining_marks()
_WORD = re.compile(rf"[^\W\d_](?:[^\W\d_]|[{_MARKS}])*(?:['’][^\W\d_](?:[^\W\d_]|[{_MARKS}])*)*")
# Anywhere in the token, not only at its start: `here](http://x.example)` and `(www.x.example)` are links too.
_URLISH = re.compile(r"[a-z][a-z0-9+.-]*://|(?:^|\W)www\.|\.(?:com|org|net|gov|edu|ly|co|io)(?:/|$|\W)", re.IGNORECASE)
_SHORTCODE = re.compile(r":[a-z0-9_+-]+:", re.IGNORECASE)  # :smile: is an emoji's name, not a word
# A bare domain with a path, whatever its suffix: `goo.gl/vagtuf`, `youtu.be/x`, `fb.me/x`, `site.us/`.
_DOMAIN = re.compile(r"[^\W_]\.[a-z]{2,}[^\W_]*/", re.IGNORECASE)
# Letters of the scripts written without spaces between words (Han, kana, Thai, Lao, Tibetan, Myanmar, Khmer):
# a run of them is a clause, not a word ("这是一个很好的决定" masked whole became "shutdown")
UNSPACED_SCRIPTS = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]"
)
_HYPHENS = "-\u2010\u2011"  # a word joined to another by one of these is part of a compound ("co-sponsor", "in-person")

# English function words (the NLTK list, which is not installable offline) and social-media tokens that carry
# no meaning to swap. scikit-learn's list is not used: it also holds content words (bill, fire, system, show).
_STOP_EN_TEXT = """
a about above after again against ain all am an and any are aren aren't as at be because been before
being below between both but by can couldn couldn't d did didn didn't do does doesn doesn't doing
don don't down during each few for from further had hadn hadn't has hasn hasn't have haven haven't
having he he'd he'll he's her here hers herself him himself his how i i'd i'll i'm i've if in into
is isn isn't it it'd it'll it's its itself just ll m ma me mightn mightn't more most mustn mustn't
my myself needn needn't no nor not now o of off on once only or other our ours ourselves out over
own re s same shan shan't she she'd she'll she's should should've shouldn shouldn't so some such t
than that that'll the their theirs them themselves then there these they they'd they'll they're
they've this those through to too under until up ve very was wasn wasn't we we'd we'll we're we've
were weren weren't what when where which while who whom why will with won won't wouldn wouldn't y
you you'd you'll you're you've your yours yourself yourselves also us let let's get got would could
may might must shall rt via amp pm am mr mrs ms dr rep sen gov st jr sr ok yes oh im dont thats lets
today tonight tomorrow yesterday please thank thanks
"""
_STOP_EN = frozenset(_STOP_EN_TEXT.split())
# Never replaced, though they are content words (kept out of the stop list, which also filters the seeded protected
# terms): numbers, ordinals and words of time and frequency, whose WordNet "synonyms" change the fact stated
# ("millions" → "trillions", "last day" → "terminal day", "next week" → "adjacent week", "ever" → "always").
_KEEP_EN_TEXT = """
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds thousand thousands
million millions billion billions trillion trillions dozen dozens first second third fourth fifth sixth seventh
eighth ninth tenth eleventh twelfth hundredth thousandth millionth half halves quarter quarters double doubled
triple tripled quadruple twice thrice single percent
last next ever never always still yet once already again soon today tomorrow yesterday tonight forever
"""
_KEEP_EN = frozenset(_KEEP_EN_TEXT.split())


@lru_cache(maxsize=8)
def stop_words(language: str) -> frozenset[str]:
    """English only; other languages have no list here, and `Word.is_candidate` then protects every word of
    three letters or fewer instead (most function words are that short)."""
    return _STOP_EN if language == "en" else frozenset()


@dataclass(frozen=True)
class Word:
    start: int
    end: int
    text: str
    sentence_initial: bool
    compound: bool = False  # joined to another word by a hyphen: "co" and "sponsor" in "co-sponsor"

    def is_candidate(self, language: str, *, protect_capitalized: bool = True, min_len: int = 2) -> bool:
        """A plain word worth replacing: letters only, not a stop word, a number or a word of time (English),
        not part of a hyphenated compound, not (when asked) a likely name, not a run of a script written without
        spaces (Chinese, Japanese, Thai...: such a "word" is a clause).

        Capitalised words inside a sentence and all-caps words are mostly names and acronyms (`Trey Radel`,
        `GOP`): replacing them changes who the text is about, which an annotator then has to reject. A part of a
        compound is no word of its own: "co-sponsor" → "cobalt-sponsor", "full-time" → "total-time"."""
        word = self.text
        if len(word) < min_len or not word.isalpha() or self.compound or UNSPACED_SCRIPTS.search(word):
            return False
        lowered = word.casefold()
        stops = stop_words(language)
        if lowered in stops or (language == "en" and lowered in _KEEP_EN):
            return False
        if not stops and len(word) <= 3:
            return False
        return not (protect_capitalized and (word.isupper() or (word[0].isupper() and not self.sentence_initial)))


def _protected_token(token: str) -> bool:
    """URLs and bare domains with a path, @mentions and #hashtags (anywhere in the token: `.@energy`,
    `today!#jobs`), :emoji: names, anything with a digit (numbers, dates, R-FL2) and words broken by a bad
    decoding (U+FFFD: `pol\ufffdtico`) stay as they are."""
    head = token.lstrip("([{\"'“‘")
    if "@" in token or "#" in token or "\ufffd" in token or head.startswith("$"):
        return True
    if _URLISH.search(token) or _DOMAIN.search(token) or _SHORTCODE.search(token):
        return True
    return any(ch.isdigit() for ch in token)


def words(text: str) -> list[Word]:
    """The words of `text` with their spans, skipping protected tokens entirely."""
    found: list[Word] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if _protected_token(token):
            continue
        for inner in _WORD.finditer(token):
            start = match.start() + inner.start()
            before = token[inner.start() - 1] if inner.start() > 0 else " "
            after = token[inner.end()] if inner.end() < len(token) else " "
            if unicodedata.category(before) == "Cf" or unicodedata.category(after) == "Cf":
                # a zero-width joiner, non-joiner or space, a soft hyphen inside a word: its letters on either
                # side are one word to a reader ("vo\u200dte" lost "vo" to the masked LM: "org\u200dte")
                continue
            compound = before in _HYPHENS or after in _HYPHENS
            found.append(
                Word(start, match.start() + inner.end(), inner.group(), _sentence_initial(text, start), compound)
            )
    return found


_ABBREVIATION = re.compile(r"(?:^|\s)(?:[A-Z][a-z]{0,3}|(?:[A-Z]\.)+[A-Z]?)\.$")


def _sentence_initial(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t\"'“‘([":
        i -= 1
    if i < 0 or text[i] in "!?…\n:":
        return True
    # "Rep. Trey Radel", "U.S. Senate": a period after a short capitalised abbreviation ends no sentence.
    return text[i] == "." and not _ABBREVIATION.search(text[max(0, i - 8) : i + 1])


class ProtectedTerms:
    """A dataset's topic words, matched in any inflection: protecting "abortion" protects "abortions",
    "vote" protects "voted" and "votes". A phrase protects each of its words. Matching is by the word's
    case-folded form and its lemmas (lemminflect's lexicon, any part of speech), so no tagger is needed."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = sorted({term_key(t.strip()) for t in terms if t.strip()})
        forms: set[str] = set()
        for term in self.terms:
            for word in _WORD.findall(term_match_key(term)):
                forms.add(word)
                forms.update(_lemmas(word))
        self._forms = frozenset(forms)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __len__(self) -> int:
        return len(self.terms)

    def covers(self, word: str) -> bool:
        lowered = term_match_key(word)  # "café" typed either way, "ｃａｆé" too, is the term
        return lowered in self._forms or any(lemma in self._forms for lemma in _lemmas(lowered))

    def lost(self, source: str, variant: str) -> bool:
        """Whether `variant` no longer holds a word of `source` that these terms protect (a word replaced)."""
        if not self._forms:
            return False
        kept = Counter(term_match_key(w.text) for w in words(variant))
        held = Counter(term_match_key(w.text) for w in words(source) if self.covers(w.text))
        return any(kept[word] < n for word, n in held.items())  # one of two copies replaced is one lost


@lru_cache(maxsize=100_000)
def _lemmas(word: str) -> frozenset[str]:
    from lemminflect import getAllLemmas

    return frozenset(lemma.casefold() for forms in getAllLemmas(word).values() for lemma in forms)


def phrase_words(
    text: str, found: Sequence[Word], wanted: Sequence[bool], is_phrase: Callable[[tuple[str, ...]], bool]
) -> set[int]:
    """Indices in `found` of the words of every span of 2 or 3 adjacent words (only spaces between them) that
    `is_phrase` accepts, given their case-folded texts: a multi-word expression ("health care", "looking
    forward", "house of representatives"), none of whose words may be replaced alone. Only spans holding a
    `wanted` word (one that could be replaced) are looked up."""
    inside: set[int] = set()
    for i in range(len(found) - 1):
        for size in (2, 3):
            span = found[i : i + size]
            if len(span) < size or not any(wanted[i : i + size]):
                continue
            if any(not text[a.end : b.start].isspace() for a, b in itertools.pairwise(span)):
                break  # a longer span holds the same gap
            if is_phrase(tuple(w.text.casefold() for w in span)):
                inside.update(range(i, i + size))
    return inside


def candidates(
    text: str,
    language: str,
    *,
    protect_capitalized: bool = True,
    protected: ProtectedTerms | None = None,
    min_len: int = 2,
    phrase: Callable[[tuple[str, ...]], bool] | None = None,
) -> list[Word]:
    """The words of `text` an augmenter may replace. With `phrase` (2 or 3 case-folded words → whether they
    form one expression), no word of such an expression is one: "health care" → "health attention" and
    "looking forward" → "appearing forward" break it."""
    found = words(text)
    wanted = [
        w.is_candidate(language, protect_capitalized=protect_capitalized, min_len=min_len)
        and not (protected and protected.covers(w.text))
        for w in found
    ]
    if phrase is not None and any(wanted):
        for i in phrase_words(text, found, wanted, phrase):
            wanted[i] = False
    return [w for w, keep in zip(found, wanted, strict=True) if keep]

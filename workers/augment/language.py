"""Whether one text of a dataset reads as another language than the dataset's.

A dataset has one language, but its texts need not: the example dataset's congressional posts hold a few dozen in
Spanish ("Llegando a reunirme con el Presidente Bill Clinton"), and WordNet, English only, replaced their words
that are also English ("die Steuern" → "expire Steuern", "prioridad para nuestra" → "prioridad parity
nuestra"): nonsense a reviewer must reject one by one. A word votes for the language in which it is more frequent
(wordfreq's Zipf scale, offline lists in its wheel): for another one when that language's frequency beats the
dataset's by `MARGIN` (a clear lead: "sin", "me" and "pie" are frequent in both). A text whose words vote for
other languages more than half the time, over at least `MIN_WORDS` words, reads as another language. Mentions,
hashtags and links do not vote; names do, so a short English post naming Spanish places and people can reach
half ("Met Mayor Garcia and Gov Pedro Pierluisi in San Juan": 0.5) and a post half English, half Spanish does
too: both keep their variants."""

from __future__ import annotations

import re
from functools import lru_cache

# The languages the posts of an English dataset are most often written in besides English (Europe's and the
# Americas' largest), and for which wordfreq has large lists.
OTHER_LANGUAGES = ("en", "es", "de", "fr", "pt", "it", "nl")
MARGIN = 1.0  # Zipf points: ten times as frequent
MIN_WORDS = 4
SHARE = 0.5

_LINK = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_WORD = re.compile(r"(?<![@#\w])[^\W\d_]{2,}(?!\w)")


@lru_cache(maxsize=200_000)
def _zipfs(word: str) -> tuple[float, ...]:
    from wordfreq import zipf_frequency

    return tuple(float(zipf_frequency(word, lang)) for lang in OTHER_LANGUAGES)


def other_language_share(text: str, language: str) -> float | None:
    """The share of the text's words more frequent in another language than in `language` (by `MARGIN`), or
    None when the text has fewer than `MIN_WORDS` words or `language` is not one this module compares."""
    if language not in OTHER_LANGUAGES:
        return None
    own = OTHER_LANGUAGES.index(language)
    words = [w.lower() for w in _WORD.findall(_LINK.sub(" ", text))]
    if len(words) < MIN_WORDS:
        return None
    other = 0
    for word in words:
        zipfs = _zipfs(word)
        best = max(z for i, z in enumerate(zipfs) if i != own)
        if best - zipfs[own] >= MARGIN:
            other += 1
    return other / len(words)


def reads_as_other_language(text: str, language: str) -> bool:
    share = other_language_share(text, language)
    return share is not None and share > SHARE

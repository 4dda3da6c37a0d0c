"""Whether one text of a dataset reads as another language than the dataset's.

A dataset has one language, but its texts need not: the example dataset's congressional posts hold a few dozen in
Spanish ("Llegando a reunirme con el Presidente Bill Clinton"), and WordNet, English only, replaced their words
that are also English ("die Steuern" → "expire Steuern", "prioridad para nuestra" → "prioridad parity
nuestra"): nonsense a reviewer must reject one by one. A word votes for another language when it is more frequent
there than in the dataset's language by `MARGIN` on wordfreq's Zipf scale (offline lists in its wheel): a clear
lead ("sin", "me" and "pie" are frequent in both). A text whose words vote for other languages more than half the
time, over at least `MIN_WORDS` words, reads as another language. Mentions, hashtags and links do not vote; names
do, so a short English post naming Spanish places and people comes near half ("ICYMI: my op-ed in El Nuevo Dia
on Medicaid": 0.5) and a post half English, half Spanish reaches it: both keep their variants.

The words that lean to another language are read once per process into one set (`_leaning`), from the other
languages' lists down to `MIN_ZIPF`, which are then let go (about 60 MB more in a worker's memory, and a second
to read): wordfreq keeps every list it has looked a word up in, and six of them (212 MB) took a worker's augment
job past its 2 GB (bench/scale.py).
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from functools import cache

# The languages the posts of an English dataset are most often written in besides English (Europe's and the
# Americas' largest), and for which wordfreq has large lists.
LANGUAGES = ("en", "es", "de", "fr", "pt", "it", "nl")
MARGIN = 1.0  # Zipf points: ten times as frequent
MIN_ZIPF = 3.0  # rarer words of the other languages do not vote (less than once in a million words)
MIN_WORDS = 4
SHARE = 0.5

_LINK = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_WORD = re.compile(r"(?<![@#\w])[^\W\d_]{2,}(?!\w)")
_lock = threading.Lock()


@cache
def _leaning(language: str) -> frozenset[str]:
    """The words at least `MARGIN` more frequent in one of the other `LANGUAGES` than in `language`."""
    from wordfreq import available_languages, cB_to_zipf, get_frequency_dict, read_cBpack

    own = get_frequency_dict(language)  # kept by wordfreq: WordNet's frequency floor reads the same list
    files = available_languages()
    found: set[str] = set()
    for other in LANGUAGES:
        if other == language:
            continue
        for index, bucket in enumerate(read_cBpack(files[other])):  # read here, not kept in wordfreq's cache
            zipf = cB_to_zipf(-index)
            if zipf < MIN_ZIPF:
                break
            for word in bucket:
                freq = own.get(word)
                if freq is None or zipf - (math.log10(freq) + 9) >= MARGIN:
                    found.add(word)
    return frozenset(found)


def other_language_share(text: str, language: str) -> float | None:
    """The share of the text's words more frequent in another language than in `language` (by `MARGIN`), or
    None when the text has fewer than `MIN_WORDS` words or `language` is not one this module compares."""
    if language not in LANGUAGES:
        return None
    # as wordfreq's lists hold them: NFC, case-folded ("Straße" → "strasse")
    words = [w.casefold() for w in _WORD.findall(unicodedata.normalize("NFC", _LINK.sub(" ", text)))]
    if len(words) < MIN_WORDS:
        return None
    with _lock:  # built once, by the first caller
        leaning = _leaning(language)
    return sum(w in leaning for w in words) / len(words)


def reads_as_other_language(text: str, language: str) -> bool:
    share = other_language_share(text, language)
    return share is not None and share > SHARE

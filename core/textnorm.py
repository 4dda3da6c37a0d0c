"""The normalised form of a text that duplicate detection compares (import, filters, edits)."""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from collections import Counter
from functools import cache


@cache
def _format_characters() -> re.Pattern[str]:
    """Every format character (category Cf: zero-width space, joiners, BOM, bidi marks) as one character class,
    built once per process (~0.3 s): the deletion then runs in the regex engine, not a Python loop per char."""
    points = [cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"]
    ranges, start, prev = [], points[0], points[0]
    for cp in [*points[1:], -1]:
        if cp != prev + 1:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
            start = cp
        prev = cp
    return re.compile("[" + "".join(ranges) + "]+")


def normalize_text(text: str) -> str:
    """NFKC, case-folded, zero-width characters dropped, whitespace collapsed."""
    if not text.isascii():  # ASCII is its own NFKC form and holds no format character
        text = _format_characters().sub("", unicodedata.normalize("NFKC", text))
    return " ".join(text.casefold().split())  # str.split: the same whitespace as re's \s, 5× faster


_SURROGATE = re.compile("[\ud800-\udfff]")


_NOT_LETTERS = re.compile(r"[\W_]+")


def same_words_key(text: str) -> int | None:
    """A key equal for texts with the same letters and digits in the same order, once compatibility forms are
    folded (NFKC) and case ignored: "Vote today!" and "vote today!!", "Thank you, veterans." and "Thank you
    veterans". None for a text with none (only punctuation, symbols or emoji). The leak guard's exact check of
    short texts, whose few n-grams never reach the near-duplicate measures (core.ngrams.MIN_SHARED).

    Python's string hash (63 bits kept, never negative): a key is compared only within the process that made
    it (an in-memory index), never stored."""
    if text.isascii():
        letters = _NOT_LETTERS.sub("", text.casefold())
    else:  # combining marks are letters' parts in Devanagari or Thai (लड़का / लड़की): kept
        folded = unicodedata.normalize("NFKC", text).casefold()
        letters = "".join(c for c in folded if c.isalnum() or unicodedata.category(c)[0] == "M")
    return hash(letters) & 0x7FFF_FFFF_FFFF_FFFF if letters else None


def unstorable(text: str) -> str | None:
    """Why no database can store `text` as it is, or None: a NUL character (Postgres refuses it in a text
    column; SQLite would store it), or a lone surrogate (half of a UTF-16 pair, what JSON's `\\ud800` escape
    decodes to: it has no UTF-8 encoding, and SQLite's driver raised on it, a 500)."""
    if "\x00" in text:
        return "holds a NUL character"
    if _SURROGATE.search(text):
        return "holds a lone surrogate (U+D800-U+DFFF), which is not Unicode text"
    return None


def text_problem(text: str) -> str | None:
    """Why a text a person writes cannot be stored, or None: a NUL or a lone surrogate (unstorable), or nothing
    left once normalised (blank, or only zero-width and other format characters, which the duplicate check and
    the filters drop)."""
    if problem := unstorable(text):
        return problem
    if not normalize_text(text):
        return "is empty (nothing but blanks and invisible characters)"
    return None


# What a person's text may not hold beyond text_problem's: control characters other than tab, line feed and
# carriage return (C0: a bell, an escape sequence for a terminal; DEL; C1: U+009B is an 8-bit escape sequence's
# start), the bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what a reviewer
# or an annotator sees, and the format characters no written text needs, invisible on a card: the invisible math
# operators (U+2061-U+2064), the deprecated format controls (U+206A-U+206F), a byte-order mark inside a text
# (U+FEFF), the interlinear annotation marks (U+FFF9-U+FFFB) and the tag characters (U+E0000-U+E007F) outside the
# emoji flag of a region (🏴 U+1F3F4, tags, U+E007F) that is their one use. The joiners (ZWJ, ZWNJ: emoji, Persian,
# Indic scripts), the zero-width space (Thai, Khmer) and the direction marks (LRM, RLM) stay: written text needs them.
_CONTROL = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_BIDI = "\u202a-\u202e\u2066-\u2069"
_UNWRITABLE = re.compile(f"[{_CONTROL}{_BIDI}\u2061-\u2064\u206a-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]")
_REGION_FLAG = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def _unwritable(text: str) -> list[str]:
    return _UNWRITABLE.findall(_REGION_FLAG.sub("\U0001f3f4", text))


def written_text_problem(text: str, before: str | None = None) -> str | None:
    """text_problem, for a text a person writes into augloop (a review edit, a text sent to augment): also no
    control character but tab and line breaks, no bidi override or isolate, no format character a written text
    has no use for. Imported data is not held to this (real texts may carry such characters); a person typing a
    new text has no need of them. An edit of `before` may keep those `before` holds (a scraped text's mojibake,
    U+0080 in "â\x80\x99": a reviewer fixing another word could not save it), not add others."""
    if problem := text_problem(text):
        return problem
    found = _unwritable(text)
    if before is not None:  # as many of each as `before` held, no more (one bidi override spread over the text)
        found = list((Counter(found) - Counter(_unwritable(before))).elements())
    if found:
        char = found[0]
        if unicodedata.category(char) == "Cc":
            what = "a control character"
        elif re.fullmatch(f"[{_BIDI}]", char):
            what = "a bidirectional override or isolate"
        else:
            what = "an invisible format character"
        return f"holds {what} (U+{ord(char):04X})"
    return None


def generated_text_problem(source: str, text: str) -> str | None:
    """Why a text a model generated from `source` is no variant, or None: a character no database stores (a NUL,
    a lone surrogate: Postgres refused the job's every variant at once), or a control character or bidi override
    its source does not hold (written_text_problem's, which a language model's byte-level output can hold)."""
    if problem := unstorable(text):
        return problem
    introduced = set(_unwritable(text)) - set(_unwritable(source))
    if introduced:
        return f"holds U+{ord(min(introduced)):04X}, which its source does not"
    return None


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


@cache
def combining_marks() -> str:
    """A regex character class body of every combining mark of the Basic Multilingual Plane (Unicode category
    M: accents, vowel signs, viramas): a word goes on through them (a decomposed "ü" is "u" + U+0308; Hindi's
    vowel signs are marks), though Python's \\w takes none. Built once (65,536 lookups, ~10 ms)."""
    spans: list[tuple[int, int]] = []
    for code in range(0x10000):
        if unicodedata.category(chr(code))[0] == "M":
            if spans and spans[-1][1] == code - 1:
                spans[-1] = (spans[-1][0], code)
            else:
                spans.append((code, code))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in spans)


def term_key(text: str) -> str:
    """A word or phrase as protected terms are stored: NFC, case-folded, then NFC again (a case fold can
    decompose: "İ" folds to "i" + U+0307), so "café" typed either way is one term."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


def term_match_key(text: str) -> str:
    """A word of a text as a protected term matches it: term_key after NFKC, so a term written in fullwidth
    letters or in the mathematical bold of social-media posts is the term, as every other text check
    (duplicates, leaks) reads it; the masked LM replaced such words though they were protected."""
    return term_key(unicodedata.normalize("NFKC", text))

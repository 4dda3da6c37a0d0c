"""Names that appear in URLs, file names and CSV headers: project and dataset slugs.

A slug is 1–64 characters of lower-case ASCII letters, digits, `_` and `-`, starting with a letter or digit.
Anything else (right-to-left overrides, spaces, 300-character names, path separators) is refused with a
message that says so; the human-readable name goes in the separate display name (up to 200 characters).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from core.errors import ValidationFailed

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")  # BCP-47-like: en, pt-BR, zh-Hant-TW
LANGUAGE_MAX = 16  # datasets.language
DISPLAY_MAX = 200
USER_MAX = 120  # users.name
LABEL_MAX = 100  # sample_labels.task and .label: a task (label column) name and a label name
JOINERS = ("\u200c", "\u200d")  # zero-width non-joiner and joiner


def check_slug(name: str, *, field: str, what: str = "name") -> str:
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        raise ValidationFailed(
            f"{what} must be 1-64 lower-case letters, digits, '_' or '-', starting with a letter or digit "
            f"(a display name may say more); got {name[:80]!r}",
            field=field,
        )
    return name


def check_display_name(name: str, *, field: str) -> str:
    """Free text for people, but printable: no control or format characters (U+202E would reverse a line)."""
    return _printable(name, field=field, what="a display name", longest=DISPLAY_MAX)


def check_user_name(name: str, *, field: str = "name") -> str:
    """A user's name: free text like a display name (it is shown beside every review), as printable, and never
    `.` or `..`, which a URL path collapses (the name is a path segment of the member and role routes)."""
    name = _printable(name, field=field, what="a user name", longest=USER_MAX)
    if name in (".", ".."):
        raise ValidationFailed(f"a user name may not be {name!r}", field=field)
    return name


def _printable(name: str, *, field: str, what: str, longest: int) -> str:
    name = name.strip()
    if not name or len(name) > longest:
        raise ValidationFailed(f"{what} is 1-{longest} characters", field=field)
    if (bad := _unprintable(name)) is not None:
        raise ValidationFailed(f"{what} may not contain control or format characters ({bad!r})", field=field)
    return name


def _unprintable(name: str) -> str | None:
    """The first control or format character. Format characters reorder or hide text (U+202E), but the
    zero-width (non-)joiners spell Persian and Indic names and emoji sequences."""
    return next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") and c not in JOINERS), None)


@lru_cache(maxsize=4096)  # asked for every label of every imported row, of a few distinct values
def label_name_problem(name: str) -> str | None:
    """What is wrong with a task or label name (None: nothing), for a message that names where it stands. Such
    names are classes and column headers: a zero-width space would make a second "policy" class that looks like
    the first, a line break a broken header, and over LABEL_MAX characters Postgres refuses the whole import."""
    if len(name) > LABEL_MAX:
        return f"is {len(name)} characters; the most is {LABEL_MAX}"
    if (bad := _unprintable(name)) is not None:
        return f"holds a control or format character ({bad!r})"
    return None


def check_language(code: str, *, field: str = "language") -> str:
    """A dataset's language: a BCP-47-like tag (the augmenters compare its base, e.g. en of en-US)."""
    if not isinstance(code, str) or len(code) > LANGUAGE_MAX or not LANGUAGE.fullmatch(code):
        raise ValidationFailed(
            f"language: a language tag such as en or pt-BR (2-3 lower-case letters, then -subtags of 2-8 letters "
            f"or digits; at most {LANGUAGE_MAX} characters); got {str(code)[:40]!r}",
            field=field,
        )
    return code


_FILLERS = {"\u3164", "\u115f", "\u1160", "\uffa0", "\u2800"}  # blank letters (Hangul fillers, Braille blank)


def looks_like(name: str, reserved: str) -> bool:
    """Whether `name` reads as `reserved` in a list of reviewers: the same once compatibility forms are folded
    (NFKC: full-width letters), case ignored, and combining marks, format characters (joiners, variation
    selectors) and blank letters dropped ("auto\\u200d", "AUTO", "auto\\ufe0f"). Letters of other scripts that
    look alike (a Cyrillic a) are not folded."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    kept = "".join(c for c in folded if unicodedata.category(c)[0] not in "MC" and c not in _FILLERS)
    return kept.strip() == reserved.casefold()

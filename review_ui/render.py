"""HTML for user texts, built from fixed templates with every piece of data escaped.

Texts, labels, model names and parameters come from datasets and augmenters: they are shown as text, never
interpreted as HTML or markdown. Everything here goes through `html.escape` and ends up in `st.html`, which
does not run markdown and sanitises the (already inert) result once more.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_left
from html import escape
from typing import Any

_TOKEN = re.compile(r"(\S+)(\s*)")
# What a word diff may cost, in difflib's inner-loop steps (word pairs it visits, plus a share per search). On
# repetitive texts difflib's work grows faster than the product of the lengths ("a b a b …" against "a b c a b c
# …": 1,000 words 7.6 s, 2,000 words 50 s). This cap keeps the worst pair under 35 ms (a busy 2-core machine;
# the pair then shows without a word diff), while a 1,000-word English pair with a fifth of its words changed
# spends about half of it.
WORD_DIFF_BUDGET = 150_000
_SEARCH_COST = 100  # a find_longest_match call's own overhead, in the same steps
NO_WORD_DIFF = "Not compared word by word with its source (too long or too repetitive): shown as written."
BOX = "<div style='white-space:pre-wrap;word-break:break-word;line-height:1.55;font-size:0.95rem'>{}</div>"
INS = "<ins style='background:#c9f2cf;text-decoration:none;border-radius:3px;padding:0 2px'>{}</ins>"
DEL = "<del style='background:#fbd5d5;color:#8a1f1f;border-radius:3px;padding:0 2px'>{}</del>"
SMALL = "<div style='color:#666;font-size:0.82rem;margin-top:2px'>{}</div>"


def _words(text: str) -> list[tuple[str, str]]:
    """(word, the whitespace after it): a diff over words that still prints the variant's own spacing."""
    return [(m.group(1), m.group(2)) for m in _TOKEN.finditer(text)]


class _OverBudget(Exception):
    pass


class _BudgetedMatcher(difflib.SequenceMatcher[str]):
    """difflib's matcher that gives up (raises _OverBudget) once its searches would pass `budget` steps."""

    def __init__(self, a: list[str], b: list[str], budget: int) -> None:
        self.left = budget
        super().__init__(a=a, b=b, autojunk=False)

    def find_longest_match(
        self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
    ) -> difflib.Match:
        ahi = len(self.a) if ahi is None else ahi
        bhi = len(self.b) if bhi is None else bhi
        # Charged before the search: for each word of a[alo:ahi], difflib walks its places in b up to bhi (b2j,
        # difflib's own index of b: every word's places in order, none dropped without autojunk).
        where = self.b2j
        self.left -= _SEARCH_COST + (ahi - alo)
        self.left -= sum(bisect_left(where[w], bhi) for w in self.a[alo:ahi] if w in where)
        if self.left < 0:
            raise _OverBudget
        return super().find_longest_match(alo, ahi, blo, bhi)


def _word_opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]] | None:
    """difflib's opcodes turning `a` into `b`, or None when they would cost more than WORD_DIFF_BUDGET. The
    common first and last words are matched first (free), so a long text with a local edit keeps its diff."""
    shortest = min(len(a), len(b))
    head = 0
    while head < shortest and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shortest - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    matcher = _BudgetedMatcher(a[head : len(a) - tail], b[head : len(b) - tail], WORD_DIFF_BUDGET)
    try:
        middle = matcher.get_opcodes()
    except _OverBudget:
        return None
    ops = [("equal", 0, head, 0, head)] if head else []
    ops += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle]
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    return ops


def diff_segments(source: str, variant: str) -> list[tuple[str, str]] | None:
    """The variant as (op, text) pieces against its source: "eq" kept, "ins" added or changed words, "del" the
    source words it dropped. Joined, the "eq" and "ins" pieces give the variant with its own spacing (and a space
    after each dropped run). None when the two are too long or repetitive to compare word by word within
    WORD_DIFF_BUDGET."""
    old, new = _words(source), _words(variant)
    opcodes = _word_opcodes([w for w, _ in old], [w for w, _ in new])
    if opcodes is None:
        return None
    parts: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag in ("replace", "delete"):
            parts.append(("del", " ".join(w for w, _ in old[i1:i2])))
            parts.append(("eq", " "))
        if tag == "equal":
            parts.append(("eq", "".join(w + sp for w, sp in new[j1:j2])))
        elif tag in ("replace", "insert"):
            words = new[j1:j2]
            parts.append(("ins", "".join(w + sp for w, sp in words[:-1]) + words[-1][0]))
            parts.append(("eq", words[-1][1]))
    return [(op, text) for op, text in parts if text]


def diff_html(source: str, variant: str) -> str:
    """The variant with the words it added or changed highlighted, and the source words it dropped struck."""
    pieces = {"eq": "{}", "ins": INS, "del": DEL}
    segments = diff_segments(source, variant)
    if segments is None:
        return text_html(variant) + small_html(NO_WORD_DIFF)
    return BOX.format("".join(pieces[op].format(escape(text)) for op, text in segments))


def text_html(text: str) -> str:
    return BOX.format(escape(text))


# CommonMark's escapable punctuation that markdown, HTML and GFM use: `&` too (an entity such as "&amp;" or
# "&ZeroWidthSpace;" would otherwise show as the character it names), `=` (a "=====" line under a text makes it a
# heading), and `:` and `@` (GFM's link syntax for http://…, mailto:… and a@b.c). Escaped, each shows as written.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~$:@&=])")


# Streamlit draws ":material/name:" (and ":material_name:") as an icon and ":streamlit:" as its logo by searching
# the text that markdown has already unescaped, so an escaped colon still draws them; a zero-width space after
# the colon does not show, and breaks the match (Streamlit's own messages quote ":material\u200b/…" likewise).
_ICON_SHORTCODE = re.compile(r":(?=material[/_]|streamlit:)")

# Streamlit's remark-gfm also links addresses in the text that markdown has already unescaped (its
# mdast-util-gfm-autolink-literal step searches /(https?:\/\/|www(?=\.))…/ and /…@[-\w]+(\.[-\w]+)+/), so an
# escaped ":" or "@" still links. A zero-width space does not show and breaks each match: after a colon that a
# slash follows (http:​//, ftp:​//, any scheme), between "www" and its dot, and after every "@" (a@​b.c, which
# mailto:/xmpp: addresses need too).
_AUTOLINK = re.compile(r"(?i)(\\:)(?=/)|(www)(?=\\\.)|(\\@)")
# Leading spaces and tabs would make a line indented code (after a blank line, or at the start); no-break spaces
# show the same indentation and start nothing.
_INDENT = re.compile(r"^[ \t]+", re.MULTILINE)
_EMPTY_LINE = re.compile(r"(?<=\n)(?=\n)")  # an empty line inside the text (its ends are stripped)


def _indent(match: re.Match[str]) -> str:
    return match.group(0).replace("\t", "    ").replace(" ", "\u00a0")


def plain(text: str) -> str:
    """Text for Streamlit's markdown elements (messages, captions, labels), markdown and HTML syntax neutralised:
    no link, image, emphasis, tag, entity, heading, list, code block or icon, and no address that GFM would turn
    into a link by itself. Each line starts nothing (every block marker escaped, indentation as no-break spaces)
    and ends with a hard line break, so a multi-line message keeps its lines in one paragraph (an empty line
    holds a no-break space: a blank line would end the paragraph, and with it emphasis around the text)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    text = _MARKDOWN.sub(r"\\\1", _ICON_SHORTCODE.sub(":\u200b", text))
    text = _AUTOLINK.sub(lambda m: m.group(0) + "\u200b", text)
    text = _INDENT.sub(_indent, text)
    return _EMPTY_LINE.sub("\u00a0", text).replace("\n", "  \n")


def quantity(n: int | str, one: str, many: str | None = None) -> str:
    """`n` with its noun, singular for exactly one: "1 variant", "2 variants" ("1 variants" and "1 jobs" before);
    `many` where the plural is not `one` + "s" ("review decides" / "reviews decide")."""
    return f"{n} {one if str(n) == '1' else many or one + 's'}"


def labels_text(labels: dict[str, str]) -> str:
    return " · ".join(f"{task}: {label}" for task, label in sorted(labels.items()))


def small_html(text: str) -> str:
    return SMALL.format(escape(text))


def provenance(variant: dict[str, Any]) -> str:
    """Method (for a submitted text: who submitted it), pivot language or model, seed and scores, as one
    plain-text line."""
    params = variant.get("method_params") or {}
    if variant.get("origin") == "submitted":  # a text a member sent to POST /augment: no method made it
        who = variant.get("submitted_by")
        bits = [f"submitted by {who}" if who else "submitted text"]
    else:
        bits = [str(variant.get("method") or "unknown method")]
    pivot = params.get("pivot") or params.get("pivot_language")
    if pivot:
        bits.append(f"pivot {pivot}")
    if variant.get("model_name"):
        bits.append(f"model {variant['model_name']}")
    if variant.get("seed") is not None:
        bits.append(f"seed {variant['seed']}")
    for key, name in (
        ("similarity", "similarity"),
        ("semantic_similarity", "meaning kept"),
        ("novelty", "novelty"),
        ("label_consistency", "label consistency"),
    ):
        if variant.get(key) is not None:
            bits.append(f"{name} {variant[key]:.2f}")
    if variant.get("label_flag"):
        bits.append("⚑ the label model predicts another label")
    # An audit sample is one the rule would approve, left to people to measure how often they agree: the card
    # does not say so, or it would prime the person auditing (it reads like any other pending variant).
    if variant.get("auto_decision") and variant["auto_decision"] != "audit":
        bits.append(
            {
                "approved": "auto-approved",
                "rejected": "auto-rejected (label changed, model)",
            }.get(variant["auto_decision"], variant["auto_decision"])
        )
    if variant.get("origin") == "pseudo_label":
        bits.append("pseudo-label")
    return " · ".join(bits)


def variant_html(source: str | None, variant: dict[str, Any]) -> str:
    """A variant card body: the diff against its source (or the plain text), then its provenance."""
    body = diff_html(source, variant["text"]) if source is not None else text_html(variant["text"])
    extra = provenance(variant)
    generated = variant.get("generated_text")
    if generated and generated != variant["text"]:
        extra += f" · edited (generated: {generated})"
    return body + small_html(extra)


def source_html(family: dict[str, Any]) -> str:
    head = f"Source #{family['id']} · {labels_text(family.get('labels') or {})} · {family.get('split', '')}"
    return small_html(head) + text_html(family["text"])


def duration(seconds: float) -> str:
    """A duration as people read it: "45 s", "12 min", "3 h 05 min"."""
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"

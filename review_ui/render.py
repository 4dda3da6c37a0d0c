"""HTML for user texts, built from fixed templates with every piece of data escaped.

Texts, labels, model names and parameters come from datasets and augmenters: they are shown as text, never
interpreted as HTML or markdown. Everything here goes through `html.escape` and ends up in `st.html`, which
does not run markdown and sanitises the (already inert) result once more.
"""

from __future__ import annotations

import difflib
import re
from html import escape
from typing import Any

_TOKEN = re.compile(r"(\S+)(\s*)")
BOX = "<div style='white-space:pre-wrap;word-break:break-word;line-height:1.55;font-size:0.95rem'>{}</div>"
INS = "<ins style='background:#c9f2cf;text-decoration:none;border-radius:3px;padding:0 2px'>{}</ins>"
DEL = "<del style='background:#fbd5d5;color:#8a1f1f;border-radius:3px;padding:0 2px'>{}</del>"
SMALL = "<div style='color:#666;font-size:0.82rem;margin-top:2px'>{}</div>"


def _words(text: str) -> list[tuple[str, str]]:
    """(word, the whitespace after it): a diff over words that still prints the variant's own spacing."""
    return [(m.group(1), m.group(2)) for m in _TOKEN.finditer(text)]


def diff_segments(source: str, variant: str) -> list[tuple[str, str]]:
    """The variant as (op, text) pieces against its source: "eq" kept, "ins" added or changed words, "del" the
    source words it dropped. Joined, the "eq" and "ins" pieces give the variant with its own spacing."""
    old, new = _words(source), _words(variant)
    matcher = difflib.SequenceMatcher(a=[w for w, _ in old], b=[w for w, _ in new], autojunk=False)
    parts: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
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
    return BOX.format("".join(pieces[op].format(escape(text)) for op, text in diff_segments(source, variant)))


def text_html(text: str) -> str:
    return BOX.format(escape(text))


# CommonMark's escapable punctuation that markdown, HTML and GFM use: `:` and `@` too, since GFM turns
# http://…, www.… and a@b.c into links by themselves (escaped, they show as written and link nowhere).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~$:@])")


def plain(text: str) -> str:
    """Text for Streamlit's markdown elements (messages, captions), markdown and HTML syntax neutralised: no
    link, image, emphasis or tag, and no address that GFM would turn into a link by itself."""
    return _MARKDOWN.sub(r"\\\1", text)


def labels_text(labels: dict[str, str]) -> str:
    return " · ".join(f"{task}: {label}" for task, label in sorted(labels.items()))


def small_html(text: str) -> str:
    return SMALL.format(escape(text))


def provenance(variant: dict[str, Any]) -> str:
    """Method, pivot language or model, seed and scores, as one plain-text line."""
    params = variant.get("method_params") or {}
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
    if variant.get("auto_decision"):
        bits.append(
            {
                "approved": "auto-approved",
                "rejected": "auto-rejected (label changed, model)",
                "audit": "audit: the rule would approve it",
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

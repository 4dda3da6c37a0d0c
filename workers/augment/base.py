"""The augmenter protocol: a batch of texts + a language → up to k variants per text, each with provenance."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from workers.augment.textspans import ProtectedTerms


@dataclass
class Variant:
    """One generated candidate. `params` are the method's effective parameters (defaults filled in), so that
    method + params + model_name + seed reproduce it; `edits` say what changed, for highlighting in review."""

    text: str
    source_index: int  # position of the source in the batch passed to augment()
    variant_index: int  # 0..k-1 for that source
    method: str
    params: dict[str, Any]
    model_name: str | None
    seed: int
    edits: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # method-specific, e.g. the pivot-language text


@dataclass(frozen=True)
class SourceHints:
    """What an augmenter may know about the sources beyond their text: the dataset's protected terms (words no
    augmenter replaces), its annotation guidelines, and each text's labels (task → label). Word-substituting
    augmenters use the terms; the paraphraser puts all three into its prompt."""

    protected: ProtectedTerms | None = None
    guidelines: str = ""
    labels: Sequence[dict[str, str]] | None = None  # per text, in the order of `texts`
    tasks: Sequence[dict[str, Any]] = ()  # the dataset's tasks: [{"name": ..., "labels": [...]}]


class Augmenter(Protocol):
    method: str
    model_name: str | None

    def augment(
        self,
        texts: Sequence[str],
        counts: Sequence[int],
        *,
        seed: int,
        language: str,
        hints: SourceHints | None = None,
    ) -> list[list[Variant]]:
        """For texts[i], up to counts[i] variants (fewer when the text offers nothing to change)."""
        ...


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed from a base seed and any identifying parts (method, source text hash, index).

    Seeding per source and variant index (not per position in a batch) makes a variant independent of how
    texts were batched, so the same job with the same seed gives the same variants."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def match_case(original: str, replacement: str) -> str:
    """Carry the original word's capitalisation over to its replacement."""
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def apply_edits(text: str, edits: Sequence[tuple[int, int, str]]) -> str:
    """Replace character spans (start, end, new) in `text`, leaving the rest (spacing included) as is."""
    out = []
    last = 0
    for start, end, new in sorted(edits):
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)

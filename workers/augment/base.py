"""The augmenter protocol: a batch of texts + a language → up to k variants per text, each with provenance."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

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


ParamsT = TypeVar("ParamsT", bound=BaseModel)

ProgressFn = Callable[[float], None]  # the share (0..1) of one augmenter call's work done so far


class WorkMeter:
    """Counts the units of work (model rows, requests) an augmenter call has finished and reports the share done
    after each model batch, so that a job of a single call still moves. The callback may raise (a cancelled job,
    a lost lease): the call stops at the next batch."""

    def __init__(self, callback: ProgressFn | None, total: float) -> None:
        self.callback = callback
        self.total = total
        self.done = 0.0

    def add(self, units: float) -> None:
        self.done += units
        if self.callback is not None and self.total > 0:
            self.callback(min(1.0, self.done / self.total))

    def phase(self, units: float) -> ProgressFn:
        """A callback for a step that reports its own share done (0..1), the step counting as `units` of work."""
        start = self.done

        def report(share: float) -> None:
            self.add(start + units * min(1.0, share) - self.done)

        return report


@dataclass(frozen=True)
class AugmentRequest(Generic[ParamsT]):
    """One call of an augmenter: up to counts[i] variants of texts[i], with the method's parameters (defaults
    filled in) and what it may know about the sources."""

    texts: Sequence[str]
    counts: Sequence[int]
    seed: int
    language: str
    params: ParamsT
    hints: SourceHints
    progress: ProgressFn | None = None

    def meter(self, total: float) -> WorkMeter:
        """A meter of this call's work, `total` units in all, reporting to the caller's progress callback."""
        return WorkMeter(self.progress, total)


class Augmenter(Generic[ParamsT]):
    """What every augmenter shares: the call (`augment`, its defaults) and how an edited variant is recorded.
    A method implements `run`."""

    method: str
    model_name: str | None
    params_type: type[ParamsT]

    def augment(
        self,
        texts: Sequence[str],
        counts: Sequence[int],
        *,
        seed: int,
        language: str,
        params: ParamsT | None = None,
        hints: SourceHints | None = None,
        progress: ProgressFn | None = None,
    ) -> list[list[Variant]]:
        """For texts[i], up to counts[i] variants (fewer when the text offers nothing to change). `progress`, when
        given, is called with the share of the call's work done after each batch of model work."""
        return self.run(
            AugmentRequest(
                texts, counts, seed, language, params or self.params_type(), hints or SourceHints(), progress
            )
        )

    def run(self, request: AugmentRequest[ParamsT]) -> list[list[Variant]]:
        raise NotImplementedError

    def variant(
        self,
        request: AugmentRequest[ParamsT],
        source_index: int,
        variant_index: int,
        text: str,
        effective: dict[str, Any],
        *,
        edits: list[dict[str, Any]] | None = None,
        details: dict[str, Any] | None = None,
    ) -> Variant:
        """Variant `variant_index` of texts[source_index], made by this augmenter with the parameters
        `effective` (the request's, with what the method decided filled in)."""
        return Variant(
            text=text,
            source_index=source_index,
            variant_index=variant_index,
            method=self.method,
            params=effective,
            model_name=self.model_name,
            seed=request.seed,
            edits=edits or [],
            details=details or {},
        )

    def edited(
        self,
        request: AugmentRequest[ParamsT],
        source_index: int,
        variant_index: int,
        edits: Sequence[tuple[int, int, str]],
        effective: dict[str, Any],
        details: dict[str, Any] | None = None,
    ) -> Variant:
        """The variant that replaces character spans (start, end, new) of texts[source_index]; the spans are
        recorded (in the order given) for highlighting in review."""
        source = request.texts[source_index]
        return self.variant(
            request,
            source_index,
            variant_index,
            apply_edits(source, edits),
            effective,
            edits=[{"start": s, "end": e, "from": source[s:e], "to": new} for s, e, new in edits],
            details=details,
        )


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

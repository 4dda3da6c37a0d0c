"""Quality filters a candidate passes before it reaches review, with a drop count per filter.

In order (a candidate is counted once, by the first filter it fails):
- `control_characters`: a character no database stores (NUL, a lone surrogate) or a control character or bidi
  override its source does not hold: a byte-level language model can write them, and one NUL failed the job's
  every variant at the insert on Postgres (core.textnorm.generated_text_problem);
- `empty`: nothing left after normalisation;
- `identical_to_source`: the same normalised text (NFKC, case-folded, whitespace collapsed) as its source;
- `duplicate`: the normalised hash of any sample of the dataset (any split, originals and earlier variants) or
  of a candidate already kept in this job. The dataset's hashes are not loaded: each batch's hashes are looked up
  in the database (`known_hashes`, one IN-list query per batch), so memory grows with the job, not the dataset;
- `length_ratio`: characters(variant) / characters(source) outside [min, max];
- `leakage`: a near-duplicate of a val or test text — Jaccard similarity of character n-gram sets at or above
  `leakage_threshold`, or containment (one text's n-grams found in the other, core/ngrams.py) at or above
  `leakage_containment`. Variants inherit their source's split (train), so a variant close to a test text
  would leak it into training;
- `low_similarity`: Jaccard with its own source below `min_similarity` (off by default);
- `low_semantic_similarity`: sentence-encoder cosine with its source (workers/augment/encoder.py) below
  `min_semantic_similarity` (off by default). It runs last, on the candidates every other filter kept, in one
  batch: the encoder is the only costly filter.

Every candidate also gets, for review: `semantic_similarity` (when an encoder is given) and `novelty`, what it
adds to training: 1 − its highest character n-gram Jaccard with any training text found by the anchors (those at
least NOVELTY_FLOOR alike; the train originals and the
approved variants when the job started) or its own source. A variant that changes one word of its source has
novelty near 0.

Similarity uses binary hashed character n-grams (core/ngrams.py). The leak guard does not compare a candidate
with every val/test text: core/near_duplicates.py indexes their anchors once per job and scores each candidate
exactly against the few references that share enough of its anchors, so its cost per candidate does not grow
with the number of references (bench/scale.py measures it at 10k, 100k and 1M). `leakage` and `containment`
are the best scores among those references: 0 where no val/test text shares a passage with the candidate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.near_duplicates import ReferenceIndex
from core.ngrams import NgramIndex, pairwise_jaccard
from core.textnorm import content_hash, generated_text_problem, normalize_text
from workers.augment.params import FilterParams

FILTER_NAMES = (
    "empty",
    "control_characters",
    "identical_to_source",
    "duplicate",
    "length_ratio",
    "leakage",
    "low_similarity",
    "low_semantic_similarity",
)


@dataclass
class Verdict:
    keep: bool
    reason: str | None
    content_hash: str
    scores: dict[str, Any] = field(default_factory=dict)

    @property
    def similarity(self) -> float | None:
        return self.scores.get("similarity")

    @property
    def semantic_similarity(self) -> float | None:
        return self.scores.get("semantic_similarity")

    @property
    def novelty(self) -> float | None:
        return self.scores.get("novelty")


NOVELTY_FLOOR = 0.3  # training texts closer than this (Jaccard) to a candidate are found for its novelty
KnownHashes = Callable[[Sequence[str]], set[str]]  # which of these content hashes the dataset holds


class CandidateFilter:
    """The val/test index, the training texts' index and the hashes kept so far for one job; `check` judges a
    batch of candidates.

    `known_hashes` answers which of a batch's hashes the dataset already holds (or is a fixed set of them);
    `reference_texts` are the val/test texts and `training_texts` what a trainer learns from now, each read
    once (a stream from the database will do). `encoder` (a SentenceEncoder) scores meaning; without one,
    candidates get no semantic similarity, and `min_semantic_similarity` above 0 is the caller's error to
    refuse."""

    def __init__(
        self,
        known_hashes: KnownHashes | set[str],
        reference_texts: Iterable[str],
        params: FilterParams,
        *,
        training_texts: Iterable[str] = (),
        training_texts_of: Callable[[np.ndarray], Sequence[str]] | None = None,
        encoder: Any = None,
    ) -> None:
        self.params = params
        self.known = (
            (lambda batch, held=known_hashes: {h for h in batch if h in held})
            if isinstance(known_hashes, set | frozenset)
            else known_hashes
        )
        self.hashes: set[str] = set()  # kept by this job
        self.vectors = NgramIndex(params.leakage_ngram)
        self.index = ReferenceIndex(
            min(params.leakage_threshold, params.leakage_containment), n=params.leakage_ngram
        ).fit(reference_texts)
        # Novelty needs the closest training text where it is close; anchors find those without a candidates ×
        # training texts product (a text under NOVELTY_FLOOR Jaccard of every training text counts as novel).
        # `training_texts_of(positions)`, where given, reads back the few training texts that candidates come
        # close to, so the index need not hold them all (ReferenceIndex).
        self.training = ReferenceIndex(NOVELTY_FLOOR, n=params.leakage_ngram, texts_of=training_texts_of).fit(
            training_texts
        )
        self.encoder = encoder
        self.dropped: Counter[str] = Counter(dict.fromkeys(FILTER_NAMES, 0))
        self.kept = 0

    def check(
        self, pairs: Sequence[tuple[str, str]], known_semantic: Sequence[float | None] | None = None
    ) -> list[Verdict]:
        """`pairs` are (source text, candidate text); `known_semantic` holds the semantic similarities an
        augmenter already computed with the same encoder (None where it did not). Kept candidates' hashes join
        the seen set, so a later duplicate in the same job is dropped; within a call, once every filter has
        judged each candidate against its own source, so that a copy dropped for its meaning beside one source
        does not drop the same text made from another source that it fits."""
        if not pairs:
            return []
        sources = [s for s, _ in pairs]
        # judged first: a lone surrogate cannot even be hashed or n-grammed (its UTF-8 encoding fails), so such a
        # candidate is measured as an empty text and dropped below
        unfit = [generated_text_problem(source, text) is not None for source, text in pairs]
        texts = ["" if bad else c for bad, (_, c) in zip(unfit, pairs, strict=True)]
        cand_vec, cand_sizes = self.vectors.vectors(texts)
        src_vec, src_sizes = self.vectors.vectors(sources)
        similarity = pairwise_jaccard(cand_vec, cand_sizes, src_vec, src_sizes)
        leaks = self.index.best(texts, cand_vec, cand_sizes)
        closest_training = self.training.best(texts, cand_vec, cand_sizes).jaccard
        digests = [content_hash(text) for text in texts]
        in_dataset = self.known(sorted(set(digests)))
        verdicts = []
        p = self.params
        for i, (source, text) in enumerate(zip(sources, texts, strict=True)):
            digest = digests[i]
            norm_len = len(normalize_text(text))
            ratio = norm_len / max(1, len(normalize_text(source)))
            scores = {
                "similarity": round(float(similarity[i]), 4),
                "length_ratio": round(ratio, 4),
                "leakage": round(float(leaks.jaccard[i]), 4),
                "containment": round(float(leaks.containment[i]), 4),
                "novelty": round(1.0 - max(float(similarity[i]), float(closest_training[i])), 4),
            }
            if unfit[i]:
                reason: str | None = "control_characters"
            elif norm_len == 0:
                reason = "empty"
            elif digest == content_hash(source):
                reason = "identical_to_source"
            elif digest in self.hashes or digest in in_dataset:
                reason = "duplicate"
            elif not p.min_length_ratio <= ratio <= p.max_length_ratio:
                reason = "length_ratio"
            elif leaks.same_words(i) >= 0:  # a short val/test text with other punctuation or case
                reason = "leakage"
                scores["leakage_ref"] = leaks.same_words(i)
            elif leaks.jaccard[i] >= p.leakage_threshold:
                reason = "leakage"
                scores["leakage_ref"] = int(leaks.jaccard_ref[i])
            elif leaks.containment[i] >= p.leakage_containment:
                reason = "leakage"
                scores["leakage_ref"] = int(leaks.containment_ref[i])
            elif similarity[i] < p.min_similarity:
                reason = "low_similarity"
            else:
                reason = None
            verdicts.append(Verdict(keep=reason is None, reason=reason, content_hash=digest, scores=scores))
        self._semantic(pairs, verdicts, known_semantic)
        for verdict in verdicts:  # the first of the same text kept, in order; its later copies are duplicates
            if verdict.keep:
                if verdict.content_hash in self.hashes:
                    verdict.keep, verdict.reason = False, "duplicate"
                else:
                    self.hashes.add(verdict.content_hash)
        for verdict in verdicts:
            if verdict.keep:
                self.kept += 1
            else:
                self.dropped[verdict.reason or "empty"] += 1
        return verdicts

    def _semantic(
        self,
        pairs: Sequence[tuple[str, str]],
        verdicts: list[Verdict],
        known: Sequence[float | None] | None,
    ) -> None:
        """Semantic similarity of the candidates every other filter kept, in one batch; then the threshold. A
        candidate dropped here never joins the seen set (a later copy of it is judged afresh)."""
        if self.encoder is None:
            return
        known = known or [None] * len(pairs)
        todo = [i for i, v in enumerate(verdicts) if v.keep and known[i] is None]
        computed = dict(zip(todo, self.encoder.similarities([pairs[i] for i in todo]), strict=True))
        for i, verdict in enumerate(verdicts):
            if not verdict.keep:
                continue
            given = known[i]
            value = float(given if given is not None else computed[i])
            verdict.scores["semantic_similarity"] = round(value, 4)
            if value < self.params.min_semantic_similarity:
                verdict.keep, verdict.reason = False, "low_semantic_similarity"

    def counts(self) -> dict[str, int]:
        return dict(self.dropped)

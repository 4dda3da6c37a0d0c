"""From examples to padded batches: tokenisation, length-grouped batches, oversampling, curriculum.

The app reads the examples (trainer.examples) from its database; the trainer only sees them. Texts are
tokenised once without padding; each batch is padded to its own longest member, and batches are formed from
length-sorted chunks so that members have similar lengths: on short social-media posts this is where most of
the CPU time of "pad everything to 320" goes.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.batching import length_buckets
from trainer.examples import IGNORE, Example, TaskSpec

SORT_CHUNK_BATCHES = 50  # length-sort within chunks of this many batches, so batch order stays random


@dataclass
class Encoded:
    """Token ids (unpadded) and a (N, tasks) label matrix with IGNORE where a label is missing."""

    input_ids: list[list[int]]
    labels: torch.Tensor
    lengths: np.ndarray
    sample_ids: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def label_matrix(examples: list[Example], tasks: list[TaskSpec]) -> torch.Tensor:
    index = [{label: i for i, label in enumerate(t.labels)} for t in tasks]
    rows = [[index[j].get(e.labels.get(t.name, ""), IGNORE) for j, t in enumerate(tasks)] for e in examples]
    return torch.tensor(rows, dtype=torch.long).reshape(len(examples), len(tasks))


CUT_CHARS_PER_TOKEN = 16  # the first bound, in characters per token of max_length; grows ×4 while too short
CUT_SPACES = " \t\n\r"  # whitespace every supported tokenizer splits on (checked per tokenizer: _cut_rule)
ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
# Grapheme_Cluster_Break SpacingMark or Prepend letters of the BMP (the others are M*/C* or above U+FFFF): a
# grapheme may join them with a neighbouring space, and a normaliser that maps graphemes could then drop it
_JOINING_LETTERS = frozenset("\u0e33\u0eb3\u0d4e\uff9e\uff9f")


# BERT's `is_chinese_char` ranges (tokenizers' BertNormalizer pads these with spaces: each is a word)
_CJK = "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
# the character before a cut: one that ends a word before whitespace; for BERT also punctuation or CJK
_WORD_END = re.compile(r"[^ \t\n\r](?=[ \t\n\r])")
_BERT_WORD_END = re.compile(r"[^ \t\n\r](?=[ \t\n\r])|[!-/:-@\[-`{-~" + _CJK + "]")
_SPACE_RUN = re.compile(r"[ \t\n\r]+")


def _plain(c: str) -> bool:
    """A character that forms a grapheme of its own next to a space: a letter, digit, punctuation or symbol of
    the BMP, not a mark, control or format character nor one of the few letters that join a neighbour."""
    return ord(c) < 0x10000 and c not in _JOINING_LETTERS and unicodedata.category(c)[0] in "LNPS"


@dataclass(frozen=True)
class _CutRule:
    bert: bool  # BertNormalizer + BertPreTokenizer: also cut after ASCII punctuation and CJK characters
    reserved: frozenset[str]  # characters of added tokens: never cut between two of them


def _cut_rule(tokenizer: Any) -> _CutRule | None:
    """Whether (and how) a text may be cut before tokenising without changing the tokens kept; None: never.

    Only for fast tokenizers that truncate on the right and pre-tokenise on whitespace, never joining pieces across
    it: BERT's WordPiece (BertNormalizer, BertPreTokenizer) and SentencePiece's Metaspace with `split` (XLM-R and
    the like). The normaliser and pre-tokeniser are asked that each of CUT_SPACES splits two words."""
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import normalizers, pre_tokenizers  # type: ignore[import-untyped]

    pre, norm = backend.pre_tokenizer, backend.normalizer
    bert = isinstance(pre, pre_tokenizers.BertPreTokenizer) and isinstance(norm, normalizers.BertNormalizer | None)
    if not bert and not (isinstance(pre, pre_tokenizers.Metaspace) and getattr(pre, "split", False)):
        return None
    reserved: set[str] = set()
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        content = str(getattr(added, "content", added))
        if any(c in CUT_SPACES for c in content):
            return None  # an added token could span the cut
        reserved.update(content.lower() + content.upper() + content)
    for space in CUT_SPACES:
        for sample in (f"ab{space}cd", f"ab{space} {space}cd"):
            normalized = norm.normalize_str(sample) if norm is not None else sample
            if len(pre.pre_tokenize_str(normalized)) != 2:
                return None
    return _CutRule(bert, frozenset(reserved))


def _cut_point(text: str, bound: int, rule: _CutRule) -> int:
    """The largest i ≤ bound + 1 (> 0, < len(text)) where text[:i] tokenises to a prefix of text's tokens; 0 where
    none is found.

    Always: before a run of CUT_SPACES with plain characters either side (in SentencePiece's normaliser a space
    joined in one grapheme with a mark could vanish, and two words become one). With BERT's tokenizer also: before
    any run of CUT_SPACES, after ASCII punctuation and after a CJK character (each a word of its own). Without
    such a point (one long word, a text in a script written without spaces) the caller tokenises the whole text:
    SentencePiece's unigram segments a word as a whole, so no cut inside a word is known to keep its tokens."""
    ends = [m.end() for m in (_BERT_WORD_END if rule.bert else _WORD_END).finditer(text, 0, bound + 1)]
    for i in reversed(ends):
        if i >= len(text) or (text[i - 1] in rule.reserved and text[i] in rule.reserved):
            continue  # no shorter than the text; not inside an added token (`[SEP]`)
        if rule.bert:
            return i
        after = _SPACE_RUN.match(text, i)
        if after is not None and after.end() < len(text) and _plain(text[i - 1]) and _plain(text[after.end()]):
            return i
    return 0


def tokenize(tokenizer: Any, texts: list[str], max_length: int, chunk: int = 1024) -> list[list[int]]:
    """Token ids of each text, truncated to `max_length` (special tokens included), as the tokenizer gives them.

    A long text is first tokenised cut at a word boundary near max_length × CUT_CHARS_PER_TOKEN characters: where
    the cut text alone fills max_length, its ids are those of the whole text (a word boundary never joins pieces
    across it, so the cut's tokens are a prefix of the text's), and a 20,000-character text costs what 2,048
    do. Else the bound grows ×4, up to the whole text."""
    rule = _cut_rule(tokenizer) if max_length > 0 else None
    ids: list[list[int] | None] = [None] * len(texts)
    pending = list(range(len(texts)))
    bound = max_length * CUT_CHARS_PER_TOKEN
    while pending:
        batch: list[int] = []
        inputs: list[str] = []
        exact: list[bool] = []
        for i in pending:
            text = texts[i]
            cut = _cut_point(text, bound, rule) if rule is not None and len(text) > bound else 0
            batch.append(i)
            inputs.append(text[:cut] if cut else text)
            exact.append(not cut)
        pending = []
        for start in range(0, len(inputs), chunk):
            out = tokenizer(inputs[start : start + chunk], truncation=True, max_length=max_length, padding=False)
            for k, row in enumerate(out["input_ids"], start):
                if exact[k] or len(row) >= max_length:
                    ids[batch[k]] = row
                else:  # the cut text is shorter than max_length tokens: the rest of the text would add some
                    pending.append(batch[k])
        bound *= 4
    return [row for row in ids if row is not None]


def encode(tokenizer: Any, examples: list[Example], tasks: list[TaskSpec], max_length: int) -> Encoded:
    ids = tokenize(tokenizer, [e.text for e in examples], max_length)
    return Encoded(
        ids,
        label_matrix(examples, tasks),
        np.array([len(x) for x in ids], dtype=np.int64),
        [e.sample_id for e in examples],
    )


def pad_batch(input_ids: list[list[int]], pad_id: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence (dynamic) or to `pad_to` (the fixed-length baseline)."""
    width = pad_to or max(len(x) for x in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for i, seq in enumerate(input_ids):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_grouped_batches(
    indices: list[int], lengths: np.ndarray, batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Shuffle, length-sort within chunks of SORT_CHUNK_BATCHES batches, cut into batches, shuffle those.

    Sorting only within chunks keeps epochs different from one another while batches stay length-homogeneous.
    """
    order = list(indices)
    rng.shuffle(order)
    chunk = batch_size * SORT_CHUNK_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        batches.extend(length_buckets(part, lengths, max_rows=batch_size, longest_first=True))
    rng.shuffle(batches)
    return batches


def random_batches(indices: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    order = list(indices)
    rng.shuffle(order)
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def oversample_factors(labels: torch.Tensor, power: float, cap: int, counted: list[int] | None = None) -> list[int]:
    """Repeats per example: (largest class / the example's rarest class) ** power, at most `cap`, at least 1.

    An example counts by its rarest label over tasks, so a rare `message` class is repeated even when its
    `bias` label is common. Classes are counted over the rows `counted` (None: all), as an epoch shows them.
    """
    n, n_tasks = labels.shape
    factors = [1.0] * n
    for j in range(n_tasks):
        col = labels[:, j].tolist()
        counts = Counter(c for c in (col if counted is None else [col[i] for i in counted]) if c != IGNORE)
        if not counts:
            continue
        biggest = max(counts.values())
        for i, c in enumerate(col):
            if c != IGNORE and counts[c]:
                # in logs, so that a large power reaches the cap instead of overflowing a float
                factors[i] = max(factors[i], math.exp(min(power * math.log(biggest / counts[c]), math.log(cap))))
    return [max(1, min(cap, round(f))) for f in factors]


def difficulty_scores(examples: list[Example], lengths: np.ndarray) -> np.ndarray:
    """Given scores where known (1 − a previous model's p(label)); else the length percentile (long: hard)."""
    n = len(examples)
    ranks = np.empty(n)
    ranks[np.argsort(lengths, kind="stable")] = np.arange(n) / max(n - 1, 1)
    return np.array([e.difficulty if e.difficulty is not None else ranks[i] for i, e in enumerate(examples)])


def families_of(examples: list[Example]) -> list[list[int]]:
    """Indices grouped by the text they were made from: an original with its variants (`source_id`), in the
    order each family first appears. Variants whose source is not here still share one family; an example
    with neither a source nor a sample id is a family of its own."""
    by_key: dict[tuple[str, int], list[int]] = {}
    for i, e in enumerate(examples):
        root = e.source_id if e.source_id is not None else e.sample_id
        by_key.setdefault(("sample", root) if root is not None else ("row", i), []).append(i)
    return list(by_key.values())


class TrainBatches:
    """The batches of each epoch: one text per family (`one_per_source`), oversampling repeats, curriculum
    subset, length-grouped or random order.

    With `one_per_source`, each epoch draws one of every original's family (the original and its approved
    variants) at random: variants vary what an epoch shows instead of repeating a source's content within it.
    Added as examples, a class's 99 originals with 3–4 near-copies each are shown 4–5 times an epoch, and the
    model learns them by heart in two epochs (bench/quality_loop.py, issue 15); drawn, the epoch is as long as
    on the originals, and class weights count families (`representatives`)."""

    def __init__(
        self,
        encoded: Encoded,
        examples: list[Example],
        *,
        batch_size: int,
        group_by_length: bool,
        seed: int,
        oversample: bool = False,
        oversample_power: float = 0.5,
        oversample_max: int = 4,
        curriculum: bool = False,
        curriculum_start: float = 0.5,
        curriculum_epochs: int = 3,
        one_per_source: bool = False,
    ) -> None:
        self.encoded = encoded
        self.batch_size = batch_size
        self.group_by_length = group_by_length
        self.seed = seed
        self.curriculum = curriculum
        self.curriculum_start = curriculum_start
        self.curriculum_epochs = curriculum_epochs
        self.families = families_of(examples) if one_per_source else None
        factors = (
            oversample_factors(encoded.labels, oversample_power, oversample_max, self.representatives())
            if oversample
            else [1] * len(encoded)
        )
        self.factors = factors
        self.pool = [i for i, f in enumerate(factors) for _ in range(f)]
        self.easy_order = np.argsort(difficulty_scores(examples, encoded.lengths), kind="stable")

    def fraction(self, epoch: int) -> float:
        """Competence-style schedule: the easiest `start` share first, growing linearly to all data."""
        if not self.curriculum or epoch >= self.curriculum_epochs:
            return 1.0
        return self.curriculum_start + (1 - self.curriculum_start) * epoch / self.curriculum_epochs

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        pool = self.pool
        if self.families is not None:  # a family of one draws nothing: on originals alone, the epochs of "all"
            drawn = [f[rng.randrange(len(f))] if len(f) > 1 else f[0] for f in self.families]
            pool = [i for i in drawn for _ in range(self.factors[i])]
        frac = self.fraction(epoch)
        if frac < 1.0:
            keep = set(self.easy_order[: max(1, math.ceil(frac * len(self.easy_order)))].tolist())
            pool = [i for i in pool if i in keep]
        if self.group_by_length:
            return length_grouped_batches(pool, self.encoded.lengths, self.batch_size, rng)
        return random_batches(pool, self.batch_size, rng)

    def samples_per_epoch(self) -> int:
        """The texts a whole epoch shows (at most: a family counts with its largest repeat factor); what the plan
        times an epoch by."""
        if self.families is not None:
            return sum(max(self.factors[i] for i in f) for f in self.families)
        return len(self.pool)

    def max_batches_per_epoch(self) -> int:
        return math.ceil(self.samples_per_epoch() / self.batch_size)

    def representatives(self) -> list[int] | None:
        """One index per family (its first; a variant copies its source's labels), or None for every index:
        the rows class weights and oversampling count, as an epoch shows them."""
        if self.families is None:
            return None
        return [f[0] for f in self.families]

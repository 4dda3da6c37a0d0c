"""Masked-LM substitution implemented directly on transformers: one forward pass per batch of variants.

nlpaug's ContextualWordEmbsAug runs one forward per substituted word (≈6 per text) and applies the
vocabulary head to every token. Here each variant masks all of its chosen words at once, rows are bucketed
by length under a token budget, and the vocabulary head runs only at the masked positions, so the model's
encoder is nearly the whole cost. Replacements are whole words (no sub-word pieces, specials or
non-alphabetic tokens), sampled from the top-k above a probability floor, and spliced into the original
string's character spans, so spacing and protected tokens (URLs, @mentions, #hashtags, numbers) are kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from core.batching import length_buckets
from core.textnorm import content_hash
from workers.augment import params as P
from workers.augment.base import Augmenter, AugmentRequest, Variant, apply_edits, derive_seed, match_case
from workers.augment.models import LoadedModel, ModelUnavailable
from workers.augment.textspans import ProtectedTerms, Word, candidates

MAX_ROWS_PER_BATCH = 256


TIE_MARGIN = 8  # candidates read past top_k, so that rounding settles which ones make the top k
PROB_DIGITS = 6  # probabilities rounded to this many decimals before ranking and drawing


@dataclass
class Row:
    """One variant to be: a source text with some words masked."""

    source_index: int
    variant_index: int
    text: str
    words: list[Word]  # the masked words, in text order
    rng: random.Random
    input_ids: list[int] = field(default_factory=list)


@dataclass
class Batch:
    rows: list[Row]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def _split_head(model: Any) -> tuple[Any, Any]:
    """(encoder, vocabulary head) when the head is one separable module (BERT's `cls`, RoBERTa's `lm_head`),
    so that the head can run on the masked positions alone; (None, None) otherwise (full forward instead)."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None)
    heads = [m for name, m in model.named_children() if name != prefix and any(True for _ in m.parameters())]
    if base is not None and len(heads) == 1:
        return base, heads[0]
    return None, None


def whole_word_vocab(tokenizer: Any, size: int) -> tuple[list[str], torch.Tensor]:
    """Each vocabulary id's word form ("" when it cannot stand as a whole word) and a 0/-inf logit bias.

    Word-start conventions differ: WordPiece marks continuations (`##ing`), SentencePiece and byte-level BPE
    mark word starts (`▁word`, `Ġword`). A token qualifies when it starts a word and is alphabetic."""
    vocab = tokenizer.get_vocab()
    tokens = [""] * size
    for token, i in vocab.items():
        if i < size:
            tokens[i] = token
    marks = {m: sum(t.startswith(m) for t in tokens) for m in ("##", "▁", "Ġ")}
    marker = max(marks, key=lambda m: marks[m])
    specials = set(tokenizer.all_special_tokens)
    words = [""] * size
    for i, token in enumerate(tokens):
        if not token or token in specials:
            continue
        if marker == "##":
            core = "" if token.startswith("##") else token
        else:
            core = token[len(marker) :] if token.startswith(marker) else ""
        if len(core) >= 2 and core.isalpha():
            words[i] = core
    bias = torch.tensor([0.0 if w else float("-inf") for w in words], dtype=torch.float32)
    return words, bias


_MASK_SLOT = "\ue000"  # a private-use character: where a mask goes, until the source's specials are defused


class MaskedLMAugmenter(Augmenter[P.MaskedLMParams]):
    method = "mlm"
    params_type = P.MaskedLMParams

    def __init__(self, loaded: LoadedModel, *, batch_tokens: int = 8192) -> None:
        self.loaded = loaded
        self.model_name = loaded.name
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.device = loaded.device
        self.batch_tokens = batch_tokens
        if self.tokenizer.mask_token is None:
            raise ModelUnavailable(
                f"model {loaded.name!r} has no mask token: not a masked language model; set "
                "AUGLOOP_MLM_MODEL to a fill-mask model"
            )
        self.mask_id = int(self.tokenizer.mask_token_id)
        # Longest first, so that "[MASK]" is broken up before a shorter special token inside it could be.
        specials = {t for t in self.tokenizer.all_special_tokens if len(t) > 1}
        self._specials = sorted(specials, key=len, reverse=True)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.base, self.head = _split_head(self.model)
        size = int(self.model.get_output_embeddings().weight.shape[0])
        self.words, bias = whole_word_vocab(self.tokenizer, size)
        self.bias = bias.to(self.device)

    # -- building rows and batches -------------------------------------------------------------------------

    def prepare(
        self,
        texts: Sequence[str],
        counts: Sequence[int],
        *,
        seed: int,
        language: str,
        params: P.MaskedLMParams,
        protected: ProtectedTerms | None = None,
    ) -> list[Batch]:
        rows: list[Row] = []
        for index, (text, count) in enumerate(zip(texts, counts, strict=True)):
            words = (
                candidates(text, language, protect_capitalized=params.protect_capitalized, protected=protected)
                if count
                else []
            )
            if not words:
                continue
            source_key = content_hash(text)
            for v in range(count):
                rng = random.Random(derive_seed(seed, self.method, source_key, v))
                k = max(1, min(params.max_words, round(params.aug_p * len(words)), len(words)))
                chosen = [words[i] for i in sorted(rng.sample(range(len(words)), k))]
                # (a source holding the slot character itself gets U+FFFD there: same length, same spans)
                masked = apply_edits(text.replace(_MASK_SLOT, "\ufffd"), [(w.start, w.end, _MASK_SLOT) for w in chosen])
                rows.append(Row(index, v, self._model_input(masked), chosen, rng))
        if not rows:
            return []
        encoded = self.tokenizer(
            [r.text for r in rows],
            truncation=True,
            max_length=params.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        for row, ids in zip(rows, encoded, strict=True):
            row.input_ids = ids
        return self._batches(rows)

    def _model_input(self, masked: str) -> str:
        """The text the model reads: the chosen words become the mask token, and a special token that the source
        itself contains (a literal "[MASK]", "<mask>", "[SEP]" in a post) is broken up so that the tokenizer
        reads it as plain characters: otherwise it would add masks (or segment breaks) nobody chose. Only the
        model's input changes; the variant is spliced into the untouched source."""
        for special in self._specials:
            if special in masked:
                masked = masked.replace(special, special[0] + " " + special[1:])
        return masked.replace(_MASK_SLOT, self.tokenizer.mask_token)

    def _batches(self, rows: list[Row]) -> list[Batch]:
        """Length-sorted batches whose padded size (rows × longest) stays within the token budget."""
        buckets = length_buckets(
            range(len(rows)),
            [len(r.input_ids) for r in rows],
            max_rows=MAX_ROWS_PER_BATCH,
            token_budget=self.batch_tokens,
        )
        return [self._pad([rows[i] for i in bucket]) for bucket in buckets]

    def _pad(self, rows: list[Row]) -> Batch:
        width = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row.input_ids)] = torch.tensor(row.input_ids, dtype=torch.long)
            attention[i, : len(row.input_ids)] = 1
        return Batch(rows, ids, attention)

    # -- the model -----------------------------------------------------------------------------------------

    def masked_logits(self, batch: Batch) -> torch.Tensor:
        """Vocabulary logits at the masked positions only (row-major order), in float32."""
        ids = batch.input_ids.to(self.device)
        attention = batch.attention_mask.to(self.device)
        with torch.inference_mode():
            if self.head is not None:
                hidden = self.base(input_ids=ids, attention_mask=attention)[0]
                at_masks: torch.Tensor = self.head(hidden[ids == self.mask_id]).float()
                return at_masks
            logits = self.model(input_ids=ids, attention_mask=attention).logits
            at_masks = logits[ids == self.mask_id].float()
            return at_masks

    def top_candidates(self, batch: Batch, params: P.MaskedLMParams) -> tuple[list[list[float]], list[list[int]]]:
        with torch.inference_mode():
            logits = self.masked_logits(batch)
            probs = torch.softmax(logits / params.temperature + self.bias, dim=-1)
            # a few past top_k: the last places are settled in _sample, after rounding (see there)
            top_p, top_i = probs.topk(min(params.top_k + TIE_MARGIN, probs.shape[-1]), dim=-1)
        return top_p.cpu().tolist(), top_i.cpu().tolist()

    # -- sampling and splicing -----------------------------------------------------------------------------

    def run(self, request: AugmentRequest[P.MaskedLMParams]) -> list[list[Variant]]:
        params = request.params
        effective = params.model_dump()
        out: list[list[Variant]] = [[] for _ in request.texts]
        batches = self.prepare(
            request.texts,
            request.counts,
            seed=request.seed,
            language=request.language,
            params=params,
            protected=request.hints.protected,
        )
        meter = request.meter(sum(len(b.rows) for b in batches))
        for batch in batches:
            top_p, top_i = self.top_candidates(batch, params)
            at = 0
            for row in batch.rows:
                n_masks = sum(1 for t in row.input_ids if t == self.mask_id)  # fewer when truncated
                edits = []
                for word, probs, ids in zip(
                    row.words[:n_masks], top_p[at : at + n_masks], top_i[at : at + n_masks], strict=True
                ):
                    replacement = self._sample(word, probs, ids, row.rng, params.min_prob, params.top_k)
                    if replacement is not None:
                        edits.append((word.start, word.end, replacement))
                at += n_masks
                if edits:
                    out[row.source_index].append(
                        self.edited(request, row.source_index, row.variant_index, edits, effective)
                    )
            meter.add(len(batch.rows))
        for variants in out:
            variants.sort(key=lambda v: v.variant_index)
        return out

    def _sample(
        self, word: Word, probs: list[float], ids: list[int], rng: random.Random, min_prob: float, top_k: int
    ) -> str | None:
        original = word.text.casefold()
        keep_lower = word.text.islower()
        # A batch of other lengths (padding) or another thread count sums in another order: probabilities differ
        # in their last bits, and near-equal ones swapped places in topk, so one seed gave other variants at
        # another batch size (a CI flake). Rounded, and ties ordered by token id, the draw is the same.
        rounded = ((round(p, PROB_DIGITS), i) for p, i in zip(probs, ids, strict=True))
        ranked = sorted(rounded, key=lambda pair: (-pair[0], pair[1]))
        pool: list[tuple[float, str]] = []
        for p, i in ranked[:top_k]:
            if p < min_prob or p <= 0.0:
                break  # sorted: the rest is lower still
            form = self.words[i]
            if not form or form.casefold() == original:
                continue
            if keep_lower and not form.islower():
                continue  # a capitalised prediction for a lower-case word is mostly a name
            pool.append((p, form))
        if not pool:
            return None
        pick = rng.random() * sum(p for p, _ in pool)
        for p, form in pool:
            pick -= p
            if pick <= 0:
                return match_case(word.text, form)
        return match_case(word.text, pool[-1][1])

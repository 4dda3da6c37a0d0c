"""Semantic similarity: a sentence encoder's cosine between a source and its variant.

Embeddings are the encoder's last hidden states, mean-pooled over the real tokens and L2-normalised (what
sentence-transformers does for all-MiniLM-L6-v2), so any Hugging Face encoder works: the trainer's encoder by
default. Texts are deduplicated, sorted by length and cut into batches under a token budget; on a GPU the
encoder runs in float16 — not bfloat16, whose 8-bit mantissa blurs the third decimal of a cosine, and the
differences between two synonyms in place are that small.

The character n-gram score (workers/augment/filters.py) stays for near-copies: it sees spelling, this sees
meaning.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.batching import length_buckets
from core.encoders import offline_minilm_path
from core.settings import Settings

RECIPE_ENCODER = "bert-base-multilingual-cased"  # the trainer's default (trainer/config.py)
MAX_ROWS = 256
_CACHE_LIMIT = 50_000


def similarity_model_name(settings: Settings) -> str:
    """AUGLOOP_SIMILARITY_MODEL; else the trainer's default encoder (AUGLOOP_TRAINER_DEFAULT_ENCODER); else the
    offline all-MiniLM-L6-v2 where its package is installed; else the recipe's encoder."""
    return settings.similarity_model or settings.trainer_default_encoder or offline_minilm_path() or RECIPE_ENCODER


class SentenceEncoder:
    """Normalised sentence embeddings and cosine similarities, with a bounded cache of embeddings by text (a
    source is compared with each of its variants, in one call or the next)."""

    def __init__(self, loaded: Any, *, batch_tokens: int = 8192, max_length: int = 256) -> None:
        self.name = loaded.name
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.device = loaded.device
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.forwards = 0  # texts encoded (cache misses): what a benchmark or a test counts

    def embed(self, texts: Sequence[str], progress: Callable[[float], None] | None = None) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length. `progress` hears the share of the texts not in the
        cache that are encoded, after each batch."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for text, vector in zip(missing, self._encode(missing, progress) if missing else [], strict=True):
            self._cache[text] = vector
        for text in texts:  # the texts of this call are the newest: the cache lets older ones go first
            self._cache.move_to_end(text)
        out = np.stack([self._cache[t] for t in texts])
        while len(self._cache) > _CACHE_LIMIT:
            self._cache.popitem(last=False)
        return out

    def similarities(
        self, pairs: Sequence[tuple[str, str]], progress: Callable[[float], None] | None = None
    ) -> np.ndarray:
        """Cosine of each (a, b), in [-1, 1]; `progress` as in `embed`, over both sides' texts."""
        if not pairs:
            return np.zeros(0)
        both = self.embed([x for x, _ in pairs] + [y for _, y in pairs], progress)
        a, b = both[: len(pairs)], both[len(pairs) :]
        cosines: np.ndarray = np.clip((a * b).sum(axis=1), -1.0, 1.0).astype(np.float64)
        return cosines

    def _encode(self, texts: list[str], progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
        import torch

        ids = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        pad = int(self.tokenizer.pad_token_id or 0)
        out: list[np.ndarray | None] = [None] * len(texts)
        encoded = 0
        for bucket in length_buckets(
            range(len(texts)), [len(x) for x in ids], max_rows=MAX_ROWS, token_budget=self.batch_tokens
        ):
            width = max(len(ids[i]) for i in bucket)
            batch = torch.full((len(bucket), width), pad, dtype=torch.long)
            mask = torch.zeros((len(bucket), width), dtype=torch.long)
            for row, i in enumerate(bucket):
                batch[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=batch.to(self.device), attention_mask=mask.to(self.device)
                ).last_hidden_state.float()
                weights = mask.to(self.device).unsqueeze(-1).float()
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
                vectors = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            for row, i in enumerate(bucket):
                out[i] = vectors[row]
            encoded += len(bucket)
            if progress is not None:
                progress(encoded / len(texts))
        self.forwards += len(texts)
        assert all(v is not None for v in out)
        return out  # type: ignore[return-value]

"""Back-translation through MarianMT-style seq2seq models: source → pivot → source, batched `generate`.

The first leg diversifies (sampling, or beams with `num_return_sequences` = k), the second leg translates each
pivot text back greedily (or with beams). Both legs tokenise once, sort by length and cut batches under a
token budget, so that a batch of tweets is not padded to the length of a Facebook essay (nlpaug pads the whole
list to its longest text). Every call passes `max_new_tokens`: a model that never emits EOS (a random test
model, or a real one caught in a repetition loop) stops at min(max_new_tokens, length_factor × longest source
+ 8) tokens — output beyond that would fail the length-ratio filter anyway.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from core.batching import length_buckets
from core.textnorm import content_hash
from workers.augment import params as P
from workers.augment.base import Augmenter, AugmentRequest, Variant, WorkMeter, derive_seed
from workers.augment.catalog import base_language
from workers.augment.models import LoadedModel, ModelUnavailable

MAX_ROWS_PER_BATCH = 128


def new_token_cap(source_tokens: int, params: P.BackTranslationParams) -> int:
    """Tokens generated at most for a source this long: more would fail the length-ratio filter anyway."""
    return min(params.max_new_tokens, math.ceil(params.length_factor * source_tokens) + 8)


class BackTranslationAugmenter(Augmenter[P.BackTranslationParams]):
    method = "backtranslation"
    params_type = P.BackTranslationParams

    def __init__(
        self, routes: list[dict[str, str]], loader: Callable[[str], LoadedModel], *, batch_tokens: int = 8192
    ) -> None:
        self.routes = {base_language(r["pivot"]): r for r in routes}
        self.loader = loader
        self.batch_tokens = batch_tokens
        self.model_name = "; ".join(f"{r['forward']} → {r['backward']}" for r in routes)

    def run(self, request: AugmentRequest[P.BackTranslationParams]) -> list[list[Variant]]:
        # request.hints go unused: nothing to protect, a translation rewrites every word
        texts, params = request.texts, request.params
        pivots = [base_language(p) for p in params.pivots] if params.pivots else list(self.routes)
        unknown = [p for p in pivots if p not in self.routes]
        if unknown:
            language = request.language
            raise ModelUnavailable(f"no back-translation route {language}→{unknown[0]}→{language} (AUGLOOP_BT_ROUTES)")
        out: list[list[Variant]] = [[] for _ in texts]
        # The work is rows of generation: a source's k variants through a pivot are k output rows there and k
        # input rows back; the meter counts both legs.
        meter = request.meter(2 * sum(n for t, n in zip(texts, request.counts, strict=True) if t.strip()))
        for p_index, pivot in enumerate(pivots):
            # Variant v of a text goes through pivots[v % len(pivots)]: k variants spread over the pivots.
            wanted: dict[int, list[int]] = defaultdict(list)  # variants via this pivot → texts asking for them
            for i, count in enumerate(request.counts):
                mine = [v for v in range(count) if v % len(pivots) == p_index]
                if mine and texts[i].strip():
                    wanted[len(mine)].append(i)
            for k, indices in sorted(wanted.items()):
                self._through_pivot(texts, indices, k, pivot, p_index, len(pivots), request.seed, params, out, meter)
        for variants in out:
            variants.sort(key=lambda v: v.variant_index)
        return out

    def _through_pivot(
        self,
        texts: Sequence[str],
        indices: list[int],
        k: int,
        pivot: str,
        p_index: int,
        n_pivots: int,
        seed: int,
        params: P.BackTranslationParams,
        out: list[list[Variant]],
        meter: WorkMeter,
    ) -> None:
        route = self.routes[pivot]
        forward = self.loader(route["forward"])
        backward = self.loader(route["backward"])
        first_leg = (
            {
                "do_sample": True,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": 0,
                "num_beams": 1,
            }
            if params.decoding == "sample"
            else {"do_sample": False, "num_beams": max(params.num_beams, k)}
        )
        if params.sample_back:
            second_leg = {
                **first_leg,
                "num_beams": 1,
                "do_sample": True,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": 0,
            }
        elif params.decoding == "sample":
            second_leg = {"do_sample": False, "num_beams": 1}
        else:
            second_leg = {"do_sample": False, "num_beams": params.num_beams}
        sources = [route.get("forward_prefix", "") + texts[i] for i in indices]
        pivot_texts = self.generate(forward, sources, k, first_leg, params, seed, ("forward", pivot), meter)
        flat = [(i, j, t) for i, outs in zip(indices, pivot_texts, strict=True) for j, t in enumerate(outs)]
        back = self.generate(
            backward,
            [route.get("backward_prefix", "") + t for _, _, t in flat],
            1,
            second_leg,
            params,
            seed,
            ("backward", pivot),
            meter,
        )
        effective = {**params.model_dump(), "pivot": pivot}
        model_name = f"{route['forward']} → {route['backward']}"
        for (i, j, pivot_text), outs in zip(flat, back, strict=True):
            text = outs[0].strip()
            if not text:
                continue
            out[i].append(
                Variant(
                    text=text,
                    source_index=i,
                    variant_index=p_index + j * n_pivots,
                    method=self.method,
                    params=effective,
                    model_name=model_name,
                    seed=seed,
                    details={"pivot_text": pivot_text},
                )
            )

    def generate(
        self,
        loaded: LoadedModel,
        sources: list[str],
        k: int,
        decoding: dict[str, Any],
        params: P.BackTranslationParams,
        seed: int,
        leg: tuple[str, str],
        meter: WorkMeter | None = None,
    ) -> list[list[str]]:
        """k outputs per source, generated in length-sorted batches under the token budget; each batch's rows
        (k per source) go on the meter."""
        if not sources:
            return []
        tokenizer = loaded.tokenizer
        encoded = tokenizer(sources, truncation=True, max_length=params.max_source_tokens, return_attention_mask=False)[
            "input_ids"
        ]
        results: list[list[str]] = [[] for _ in sources]
        for batch in self._batches(list(range(len(sources))), encoded, k, params):
            cap = new_token_cap(max(len(encoded[i]) for i in batch), params)
            padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            inputs = {name: tensor.to(loaded.device) for name, tensor in padded.items()}
            batch_seed = derive_seed(seed, self.method, leg, [content_hash(sources[i]) for i in batch])
            devices = [loaded.device.index or 0] if loaded.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(batch_seed)
                generated = loaded.model.generate(**inputs, max_new_tokens=cap, num_return_sequences=k, **decoding)
            decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
            for row, i in enumerate(batch):
                results[i] = decoded[row * k : (row + 1) * k]
            if meter is not None:
                meter.add(len(batch) * k)
        return results

    def _batches(
        self, indices: list[int], encoded: list[list[int]], k: int, params: P.BackTranslationParams
    ) -> list[list[int]]:
        """Length-sorted sources cut so that rows × k × (source + output budget) stays within budget."""
        return length_buckets(
            indices,
            [len(ids) for ids in encoded],
            max_rows=MAX_ROWS_PER_BATCH,
            token_budget=self.batch_tokens,
            row_cost=lambda longest: k * (longest + new_token_cap(longest, params)),
        )

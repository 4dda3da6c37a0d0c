"""Paraphrasing with an instruction-tuned causal LM: the model rewrites each source k times.

The prompt carries the text, its labels (task = label, for every task the text has) and the dataset's
guidelines, and asks for one rewrite with the same meaning and the same labels, in the text's language, with
names, numbers, URLs, @mentions, #hashtags and the dataset's protected terms kept as they are. Two ways to run
the same prompt:
- locally, through transformers `generate` (a hub id or a local directory; AUGLOOP_PARAPHRASE_MODEL): the
  tokenizer's chat template when it has one, prompts sorted by length and cut into batches under the token
  budget, k sampled rewrites per prompt (`num_return_sequences`), seeded per batch, always `max_new_tokens`;
- through any OpenAI-compatible chat-completions endpoint (AUGLOOP_PARAPHRASE_API_URL; a vLLM server for
  throughput at scale): one request per source asking for `n` = k choices, seeded per source, several requests
  in flight.
Either way the rewrites go through the job's filters like every other method's variants.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from core.batching import length_buckets
from core.settings import Settings
from core.textnorm import content_hash, term_match_key
from workers.augment import params as P
from workers.augment.base import Augmenter, AugmentRequest, SourceHints, Variant, WorkMeter, derive_seed
from workers.augment.models import LoadedModel, ModelUnavailable

PROMPT_VERSION = 1
MAX_ROWS_PER_BATCH = 64
SYSTEM_PROMPT = (
    "You rewrite texts for a labelled text-classification dataset. Write one paraphrase of the user's text: "
    "the same meaning and the same labels, in the same language, with different wording. Keep names, "
    "numbers, URLs, @mentions and #hashtags exactly as they are. Reply with the paraphrase only."
)
# What models put around an answer despite the instruction: a label, quotes, a list marker.
_PREAMBLE = re.compile(r"^\s*(?:paraphrase|rewrite|rewritten text|here is[^:]*)\s*:\s*", re.IGNORECASE)
_QUOTES = ('"', "“", "”", "'")


def build_messages(
    text: str, labels: dict[str, str], hints: SourceHints, params: P.ParaphraseParams
) -> list[dict[str, str]]:
    """The chat messages for one source."""
    parts = []
    if labels:
        parts.append("Labels: " + "; ".join(f"{task} = {label}" for task, label in labels.items()))
    guidelines = hints.guidelines.strip() if params.include_guidelines else ""
    if guidelines and params.max_guideline_chars:
        parts.append("Annotation guidelines:\n" + guidelines[: params.max_guideline_chars])
    folded = term_match_key(text)  # the text read as terms match it ("café" typed either way, or fullwidth)
    protected = [t for t in (hints.protected.terms if hints.protected else []) if term_match_key(t) in folded]
    if protected:
        parts.append("Keep these words: " + ", ".join(protected))
    parts.append("Text:\n" + text)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def clean(output: str) -> str:
    """The rewrite without a preamble ("Paraphrase:") or quotes around the whole of it."""
    text = _PREAMBLE.sub("", output.strip()).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


@dataclass(frozen=True)
class Prompts:
    """What a generator is asked for: counts[i] sampled completions of conversations[i]; keys[i] (the
    source's content hash) and `seed` seed them."""

    conversations: list[list[dict[str, str]]]
    counts: list[int]
    keys: list[str]
    seed: int
    params: P.ParaphraseParams
    meter: WorkMeter | None = None  # counts the completions made (counts[i] per conversation)

    def made(self, indices: Sequence[int]) -> None:
        """The completions of conversations `indices` are made: on the meter."""
        if self.meter is not None:
            self.meter.add(sum(self.counts[i] for i in indices))


class Generator(Protocol):
    model_name: str
    source: str  # "local" or the endpoint's URL

    def generate(self, prompts: Prompts) -> list[list[str]]:
        """prompts.counts[i] completions of prompts.conversations[i]."""
        ...


class LocalGenerator:
    """transformers `generate` on a loaded causal LM (left padding, so every row continues its own prompt)."""

    source = "local"

    def __init__(self, loaded: LoadedModel, batch_tokens: int = 8192) -> None:
        self.loaded = loaded
        self.model_name = loaded.name
        self.batch_tokens = batch_tokens
        tokenizer = loaded.tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "left"

    def render(self, conversation: list[dict[str, str]]) -> str:
        tokenizer = self.loaded.tokenizer
        if getattr(tokenizer, "chat_template", None):
            return str(tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True))
        # A base model: the same content as plain text, ending where the answer starts.
        return "\n\n".join(m["content"] for m in conversation) + "\n\nParaphrase:"

    def generate(self, prompts: Prompts) -> list[list[str]]:
        import torch

        conversations, counts, keys, params = prompts.conversations, prompts.counts, prompts.keys, prompts.params
        tokenizer, model, device = self.loaded.tokenizer, self.loaded.model, self.loaded.device
        encoded = tokenizer(
            [self.render(c) for c in conversations],
            truncation=True,
            max_length=params.max_source_tokens + 512,
            add_special_tokens=False,
            return_attention_mask=False,
        )["input_ids"]
        # The answer's budget follows the source's length (the prompt's last part), not the whole prompt's.
        source_tokens = [len(tokenizer(c[-1]["content"], add_special_tokens=False)["input_ids"]) for c in conversations]
        results: list[list[str]] = [[] for _ in conversations]
        rows = [i for i, n in enumerate(counts) if n > 0]

        def cap(i: int) -> int:
            return min(params.max_new_tokens, int(params.length_factor * source_tokens[i]) + 16)

        for batch in length_buckets(
            rows,
            [len(x) for x in encoded],
            max_rows=MAX_ROWS_PER_BATCH,
            token_budget=self.batch_tokens,
            row_cost=lambda longest: longest + params.max_new_tokens,
        ):
            k = max(counts[i] for i in batch)
            padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            inputs = {name: tensor.to(device) for name, tensor in padded.items()}
            batch_seed = derive_seed(prompts.seed, "paraphrase", [keys[i] for i in batch])
            devices = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(batch_seed)
                generated = model.generate(
                    **inputs,
                    do_sample=True,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    top_k=0,
                    max_new_tokens=max(cap(i) for i in batch),
                    num_return_sequences=k,
                    pad_token_id=tokenizer.pad_token_id,
                )
            width = inputs["input_ids"].shape[1]
            decoded = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for row, i in enumerate(batch):
                results[i] = decoded[row * k : row * k + counts[i]]
            prompts.made(batch)
        return results


MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a chat completion of a few rewrites is kilobytes; more is a broken server


def endpoint_url(url: str, path: str) -> str:
    """`path` under an endpoint's base URL, its query (`?api-version=...`) kept after the path."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


def shown_url(url: str) -> str:
    """An endpoint's URL as members may see it (job errors, a variant's provenance, the augmenters' note):
    without credentials in it (`user:pass@`) or its query (`?key=...`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """(status, body) of a POST, within `timeout` seconds in all (httpx's timeout bounds each read, and a server
    that trickles a byte at a time held a job for ever) and MAX_RESPONSE_BYTES. Raises TimeoutError or
    ValueError past them (the job retries)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
        received = bytearray()
        for chunk in response.iter_bytes():
            received += chunk
            if len(received) > MAX_RESPONSE_BYTES:
                raise ValueError(f"the endpoint answered more than {MAX_RESPONSE_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the endpoint did not finish its answer within {timeout:g} s")
        return response.status_code, bytes(received)


class EndpointGenerator:
    """An OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp's server...)."""

    def __init__(
        self, url: str, model: str, *, api_key: str = "", timeout: float = 120.0, concurrency: int = 8
    ) -> None:
        self.url = url
        self.source = shown_url(url)  # what jobs, variants and errors name
        self.model_name = model
        self.api_key = api_key
        self.timeout = timeout
        self.concurrency = max(1, concurrency)

    def _redacted(self, text: str, longest: int | None = None) -> str:
        """An endpoint's words as a job error may carry them: its key (an echoing server repeats the header,
        in any letter case) and the URL's secrets taken out, then cut to `longest` characters (cut first, a key
        across the cut kept its first characters: an attacker's find)."""
        parts = urlsplit(self.url)
        secrets = {self.api_key, self.url, parts.query, parts.password or "", parts.username or ""}
        secrets |= {value for _key, value in parse_qsl(parts.query)}
        if parts.username or parts.password:  # sent as HTTP Basic: an echoing server repeats it in base64
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
            secrets.add(base64.b64encode(pair).decode("ascii"))
        for secret in sorted(secrets - {""}, key=len, reverse=True):  # the longest first: a key inside the URL
            text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
        return text if longest is None else text[:longest]

    def _complete(
        self, conversation: list[dict[str, str]], n: int, seed: int, params: P.ParaphraseParams, cap: int
    ) -> list[str]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.model_name,
            "messages": conversation,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": cap,
            "seed": seed,
        }
        try:
            status, raw = post_json(endpoint_url(self.url, "/chat/completions"), body, headers, self.timeout)
        except (httpx.TransportError, TimeoutError, ValueError) as err:  # the job is retried with backoff
            raise ConnectionError(
                f"paraphrase endpoint {self.source} unreachable: {self._redacted(str(err))}"
            ) from None
        if status in (400, 401, 403, 404, 422):
            # A wrong model name, key or URL: no retry can fix it.
            said = self._redacted(raw[:65536].decode("utf-8", errors="replace"), longest=300)
            raise ModelUnavailable(
                f"paraphrase endpoint {self.source} refused the request ({status}: {said}); check "
                "AUGLOOP_PARAPHRASE_API_URL, AUGLOOP_PARAPHRASE_API_MODEL and AUGLOOP_PARAPHRASE_API_KEY"
            )
        if status >= 400:
            raise ConnectionError(f"paraphrase endpoint {self.source} answered {status}")
        try:
            return completions(raw, n)
        except (ValueError, RecursionError) as err:  # not JSON (a proxy's HTML page), nested past reading, no choices
            # retried, as a 5xx is: a proxy or a server starting up answers so for a while
            raise ConnectionError(
                f"paraphrase endpoint {self.source} answered something that is no chat completion "
                f"({self._redacted(str(err), longest=200)})"
            ) from None

    def generate(self, prompts: Prompts) -> list[list[str]]:
        conversations, counts, params = prompts.conversations, prompts.counts, prompts.params

        def one(i: int) -> list[str]:
            if counts[i] <= 0:
                return []
            # Words × 2 stands in for the source's tokens: the server tokenises, we do not load its tokenizer.
            cap = min(
                params.max_new_tokens, int(params.length_factor * 2 * len(conversations[i][-1]["content"].split())) + 16
            )
            source_seed = derive_seed(prompts.seed, "paraphrase", prompts.keys[i]) % 2**31  # servers take 32-bit seeds
            return self._complete(conversations[i], counts[i], source_seed, params, cap)

        results: list[list[str]] = [[] for _ in conversations]
        pool = ThreadPoolExecutor(self.concurrency)
        futures = {pool.submit(one, i): i for i in range(len(conversations))}
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                prompts.made([i])  # may raise (a cancelled job)
        except BaseException:
            # The requests not yet sent are dropped, and the job does not wait for those in flight (each ends
            # within the endpoint's timeout on its own thread).
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results


def completions(raw: bytes, n: int) -> list[str]:
    """The rewrites in a chat-completions answer, in order: each choice's message content, where it is text (a
    server's other shapes give none, never the repr of an object as a variant's text). An answer that is not a
    JSON object with a list of choices is a ValueError (the job retries)."""
    import json

    answer = json.loads(raw)
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list):
        raise ValueError("the endpoint's answer holds no list of choices")

    def index(choice: dict[str, Any]) -> int:
        value = choice.get("index", 0)
        return value if isinstance(value, int) else 0

    picked = sorted((c for c in choices if isinstance(c, dict)), key=index)
    out = []
    for choice in picked:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        out.append(content if isinstance(content, str) else "")
    return out[:n]


def endpoint_generator(settings: Settings) -> EndpointGenerator:
    return EndpointGenerator(
        settings.paraphrase_api_url,
        settings.paraphrase_api_model or settings.paraphrase_model,
        api_key=settings.paraphrase_api_key,
        timeout=settings.paraphrase_api_timeout,
        concurrency=settings.paraphrase_api_concurrency,
    )


def local_generator(loaded: LoadedModel, batch_tokens: int) -> LocalGenerator:
    return LocalGenerator(loaded, batch_tokens)


class ParaphraseAugmenter(Augmenter[P.ParaphraseParams]):
    method = "paraphrase"
    params_type = P.ParaphraseParams

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.model_name = generator.model_name

    def run(self, request: AugmentRequest[P.ParaphraseParams]) -> list[list[Variant]]:
        texts, counts, params, hints = request.texts, request.counts, request.params, request.hints
        labels = list(hints.labels) if hints.labels is not None else [{} for _ in texts]
        chosen = [i for i, (t, n) in enumerate(zip(texts, counts, strict=True)) if n > 0 and t.strip()]
        outputs = self.generator.generate(
            Prompts(
                conversations=[build_messages(texts[i], labels[i], hints, params) for i in chosen],
                counts=[counts[i] for i in chosen],
                keys=[content_hash(texts[i]) for i in chosen],
                seed=request.seed,
                params=params,
                meter=request.meter(sum(counts[i] for i in chosen)),
            )
        )
        effective = {
            **params.model_dump(),
            "prompt_version": PROMPT_VERSION,
            "via": self.generator.source,
            "language": request.language,
        }
        out: list[list[Variant]] = [[] for _ in texts]
        for i, rewrites in zip(chosen, outputs, strict=True):
            for v, raw in enumerate(rewrites):
                text = clean(raw)
                if text:
                    out[i].append(self.variant(request, i, v, text, effective))
        return out

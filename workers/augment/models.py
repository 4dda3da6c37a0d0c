"""A per-process cache of models and augmenters: each model loads once per worker and stays in memory.

Device: AUGLOOP_AUGMENT_DEVICE, else cuda when available, else cpu. On cuda the weights load in bfloat16 (or
float16 where bf16 is unsupported); on cpu in float32. A model that cannot be found locally or on the hub
raises ModelUnavailable (the job fails permanently) with a message naming the model and the setting to change
(a retry cannot fix it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from core.encoders import encoder_problem, load_errors
from core.settings import Settings, get_settings

log = logging.getLogger("augloop.augment")

_lock = threading.RLock()
_models: dict[tuple[str, str, str, str], LoadedModel] = {}
_augmenters: dict[tuple[Any, ...], Any] = {}
_threads_set = False


class ModelUnavailable(Exception):
    """The configured model (or data) is missing: the message says what to install or which setting to set.

    A retry cannot fix it: the augment job handler fails its job permanently."""


@dataclass
class LoadedModel:
    name: str
    tokenizer: Any
    model: Any
    device: Any  # torch.device
    dtype: Any  # torch.dtype


def resolve_device(settings: Settings | None = None):  # type: ignore[no-untyped-def]
    import torch

    settings = settings or get_settings()
    if settings.augment_device:
        return torch.device(settings.augment_device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(device, settings: Settings | None = None, *, prefer_fp16: bool = False):  # type: ignore[no-untyped-def]
    """The weights' dtype; `prefer_fp16` takes float16 over bfloat16 on a GPU under `auto` (the sentence
    encoder: its cosines need float16's longer mantissa)."""
    import torch

    settings = settings or get_settings()
    choice = settings.augment_dtype.lower()
    if choice != "auto":
        try:
            return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[choice]
        except KeyError:
            raise ModelUnavailable(
                f"AUGLOOP_AUGMENT_DTYPE={settings.augment_dtype!r}: use auto, float32, float16 or bfloat16"
            ) from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() and not prefer_fp16 else torch.float16
    return torch.float32


def _configure_threads(settings: Settings) -> None:
    global _threads_set
    if not _threads_set and settings.augment_torch_threads > 0:
        import torch

        torch.set_num_threads(settings.augment_torch_threads)
    _threads_set = True


def _load(kind: str, name: str, setting: str, settings: Settings) -> LoadedModel:
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    _configure_threads(settings)
    device = resolve_device(settings)
    dtype = resolve_dtype(device, settings, prefer_fp16=kind == "encoder")
    key = (kind, name, str(device), str(dtype))
    with _lock:
        cached = _models.get(key)
        if cached is not None:
            return cached
        auto = {
            "mlm": AutoModelForMaskedLM,
            "seq2seq": AutoModelForSeq2SeqLM,
            "causal": AutoModelForCausalLM,
            "encoder": AutoModel,
        }[kind]
        try:
            # A causal LM pads on the left, so that every row of a batch generates right after its prompt.
            extra = {"padding_side": "left"} if kind == "causal" else {}
            tokenizer = AutoTokenizer.from_pretrained(name, **extra)
            model = auto.from_pretrained(name, dtype=dtype)
        except load_errors() as err:  # the setting must change, not the attempt (core.encoders.load_errors)
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelUnavailable(
                f"cannot load {kind} model {name!r}: {first_line[:300]} — set {setting} to a hub model id "
                "or a local directory written by save_pretrained (hub downloads need network access and "
                "HF_HUB_OFFLINE unset)"
            ) from err
        if kind == "encoder" and (problem := encoder_problem(model, tokenizer)) is not None:
            raise ModelUnavailable(f"cannot use {name!r} as the similarity encoder: {problem} — set {setting}")
        model.to(device)
        model.eval()
        loaded = LoadedModel(name=name, tokenizer=tokenizer, model=model, device=device, dtype=dtype)
        _models[key] = loaded
        log.info("loaded %s model %s on %s (%s)", kind, name, device, dtype)
        return loaded


def load_masked_lm(name: str, settings: Settings | None = None) -> LoadedModel:
    return _load("mlm", name, "AUGLOOP_MLM_MODEL", settings or get_settings())


def load_seq2seq(name: str, settings: Settings | None = None) -> LoadedModel:
    return _load("seq2seq", name, "AUGLOOP_BT_ROUTES", settings or get_settings())


def load_causal_lm(name: str, settings: Settings | None = None) -> LoadedModel:
    return _load("causal", name, "AUGLOOP_PARAPHRASE_MODEL", settings or get_settings())


def get_sentence_encoder(settings: Settings | None = None):  # type: ignore[no-untyped-def]
    """The sentence encoder of semantic similarity (workers/augment/encoder.py), loaded once per process."""
    from workers.augment.encoder import SentenceEncoder, similarity_model_name

    settings = settings or get_settings()
    name = similarity_model_name(settings)
    key: tuple[Any, ...] = (
        "encoder",
        name,
        settings.augment_device,
        settings.augment_dtype,
        settings.augment_batch_tokens,
    )
    with _lock:
        encoder = _augmenters.get(key)
        if encoder is None:
            loaded = _load("encoder", name, "AUGLOOP_SIMILARITY_MODEL", settings)
            encoder = SentenceEncoder(loaded, batch_tokens=settings.augment_batch_tokens)
            _augmenters[key] = encoder
        return encoder


def get_augmenter(method: str, language: str, settings: Settings | None = None):  # type: ignore[no-untyped-def]
    """The augmenter for `method`, built once per process for the current settings."""
    settings = settings or get_settings()
    if method == "mlm":
        key: tuple[Any, ...] = (
            method,
            settings.mlm_model,
            settings.augment_device,
            settings.augment_dtype,
            settings.augment_batch_tokens,
        )
    elif method == "backtranslation":
        key = (
            method,
            language,
            repr(settings.bt_routes),
            settings.augment_device,
            settings.augment_dtype,
            settings.augment_batch_tokens,
        )
    elif method == "wordnet":
        key = (method, str(settings.nltk_data))
    elif method == "paraphrase":
        key = (
            method,
            settings.paraphrase_model,
            settings.paraphrase_api_url,
            settings.paraphrase_api_model,
            settings.augment_device,
            settings.augment_dtype,
            settings.augment_batch_tokens,
        )
    else:
        raise ModelUnavailable(f"unknown augmentation method {method!r}")
    with _lock:
        augmenter = _augmenters.get(key)
        if augmenter is None:
            augmenter = _build(method, language, settings)
            _augmenters[key] = augmenter
        return augmenter


def _build(method: str, language: str, settings: Settings):  # type: ignore[no-untyped-def]
    if method == "mlm":
        from workers.augment.masked_lm import MaskedLMAugmenter

        return MaskedLMAugmenter(
            load_masked_lm(settings.mlm_model, settings), batch_tokens=settings.augment_batch_tokens
        )
    if method == "backtranslation":
        from workers.augment.back_translation import BackTranslationAugmenter
        from workers.augment.catalog import bt_routes

        # Legs load on first use: a job that asks for one pivot never loads the others' models.
        return BackTranslationAugmenter(
            bt_routes(settings, language),
            lambda name: load_seq2seq(name, settings),
            batch_tokens=settings.augment_batch_tokens,
        )
    if method == "paraphrase":
        from workers.augment.paraphrase import ParaphraseAugmenter, endpoint_generator, local_generator

        if settings.paraphrase_api_url:
            return ParaphraseAugmenter(endpoint_generator(settings))
        return ParaphraseAugmenter(
            local_generator(load_causal_lm(settings.paraphrase_model, settings), settings.augment_batch_tokens)
        )
    from workers.augment.wordnet import WordNetAugmenter
    from workers.augment.wordnet_data import nltk_data_dir

    # The sentence encoder loads on the first job that reads synonyms in context, not before.
    return WordNetAugmenter(
        nltk_data_dir(settings),
        encoder=lambda: get_sentence_encoder(settings),
        context_by_default=resolve_device(settings).type == "cuda",
    )


def clear_cache() -> None:
    """Forget every loaded model (tests that swap models, or a worker reclaiming memory)."""
    with _lock:
        _models.clear()
        _augmenters.clear()

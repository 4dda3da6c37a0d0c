"""Inference: batched, length-sorted, dynamically padded; for a trained model, a saved run, or an ensemble.

A process-wide cache keeps the last few loaded models, so the API's predict endpoint loads a run once.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainer.config import configured_precision
from trainer.data import Encoded, pad_batch, tokenize
from trainer.errors import TrainerError
from trainer.examples import TaskSpec

if TYPE_CHECKING:
    from trainer.model import MultiTaskModel


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainerError(f"config.device is {device!r} but no CUDA device is available", field="config.device")
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise TrainerError(
            f"config.device is {device!r} but this process sees {torch.cuda.device_count()} GPU(s)",
            field="config.device",
        )
    return chosen


# x86 flags of native bf16 matrix products (AVX512-BF16, AMX-BF16), as /proc/cpuinfo names them
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPU_BF16_ENV = "AUGLOOP_CPU_BF16"  # 1 or 0: overrides what the flags say (a VM that hides or fakes them)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_native_bf16() -> bool:
    """Whether `amp: auto` takes bf16 on this CPU: AUGLOOP_CPU_BF16 (1 or 0) where set, else whether the CPU
    computes bf16 matrix products natively and torch's oneDNN can use them. There bf16 autocast trains MiniLM
    1.32× and predicts 1.57× faster than fp32 to the same val macro-F1 (bench/cpu_precision.py); elsewhere bf16
    is emulated and slower than fp32."""
    forced = forced_cpu_bf16()
    if forced is not None:
        return forced
    return bool(torch.backends.mkldnn.is_available()) and cpu_flags_bf16()  # type: ignore[no-untyped-call]


def forced_cpu_bf16() -> bool | None:
    """What AUGLOOP_CPU_BF16 says (1: bf16, 0: fp32), None where it is unset."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced and forced not in {"0", "1"}:
        raise TrainerError(f"{CPU_BF16_ENV} must be 1 or 0 (unset: read the CPU's flags), not {forced!r}")
    return forced == "1" if forced else None


@functools.cache
def cpu_flags_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU's flags name native bf16 matrix products; False where it cannot tell (not Linux, no
    flags line, an ARM CPU: not measured)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return not NATIVE_BF16_FLAGS.isdisjoint(value.split())
    return False


def precision_name(dtype: torch.dtype | None) -> str:
    return next(name for name, d in PRECISIONS.items() if d == dtype)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training, evaluation and serving. `auto`: on a GPU bf16 where it is supported (no
    loss scaling needed), else fp16; on a CPU bf16 where the CPU computes it natively (cpu_native_bf16), else
    full precision. `bf16`, `fp16`: as asked, on any device; `off`: full precision."""
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_native_bf16() else None
    return PRECISIONS[configured_precision(amp) or "fp32"]


def served_dtype(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The dtype a saved run predicts in: the precision it evaluated in (model.json's `precision`), whatever
    this machine would choose for a new run, so that it serves what it reported; fp16 (a GPU's) on a CPU is
    served in fp32. A run saved before the precision was recorded (None): as it was served then, AMP on CUDA
    and fp32 on a CPU."""
    if precision is None:
        return amp_dtype("auto", device) if device.type == "cuda" else None
    dtype = PRECISIONS.get(precision)
    return None if dtype == torch.float16 and device.type != "cuda" else dtype


def precision_reason(amp: str, device: torch.device) -> str:
    """One line for a run's plan: the precision it trains and predicts in, and why."""
    name = precision_name(amp_dtype(amp, device))
    if amp != "auto":
        return f"precision {name}: amp {amp!r} as configured"
    if device.type == "cuda":
        return f"precision {name} autocast: the GPU's" + (" native bf16" if name == "bf16" else " fp16")
    forced = forced_cpu_bf16()
    if forced is not None:
        return f"precision {name}: {CPU_BF16_ENV}={int(forced)}"
    if name == "bf16":
        return "precision bf16 autocast: this CPU computes bf16 natively (avx512_bf16/amx_bf16)"
    return "precision fp32: this CPU has no native bf16 (emulated bf16 is slower)"


# transformers' "no limit" for a tokenizer is int(1e30); a model_max_length above this says nothing
SANE_MODEL_MAX_LENGTH = 1_000_000


def pad_token_id(tokenizer: Any) -> int:
    """The id padding is filled with: the tokenizer's pad token, else 0 (an encoder without one, e.g. GPT-2's
    kind). The attention mask hides padding, so any id of the vocabulary does; training and prediction must
    only agree, and both take it from here."""
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def encoder_max_length(encoder: Any, tokenizer: Any) -> int | None:
    """The most tokens (special tokens included) `encoder` can take: its absolute position embeddings, less the
    positions RoBERTa-style embeddings (RoBERTa, XLM-R, CamemBERT, MPNet) reserve below their first one
    (padding_idx + 1: 2 of XLM-R's 514). An encoder without such a table (relative positions) is limited by its
    tokenizer's model_max_length where that is a real number, else not at all (None). Longer input fails
    inside the encoder ("The expanded size of the tensor (1024) must match the existing size (512)")."""
    config = encoder.config
    positions = getattr(config, "max_position_embeddings", None)
    absolute = getattr(config, "position_biased_input", True)  # DeBERTa-v3: relative positions only
    if isinstance(positions, int) and positions > 0 and absolute:
        padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
        return positions - (padding_idx + 1 if isinstance(padding_idx, int) else 0)
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared <= SANE_MODEL_MAX_LENGTH:
        return declared
    return None


def usable_max_length(encoder: Any, tokenizer: Any, max_length: int) -> int:
    """`max_length`, or the encoder's limit where that is lower (encoder_max_length)."""
    limit = encoder_max_length(encoder, tokenizer)
    return min(max_length, limit) if limit is not None else max_length


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def predict_encoded(
    model: MultiTaskModel,
    encoded: Encoded,
    pad_id: int,
    *,
    batch_size: int = 64,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Probabilities per task, (N, K) each, in the input order; batches are made of length-sorted texts."""
    device = device or next(model.parameters()).device
    model.eval()
    n = len(encoded)
    if n == 0:
        return {t.name: np.zeros((0, len(t.labels)), dtype=np.float32) for t in model.tasks}
    order = np.argsort(-encoded.lengths, kind="stable")
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = pad_batch([encoded.input_ids[i] for i in idx], pad_id)
        with autocast(device, dtype):
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        for task, value in logits.items():
            chunks.setdefault(task, []).append(torch.softmax(value.float(), dim=-1).cpu().numpy())
        if on_batch:
            on_batch(min(start + batch_size, n), n)
    out: dict[str, np.ndarray] = {}
    for task, parts in chunks.items():
        probs = np.concatenate(parts, axis=0)
        restored = np.empty_like(probs)
        restored[order] = probs
        out[task] = restored
    return out


def predict_texts(
    model: MultiTaskModel,
    tokenizer: Any,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 64,
    dtype: torch.dtype | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Probabilities per task of `texts`, each cut to `max_length` tokens, or to the encoder's limit where that
    is lower: a run saved with a longer max_length (model.json) still predicts a long text."""
    ids = tokenize(tokenizer, texts, usable_max_length(model.encoder, tokenizer, max_length))
    encoded = Encoded(ids, torch.empty((len(ids), 0), dtype=torch.long), np.array([len(x) for x in ids]))
    return predict_encoded(
        model, encoded, pad_token_id(tokenizer), batch_size=batch_size, dtype=dtype, on_batch=on_batch
    )


class RunPredictor:
    """A saved run loaded for inference, with its decision rule (`decision.json`, when the run fitted one)."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        import json

        from trainer.model import load_model

        self.device = resolve_device(device)
        self.model, self.tokenizer, self.meta = load_model(Path(model_dir))
        self.model.to(self.device)
        self.tasks = [TaskSpec(t["name"], list(t["labels"])) for t in self.meta["tasks"]]
        self.dtype = served_dtype(self.meta.get("precision"), self.device)
        # whatever model.json says: never more tokens than the encoder can take
        self.max_length = usable_max_length(self.model.encoder, self.tokenizer, int(self.meta["max_length"]))
        decision = Path(model_dir) / "decision.json"
        self.decision = json.loads(decision.read_text(encoding="utf-8")) if decision.is_file() else None

    def predict_proba(
        self, texts: list[str], batch_size: int = 64, on_batch: Callable[[int, int], None] | None = None
    ) -> dict[str, np.ndarray]:
        return predict_texts(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.max_length,
            batch_size=batch_size,
            dtype=self.dtype,
            on_batch=on_batch,
        )

    def decide(self, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from trainer.decision import decide

        return decide(probs, self.decision)


class EnsemblePredictor:
    """Members' probabilities combined with the ensemble's fitted parameters (trainer.ensemble.combine: member
    temperatures, per-task weights, the mixture's temperature), read through its decision rule."""

    def __init__(self, members: list[Any], params: dict[str, Any]) -> None:
        from trainer.ensemble import check_same_tasks

        check_same_tasks([m.tasks for m in members])
        self.members = members
        self.params = params
        self.tasks = members[0].tasks

    def predict_proba(
        self, texts: list[str], batch_size: int = 64, on_batch: Callable[[int, int], None] | None = None
    ) -> dict[str, np.ndarray]:
        from trainer.ensemble import combine

        outputs = []
        for k, member in enumerate(self.members):
            report = (lambda d, t, k=k: on_batch(k * t + d, t * len(self.members))) if on_batch else None
            outputs.append(member.predict_proba(texts, batch_size, on_batch=report))
        return combine(outputs, self.params)

    def decide(self, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from trainer.decision import decide

        return decide(probs, self.params.get("decision"))


def probs_to_json(tasks: list[TaskSpec], probs: dict[str, np.ndarray]) -> list[dict[str, dict[str, float]]]:
    n = len(next(iter(probs.values()))) if probs else 0
    return [
        {t.name: {label: round(float(probs[t.name][i, k]), 6) for k, label in enumerate(t.labels)} for t in tasks}
        for i in range(n)
    ]


_cache: OrderedDict[str, Any] = OrderedDict()
_cache_lock = threading.Lock()  # held for a look-up or an insertion, never while a model loads
_load_lock = threading.Lock()  # one model loads at a time (its memory), and never twice


def _cached(key: str) -> Any | None:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        return None


def cached_predictor(key: str, build: Callable[[], Any], capacity: int = 2) -> Any:
    """Load once per process (per key: model id + artifact location), keeping the `capacity` most recent. A model
    loading (seconds for a large encoder) holds up the loads of others, not the requests for models already
    loaded: a look-up takes only the cache's own lock."""
    found = _cached(key)
    if found is not None:
        return found
    with _load_lock:
        found = _cached(key)  # loaded by the request this one waited for
        if found is not None:
            return found
        predictor = build()
        with _cache_lock:
            _cache[key] = predictor
            while len(_cache) > max(1, capacity):
                _cache.popitem(last=False)
        return predictor


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()

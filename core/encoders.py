"""What makes a loaded Hugging Face model unusable as a sentence encoder, whichever layer loaded it (the trainer,
the augment workers' similarity encoder): read from its config and its embedding table, without torch."""

from __future__ import annotations

from typing import Any


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

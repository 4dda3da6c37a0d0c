"""Tiny models built locally (random init, vocabularies trained on the example data) for tests and benchmarks.

They load through the same `from_pretrained(path)` code path as the real hub models; nothing is downloaded.
"""

from __future__ import annotations

import csv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CSV = REPO_ROOT / "examples" / "political_social_media.csv"


def example_texts(limit: int | None = None) -> list[str]:
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    return texts[:limit] if limit else texts


def build_tiny_bert_mlm(out_dir: Path, *, vocab_size: int = 2000, hidden: int = 64, layers: int = 2,
                        heads: int = 2, seed: int = 0) -> Path:
    """A WordPiece tokenizer trained on the example texts + a random BertForMaskedLM, saved to `out_dir`."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=False)
    wp.train_from_iterator(example_texts(), vocab_size=vocab_size, min_frequency=2,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    wp.save_model(str(out_dir))
    tokenizer = BertTokenizerFast(vocab_file=str(out_dir / "vocab.txt"), do_lower_case=False)
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=512)
    BertForMaskedLM(config).save_pretrained(out_dir)
    return out_dir

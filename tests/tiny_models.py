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


def build_tiny_bert_mlm(
    out_dir: Path, *, vocab_size: int = 2000, hidden: int = 64, layers: int = 2, heads: int = 2, seed: int = 0
) -> Path:
    """A WordPiece tokenizer trained on the example texts + a random BertForMaskedLM, saved to `out_dir`."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=False)
    wp.train_from_iterator(
        example_texts(),
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )
    wp.save_model(str(out_dir))
    tokenizer = BertTokenizerFast(vocab_file=str(out_dir / "vocab.txt"), do_lower_case=False)
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    BertForMaskedLM(config).save_pretrained(out_dir)
    return out_dir


def gettext_pairs(limit: int | None = None) -> list[tuple[str, str]]:
    """English–German message pairs from Debian's gettext catalogs (a local parallel corpus, ~20k+ pairs)."""
    import gettext

    pairs: list[tuple[str, str]] = []
    for path in sorted(Path("/usr/share/locale/de/LC_MESSAGES").glob("*.mo")):
        try:
            with path.open("rb") as fh:
                catalog = gettext.GNUTranslations(fh)
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # a catalog that is not UTF-8
        for source, target in catalog._catalog.items():  # the only way to list a catalog
            if isinstance(source, str) and source.strip() and isinstance(target, str) and target.strip():
                pairs.append((source.strip(), target.strip()))
    return pairs[:limit] if limit else pairs


def _train_spm(texts: list[str], prefix: Path, vocab_size: int) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        pad_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    return prefix.with_suffix(".model")


def build_tiny_marian_pair(
    out_dir: Path,
    *,
    spm_vocab: int = 1000,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 2,
    ffn: int = 128,
    total_vocab: int | None = None,
    max_pairs: int | None = 2000,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Two random MarianMT models, en→de and de→en, with sentencepiece vocabularies trained locally.

    `total_vocab` pads the joint vocabulary with filler tokens up to a real model's size (opus-mt-en-de has
    58,101), so that a benchmark pays a real output layer. Returns (en-de dir, de-en dir)."""
    import json

    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = gettext_pairs(max_pairs)
    english = [en for en, _ in pairs] + example_texts(max_pairs // 2 if max_pairs else None)
    german = [de for _, de in pairs] or english
    spm_en = _train_spm(english, out_dir / "en", spm_vocab)
    spm_de = _train_spm(german, out_dir / "de", spm_vocab)
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for model_file in (spm_en, spm_de):
        for line in model_file.with_suffix(".vocab").read_text(encoding="utf-8").splitlines():
            piece = line.split("\t")[0]
            if piece not in vocab:
                vocab[piece] = len(vocab)
    filler = 0
    while total_vocab is not None and len(vocab) < total_vocab - 1:
        vocab[f"<filler_{filler}>"] = len(vocab)
        filler += 1
    vocab["<pad>"] = len(vocab)
    vocab_path = out_dir / "vocab.json"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    pad = vocab["<pad>"]
    dirs = []
    for n, (src, tgt, name) in enumerate(((spm_en, spm_de, "en-de"), (spm_de, spm_en, "de-en"))):
        target = out_dir / name
        tokenizer = MarianTokenizer(
            source_spm=str(src),
            target_spm=str(tgt),
            vocab=str(vocab_path),
            source_lang=name[:2],
            target_lang=name[3:],
            model_max_length=512,
        )
        tokenizer.save_pretrained(target)
        torch.manual_seed(seed + n)
        config = MarianConfig(
            vocab_size=len(vocab),
            d_model=d_model,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=ffn,
            decoder_ffn_dim=ffn,
            max_position_embeddings=512,
            pad_token_id=pad,
            decoder_start_token_id=pad,
            eos_token_id=0,
            forced_eos_token_id=0,
            bos_token_id=0,
            scale_embedding=True,
        )
        MarianMTModel(config).save_pretrained(target)
        dirs.append(target)
    return dirs[0], dirs[1]


CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_causal_lm(
    out_dir: Path, *, vocab_size: int = 2000, hidden: int = 64, layers: int = 2, heads: int = 2, seed: int = 0
) -> Path:
    """An instruction-tuned causal LM's shape, tiny and random: a byte-level BPE tokenizer trained on the example
    texts with ChatML's special tokens and chat template (what Qwen2.5-Instruct uses), and a random
    Qwen2ForCausalLM, saved to `out_dir`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(example_texts(), vocab_size=vocab_size, min_frequency=2, special_tokens=specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=2048,
        model_input_names=["input_ids", "attention_mask"],  # a causal LM takes no token types
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    return out_dir

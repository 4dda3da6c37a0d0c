"""trainer.data.tokenize cuts a long text near max_length × CUT_CHARS_PER_TOKEN characters before tokenising it:
the ids must be those of the whole text, truncated, for both tokenizer families (BERT WordPiece, SentencePiece
unigram as XLM-R uses it), and the tokenizer must see the cut text (a 20,000-character text costs what 2,048 do)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_models import _train_spm, example_texts
from trainer.data import CUT_CHARS_PER_TOKEN, tokenize


@pytest.fixture(scope="module")
def tokenizers_(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A WordPiece tokenizer as tests.tiny_models builds it (cased and uncased) and an XLM-R tokenizer on a
    sentencepiece unigram model trained locally."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast, XLMRobertaTokenizerFast

    out: dict[str, Any] = {}
    for lowercase in (False, True):
        d = Path(tmp_path_factory.mktemp(f"wordpiece_{lowercase}"))
        wp = BertWordPieceTokenizer(lowercase=lowercase)
        wp.train_from_iterator(
            example_texts(),
            vocab_size=2000,
            min_frequency=2,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        )
        wp.save_model(str(d))
        out[f"wordpiece{'_uncased' if lowercase else ''}"] = BertTokenizerFast(
            vocab_file=str(d / "vocab.txt"), do_lower_case=lowercase
        )
    d = Path(tmp_path_factory.mktemp("unigram"))
    out["unigram"] = XLMRobertaTokenizerFast(vocab_file=str(_train_spm(example_texts(400), d / "sp", 600)))
    return out


FAMILIES = ["wordpiece", "wordpiece_uncased", "unigram"]
WORDS = " ".join(example_texts(400)).split()
# pieces a cut could land next to: spaces and newlines, marks after a space, NBSP and other Unicode spaces,
# controls, CJK, punctuation without spaces (unigram has pieces such as `://`), added tokens' text, a Thai vowel
# that joins a space's grapheme
TRICKY = [
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    " \n \t ",
    "\u00a0",
    "\u3000",
    "\u2009",
    " \u0301",
    "\u0301",
    "e\u0301",
    "\x1c",
    "\x00",
    "\u200b",
    "\u200d",
    "中文",
    "字",
    "、",
    ",",
    "...",
    "[SEP]",
    "[MASK]",
    "<mask>",
    "</s>",
    "\u0e33",
    " \u0e33",
    "\U0001f600",
    "\U0001f44d\U0001f3fd",
    "ΣΑΣ",
    "İ",
    "ﬁ",
    "①",
    "Ⅻ",
    "'s",
    "--",
    "[",
    "]",
    "http://t.co/",
    "://",
    "…",
]


def long_texts(rng: random.Random, length: int) -> list[str]:
    def words(sep: str = " ") -> str:
        out: list[str] = []
        while sum(len(w) + len(sep) for w in out) < length:
            out.append(rng.choice(WORDS))
        return sep.join(out)[:length]

    letters = "abcdefghijklmnopqrstuvwxyzäöüßéñ"
    long_words = " ".join(
        "".join(rng.choice(letters) for _ in range(rng.randint(20, 140))) for _ in range(length // 60)
    )
    cjk = "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(length))
    spaced = "".join(rng.choice(WORDS) + rng.choice([" ", "\n\n", "   ", " \t\n ", "\r\n"]) for _ in range(length // 5))
    tricky = "".join(rng.choice(TRICKY) if rng.random() < 0.5 else rng.choice(WORDS) for _ in range(length // 3))
    return [
        words(),
        words("\n"),
        words(",")[: length // 2],  # punctuation, no whitespace
        long_words[:length],
        cjk,
        cjk[: length // 3] + " " + words(),
        spaced[:length],
        words() + " " * length,
        tricky[:length],
        tricky.replace(" ", "")[:length],
        "x" * length,
    ]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("max_length", [4, 16, 128])
def test_cut_texts_give_the_ids_of_the_whole_text(tokenizers_: dict[str, Any], family: str, max_length: int) -> None:
    tok = tokenizers_[family]
    rng = random.Random(max_length)
    bound = max_length * CUT_CHARS_PER_TOKEN
    texts = long_texts(rng, bound * 5) + long_texts(rng, bound + 7)  # far over the bound, just over it
    texts += [t[: bound + k] for t in long_texts(rng, bound + 40) for k in (1, 2, 3, 11)]
    for seed in range(30 if max_length < 128 else 3):  # boundaries at random places among the tricky pieces
        r = random.Random(seed)
        texts.append("".join(r.choice(TRICKY + WORDS[:50]) for _ in range(bound)))
    whole = tok(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    assert tokenize(tok, texts, max_length) == whole


class Counting:
    """A tokenizer that records the texts it was given."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.lengths: list[int] = []

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        self.lengths.extend(len(t) for t in texts)
        return self.tok(texts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tok, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_long_texts_reach_the_tokenizer_cut(tokenizers_: dict[str, Any], family: str) -> None:
    tok = tokenizers_[family]
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(4000))[:20_000] for _ in range(8)]
    if family != "unigram":  # BERT's words also end at punctuation and CJK characters
        texts += [("ab," * 7000)[:20_000], "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(20_000))]
    counting = Counting(tok)
    ids = tokenize(counting, texts, 128)
    assert ids == tok(texts, truncation=True, max_length=128, padding=False)["input_ids"]
    assert all(len(row) == 128 for row in ids)
    assert len(counting.lengths) == len(texts)  # each cut once, and its ids kept
    assert max(counting.lengths) <= 128 * CUT_CHARS_PER_TOKEN + 1


def test_texts_without_a_safe_cut_are_tokenised_whole(tokenizers_: dict[str, Any]) -> None:
    """SentencePiece segments a word as a whole: a text with no whitespace is never cut; one whose cut is too
    short grows its bound until it is long enough or whole."""
    tok = tokenizers_["unigram"]
    texts = ["abcdefghij" * 2000, "a" + " " * 19_999 + "b", ("x" * 101 + " ") * 20]
    counting = Counting(tok)
    assert tokenize(counting, texts, 128) == tok(texts, truncation=True, max_length=128, padding=False)["input_ids"]
    assert 20_000 in counting.lengths


@pytest.mark.parametrize("family", FAMILIES)
def test_every_cut_point_keeps_a_prefix_of_the_tokens(tokenizers_: dict[str, Any], family: str) -> None:
    """The invariant itself, untruncated: at whatever point a text is cut, the cut's tokens begin the text's."""
    from trainer.data import _cut_point, _cut_rule

    tok = tokenizers_[family]
    rule = _cut_rule(tok)
    assert rule is not None and rule.bert == family.startswith("wordpiece")
    cuts = 0
    for seed in range(300):
        r = random.Random(seed)
        text = "".join(r.choice(TRICKY) if r.random() < 0.6 else r.choice(WORDS) for _ in range(r.randint(5, 40)))
        full = tok(text, add_special_tokens=False)["input_ids"]
        for bound in range(1, len(text), 3):
            cut = _cut_point(text, bound, rule)
            if cut:
                cuts += 1
                head = tok(text[:cut], add_special_tokens=False)["input_ids"]
                assert full[: len(head)] == head, (text, text[:cut])
    assert cuts > 1000

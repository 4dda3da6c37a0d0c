"""WordNet synonym substitution (English), part-of-speech aware, on character spans of the original text.

Unlike nlpaug's SynonymAug it never re-joins tokens (spacing, URLs, @mentions and #hashtags survive), skips
proper nouns, pronouns, stop words and capitalised names (no "He" → "Helium", no "Boston" → "Capital of
Massachusetts"), takes synonyms from a word's most frequent senses only, re-inflects plural nouns and
third-person verbs, and caches lookups per (word, tag) — which also makes it faster.
"""

from __future__ import annotations

import random
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.textnorm import content_hash
from workers.augment import params as P
from workers.augment.base import Variant, apply_edits, derive_seed, match_case
from workers.augment.models import ModelUnavailable
from workers.augment.pos_tagger import FastPerceptronTagger
from workers.augment.textspans import Word, candidates
from workers.augment.wordnet_data import (
    INSTALL_HINT,
    TAGGER_DIR,
    TAGGER_FILES,
    missing_wordnet_files,
    wordnet_dir,
)

_TAG_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
# Penn tags worth a synonym → WordNet POS. Proper nouns (NNP*), pronouns, determiners: absent on purpose.
_POS = {
    "NN": "n",
    "NNS": "n",
    "VB": "v",
    "VBP": "v",
    "VBZ": "v",
    "VBD": "v",
    "VBG": "v",
    "VBN": "v",
    "JJ": "a",
    "JJR": "a",
    "JJS": "a",
    "RB": "r",
    "RBR": "r",
    "RBS": "r",
}
# Inflected forms we can rebuild on a synonym; other inflections (past tense, -ing, comparatives) stay.
_PLURALISABLE = {"NNS", "VBZ"}
_CACHE_LIMIT = 200_000


def _add_s(word: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def inflect(phrase: str, tag: str) -> str:
    """Plural noun (NNS): the last word takes the -s ("small business" → "small businesses");
    third-person verb (VBZ): the first word does ("get up" → "gets up")."""
    parts = phrase.split(" ")
    at = 0 if tag == "VBZ" else len(parts) - 1
    parts[at] = _add_s(parts[at])
    return " ".join(parts)


def load_wordnet(root: Path):  # type: ignore[no-untyped-def]
    """NLTK's WordNet reader over `root`/corpora/wordnet, or ModelUnavailable saying how to install it."""
    missing = missing_wordnet_files(root)
    if missing:
        raise ModelUnavailable(
            f"WordNet corpus not found in {wordnet_dir(root)} (missing {', '.join(missing[:4])}"
            f"{'...' if len(missing) > 4 else ''}): {INSTALL_HINT}"
        )
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # NLTK only opens corpora under a root on its search path (its path-security checks).
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": English only here
        try:
            return WordNetCorpusReader(str(wordnet_dir(root)), None)
        except (OSError, LookupError, ValueError) as err:
            raise ModelUnavailable(
                f"WordNet corpus in {wordnet_dir(root)} is unreadable ({err}): {INSTALL_HINT}"
            ) from err


def load_tagger(root: Path) -> FastPerceptronTagger | None:
    """NLTK's averaged-perceptron tagger from the JSON files `install` wrote, or None when they are absent."""
    folder = root / TAGGER_DIR
    if not all((folder / name).is_file() for name in TAGGER_FILES):
        return None
    return FastPerceptronTagger.from_json_dir(folder, TAGGER_FILES)


def _sense_counts(root: Path) -> dict[str, int]:
    """SemCor frequency per sense key, read once (NLTK's Lemma.count() binary-searches the file on every call,
    which was half of the augmenter's time on unseen words)."""
    path = wordnet_dir(root) / "cntlist.rev"
    counts: dict[str, int] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, count = line.rpartition(" ")
            counts[key.split(" ")[0]] = int(count)
    return counts


class WordNetAugmenter:
    method = "wordnet"
    model_name = "wordnet-3.0"

    def __init__(self, nltk_root: Path) -> None:
        self.root = Path(nltk_root)
        self.wordnet = load_wordnet(self.root)
        self.tagger = load_tagger(self.root)
        self._counts = _sense_counts(self.root)
        self._synonyms: dict[tuple[str, str, int], list[tuple[str, float]]] = {}
        self._lock = threading.Lock()

    def augment(
        self,
        texts: Sequence[str],
        counts: Sequence[int],
        *,
        seed: int,
        language: str,
        params: P.WordNetParams | None = None,
    ) -> list[list[Variant]]:
        if language != "en":
            raise ModelUnavailable(f"WordNet synonyms are English only; got language {language!r}")
        params = params or P.WordNetParams()
        effective = {
            **params.model_dump(),
            "pos_tagger": "perceptron" if self.tagger and params.use_pos else None,
        }
        out: list[list[Variant]] = []
        for index, (text, count) in enumerate(zip(texts, counts, strict=True)):
            slots = self._slots(text, params) if count > 0 else []
            variants: list[Variant] = []
            source_key = content_hash(text)
            for v in range(count if slots else 0):
                rng = random.Random(derive_seed(seed, self.method, source_key, v))
                k = max(1, min(params.max_words, round(params.aug_p * len(slots))))
                # Visit the words in a random order and look synonyms up only until k words have one: on text
                # with unseen words the lookups are most of the cost, and nlpaug's SynonymAug skips them too.
                edits = []
                for i in rng.sample(range(len(slots)), len(slots)):
                    word, tag = slots[i]
                    synonyms = self.synonyms(word.text.lower(), tag, params.max_senses)
                    if synonyms:
                        edits.append((word.start, word.end, match_case(word.text, _weighted(rng, synonyms))))
                        if len(edits) == k:
                            break
                if not edits:
                    continue
                variants.append(
                    Variant(
                        text=apply_edits(text, edits),
                        source_index=index,
                        variant_index=v,
                        method=self.method,
                        params=effective,
                        model_name=self.model_name,
                        seed=seed,
                        edits=[
                            {"start": s, "end": e, "from": text[s:e], "to": new}
                            for s, e, new in sorted(edits)
                        ],
                    )
                )
            out.append(variants)
        return out

    def _slots(self, text: str, params: P.WordNetParams) -> list[tuple[Word, str]]:
        """Candidate words with their POS tag ("*" without the tagger); proper nouns and the like drop out."""
        words = candidates(text, "en", protect_capitalized=params.protect_capitalized)
        if not words:
            return []
        if not params.use_pos or self.tagger is None:
            return [(word, "*") for word in words]
        tags = self._tags(text, words[-1].start)
        return [(word, tags[word.start]) for word in words if tags.get(word.start) in _POS]

    def _tags(self, text: str, last_start: int) -> dict[int, str]:
        tokens = list(_TAG_TOKEN.finditer(text))
        upto = max((i for i, m in enumerate(tokens) if m.start() <= last_start), default=0)
        assert self.tagger is not None
        tagged = self.tagger.tag([m.group() for m in tokens], upto=upto)
        return {m.start(): tag for m, tag in zip(tokens, tagged, strict=False)}

    def synonyms(self, word: str, tag: str, max_senses: int) -> list[tuple[str, float]]:
        """(replacement, weight) for `word` tagged `tag` ("*": any part of speech), cached per process.

        Weight: P(sense | word) × P(synonym | sense), both from SemCor counts (+1), so "morning" mostly
        becomes "morn" or "forenoon" (the sense it is used in) and rarely "cockcrow" (a lemma of its "dawn"
        sense)."""
        key = (word, tag, max_senses)
        cached = self._synonyms.get(key)
        if cached is not None:
            return cached
        found = self._lookup(word, tag, max_senses)
        with self._lock:
            if len(self._synonyms) >= _CACHE_LIMIT:
                self._synonyms.clear()
            self._synonyms[key] = found
        return found

    def _lookup(self, word: str, tag: str, max_senses: int) -> list[tuple[str, float]]:
        wn = self.wordnet
        poses = [_POS[tag]] if tag != "*" else ["n", "v", "a", "r"]
        result: dict[str, float] = {}
        for pos in poses:
            lemma = wn.morphy(word, pos)
            if lemma is None:
                continue
            inflected = lemma != word
            if inflected and tag not in _PLURALISABLE:
                continue  # "voted" → "elected" would need a past tense we cannot build reliably
            synsets: list[Any] = wn.synsets(lemma, pos)
            if pos == "a":
                synsets = synsets + [s for s in wn.synsets(lemma, "s") if s not in synsets]
            senses = synsets[:max_senses]
            # P(sense | word): how often the source word was seen in each sense (SemCor counts, +1 smoothing).
            sense_weights = [
                1.0 + sum(self._counts.get(e.key(), 0) for e in syn.lemmas() if e.name() == lemma)
                for syn in senses
            ]
            total = sum(sense_weights)
            for synset, sense_weight in zip(senses, sense_weights, strict=True):
                options = []
                for entry in synset.lemmas():
                    name = entry.name()
                    if not name.isascii() or any(ch.isupper() or ch.isdigit() for ch in name):
                        continue  # proper nouns ("Helium") and codes
                    phrase = name.replace("_", " ")
                    if phrase == lemma or "'" in phrase:
                        continue
                    options.append(
                        (
                            inflect(phrase, tag) if inflected else phrase,
                            1.0 + self._counts.get(entry.key(), 0),
                        )
                    )
                within = sum(w for _, w in options)
                for form, weight in options:  # then the synonym by its own frequency within the sense
                    if form != word:
                        result[form] = result.get(form, 0.0) + sense_weight / total * weight / within
            if tag == "*" and result:
                break
        return list(result.items())


def _weighted(rng: random.Random, options: list[tuple[str, float]]) -> str:
    pick = rng.random() * sum(w for _, w in options)
    for form, weight in options:
        pick -= weight
        if pick <= 0:
            return form
    return options[-1][0]

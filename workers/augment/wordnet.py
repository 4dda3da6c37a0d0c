"""WordNet synonym substitution (English), part-of-speech aware, on character spans of the original text.

Unlike nlpaug's SynonymAug it never re-joins tokens (spacing, URLs, @mentions and #hashtags survive), skips
proper nouns, pronouns, stop words, capitalised names (no "He" → "Helium", no "Boston" → "Capital of
Massachusetts") and the dataset's protected topic words ("abortion" never becomes "miscarriage"), and caches
lookups per (word, tag) — which also makes it faster. A replacement reads like the source:
- it takes the replaced word's inflection (number, tense, person, comparative: "voted" → "elected",
  "picks" → "chooses", "bigger" → "larger", via lemminflect) and capitalisation;
- it is a word people use: a floor on its frequency (wordfreq), absolute and relative to the replaced word,
  keeps out "workfellows", "juridical", "Watchings";
- the tagger, reading the variant, gives the replacement the replaced word's tag (else it is undone):
  "talk" → "talking", "Come" → "Gotten", "thoroughly" → "good" never reach review;
- it never takes one word out of a multi-word expression: no word of 2–3 adjacent words that WordNet lists as one
  lemma ("health care", "looking forward", "house of representatives") is replaced, nor a verb followed by its
  particle ("check out", "stop by", "Gearing up"): "health care" → "health attention" is no synonym;
- its sense fits the sentence: WordNet's senses are weighted by how often the word is used in each (SemCor),
  and, in context, several draws of synonyms for the same words are compared by how close the sentence with
  them in place stays to the source (sentence-encoder cosine), and the closest one is kept.
"""

from __future__ import annotations

import difflib
import random
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.textnorm import content_hash
from workers.augment import params as P
from workers.augment.base import Augmenter, AugmentRequest, Variant, apply_edits, derive_seed, match_case
from workers.augment.language import reads_as_other_language
from workers.augment.models import ModelUnavailable
from workers.augment.pos_tagger import FastPerceptronTagger
from workers.augment.textspans import ProtectedTerms, Word, candidates, stop_words
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
# Tags whose word is the lemma itself: its synonyms go in as WordNet lists them. Every other tag is an
# inflection (number, tense, person, comparative) that the synonym takes on through lemminflect.
_BASE_TAGS = {"NN", "VB", "VBP", "JJ", "RB"}
# The Penn tags of each WordNet part of speech, to read a word's inflection off its form when the tagger's
# tag does not produce it ("slams" tagged VBD is a VBZ: its synonyms become "bangs", not "banged").
_TAGS_OF = {
    "n": ("NN", "NNS"),
    "v": ("VB", "VBP", "VBZ", "VBD", "VBN", "VBG"),
    "a": ("JJ", "JJR", "JJS"),
    "r": ("RB", "RBR", "RBS"),
}
_CACHE_LIMIT = 200_000
_LETTERS = re.compile(r"[^\W\d_]+")
MIN_WORD_LEN = 3  # shorter words are mostly abbreviations and codes: "cc" → "mil", "vs" → "volts", "ag" → "silver"
# Collocations WordNet lacks that the example data shows broken ("small business" → "small concern").
EXTRA_PHRASES = frozenset({"small_business", "office_hours"})
# Particles of phrasal verbs: after a verb, when the tagger reads them as particles (RP), or as adverbs for the
# directional ones, the verb is not replaced ("check out" → "see out", "Gearing up" → "Pitching up").
PARTICLES = frozenset({"up", "out", "off", "by", "forward", "down", "over", "back", "in", "on", "away", "through"})
_ADVERB_PARTICLES = frozenset({"up", "out", "off", "forward", "down", "back", "away"})
DRAWS = 3  # tries per variant when the tagger undoes every replacement or the draw repeats an earlier variant


def form_tag(word: str, lemma: str, pos: str, tagged: str) -> str | None:
    """The Penn tag under which `lemma` (of WordNet POS `pos`) takes the form `word`: the tagger's own when it
    fits, else the only other one of that part of speech that does, else None (an inflection lemminflect
    cannot rebuild: better no synonym than a wrong form)."""
    # Tag by tag: lemminflect's getAllInflections leaves out a VBN that equals the VBD ("selected").
    forms = {tag: _inflections(lemma, tag) for tag in _TAGS_OF[pos]}
    fitting = [t for t in _TAGS_OF[pos] if word in forms.get(t, ())]
    if tagged in fitting:
        return tagged
    return fitting[0] if len(fitting) == 1 else None


def same_form(a: str, b: str) -> bool:
    """Two Penn tags of one form: equal, or VB and VBP (both the base form of a verb)."""
    return a == b or {a, b} == {"VB", "VBP"}


def inflect(phrase: str, tag: str) -> str | None:
    """`phrase` (a WordNet lemma, words joined by spaces) in the inflection of Penn `tag`, or None when it has
    none. The head word inflects: the first of a verb ("get up" → "got up"), the last of a noun ("small
    business" → "small businesses"); a comparative or superlative of a phrase ("more X") is not attempted."""
    if tag in _BASE_TAGS:
        return phrase
    parts = phrase.split(" ")
    if len(parts) > 1 and tag in ("JJR", "JJS", "RBR", "RBS"):
        return None
    at = 0 if tag.startswith("VB") else len(parts) - 1
    forms = _inflections(parts[at], tag)
    if not forms:
        return None
    parts[at] = forms[0]
    return " ".join(parts)


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """Porter's stem of a lower-case word ("voting" → "vote"), cached."""
    return str(_porter().stem(word))


@lru_cache(maxsize=1)
def _porter() -> Any:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def near_form(a: str, b: str) -> bool:
    """Whether two lower-case words are one word in another spelling or form, which a substitution adds nothing
    with: the same stem ("vote" / "voting"), one a prefix of the other ("photo" / "photograph") or, from 4
    letters, a suffix ("phone" / "telephone"), a shared start of 5 letters ("photos" / "photographs",
    "proposal" / "proposition") or nearly the same letters ("defense" / "defence", "organizations" /
    "organisations": difflib ratio ≥ 0.8)."""
    if a == b or a.startswith(b) or b.startswith(a) or (a[:5] == b[:5] and min(len(a), len(b)) >= 5):
        return True
    if min(len(a), len(b)) >= 4 and (a.endswith(b) or b.endswith(a)):
        return True
    return stem(a) == stem(b) or difflib.SequenceMatcher(None, a, b).ratio() >= 0.8


@lru_cache(maxsize=200_000)
def _inflections(lemma: str, tag: str) -> tuple[str, ...]:
    """lemminflect's forms of `lemma` under `tag` (its rules for words outside its lexicon), cached: it
    deep-copies its tables on every call."""
    from lemminflect import getInflection

    return tuple(getInflection(lemma, tag=tag))


@lru_cache(maxsize=200_000)
def zipf(form: str) -> float:
    """wordfreq's Zipf frequency of an English word or phrase (log10 per billion words; 0: unseen)."""
    from wordfreq import zipf_frequency

    return float(zipf_frequency(form, "en"))


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


Edit = tuple[int, int, str]


@dataclass
class _Tagged:
    """A source's tags: in token order (up to its last candidate word) and by the token's first character."""

    tags: list[str]
    by_start: dict[int, str]
    starts: list[int]  # each tagged token's first character
    lengths: list[int]


@dataclass
class _Draft:
    """One variant before its synonyms are final: its words (each with its options) and the drawn choices."""

    source_index: int
    variant_index: int
    alternatives: list[tuple[Edit, ...]]
    chosen: tuple[Edit, ...] = ()
    similarity: float | None = None


class WordNetAugmenter(Augmenter[P.WordNetParams]):
    method = "wordnet"
    model_name = "wordnet-3.0"
    params_type = P.WordNetParams

    def __init__(
        self,
        nltk_root: Path,
        *,
        encoder: Callable[[], Any] | None = None,
        context_by_default: bool = False,
    ) -> None:
        """`encoder` loads the sentence encoder (workers/augment/encoder.py) on first use in context;
        `context_by_default` is what `context: "auto"` means here (True where the encoder runs on a GPU)."""
        self.root = Path(nltk_root)
        self.wordnet = load_wordnet(self.root)
        self.tagger = load_tagger(self.root)
        self._counts = _sense_counts(self.root)
        self._synonyms: dict[tuple[Any, ...], list[tuple[str, float]]] = {}
        self._lock = threading.Lock()
        self._encoder_loader = encoder
        self.context_by_default = context_by_default
        self.pos_check = {"checked": 0, "undone": 0}  # replacements the tagger re-read, and those it undid
        self.is_phrase: Callable[[tuple[str, ...]], bool] = lru_cache(maxsize=200_000)(self._is_phrase)

    def _is_phrase(self, words: tuple[str, ...]) -> bool:
        """Whether case-folded adjacent words form one WordNet lemma ("health_care", "check_out",
        "house_of_representatives", "runner-up"): the first word as it is or as the lemma of a verb ("looking
        forward" → look_forward), the last as it is or as the lemma of a noun ("small businesses")."""
        index = self.wordnet._lemma_pos_offset_map  # every lemma, lower-case, loaded with the reader
        if any(not w.isalpha() for w in words):
            return False
        firsts = {words[0], *self.wordnet._morphy(words[0], "v")}
        lasts = {words[-1], *self.wordnet._morphy(words[-1], "n")}
        middle = list(words[1:-1])
        for first in firsts:
            for last in lasts:
                key = "_".join([first, *middle, last])
                if key in index or key in EXTRA_PHRASES or key.replace("_", "-") in index:
                    return True
        return False

    def encoder_for(self, params: P.WordNetParams) -> Any:
        """The sentence encoder when synonyms are chosen in context, else None. Asked for explicitly
        (`context: "encoder"`), an encoder that cannot load fails the job; under "auto" WordNet goes on
        without it."""
        wanted = params.context == "encoder" or (params.context == "auto" and self.context_by_default)
        if not wanted:
            return None
        if self._encoder_loader is None:
            if params.context == "encoder":
                raise ModelUnavailable("WordNet in context needs a sentence encoder; none is configured")
            return None
        try:
            return self._encoder_loader()
        except ModelUnavailable:
            if params.context == "encoder":
                raise
            return None

    def run(self, request: AugmentRequest[P.WordNetParams]) -> list[list[Variant]]:
        if request.language != "en":
            raise ModelUnavailable(f"WordNet synonyms are English only; got language {request.language!r}")
        texts, seed, params = request.texts, request.seed, request.params
        encoder = self.encoder_for(params)
        effective = {
            **params.model_dump(),
            "pos_tagger": "perceptron" if self.tagger and params.use_pos else None,
            "context": "encoder" if encoder is not None else "off",
            "context_model": getattr(encoder, "name", None),
        }
        alternatives = params.context_alternatives if encoder is not None else 1
        # The work: drawing each source's variants, then (with an encoder) as much again reading them in context.
        asked = sum(request.counts)
        meter = request.meter(asked * (2 if encoder is not None else 1))
        drafts: list[_Draft] = []
        for index, (text, count) in enumerate(zip(texts, request.counts, strict=True)):
            slots, tagged = self._slots(text, params, request.hints.protected) if count > 0 else ([], None)
            source_key = content_hash(text)
            made: set[tuple[Edit, ...]] = set()  # this source's variants so far: a repeat is drawn again
            present = _stems_in(text) if slots else frozenset()
            for v in range(count if slots else 0):
                rng = random.Random(derive_seed(seed, self.method, source_key, v))
                k = max(1, min(params.max_words, round(params.aug_p * len(slots))))
                # Visit the words in a random order and look synonyms up only until k words have one: on text
                # with unseen words the lookups are most of the cost, and nlpaug's SynonymAug skips them too.
                chosen: list[tuple[Word, list[tuple[str, float]]]] = []
                for i in rng.sample(range(len(slots)), len(slots)):
                    word, tag = slots[i]
                    # A synonym the text already holds repeats it: "support and defend" → "support and support".
                    options = [o for o in self.synonyms(word.text.lower(), tag, params) if not _repeats(o[0], present)]
                    if options:
                        chosen.append((word, options))
                        if len(chosen) == k:
                            break
                if not chosen:
                    continue
                # A draw whose replacements the tagger undid, or that repeats an earlier variant of the same
                # source (the duplicate filter would drop it), is drawn again, a few times at most.
                for _ in range(DRAWS):
                    drawn = [_draw(rng, chosen) for _ in range(alternatives)]
                    if params.check_pos and tagged is not None:
                        drawn = [self.keep_form(text, edits, tagged) for edits in drawn]
                    drawn = [edits for edits in dict.fromkeys(drawn) if edits and edits not in made]
                    if drawn:
                        drafts.append(_Draft(index, v, drawn))
                        made.update(drawn)
                        break
            meter.add(count)
        if encoder is not None:
            self._choose_in_context(encoder, texts, drafts, meter.phase(asked))
        out: list[list[Variant]] = [[] for _ in texts]
        for draft in drafts:
            edits = draft.chosen or draft.alternatives[0]
            details: dict[str, Any] = {}
            if draft.similarity is not None:
                details = {"semantic_similarity": draft.similarity, "alternatives": len(draft.alternatives)}
            out[draft.source_index].append(
                self.edited(request, draft.source_index, draft.variant_index, sorted(edits), effective, details)
            )
        return out

    def keep_form(self, text: str, edits: tuple[Edit, ...], tagged: _Tagged) -> tuple[Edit, ...]:
        """The edits whose replacement the tagger, reading the variant, tags as it tagged the replaced word
        (the head word of a phrase): "talk" → "talking", "Come" → "Gotten", "thoroughly" → "good" are undone.
        VB and VBP count as one (the same base form). The variant is the source up to its first change, so the
        tagger starts two tokens before it, from the source's tags there, and stops at the last change."""
        variant = apply_edits(text, edits)
        spans = []
        shift = 0
        for start, end, new in edits:  # sorted by start
            spans.append((start, end, new, start + shift, start + shift + len(new)))
            shift += len(new) - (end - start)
        # Tokens from two before the first change (the source's, found by their offsets) to two past the last.
        first = next(
            (i for i, st in enumerate(tagged.starts) if st + tagged.lengths[i] > spans[0][0]), len(tagged.starts)
        )
        begin = max(0, first - 2)
        w0 = max(0, begin - 2)
        tokens = []
        past = 0
        for m in _TAG_TOKEN.finditer(variant, tagged.starts[w0] if w0 < len(tagged.starts) else spans[0][3]):
            tokens.append(m)
            if m.start() >= spans[-1][4]:
                past += 1
                if past > 2:
                    break
        last = max((i for i, m in enumerate(tokens) if m.start() < spans[-1][4]), default=0)
        history = None
        if begin > 0:
            history = (tagged.tags[begin - 2] if begin >= 2 else "-START-", tagged.tags[begin - 1])
        assert self.tagger is not None
        tags = self.tagger.tag([m.group() for m in tokens], upto=last, start=begin - w0, history=history)
        tokens = tokens[begin - w0 :]
        kept = []
        for start, end, new, new_start, new_end in spans:
            inside = [
                t
                for m, t in zip(tokens, tags, strict=False)
                if m.start() < new_end and m.end() > new_start and m.group().isalpha()
            ]
            if not inside:
                continue
            want = tagged.by_start[start]
            head = inside[0] if want.startswith("VB") else inside[-1]
            if same_form(head, want):
                kept.append((start, end, new))
        self.pos_check["checked"] += len(spans)
        self.pos_check["undone"] += len(spans) - len(kept)
        return tuple(kept)

    @staticmethod
    def _choose_in_context(
        encoder: Any, texts: Sequence[str], drafts: list[_Draft], progress: Callable[[float], None] | None = None
    ) -> None:
        """Keep, per variant, the draw of synonyms whose sentence is closest to the source (one batched encoder
        call for the whole batch). A variant with a single distinct draw keeps it: nothing to compare."""
        pairs: list[tuple[str, str]] = []
        owners: list[tuple[int, int]] = []
        for d, draft in enumerate(drafts):
            if len(draft.alternatives) < 2:
                continue
            text = texts[draft.source_index]
            for a, edits in enumerate(draft.alternatives):
                pairs.append((text, apply_edits(text, edits)))
                owners.append((d, a))
        if not pairs:
            return
        best: dict[int, tuple[float, int]] = {}
        for (d, a), sim in zip(owners, encoder.similarities(pairs, progress), strict=True):
            if d not in best or sim > best[d][0]:
                best[d] = (float(sim), a)
        for d, (sim, a) in best.items():
            drafts[d].chosen = drafts[d].alternatives[a]
            drafts[d].similarity = round(sim, 4)

    def _slots(
        self, text: str, params: P.WordNetParams, protected: ProtectedTerms | None = None
    ) -> tuple[list[tuple[Word, str]], _Tagged | None]:
        """Candidate words with their POS tag ("*" without the tagger), and the source's tags; proper nouns and
        the like drop out, and so does every word of a text that reads as another language (a Spanish post of an
        English dataset: workers/augment/language.py)."""
        if reads_as_other_language(text, "en"):
            return [], None
        words = candidates(
            text,
            "en",
            protect_capitalized=params.protect_capitalized,
            protected=protected,
            min_len=MIN_WORD_LEN,
            phrase=self.is_phrase,
        )
        if not words:
            return [], None
        if not params.use_pos or self.tagger is None:
            return [(word, "*") for word in words], None
        tagged = self._tags(text, words[-1].start)
        return [
            (word, tagged.by_start[word.start])
            for word in words
            if tagged.by_start.get(word.start) in _POS and not _before_particle(text, word, tagged)
        ], tagged

    def _tags(self, text: str, last_start: int) -> _Tagged:
        tokens = list(_TAG_TOKEN.finditer(text))
        # One token past the last candidate: the particle that may follow it ("check out").
        upto = max((i for i, m in enumerate(tokens) if m.start() <= last_start), default=0) + 1
        assert self.tagger is not None
        tags = self.tagger.tag([m.group() for m in tokens], upto=upto)
        tokens = tokens[: len(tags)]
        return _Tagged(
            tags,
            {m.start(): tag for m, tag in zip(tokens, tags, strict=True)},
            [m.start() for m in tokens],
            [len(m.group()) for m in tokens],
        )

    def synonyms(self, word: str, tag: str, params: P.WordNetParams | int) -> list[tuple[str, float]]:
        """(replacement, weight) for `word` tagged `tag` ("*": any part of speech), cached per process.
        `params` may be a bare max_senses (the other settings at their defaults).

        Weight: P(sense | word) × P(synonym | sense), both from SemCor counts (+1), so "morning" mostly
        becomes "morn" or "forenoon" (the sense it is used in) and rarely "cockcrow" (a lemma of its "dawn"
        sense) — and then the frequency floor keeps out all three."""
        if isinstance(params, int):
            params = P.WordNetParams(max_senses=params)
        key = (word, tag, params.max_senses, params.min_zipf, params.max_zipf_drop)
        cached = self._synonyms.get(key)
        if cached is not None:
            return cached
        found = self._lookup(word, tag, params)
        with self._lock:
            if len(self._synonyms) >= _CACHE_LIMIT:
                self._synonyms.clear()
            self._synonyms[key] = found
        return found

    def _reading(self, word: str, pos: str, tag: str) -> tuple[str, str] | None:
        """(lemma, the tag its synonyms take) of `word` as a `pos`, or None. WordNet may list an inflected form
        as a lemma of its own ("costs"): the lemma whose inflection matches the tagger's tag wins."""
        lemmas = self.wordnet._morphy(word, pos)
        if tag == "*":  # no tagger: only uninflected words, whose inflection needs no guess
            return (word, "*") if word in lemmas else None
        fallback = None
        for lemma in lemmas:
            found = form_tag(word, lemma, pos, tag)
            if found == tag:
                return lemma, found
            if found is not None and fallback is None:
                fallback = (lemma, found)
        return fallback

    def _lookup(self, word: str, tag: str, params: P.WordNetParams) -> list[tuple[str, float]]:
        wn = self.wordnet
        poses = [_POS[tag]] if tag != "*" else ["n", "v", "a", "r"]
        floor = max(params.min_zipf, zipf(word) - params.max_zipf_drop)
        result: dict[str, float] = {}
        for pos in poses:
            reading = self._reading(word, pos, tag)
            if reading is None:
                continue
            lemma, form_as = reading
            synsets: list[Any] = wn.synsets(lemma, pos)
            if pos == "a":
                synsets = synsets + [s for s in wn.synsets(lemma, "s") if s not in synsets]
            senses = synsets[: params.max_senses]
            # P(sense | word): how often the source word was seen in each sense (SemCor counts, +1 smoothing).
            sense_weights = [
                1.0 + sum(self._counts.get(e.key(), 0) for e in syn.lemmas() if e.name() == lemma) for syn in senses
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
                    words = phrase.split(" ")
                    if (
                        len(words) > params.max_phrase_words
                        or lemma in words
                        or word in words
                        or max(w.count("-") for w in words) > 1
                    ):
                        continue  # "adult females" for "women", "morning time", "full-of-the-moon"
                    form = inflect(phrase, form_as) if form_as != "*" else phrase
                    if form is None or form == word or zipf(form) < floor:
                        continue
                    if len(form) <= 2 or (len(word) >= 5 and len(form) <= 3):
                        continue  # abbreviations: "equivalent" → "eq", "hour" → "hr", "minute" → "min"
                    parts = form.replace("-", " ").split(" ")
                    if any(near_form(w, word) or near_form(w, lemma) for w in parts if len(w) >= 3):
                        continue  # "defense" → "defence", "photo" → "photograph", "vote" → "voting"
                    options.append((form, 1.0 + self._counts.get(entry.key(), 0)))
                within = sum(w for _, w in options)
                for form, weight in options:  # then the synonym by its own frequency within the sense
                    result[form] = result.get(form, 0.0) + sense_weight / total * weight / within
            if tag == "*" and result:
                break
        return list(result.items())


_NEXT_WORD = re.compile(r"\s+([^\W\d_]+)\b")


def _before_particle(text: str, word: Word, tagged: _Tagged) -> bool:
    """Whether `word` is a verb followed by its particle: "check out", "Gearing up", "stop by" (not "passed
    by", the agent of a passive; "working in NH" is a preposition, tagged IN)."""
    tag = tagged.by_start.get(word.start, "")
    if not tag.startswith("VB"):
        return False
    found = _NEXT_WORD.match(text, word.end)
    if found is None or found.group(1).casefold() not in PARTICLES:
        return False
    particle = found.group(1).casefold()
    after = tagged.by_start.get(found.start(1), "")
    if after == "RP" or (after == "RB" and particle in _ADVERB_PARTICLES):
        return True
    return particle == "by" and tag in ("VB", "VBP", "VBZ", "VBG")


def _stems_in(text: str) -> frozenset[str]:
    """The stems of the words of `text`, lower-cased."""
    return frozenset(stem(w) for w in _LETTERS.findall(text.lower()))


def _repeats(form: str, present: frozenset[str]) -> bool:
    """Whether a synonym (a phrase's content words: "up" in "set up" may repeat) is in the text already, in any
    form."""
    parts = form.lower().split(" ")
    if len(parts) == 1:
        return stem(parts[0]) in present
    stops = stop_words("en")
    return any(stem(w) in present for w in parts if len(w) >= 3 and w not in stops)


def _draw(rng: random.Random, chosen: Sequence[tuple[Word, list[tuple[str, float]]]]) -> tuple[Edit, ...]:
    """One synonym for each chosen word, weighted, never the same one for two words ("implementing or enforcing"
    → "carrying out or carrying out"): a word whose every option is taken stays as it is."""
    used: set[str] = set()
    edits = []
    for w, options in chosen:
        free = [o for o in options if o[0] not in used] if used else options
        if not free:
            continue
        form = _weighted(rng, free)
        used.add(form)
        edits.append((w.start, w.end, match_case(w.text, form)))
    return tuple(sorted(edits))


def _weighted(rng: random.Random, options: list[tuple[str, float]]) -> str:
    pick = rng.random() * sum(w for _, w in options)
    for form, weight in options:
        pick -= weight
        if pick <= 0:
            return form
    return options[-1][0]

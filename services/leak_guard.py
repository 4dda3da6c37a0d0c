"""The leak guard at the doors people use: a text a person writes into a dataset is checked against its val and
test texts, as an augmenter's candidate is (workers/augment/filters.py).

Two doors put a person's text into training: an annotator's edit of a variant (the edit is a vote, so with
k = 1 the edited text trains at once), and a text sent to `POST /augment` (a submitted text, which trains once
approved). A reviewer cannot be expected to recognise a test text among thousands, and one that trains
inflates every test figure the trainer reports. So both doors refuse a near-duplicate of a val/test text with
the augment filter's default thresholds (n-gram Jaccard ≥ 0.8 or containment ≥ 0.7, FilterParams), naming the
text it is close to; an exact copy is refused already by the dataset's content hashes.

The val/test index (core/near_duplicates.ReferenceIndex) is built once per process and dataset and reused
while the dataset's val/test rows are the same: while their largest id per split is. Val/test rows are only ever
added by an import, never edited, moved or deleted but with their dataset (whose id and creation time are part
of the key), and imports into a dataset take turns, so its ids grow in the order they become visible. The two
ids are one seek each along ix_samples_split_id: a check no longer counts the val/test rows. The index holds
no texts: the few a query comes close to are read back by id through the caller's session. Building it reads
the val/test texts once, a split at a time in id order; bench/leak_guard_doors.py measures the build and a
check at 100,000 and a million val/test texts.

A build takes seconds (4.2 s at 100,000 val/test texts, 42 s at a million), and the check that needs it runs in
a writing request: on SQLite that request holds the database's write lock meanwhile, and every other writer
waits. So reading a review queue, which comes before an edit, starts the build in the background on a read-only
session (`warm_soon`); the edit then finds the index ready, or waits only for the rest of that build.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.near_duplicates import ReferenceIndex
from core.ngrams import Matches
from db.augmentation import REFERENCE_SPLITS, reference_last_ids, reference_rows, texts_in_order
from db.chunks import chunked
from db.models import Dataset
from db.session import readonly_engine
from workers.augment.params import FilterParams

log = logging.getLogger("augloop.leak_guard")

# Indexes kept per process, least recently used dropped first: at most this many datasets, and beyond the one in
# use at most this many bytes in all. Bytes, not texts: an index holds 660 bytes a text of tweet length at 100,000
# (bench/leak_guard_doors.py) and more for longer texts, so 330 MB is about 500,000 tweets.
CACHED_DATASETS = 4
CACHED_BYTES = 330_000_000
_SPLITS = REFERENCE_SPLITS
CHECK_BATCH = 10_000  # texts checked at a time (a run's view checks every reviewed text)
_DEFAULTS = FilterParams()
JACCARD, CONTAINMENT, NGRAM = _DEFAULTS.leakage_threshold, _DEFAULTS.leakage_containment, _DEFAULTS.leakage_ngram


@dataclass(frozen=True)
class Leak:
    """The val/test text a written text is closest to, with both scores (0..1)."""

    sample_id: int
    split: str
    jaccard: float
    containment: float
    same_words: bool = False  # the same letters and digits: only case, spacing, punctuation or symbols differ

    def describe(self) -> str:
        if self.same_words:
            return (
                f"the same words as {self.split} sample {self.sample_id} (only case, spacing, punctuation or "
                f"symbols differ): training on it would leak that {self.split} text"
            )
        return (
            f"a near-duplicate of {self.split} sample {self.sample_id} (character n-gram Jaccard "
            f"{self.jaccard:.2f}, containment {self.containment:.2f}; the leak guard's thresholds are "
            f"{JACCARD} and {CONTAINMENT}): training on it would leak that {self.split} text"
        )


@dataclass(frozen=True)
class Closest:
    """Per text: the best scores against any val/test text, and the leak when they reach a threshold."""

    jaccard: float
    containment: float
    leak: Leak | None


_reading: ContextVar[Session] = ContextVar("leak_guard_session")


class _Guard:
    def __init__(self, session: Session, dataset_id: int) -> None:
        self.ids = array("q")
        self.splits = bytearray()  # index into _SPLITS

        def texts() -> Iterator[str]:  # indexed as they stream by; the index keeps ids, not texts
            for sample_id, split, text in reference_rows(session, dataset_id):
                self.ids.append(sample_id)
                self.splits.append(_SPLITS.index(split))
                yield text

        self.index = ReferenceIndex(min(JACCARD, CONTAINMENT), n=NGRAM, texts_of=self._texts_of).fit(texts())
        self.nbytes = self.index.nbytes + self.ids.itemsize * len(self.ids) + len(self.splits)

    def _texts_of(self, positions: np.ndarray) -> list[str]:
        return texts_in_order(_reading.get(), [self.ids[i] for i in positions.tolist()])

    def closest(self, session: Session, texts: Sequence[str]) -> list[Closest]:
        out: list[Closest] = []
        token = _reading.set(session)
        try:
            for chunk in chunked(texts, CHECK_BATCH):  # the n-gram vectors of one chunk at a time
                vectors, sizes = self.index.ngrams.vectors(chunk)
                best = self.index.best(chunk, vectors, sizes)
                out.extend(self._closest(best, i) for i in range(len(chunk)))
        finally:
            _reading.reset(token)
        return out

    def _closest(self, best: Matches, i: int) -> Closest:
        jaccard, containment = float(best.jaccard[i]), float(best.containment[i])
        leak = None
        if (same := best.same_words(i)) >= 0:
            leak = Leak(self.ids[same], _SPLITS[self.splits[same]], round(jaccard, 4), round(containment, 4), True)
        elif jaccard >= JACCARD or containment >= CONTAINMENT:
            ref = int(best.jaccard_ref[i] if jaccard >= JACCARD else best.containment_ref[i])
            leak = Leak(self.ids[ref], _SPLITS[self.splits[ref]], round(jaccard, 4), round(containment, 4))
        return Closest(round(jaccard, 4), round(containment, 4), leak)


_cache: OrderedDict[tuple[object, ...], _Guard] = OrderedDict()
# Keys whose background build did not fit beside the index in use (see _placed): not warmed again.
_unkept: OrderedDict[tuple[object, ...], None] = OrderedDict()
# One lock per index being built: a build takes seconds (4.2 s at 100,000 val/test texts), and meanwhile the checks
# on other datasets' indexes go ahead; a second check that needs the same index waits for it. `_lock` guards
# these two dicts and is never held during a build.
_building: dict[tuple[object, ...], threading.Lock] = {}
_lock = threading.Lock()


def _key(session: Session, dataset: Dataset) -> tuple[object, ...]:
    bind = session.get_bind()
    return (str(bind.engine.url), dataset.id, dataset.created_at, *reference_last_ids(session, dataset.id))


def _newer(kept: tuple[object, ...], key: tuple[object, ...]) -> bool:
    """Whether the kept key holds val/test rows that `key`, of the same dataset, lacks (a larger id of a split)."""
    return any((a or 0) > (b or 0) for a, b in zip(kept[3:], key[3:], strict=True))  # type: ignore[operator]


Entry = tuple[tuple[object, ...], _Guard]


def _over(entries: list[Entry]) -> bool:
    """Whether `entries` (least recently used first) exceed the bounds: more than CACHED_DATASETS, or more than
    CACHED_BYTES beside the last, the one in use, which is always kept."""
    return len(entries) > 1 and (
        len(entries) > CACHED_DATASETS or sum(g.nbytes for _, g in entries[:-1]) > CACHED_BYTES
    )


def _bounded(entries: list[Entry]) -> list[Entry]:
    """What the bounds keep of `entries`: the least recently used dropped first."""
    kept = list(entries)
    while _over(kept):
        kept.pop(0)
    return kept


def _placed(entries: list[Entry], new: Entry) -> list[Entry]:
    """Where a background build goes among the kept indexes: beside the one in use, which it never pushes out
    (it may push out older ones); or, where it does not fit there (a million val/test texts weigh more than
    CACHED_BYTES), in use itself when the one it displaces still fits beside it; else nowhere, and the dataset is
    not warmed again until its val/test rows change (`_unkept`): its edit builds, as without the warming."""
    if not entries:
        return [new]
    beside = _bounded([*entries[:-1], new, entries[-1]])
    if new in beside:
        return beside
    instead = _bounded([*entries, new])
    if entries[-1] in instead:
        return instead
    _unkept[new[0]] = None
    while len(_unkept) > 64:
        _unkept.popitem(last=False)
    return entries


def _cached(key: tuple[object, ...], built: _Guard | None = None, *, in_use: bool = True) -> _Guard | None:
    """The index kept for `key`, now the most recently used when `in_use`; least recently used ones dropped past
    the bounds. With `built`, first keep it there in place of the dataset's older ones, unless a newer one is
    kept (a build that began before an import, ending after one that began after it); a background build (not
    `in_use`) where `_placed` puts it."""
    with _lock:
        if built is not None:
            same = [k for k in _cache if k[:3] == key[:3]]
            if any(_newer(k, key) for k in same):
                return None
            for stale in same:
                del _cache[stale]
            entries = list(_cache.items())
            order = [*entries, (key, built)] if in_use else _placed(entries, (key, built))
            _cache.clear()
            _cache.update(order)
        guard = _cache.get(key)
        if guard is not None and in_use:
            _cache.move_to_end(key)
        while _over(list(_cache.items())):
            _cache.popitem(last=False)
        return guard


def _guard(session: Session, dataset: Dataset, key: tuple[object, ...], *, in_use: bool = True) -> _Guard:
    """The index for `key` (the dataset's val/test texts as `session` sees them), built here if no one has it."""
    guard = _cached(key, in_use=in_use)
    if guard is None:
        with _lock:
            building = _building.setdefault(key, threading.Lock())
        try:
            with building:
                guard = _cached(key, in_use=in_use)
                if guard is None:
                    built = _Guard(session, dataset.id)
                    guard = _cached(key, built, in_use=in_use) or built
        finally:
            with _lock:
                if _building.get(key) is building:
                    del _building[key]
    return guard


def closest(session: Session, dataset: Dataset, texts: Sequence[str]) -> list[Closest]:
    """For each text, its closest val/test text of the dataset by the leak guard's measure."""
    if not texts:
        return []
    return _guard(session, dataset, _key(session, dataset)).closest(session, texts)


# Background builds under way, by (database, dataset id). One at a time per process: each holds a connection
# and the index it builds (hundreds of MB at a million val/test texts); a queue read meanwhile starts none, and
# the next read after it (the review page reads its queue at every step) starts its own.
_warming: dict[tuple[str, int], threading.Thread] = {}
WARM_AT_ONCE = 1


def warm_soon(session: Session, dataset: Dataset) -> bool:
    """Start building the dataset's index in the background unless it is kept already (two index seeks to know),
    being built, or another background build is under way. The build reads through its own read-only session,
    so it holds no write lock; a check that comes meanwhile waits for it instead of building a second one.
    Returns whether a build was started."""
    key = _key(session, dataset)
    if key[-len(_SPLITS) :] == (None,) * len(_SPLITS):
        return False  # no val/test text: an empty index builds at once
    engine = session.get_bind().engine
    tag = (str(engine.url), dataset.id)
    with _lock:
        busy = key in _building or tag in _warming or len(_warming) >= WARM_AT_ONCE
        if busy or key in _cache or key in _unkept:
            return False
        thread = threading.Thread(target=_warm, args=(engine, dataset.id, tag), name="leak-guard-warm", daemon=True)
        try:
            thread.start()  # under the lock: `settle` never sees a thread not yet started (it takes the lock last)
        except RuntimeError:  # no thread to be had: the check that needs the index builds it, as before
            log.warning("could not start the leak guard's background build for dataset %s", dataset.id, exc_info=True)
            return False
        _warming[tag] = thread
    return True


def _warm(engine: Engine, dataset_id: int, tag: tuple[str, int]) -> None:
    try:
        with Session(bind=readonly_engine(engine)) as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is not None:  # deleted since: nothing to build
                _guard(session, dataset, _key(session, dataset), in_use=False)
    except Exception:  # the check that needs the index builds it then, and reports what fails
        log.warning("building the leak guard's index of dataset %s in the background failed", dataset_id, exc_info=True)
    finally:
        with _lock:
            _warming.pop(tag, None)


def settle(timeout: float | None = None) -> bool:
    """Wait, `timeout` seconds at most in all, for the background builds under way (the tests, between two).
    Returns whether none is left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        threads = list(_warming.values())
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


def leaks(session: Session, dataset: Dataset, texts: Sequence[str]) -> list[Leak | None]:
    """For each text, the val/test text it would leak into training (None: none close enough)."""
    return [c.leak for c in closest(session, dataset, texts)]

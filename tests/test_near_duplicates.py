"""No test text leaks through a near-copy (issue 12, point 4): the leak guard measures containment beside
Jaccard, and the importer finds near-duplicate groups, reports those that span splits, and keeps them in one
split when it draws the split itself. Built from the example dataset's own tweets, retweeted and quoted."""

from __future__ import annotations

import csv
import io
import random

from core.near_duplicates import near_duplicate_groups
from core.ngrams import NgramIndex
from tests.conftest import EXAMPLE_CSV


def _example() -> list[dict[str, str]]:
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _one_word_changed(text: str, rng: random.Random) -> str:
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = "tremendous" if words[i] != "tremendous" else "huge"
    return " ".join(words)


def _copies(tests: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """(test text, a train-side near-copy of it): a retweet, or a quote with a comment added."""
    out = []
    for i, text in enumerate(tests):
        if i % 2:
            out.append((text, f"RT @RepExample: {text}"))
        else:
            out.append((text, f'"{text}" Proud to stand with my colleagues on this. #tcot'))
    return out


def _long_test_texts(n: int) -> list[str]:
    return [r["text"] for r in _example() if r["split"] == "test" and 60 <= len(r["text"]) <= 200][:n]


def test_the_leak_guard_drops_retweets_and_quotes_of_test_texts_that_jaccard_lets_through() -> None:
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    rng = random.Random(0)
    tests = _long_test_texts(40)
    pairs = _copies(tests, rng)
    index = NgramIndex(5).fit(tests)
    found = index.best(*index.vectors([copy for _t, copy in pairs]))
    assert sum(found.jaccard < 0.8) >= 15, "many of these near-copies pass a Jaccard-only guard"
    guard = CandidateFilter(set(), tests, FilterParams())
    # The augmenter's candidate is a variant of a train-side copy (its source): one more word changed.
    verdicts = guard.check([(copy, _one_word_changed(copy, rng)) for _t, copy in pairs])
    assert [v.reason for v in verdicts] == ["leakage"] * len(pairs)
    assert all(v.scores["containment"] >= FilterParams().leakage_containment for v in verdicts)
    assert [v.scores["leakage_ref"] for v in verdicts] == list(range(len(pairs))), "the right test text"
    # Containment needs a long enough shared text: a stock phrase inside a post is no leak.
    short = CandidateFilter(set(), ["Happy Thanksgiving!"], FilterParams())
    source = "Grateful for our troops serving far from home today. Happy holidays!"
    (verdict,) = short.check([(source, "Happy Thanksgiving! Grateful for our troops serving far from home today.")])
    assert verdict.keep, verdict


def _csv(rows: list[tuple[str, str, str | None]]) -> bytes:
    """With a split column when the rows name splits, without one (augloop draws the split) otherwise."""
    out = io.StringIO()
    writer = csv.writer(out)
    with_split = any(split for _t, _b, split in rows)
    writer.writerow(["text", "bias", "split"] if with_split else ["text", "bias"])
    for text, bias, split in rows:
        writer.writerow([text, bias, split] if with_split else [text, bias])
    return out.getvalue().encode()


def test_import_reports_near_duplicates_across_splits(admin, engine) -> None:
    rng = random.Random(1)
    example = _example()
    pairs = _copies(_long_test_texts(6), rng)
    rows = [(r["text"], r["bias"], r["split"]) for r in example[:300]]
    rows += [(t, "neutral", "test") for t, _c in pairs] + [(c, "neutral", "train") for _t, c in pairs]
    r = admin.post("/api/v1/datasets/leaky/import", files={"file": ("leaky.csv", _csv(rows))}, data={"task": ["bias"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["near_duplicate_groups_across_splits"] >= 6
    lines = {tuple(sorted(g["lines"])) for g in body["near_duplicates_across_splits"]}
    first_test_line = 2 + 300  # the header is line 1
    for k in range(6):
        assert tuple(sorted((first_test_line + k, first_test_line + 6 + k))) in lines


def test_the_importer_groups_by_the_leak_guards_thresholds(admin, engine) -> None:
    """A train row that shares 80% of a test row (containment between the leak guard's 0.7 and the finder's own
    default 0.8) is a leak to the augment filter and the training view: the importer reports it too."""
    test_text = (
        "The Senate passed the farm bill today after a long debate on crop insurance, food stamps and rural broadband."
    )
    near = test_text[:80] + " Read more about what this means for families in our state."
    rows = [(r["text"], r["bias"], r["split"]) for r in _example()[:100]]
    rows += [(test_text, "neutral", "test"), (near, "neutral", "train")]
    r = admin.post("/api/v1/datasets/leaky/import", files={"file": ("leaky.csv", _csv(rows))}, data={"task": ["bias"]})
    assert r.status_code == 201, r.text
    lines = {tuple(sorted(g["lines"])) for g in r.json()["near_duplicates_across_splits"]}
    assert (102, 103) in lines, r.json()["near_duplicates_across_splits"]


def test_a_split_drawn_by_augloop_keeps_each_near_duplicate_group_together(admin, engine) -> None:
    from sqlalchemy import select

    from db.models import Sample

    rng = random.Random(2)
    example = _example()
    pairs = _copies(_long_test_texts(30), rng)
    rows = [(r["text"], r["bias"], None) for r in example[:600]]
    rows += [(t, "neutral", None) for t, _c in pairs] + [(c, "neutral", None) for _t, c in pairs]
    r = admin.post("/api/v1/datasets/drawn/import", files={"file": ("drawn.csv", _csv(rows))}, data={"task": ["bias"]})
    assert r.status_code == 201, r.text
    assert r.json()["near_duplicate_groups_across_splits"] == 0
    assert r.json()["split_info"]["near_duplicates_kept_together"] >= 30
    with engine.connect() as conn:
        split_of = dict(conn.execute(select(Sample.text, Sample.split)).tuples().all())
    assert all(split_of[t] == split_of[c] for t, c in pairs)
    assert {split_of[t] for t, _c in pairs} >= {"train", "val"} or {split_of[t] for t, _c in pairs} >= {"train", "test"}
    groups = near_duplicate_groups([text for text, _b, _s in rows])
    assert all(len({split_of[rows[i][0]] for i in g}) == 1 for g in groups)


def test_a_drawn_split_keeps_short_texts_with_the_same_words_together(admin, engine) -> None:
    """Texts like "Vote today!" and "vote today!!" are a leak to the leak guard (the same words) but too short for the
    n-gram measures: a split drawn by augloop must not put one in train and the other in test."""
    from sqlalchemy import select

    from db.models import Sample

    short = [f"Vote for item {i} today" for i in range(40)]
    rows = [(r["text"], r["bias"], None) for r in _example()[:300]]
    rows += [(t, "neutral", None) for t in short] + [(t.upper() + "!!", "neutral", None) for t in short]
    r = admin.post("/api/v1/datasets/short/import", files={"file": ("short.csv", _csv(rows))}, data={"task": ["bias"]})
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == len(rows)
    assert r.json()["split_info"]["near_duplicates_kept_together"] >= 40
    with engine.connect() as conn:
        split_of = dict(conn.execute(select(Sample.text, Sample.split)).tuples().all())
    assert all(split_of[t] == split_of[t.upper() + "!!"] for t in short)
    assert len({split_of[t] for t in short}) > 1, "the pairs are drawn as units, not all into one split"
    assert near_duplicate_groups(["Thank you!", "thank you", "Thank you, friends"]) == [[0, 1]]


def test_the_anchor_leak_guard_flags_what_the_exact_guard_flags_on_the_example_dataset() -> None:
    """The leak guard scores a candidate against the few val/test texts that share anchors with it
    (core/near_duplicates.py); the exact guard scores it against every one (NgramIndex, one sparse product).
    Candidates: a one-word variant of every train post of the example dataset, and retweets, quotes and
    truncations of its val/test posts. Every candidate the exact guard flags, the anchor guard flags with the
    same reference and the same scores, and it flags nothing more; the one difference allowed is containment by
    accident: a short text whose n-grams turn up one by one in a post ten times its size, with no shared passage
    (on this data: one train post of 8,000 characters that "contains" an unrelated 100-character test tweet)."""
    from core.near_duplicates import ReferenceIndex
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    rows = _example()
    refs = [r["text"] for r in rows if r["split"] != "train"]
    rng = random.Random(3)
    pairs = [(r["text"], _one_word_changed(r["text"], rng)) for r in rows if r["split"] == "train"]
    pairs += [(copy, _one_word_changed(copy, rng)) for _t, copy in _copies(refs, rng)]
    pairs += [(t, t[: len(t) * 3 // 4]) for t in refs]
    queries = [candidate for _source, candidate in pairs]
    p = FilterParams()
    exact_index = NgramIndex(5).fit(refs)
    vectors, sizes = exact_index.vectors(queries)
    exact = exact_index.best(vectors, sizes)
    anchored = ReferenceIndex(min(p.leakage_threshold, p.leakage_containment)).fit(refs).best(queries, vectors, sizes)

    def flagged(m, i: int) -> int | None:  # type: ignore[no-untyped-def]
        if m.jaccard[i] >= p.leakage_threshold:
            return int(m.jaccard_ref[i])
        return int(m.containment_ref[i]) if m.containment[i] >= p.leakage_containment else None

    ref_sizes = exact_index.sizes
    by_accident, same = [], 0
    for i in range(len(queries)):
        want, got = flagged(exact, i), flagged(anchored, i)
        if want is not None and got is None and max(sizes[i], ref_sizes[want]) >= 10 * min(sizes[i], ref_sizes[want]):
            by_accident.append(i)
            continue
        assert got == want, (queries[i][:80], want, got)
        if want is not None:
            same += 1
            assert (anchored.jaccard[i], anchored.containment[i]) == (exact.jaccard[i], exact.containment[i])
    assert same > 1000 and len(by_accident) <= 2, (same, by_accident)
    # The filter drops for leakage on the same verdicts, naming the same val/test text.
    verdicts = CandidateFilter(set(), refs, p).check(pairs)
    leaks = [i for i, v in enumerate(verdicts) if v.reason == "leakage"]
    assert set(leaks) >= {i for i in range(len(queries)) if flagged(exact, i) is not None} - set(by_accident) - {
        i for i, v in enumerate(verdicts) if v.reason in ("empty", "identical_to_source", "duplicate", "length_ratio")
    }
    assert all(verdicts[i].scores["leakage_ref"] == flagged(exact, i) for i in leaks)


def test_the_n_gram_mask_bound_is_never_below_the_exact_score() -> None:
    """The leak guard drops a pair the anchors propose when the bound from the two texts' n-gram masks says it
    cannot reach the threshold, before reading the reference (ReferenceIndex.gram_bound). A bound below the
    exact score would let a leak through: on every pair of 400 example posts and their one-word variants,
    retweets and truncations (near-copies, unrelated posts, short and long), the bound is at least the exact
    Jaccard and containment that core.ngrams computes, and it rules out most unrelated pairs."""
    import numpy as np

    from core.near_duplicates import ReferenceIndex
    from core.ngrams import pair_scores

    rng = random.Random(5)
    refs = [r["text"] for r in _example()[:400]]
    queries = [_one_word_changed(t, rng) for t in refs[:100]] + [f"RT @x: {t}" for t in refs[100:150]]
    queries += [t[: len(t) // 2] for t in refs[150:200]] + [r["text"] for r in _example()[400:500]]
    index = ReferenceIndex(0.7).fit(refs)  # pairs under 0.7 by the popcount keep that bound; others are counted
    exact = NgramIndex(5)
    vectors, sizes = exact.vectors(queries)
    ref_vectors, ref_sizes = exact.vectors(refs)
    q = np.repeat(np.arange(len(queries)), len(refs))
    r = np.tile(np.arange(len(refs)), len(queries))
    bound = index.gram_bound(q, r, vectors.indptr, vectors.indices)
    jaccard, containment, enough = pair_scores(vectors, sizes, q, ref_vectors, ref_sizes, r)
    score = np.where(enough, np.maximum(jaccard, containment), 0.0)
    assert (bound >= score - 1e-12).all(), np.flatnonzero(bound < score)[:5]
    assert (score >= 0.7).sum() >= 150  # the near-copies are there to be bounded
    assert (bound[score < 0.2] < 0.7).mean() > 0.9  # and unrelated pairs are ruled out


def test_an_index_that_reads_texts_back_finds_the_same_and_reads_only_the_candidates() -> None:
    """The novelty index of an augment job does not hold the training texts (a million of them would be the
    job's largest allocation): it reads back, by position, only the texts its candidates come close to, and
    finds exactly what an index holding them finds."""
    import numpy as np

    from core.near_duplicates import ReferenceIndex

    rng = random.Random(11)
    refs = [r["text"] for r in _example()[:2000]]
    queries = [_one_word_changed(t, rng) for t in refs[:300]] + [r["text"] for r in _example()[2000:2300]]
    read: list[int] = []

    def texts_of(positions: np.ndarray) -> list[str]:
        read.extend(positions.tolist())
        return [refs[i] for i in positions]

    vectors, sizes = NgramIndex(5).vectors(queries)
    holding = ReferenceIndex(0.3).fit(refs).best(queries, vectors, sizes)
    reading = ReferenceIndex(0.3, texts_of=texts_of).fit(iter(refs), chunk=700)
    found = reading.best(queries, vectors, sizes)
    assert reading.texts == [] and len(reading) == len(refs)
    for a, b in zip(vars(holding).values(), vars(found).values(), strict=True):
        assert np.array_equal(a, b)
    assert (found.jaccard >= 0.7).sum() >= 250  # the one-word variants found their source
    assert 0 < len(set(read)) < len(refs) / 2


def test_the_leak_guard_checks_candidates_when_no_reference_text_is_long_enough_for_an_anchor() -> None:
    """Val/test and training texts all shorter than an anchor (8 characters: "yes", "help me", as in an intent
    dataset) give the references no anchor at all; the guard still judges candidates (it raised IndexError)."""
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    short = ["yes", "help me", "", "no way"]
    guard = CandidateFilter(set(), short, FilterParams(), training_texts=short)
    source = "Please help me reset the password of my account today"
    verdicts = guard.check([(source, "Please help me reset the password of my account now")])
    assert verdicts[0].reason is None
    assert verdicts[0].scores["leakage"] == 0.0


def test_references_added_after_an_earlier_finish_are_found_with_those_before() -> None:
    """ReferenceIndex is built in chunks: texts added after a finish() join the index (the anchors were
    replaced by the new chunk's alone while texts and n-gram masks kept both, so earlier texts went unfound
    and the new ones were reported as the earlier ones)."""
    from core.near_duplicates import ReferenceIndex

    rows = [r["text"] for r in _example() if len(r["text"]) > 60]
    first, second = rows[:5], rows[5:10]
    index = ReferenceIndex(0.7)
    index.add(first)
    index.finish()
    index.add(second)
    index.finish()
    queries = [first[1], second[3]]
    found = index.best(queries, *NgramIndex(5).vectors(queries))
    assert found.jaccard.tolist() == [1.0, 1.0]
    assert found.jaccard_ref.tolist() == [1, 8]


def test_a_short_val_test_text_with_other_punctuation_or_case_is_a_leak() -> None:
    """A short text has too few n-grams for the near-duplicate measures (MIN_SHARED), and the exact hash sees
    case, spacing and invisible characters but not punctuation: "Vote today!!" passed as a variant of a train
    text while test holds "Vote today!". The same letters and digits in the same order are a leak."""
    from core.near_duplicates import ReferenceIndex
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    tests = ["Vote today!", "Thank you, veterans.", "Happy Thanksgiving!", "!!!"]
    guard = CandidateFilter(set(), tests, FilterParams(min_similarity=0.0))
    candidates = [
        ("Vote today, everyone!", "vote today!!"),
        ("Thank you to all veterans.", "Thank you veterans"),
        ("Happy Thanksgiving to all!", "Happy\u200bThanksgiving"),
        ("Happy Thanksgiving to all!", "Happy Thanksgiving, friends!"),  # other words: no leak
        ("Vote today, everyone!", "Vote tomorrow!"),
        ("Wow!!!", "?!"),  # no letter or digit: nothing to match
    ]
    verdicts = guard.check(candidates)
    assert [v.reason for v in verdicts[:3]] == ["leakage"] * 3
    assert [v.scores["leakage_ref"] for v in verdicts[:3]] == [0, 1, 2]
    assert all(v.reason != "leakage" for v in verdicts[3:]), [v.reason for v in verdicts]
    # Texts added after an earlier finish() keep the keys of those before.
    index = ReferenceIndex(0.7)
    index.add(tests[:2])
    index.finish()
    index.add(tests[2:])
    index.finish()
    assert index.same_words(["VOTE TODAY", "happy thanksgiving", "thank you"]).tolist() == [0, 2, -1]


def test_words_that_differ_by_a_combining_mark_are_not_the_same_words() -> None:
    """Devanagari vowel signs and Thai tone marks are parts of letters: लड़का / लड़की (boy / girl), a
    gender-swapped variant, must not read as a copy of its val/test text."""
    from core.textnorm import same_words_key

    assert same_words_key("लड़का अच्छा है") != same_words_key("लड़की अच्छी है")
    assert same_words_key("ไม่") != same_words_key("ไม")
    assert same_words_key("Café, today!") == same_words_key("cafe\u0301 today")  # NFKC: é is e + its accent

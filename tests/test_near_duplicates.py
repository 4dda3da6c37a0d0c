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
    r = admin.post("/api/v1/datasets/leaky/import", files={"file": ("leaky.csv", _csv(rows))},
                   data={"task": ["bias"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["near_duplicate_groups_across_splits"] >= 6
    lines = {tuple(sorted(g["lines"])) for g in body["near_duplicates_across_splits"]}
    first_test_line = 2 + 300  # the header is line 1
    for k in range(6):
        assert tuple(sorted((first_test_line + k, first_test_line + 6 + k))) in lines


def test_a_split_drawn_by_augloop_keeps_each_near_duplicate_group_together(admin, engine) -> None:
    from sqlalchemy import select

    from db.models import Sample

    rng = random.Random(2)
    example = _example()
    pairs = _copies(_long_test_texts(30), rng)
    rows = [(r["text"], r["bias"], None) for r in example[:600]]
    rows += [(t, "neutral", None) for t, _c in pairs] + [(c, "neutral", None) for _t, c in pairs]
    r = admin.post("/api/v1/datasets/drawn/import", files={"file": ("drawn.csv", _csv(rows))},
                   data={"task": ["bias"]})
    assert r.status_code == 201, r.text
    assert r.json()["near_duplicate_groups_across_splits"] == 0
    assert r.json()["split_info"]["near_duplicates_kept_together"] >= 30
    with engine.connect() as conn:
        split_of = dict(conn.execute(select(Sample.text, Sample.split)).tuples().all())
    assert all(split_of[t] == split_of[c] for t, c in pairs)
    assert {split_of[t] for t, _c in pairs} >= {"train", "val"} or {split_of[t] for t, _c in pairs} >= {"train", "test"}
    groups = near_duplicate_groups([text for text, _b, _s in rows])
    assert all(len({split_of[rows[i][0]] for i in g}) == 1 for g in groups)

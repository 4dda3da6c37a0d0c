"""A term a lead protects while an augment job runs: what the job stores honours it, on both databases."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import delete, select

from tests.augment_fixtures import run_worker, train_ids

pytestmark = pytest.mark.usefixtures("augment_env")


@pytest.fixture
def settings(any_settings):  # type: ignore[no-untyped-def]
    """Every fixture of this module on SQLite and on the real Postgres server."""
    return any_settings


@pytest.mark.parametrize("edited_during", ["_read_phase", "insert_variants"])
def test_a_term_protected_while_a_job_runs_is_not_replaced_in_what_it_stores(
    lead, engine, mini_dataset, monkeypatch, edited_during: str
) -> None:
    """The job read the terms when it began and stored variants that replaced a word a lead protected meanwhile
    (3 of them in an attacker's run); on Postgres an edit committed while the job inserted its variants was
    missed too (4 in a reviewer's run). The terms in force when it commits decide, as for the automatic rules."""
    import services.variant_generation as generation
    from db.models import Sample
    from db.session import session_scope

    if edited_during == "insert_variants" and engine.dialect.name == "sqlite":
        pytest.skip("SQLite's store phase is its one writer: an edit waits for its commit")
    body = {"dataset": "mini", "sample_ids": train_ids(engine, mini_dataset, limit=60), "methods": ["wordnet"]}
    body["seed"] = 2

    def replaced(job_id: int) -> list[set[str]]:
        with session_scope(engine) as s:
            return [
                set(re.findall(r"[a-z]+", s.get(Sample, v.parent_id).text.lower()))
                - set(re.findall(r"[a-z]+", v.text.lower()))
                for v in s.scalars(select(Sample).where(Sample.job_id == job_id))
            ]

    first = lead.post("/api/v1/augment", json=body).json()["id"]
    run_worker(engine)
    counts: dict[str, int] = {}
    for words in replaced(first):
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    word = max(sorted(counts), key=lambda w: counts[w])  # the word this job replaces most
    kept_first = len(replaced(first))
    assert counts[word] >= 2, counts
    with session_scope(engine) as s:  # forget them, then run the same job again with the edit in its middle
        s.execute(delete(Sample).where(Sample.job_id == first))
    step = getattr(generation, edited_during)

    def edit() -> None:
        answer = lead.post("/api/v1/datasets/mini/protected-terms", json={"add": [word]})
        assert answer.status_code == 200, answer.text

    def edited_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if edited_during == "insert_variants":  # the store phase has read the terms: protected before its commit
            edit()
            return step(*args, **kwargs)
        done = step(*args, **kwargs)  # the job has read the terms: protected while its models run
        edit()
        return done

    monkeypatch.setattr(generation, edited_during, edited_meanwhile)
    second = lead.post("/api/v1/augment", json=body).json()["id"]
    run_worker(engine)
    assert not [words for words in replaced(second) if word in words]
    result = lead.get(f"/api/v1/jobs/{second}").json()["result"]
    # each variant that replaced it (or another of its inflections) is dropped, and only those
    assert result["dropped"]["protected_term"] >= counts[word], result["dropped"]
    assert result["kept"] + result["dropped"]["protected_term"] == kept_first, (result, kept_first)
    assert result["per_method"]["wordnet"]["kept"] == result["kept"] == len(replaced(second))


def test_one_of_two_copies_of_a_protected_word_replaced_is_a_word_lost() -> None:
    from workers.augment.textspans import ProtectedTerms

    terms = ProtectedTerms(["abortion"])
    source = "abortion is healthcare and abortion rights matter"
    assert terms.lost(source, "abortion is healthcare and miscarriage rights matter")
    assert not terms.lost(source, "abortion is health care and abortion rights count")
    assert ProtectedTerms(["vote"]).lost("votes count", "ballots count")  # an inflection of the term


def wide(word: str) -> str:
    """The word in fullwidth letters."""
    return "".join(chr(ord(c) - ord("!") + 0xFF01) for c in word)


# "abortion" in fullwidth letters and in mathematical bold, as social-media posts write words to stand out
FULLWIDTH = wide("abortion")
BOLD = "".join(chr(0x1D41A + ord(c) - ord("a")) for c in "abortion")


def test_a_protected_term_written_in_fullwidth_or_bold_letters_is_the_term() -> None:
    """Every other text check reads NFKC; protected terms read NFC, so the masked LM replaced "abortion"
    written in fullwidth or bold letters, and the store's re-check saw nothing lost."""
    from core.settings import get_settings
    from workers.augment.base import SourceHints
    from workers.augment.models import get_augmenter
    from workers.augment.params import MaskedLMParams
    from workers.augment.textspans import ProtectedTerms

    terms = ProtectedTerms(["abortion"])
    assert terms.covers(FULLWIDTH) and terms.covers(BOLD) and terms.covers(FULLWIDTH.upper())
    assert ProtectedTerms(["vote"]).covers(wide("VOTES"))  # an inflection, in fullwidth capitals
    assert terms.lost(f"We oppose {BOLD} laws", "We oppose these laws")
    assert not terms.lost(f"We oppose {BOLD} laws", f"We fight {BOLD} laws")
    texts = [f"We oppose {FULLWIDTH} laws", f"We oppose {BOLD} laws"]
    out = get_augmenter("mlm", "en", get_settings()).augment(
        texts,
        [4, 4],
        seed=1,
        language="en",
        params=MaskedLMParams(min_prob=0.0, aug_p=1.0),
        hints=SourceHints(protected=terms, labels=[{}, {}]),
    )
    assert any(variants for variants in out), "the tiny masked LM wrote no variant to check"
    for source, variants in zip(texts, out, strict=True):
        for variant in variants:
            assert not any(edit["from"] in (FULLWIDTH, BOLD) for edit in variant.edits), variant
            assert not terms.lost(source, variant.text), variant.text

"""Work at once on Postgres, where transactions truly run side by side under READ COMMITTED: each statement
reads what was committed when it began, so a transaction that reads, then writes by what it read, misses what
a concurrent one has not committed yet. (SQLite has one writer at a time.)"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.review_fixtures import issue_token, seed_review_data

pytestmark = pytest.mark.postgres


@dataclass
class Race:
    first: Any  # what each request returned, or the exception it raised
    second: Any
    second_waited: bool  # the second was still running when the first was let go (after 1 s, or 15 s: see race)


def race(
    monkeypatch, module: Any, step: str, request: Callable[[], Any], *, second_needs_no_lock: bool = False
) -> Race:
    """Run `request` twice at once: the first holds, uncommitted, right after its call of `module.step` until
    the second has had a second to run; then both finish. Where the second should not wait for the first
    (`second_needs_no_lock`), the first holds until the second has finished (15 s at most): on a loaded machine
    the second may need more than a second, and releasing the first then raced them the other way round."""
    reached, release = threading.Event(), threading.Event()
    real = getattr(module, step)

    def then_hold(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        if threading.current_thread().name == "first":
            reached.set()
            release.wait(10)
        return out

    monkeypatch.setattr(module, step, then_hold)
    outcome: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            outcome[name] = request()
        except Exception as err:  # noqa: BLE001 (reported to the test)
            outcome[name] = err

    first = threading.Thread(target=run, args=("first",), name="first")
    first.start()
    assert reached.wait(10)
    second = threading.Thread(target=run, args=("second",), name="second")
    second.start()
    second.join(15.0 if second_needs_no_lock else 1.0)
    waited = second.is_alive()
    release.set()
    first.join(20)
    second.join(20)
    return Race(outcome["first"], outcome["second"], waited)


def test_a_work_share_claim_waits_for_the_one_under_way(pg_settings, monkeypatch) -> None:
    """Locking the variants alone let two claims hand out the same ones (CI saw annotators share 5 of 19): a
    claim whose statement began just before another's commit read that claim's leases as absent once its locks
    were gone. Claims on a dataset now take turns, and each reads the leases of those before it."""
    from sqlalchemy import select

    from db import review_assignments as leases
    from db.datasets import get_dataset
    from db.models import User
    from db.session import get_engine, session_scope
    from services.review import queue_filter
    from services.review_assignments import next_batch

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine)
    issue_token(engine, "bob")
    issue_token(engine, "carol")
    with session_scope(engine) as s:
        get_dataset(s, data.dataset).distribute_work = True

    def claim() -> list[int]:  # bob first (his leases written, not yet committed), then carol
        name = "bob" if threading.current_thread().name == "first" else "carol"
        with session_scope(engine) as s:
            user = s.scalars(select(User).where(User.name == name)).one()
            return [v.id for v in next_batch(s, data.dataset, user, queue_filter(), size=5)[0].items]

    shares = race(monkeypatch, leases, "add_leases", claim)
    assert shares.second_waited, "carol's claim did not wait for bob's to commit"
    assert len(shares.first) == len(shares.second) == 5
    assert not set(shares.first) & set(shares.second), shares


def test_two_training_requests_at_once_stay_within_the_projects_cap(pg_settings, monkeypatch) -> None:
    """Each request queues its runs, then counts the project's runs in flight: without taking turns each missed
    the other's and both passed a cap only one of them fitted under."""
    from sqlalchemy import func, select

    import services.compute_bounds as bounds
    from core.errors import QuotaExceeded
    from core.settings import get_settings
    from db.models import Dataset, Job, User
    from db.session import get_engine, session_scope
    from services.training import start_training
    from tests.review_fixtures import add_val_texts

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine)
    with session_scope(engine) as s:
        add_val_texts(s, s.scalars(select(Dataset).where(Dataset.name == data.dataset)).one())
    issue_token(engine, "lee", project_role="lead")
    monkeypatch.setenv("AUGLOOP_MAX_TRAINING_JOBS_PER_PROJECT", "3")
    get_settings.cache_clear()

    def two_seeds() -> int:
        with session_scope(engine) as s:
            lee = s.scalars(select(User).where(User.name == "lee")).one()
            runs, _jobs = start_training(s, data.dataset, {"lr_search": "off"}, [1, 2], user=lee)
            return len(runs)

    both = race(monkeypatch, bounds, "runs_in_flight", two_seeds)
    get_settings.cache_clear()
    assert both.first == 2, both
    assert isinstance(both.second, QuotaExceeded), f"both requests passed a cap of 3 jobs: {both!r}"
    assert both.second.extra == {"in_flight": 4, "limit": 3}
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind == "train")) == 2


def test_two_augment_requests_at_once_stay_within_the_projects_cap(pg_settings, monkeypatch) -> None:
    from sqlalchemy import func, select

    import services.augmentation as augmentation
    from core.errors import QuotaExceeded
    from core.settings import get_settings
    from db.models import Job, User
    from db.session import get_engine, session_scope

    engine = get_engine(pg_settings.resolved_database_url)
    data, other = seed_review_data(engine), seed_review_data(engine, name="rev2")  # one project's two datasets
    issue_token(engine, "lee", project_role="lead")
    owed = len(data.sources) * 3
    monkeypatch.setenv("AUGLOOP_MAX_AUGMENT_CANDIDATES_PER_PROJECT", str(owed + owed // 2))
    get_settings.cache_clear()

    def ask() -> int:  # the first on one dataset, the second on the other (one dataset's requests take turns)
        on = data if threading.current_thread().name == "first" else other
        with session_scope(engine) as s:
            lee = s.scalars(select(User).where(User.name == "lee")).one()
            request = augmentation.AugmentRequest(methods=["wordnet"], n_per_text=3, sample_ids=on.sources)
            return augmentation.request_variants(s, on.dataset, request, get_settings(), lee).id

    both = race(monkeypatch, augmentation, "jobs_in_flight", ask)
    get_settings.cache_clear()
    assert isinstance(both.first, int), both
    assert isinstance(both.second, QuotaExceeded), f"both requests passed the cap: {both!r}"
    assert both.second.extra["in_flight"] == 2 * owed
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind == "augment")) == 1


def test_two_jobs_first_automatic_decisions_at_once_share_the_reviewer_auto(pg_settings, monkeypatch) -> None:
    """The user `auto` is made by the first automatic decision. Two at once: the second's insert of the same
    name failed its job's attempt (a unique violation), and the retry generated every variant again."""
    from db import auth
    from db.session import get_engine, session_scope

    engine = get_engine(pg_settings.resolved_database_url)

    def sign() -> int:
        with session_scope(engine) as s:
            return auth.automatic_reviewer(s).id

    both = race(monkeypatch, auth, "automatic_reviewer", sign)  # the first made it, not yet committed
    assert isinstance(both.second, int) and both.second == both.first, both


def test_an_edit_keeps_the_label_score_a_scorer_committed_while_it_ran(pg_settings) -> None:
    """A label-model scorer writes a variant's scores without a new version. An edit that read the row before
    the scorer's commit kept the older scores as the generated text's (what auto-approval learns from)."""
    from sqlalchemy import select, update

    from db.models import Sample, User
    from db.session import get_engine, session_scope
    from services.review import decide

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine)
    issue_token(engine, "bob")
    variant = data.variants[data.sources[0]][0]
    with session_scope(engine) as s:  # as the augmenter stores it: never edited
        s.execute(update(Sample).where(Sample.id == variant).values(generated_text=None))
    with session_scope(engine) as s:
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        read = s.get_one(Sample, variant)  # the request has read the row (and holds it, as decide does)
        assert read.label_consistency == 0.9
        with session_scope(engine) as scorer:  # meanwhile a scorer commits its score
            scorer.execute(update(Sample).where(Sample.id == variant).values(label_consistency=0.42, label_flag=True))
        edited = decide(s, variant, bob, "edit", 1, text="An entirely new sentence about the county fair.")
        generated = edited.scores["generated_text"]
    assert generated["label_consistency"] == 0.42 and generated["label_flag"] is True, generated


def test_two_admins_demoting_each_other_at_once_leave_one_admin(pg_settings, monkeypatch) -> None:
    """Each demotion checks that some admin keeps an active token; under READ COMMITTED each saw the other still
    an admin and both commits went through, leaving none (a reviewer's find). The admins' rows are held first:
    the second waits for the first, sees it, and is refused."""
    from sqlalchemy import func, select

    from core.errors import ConflictError
    from db import auth
    from db.models import User
    from db.session import get_engine, session_scope
    from services import tokens

    engine = get_engine(pg_settings.resolved_database_url)
    for name in ("ada", "bea"):
        issue_token(engine, name, "admin")

    def demote_the_other() -> str:  # ada demotes bea first (not yet committed), then bea demotes ada
        me, other = ("ada", "bea") if threading.current_thread().name == "first" else ("bea", "ada")
        with session_scope(engine) as s:
            by = s.scalars(select(User).where(User.name == me)).one()
            return tokens.change_role(s, other, "annotator", by=by).user.role

    outcome = race(monkeypatch, auth, "set_role", demote_the_other)
    assert outcome.second_waited, "the second demotion did not wait for the first to commit"
    assert outcome.first == "annotator" and isinstance(outcome.second, ConflictError), outcome
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.role == "admin")) == 1


def _named(session: Any, name: str) -> Any:
    from sqlalchemy import select

    from db.models import User

    return session.scalars(select(User).where(User.name == name)).one()


def test_a_bulk_approval_by_filter_passes_over_a_text_rewritten_while_it_ran(pg_settings, monkeypatch) -> None:
    """The targets' guards (a person's text is approved only by one who read it) were read before the rows were
    locked: an edit committed in between was approved, unseen, with the edit's text (an attacker's find)."""
    import services.review as review
    import services.review_bulk as review_bulk
    from db.models import Sample
    from db.session import get_engine, session_scope

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine, hostile=False)
    issue_token(engine, "alice")
    issue_token(engine, "bob")
    rewritten = data.variants[data.sources[0]][2]

    def request() -> Any:
        with session_scope(engine) as s:
            if threading.current_thread().name == "first":  # alice approves every pending variant by filter
                everything = review_bulk.BulkSelection(filter=review.queue_filter())
                return review_bulk.bulk_decide_in(
                    s, data.dataset, _named(s, "alice"), "approve", everything, confirm=True
                )
            return review.decide(s, rewritten, _named(s, "bob"), "edit", 1, text="A text bob wrote, unread.").version

    r = race(monkeypatch, review_bulk, "bulk_targets", request, second_needs_no_lock=True)
    assert not r.second_waited and r.second == 2 and rewritten in r.first["changed"], r
    with session_scope(engine) as s:
        row = s.get_one(Sample, rewritten)
        assert row.text == "A text bob wrote, unread." and row.review_status == "pending"


def test_a_bulk_rejection_by_filter_passes_over_a_share_claimed_while_it_ran(pg_settings, monkeypatch) -> None:
    """With shared work, a claim committed between the bulk decision's reading of its targets and its locks was
    rejected whole under the colleague's open page (an attacker's find)."""
    import services.review as review
    import services.review_bulk as review_bulk
    from db.datasets import get_dataset
    from db.models import Sample
    from db.session import get_engine, session_scope
    from services.review_assignments import next_batch

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine, hostile=False)
    issue_token(engine, "alice")
    issue_token(engine, "carol")
    with session_scope(engine) as s:
        get_dataset(s, data.dataset).distribute_work = True

    def request() -> Any:
        with session_scope(engine) as s:
            if threading.current_thread().name == "first":
                everything = review_bulk.BulkSelection(filter=review.queue_filter())
                who = _named(s, "alice")
                return review_bulk.bulk_decide_in(
                    s, data.dataset, who, "reject", everything, reason="other", confirm=True
                )
            claimed, _dataset, _until = next_batch(s, data.dataset, _named(s, "carol"), review.queue_filter(), size=5)
            return [v.id for v in claimed.items]

    r = race(monkeypatch, review_bulk, "bulk_targets", request, second_needs_no_lock=True)
    assert not r.second_waited and isinstance(r.second, list) and len(r.second) == 5, r
    with session_scope(engine) as s:
        assert {s.get_one(Sample, i).review_status for i in r.second} == {"pending"}


def test_two_approvals_of_one_variant_at_once_both_count_with_two_reviews_required(pg_settings, monkeypatch) -> None:
    """At k = 2 the second of two votes sent at the same instant got 409 ("someone else decided first"), where
    the same vote a moment later counts beside the first (one change is none): it is now tried again on the
    variant as it is (an attacker's find: 24 of 24 pairs)."""
    import services.review as review
    from db.models import Sample
    from db.session import get_engine, session_scope

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine, reviews_required=2, hostile=False)
    issue_token(engine, "bob")
    issue_token(engine, "carol")
    v = data.variants[data.sources[0]][0]

    def request() -> Any:
        who = "bob" if threading.current_thread().name == "first" else "carol"
        with session_scope(engine) as s:
            return review.decide(s, v, _named(s, who), "approve", 1).review_status

    r = race(monkeypatch, review, "status_values", request)  # bob holds between reading the votes and writing
    assert (r.first, r.second) == ("approved", "pending"), r
    with session_scope(engine) as s:
        row = s.get_one(Sample, v)
        assert row.review_status == "approved" and row.review_count == 2 and row.version == 3


def test_an_admins_edit_under_way_while_they_are_demoted_does_not_train(pg_settings) -> None:
    """The demotion recomputes the statuses that read the role, but an edit the admin had under way (its status
    read "admin", not committed) committed after the recomputation had looked: the demoted admin's text trained
    (a reviewer's find). The edit reads roles under a share lock: the demotion waits for it, then finds it."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from db.models import Sample, User
    from db.session import get_engine, session_scope
    from services import tokens
    from services.review import decide

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine)
    issue_token(engine, "eve", "admin")
    issue_token(engine, "ida", "admin")  # another admin keeps a token: eve may be demoted
    variant = data.variants[data.sources[0]][0]
    editing = Session(engine)
    try:
        eve = editing.scalars(select(User).where(User.name == "eve")).one()
        edited = decide(editing, variant, eve, "edit", 1, text="A sentence eve wrote herself about the fair.")
        assert edited.review_status == "approved"  # an admin's edit, not committed yet
        outcome: dict[str, Any] = {}

        def demote() -> None:
            with session_scope(engine) as s:
                outcome["moved"] = tokens.change_role(s, "eve", "annotator").status_changes

        demotion = threading.Thread(target=demote)
        demotion.start()
        demotion.join(1.0)
        assert demotion.is_alive(), "the demotion did not wait for the edit under way"
        editing.commit()
    finally:
        editing.close()
    demotion.join(20)
    assert outcome["moved"] == {data.dataset: {"approved→pending": 1}}, outcome
    with session_scope(engine) as s:
        assert s.get_one(Sample, variant).review_status == "pending"

"""Review semantics on a real PostgreSQL server, where requests truly run at the same time (SQLite serialises
writers at BEGIN IMMEDIATE): optimistic locking must hold on the conditional UPDATE alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.review_fixtures import issue_token, seed_review_data, serve

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_api(pg_settings, monkeypatch) -> Iterator[dict]:
    from api.main import create_app
    from db.session import get_engine

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine)
    tokens = [issue_token(engine, name) for name in ("bob", "carol", "dave", "erin")]
    admin = issue_token(engine, "root", "admin")
    with serve(create_app(pg_settings, engine), monkeypatch) as url:
        yield {"url": url + "/api/v1", "tokens": tokens, "data": data, "admin": admin}


def client(pg_api: dict, i: int) -> httpx.Client:
    # 60 s, not httpx's 5: four requests at once on a loaded 2-core CI machine take seconds each
    return httpx.Client(base_url=pg_api["url"], headers={"Authorization": f"Bearer {pg_api['tokens'][i]}"}, timeout=60)


def test_racing_decisions_one_wins_per_variant(pg_api) -> None:
    """Four annotators send version 1 of the same variant at once, for each of six variants."""
    variants = [vs[0] for vs in pg_api["data"].variants.values()]
    for v in variants:
        barrier = threading.Barrier(4)
        codes: list[int] = [0] * 4

        def send(i: int, v: int = v, barrier: threading.Barrier = barrier, codes: list[int] = codes) -> None:
            with client(pg_api, i) as c:
                barrier.wait()
                body = (
                    {"decision": "reject", "version": 1, "reason": "other"}
                    if i % 2
                    else {"decision": "approve", "version": 1}
                )
                codes[i] = c.post(f"/samples/{v}/decision", json=body).status_code

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [200, 409, 409, 409], (v, codes)
        with client(pg_api, 0) as c:
            family = c.get(f"/samples/{v}").json()
        assert len(family["reviews"]) == 1 and family["sample"]["version"] == 2


def test_decisions_bulk_and_queue_on_postgres(pg_api) -> None:
    data = pg_api["data"]
    with client(pg_api, 0) as bob:
        v = data.variants[data.sources[1]][0]
        dup = bob.get(f"/samples/{data.variants[data.sources[1]][1]}").json()["sample"]["text"]
        r = bob.post(f"/samples/{v}/decision", json={"decision": "edit", "version": 1, "text": dup.upper()})
        assert r.status_code == 409 and r.json()["field"] == "text"
        r = bob.post(f"/samples/{v}/decision", json={"decision": "edit", "version": 1, "text": "Brand new text."})
        assert r.json()["generated_text"] == "Proud to have met local farmers in Ames today."
        count = bob.post(
            "/datasets/rev/bulk-decisions", json={"decision": "approve", "filter": {"method": ["wordnet"]}}
        ).json()["matched"]
        assert count == 6
        done = bob.post(
            "/datasets/rev/bulk-decisions",
            json={
                "decision": "approve",
                "filter": {"method": ["wordnet"]},
                "confirm": True,
                "expected_count": 6,
            },
        ).json()
        assert done["statuses"] == {"approved": 6}
        queue = bob.get("/datasets/rev/review-queue", params={"sort": "-similarity", "page_size": 5}).json()
        sims = [i["similarity"] for i in queue["items"]]
        # bob's edit waits for another member's approval: still pending
        assert sims == sorted(sims, reverse=True) and queue["total"] == 19 - 6
        assert bob.get("/datasets/rev/review-queue", params={"q": "RALLY"}).json()["total"] == 2  # ILIKE
    with client(pg_api, 1) as carol:
        agreement = carol.get("/datasets/rev/agreement").json()
        assert agreement["overall"]["units"] == 7
        progress = carol.get("/datasets/rev/review-progress").json()
        assert progress["totals"] == {"pending": 13, "approved": 6, "rejected": 0}


def test_shared_work_and_undo_on_postgres(pg_api) -> None:
    """Four annotators ask for their share at the same moment: every pending variant goes to exactly one of
    them (k = 1), and an undo on Postgres withdraws the vote and leaves an audit row."""
    with httpx.Client(base_url=pg_api["url"], headers={"Authorization": f"Bearer {pg_api['admin']}"}) as admin:
        assert admin.patch("/datasets/rev", json={"distribute_work": True}).status_code == 200
    barrier = threading.Barrier(4)
    shares: list[list[int]] = [[] for _ in range(4)]
    answers: list[str] = []  # what a thread saw (an exception in a thread fails nothing by itself)

    def claim(i: int) -> None:
        with client(pg_api, i) as c:
            barrier.wait()
            try:
                r = c.post("/datasets/rev/assignments", json={"size": 5})
            except httpx.HTTPError as err:
                answers.append(repr(err))
                return
            if r.status_code != 200:
                answers.append(f"{r.status_code} {r.text}")
                return
            shares[i] = [item["id"] for item in r.json()["items"]]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == []
    everyone = [v for share in shares for v in share]
    assert len(everyone) == len(set(everyone)) == 19, shares  # 19 pending variants, none handed out twice
    v = shares[0][0]
    with client(pg_api, 0) as c:
        decided = c.post(f"/samples/{v}/decision", json={"decision": "approve", "version": 1}).json()
        undone = c.post(f"/samples/{v}/undo", json={"version": decided["version"]}).json()
        assert undone["review_status"] == "pending" and undone["last_review"]["decision"] == "undo"
        assert v in {i["id"] for i in c.post("/datasets/rev/assignments", json={"size": 5}).json()["items"]}


def test_a_nul_character_is_refused_naming_its_field_on_postgres(pg_api) -> None:
    """Postgres refuses a NUL in a text value; the API refuses it first, naming the field, and stores nothing
    (before, a note or a search holding one reached the database and came back naming no field)."""
    v = pg_api["data"].variants[pg_api["data"].sources[0]][0]
    with client(pg_api, 0) as bob:
        r = bob.post(
            f"/samples/{v}/decision", json={"decision": "reject", "version": 1, "reason": "other", "note": "spam\x00"}
        )
        assert r.status_code == 422 and r.json()["field"] == "note", r.text
        r = bob.get("/datasets/rev/review-queue", params={"q": "\x00"})
        assert r.status_code == 422 and r.json()["field"] == "q", r.text
        family = bob.get(f"/samples/{v}").json()
        assert family["reviews"] == [] and family["sample"]["version"] == 1
        r = bob.post(
            f"/samples/{v}/decision", json={"decision": "reject", "version": 1, "reason": "other", "note": "spam"}
        )
        assert r.status_code == 200, r.text


def test_a_decision_and_a_new_reviews_required_take_turns(pg_settings) -> None:
    """A decision counts votes under k; a change of k re-evaluates what is stored. Racing, a decision under the
    old k committed after the re-evaluation, and stayed approved by one vote where three were required."""
    from sqlalchemy import select

    from db.models import Sample, User
    from db.session import get_engine, session_scope
    from services.datasets import update_settings
    from services.review import decide

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine)
    issue_token(engine, "bob")
    variant = data.variants[data.sources[0]][0]
    decided, release = threading.Event(), threading.Event()
    moved: list[dict] = []

    def decision() -> None:
        with session_scope(engine) as s:
            bob = s.scalars(select(User).where(User.name == "bob")).one()
            assert decide(s, variant, bob, "approve", 1).review_status == "approved"  # under k = 1
            decided.set()
            release.wait(10)

    def new_rule() -> None:
        with session_scope(engine) as s:
            moved.append(update_settings(s, data.dataset, {"reviews_required": 3}, None)[1])

    first = threading.Thread(target=decision)
    first.start()
    assert decided.wait(10)
    second = threading.Thread(target=new_rule)
    second.start()
    second.join(1.0)
    assert second.is_alive(), "the new rule did not wait for the decision under way"
    release.set()
    first.join(10)
    second.join(10)
    assert moved == [{"approved→pending": 1}]
    with session_scope(engine) as s:
        assert s.get_one(Sample, variant).review_status == "pending"


def test_a_work_share_claimed_while_k_changes_does_not_deadlock(pg_settings, monkeypatch) -> None:
    """A claim locks its variants, then inserts its leases (their foreign key takes a key-share lock on the
    dataset's row); a change of k re-evaluates, locking the reviewed variants. Had the change held the dataset's
    row, each would have waited for the other: Postgres aborts one (a 500)."""
    from sqlalchemy import select

    from db import review_assignments as leases
    from db.datasets import get_dataset
    from db.models import ReviewAssignment, Sample, User
    from db.session import get_engine, session_scope
    from services.datasets import update_settings
    from services.review import decide, queue_filter
    from services.review_assignments import next_batch

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine, reviews_required=2)
    issue_token(engine, "bob")
    issue_token(engine, "carol")
    with session_scope(engine) as s:
        get_dataset(s, data.dataset).distribute_work = True
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        for variants in data.variants.values():  # reviewed: a change of k re-evaluates (and locks) them all
            for v in variants:
                decide(s, v, bob, "approve", s.get_one(Sample, v).version)
    claimed, release = threading.Event(), threading.Event()
    real_add = leases.add_leases

    def add_when_released(*args, **kwargs):  # type: ignore[no-untyped-def]
        claimed.set()
        release.wait(10)
        return real_add(*args, **kwargs)

    monkeypatch.setattr(leases, "add_leases", add_when_released)
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            with session_scope(engine) as s:
                carol = s.scalars(select(User).where(User.name == "carol")).one()
                next_batch(s, data.dataset, carol, queue_filter(), size=5)
        except BaseException as err:  # noqa: BLE001 (reported in the test thread)
            errors.append(err)

    def new_rule() -> None:
        try:
            with session_scope(engine) as s:
                update_settings(s, data.dataset, {"reviews_required": 3}, None)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    first = threading.Thread(target=claim)
    first.start()
    assert claimed.wait(10)
    second = threading.Thread(target=new_rule)
    second.start()
    second.join(1.0)  # re-evaluating, it waits for the variants the claim holds
    release.set()
    first.join(20)
    second.join(20)
    assert not errors, errors
    with session_scope(engine) as s:
        assert s.scalar(select(ReviewAssignment.id).limit(1)) is not None
        assert get_dataset(s, data.dataset).reviews_required == 3


def test_a_bulk_decision_never_replaces_the_users_own_vote_cast_meanwhile(pg_settings, monkeypatch) -> None:
    """With k = 2 a variant stays pending after one vote: an annotator's single reject committed (in another
    request) while their bulk approval by filter waited for its lock was replaced by the bulk's approve, and the
    variant ended approved against their decision (Postgres: SQLite's writers take turns from BEGIN)."""
    from sqlalchemy import select

    from db.datasets import get_dataset
    from db.models import Review, Sample, User
    from db.session import get_engine, session_scope
    from services import review_bulk
    from services.review import decide, queue_filter
    from services.review_bulk import BulkSelection, bulk_decide

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine, name="k2", reviews_required=2, hostile=False)
    issue_token(engine, "bob")
    target = data.variants[data.sources[0]][0]
    real_targets = review_bulk.bulk_targets

    def then_a_reject_commits(session, *args, **kwargs):  # type: ignore[no-untyped-def]
        found = real_targets(session, *args, **kwargs)  # bob had no vote when the targets were read
        with session_scope(engine) as other:  # his single reject, in another request, commits first
            bob = other.scalars(select(User).where(User.name == "bob")).one()
            decide(other, target, bob, "reject", other.get_one(Sample, target).version, reason="meaning_changed")
        return found

    monkeypatch.setattr(review_bulk, "bulk_targets", then_a_reject_commits)
    with session_scope(engine) as s:
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        done = bulk_decide(s, get_dataset(s, "k2"), bob, "approve", BulkSelection(filter=queue_filter()), confirm=True)
    assert done["skipped"] == {"voted_already": 1} and done["applied"] == done["matched"] - 1
    with session_scope(engine) as s:
        assert [r.decision for r in s.scalars(select(Review).where(Review.sample_id == target))] == ["reject"]
        assert s.get_one(Sample, target).review_status == "pending"  # one vote of two


def test_a_decision_on_a_dataset_deleted_meanwhile_is_a_404_not_a_500(pg_api, pg_settings, monkeypatch) -> None:
    """An admin deleted the dataset while an annotator's decision was under way: the decision met no row where
    it expected one (NoResultFound, a refresh of a deleted row, an UPDATE of none) and answered 500, and uvicorn
    closed the client's connection."""
    from db.session import get_engine, session_scope
    from services import datasets, review

    engine = get_engine(pg_settings.resolved_database_url)
    real_votes = review.votes_and_editors

    def deleted_first(session, ids):  # type: ignore[no-untyped-def]
        with session_scope(engine) as other:  # the admin's delete commits between the read and the write
            datasets.remove(other, pg_api["data"].dataset)
        return real_votes(session, ids)

    monkeypatch.setattr(review, "votes_and_editors", deleted_first)
    variant = next(iter(pg_api["data"].variants.values()))[0]
    with client(pg_api, 0) as c:
        r = c.post(f"/samples/{variant}/decision", json={"decision": "approve", "version": 1})
        assert r.status_code == 404, r.text
        assert "deleted by another request meanwhile; nothing was saved" in r.json()["detail"]
        assert c.get("/me").status_code == 200  # the connection stays usable


def test_postgres_constraint_errors_are_read_by_their_codes(pg_settings) -> None:
    """The API tells a broken foreign key (deleted meanwhile, 404) from a duplicate text (409 on `text`) by the
    server's SQLSTATE and constraint name, not its words (a server in another language words them otherwise)."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from db.session import get_engine
    from services.failures import constraint_violated

    engine = get_engine(pg_settings.resolved_database_url)
    data = seed_review_data(engine, name="codes", hostile=False)
    insert = "INSERT INTO samples (dataset_id, text, split, origin, content_hash, review_status, review_count, "
    insert += "version, created_at, updated_at) SELECT :ds, 'x', 'train', 'original', content_hash, 'pending', 0, 1, "
    insert += "now(), now() FROM samples WHERE id = :id"
    found = []
    for ds in (999_999, None):
        with engine.connect() as conn, pytest.raises(IntegrityError) as err:
            dataset = (
                ds
                or conn.execute(text("SELECT dataset_id FROM samples WHERE id = :id"), {"id": data.sources[0]}).scalar()
            )
            conn.execute(text(insert), {"ds": dataset, "id": data.sources[0]})
        found.append(constraint_violated(err.value))
    assert found[0][0] == "foreign_key"
    assert found[1] == ("unique", "uq_samples_dataset_id_content_hash")

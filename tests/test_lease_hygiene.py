"""Work shared out (distribute_work) is given back when its holder can no longer give it back themselves (their
last active token revoked, their role changed so that a dataset is no longer theirs), and what one annotator
holds is the batch they were last handed: changing the filter does not pile up leases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.review_fixtures import carol, issue_token, review_data, seed_review_data  # noqa: F401
from tests.test_review_api import decide

MESSAGES = ["policy", "constituency", "mobilization", "attack", "media", "personal"]  # one source each


def claim(client: Any, size: int = 5, name: str = "rev", **body: Any) -> Any:
    return client.post(f"/api/v1/datasets/{name}/assignments", json={"size": size, **body})


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [i["id"] for i in response.json()["items"]]


def leases_of(engine: Any, user_name: str, dataset: str | None = None) -> set[int]:
    """The variants leased to the user (live leases), in one dataset or all of them."""
    from sqlalchemy import select

    from db.models import Dataset, ReviewAssignment, User, utcnow
    from db.session import session_scope

    with session_scope(engine) as s:
        query = (
            select(ReviewAssignment.sample_id)
            .join(User, User.id == ReviewAssignment.user_id)
            .where(User.name == user_name, ReviewAssignment.leased_until >= utcnow())
        )
        if dataset is not None:
            query = query.join(Dataset, Dataset.id == ReviewAssignment.dataset_id).where(Dataset.name == dataset)
        return set(s.scalars(query))


def share_out(admin: Any, *names: str) -> None:
    for name in names:
        r = admin.patch(f"/api/v1/datasets/{name}", json={"distribute_work": True, "lease_minutes": 1440})
        assert r.status_code == 200, r.text


def token_ids(admin: Any, user_name: str) -> list[int]:
    return sorted(t["id"] for t in admin.get("/api/v1/tokens").json() if t["name"] == user_name)


def test_revoking_the_last_active_token_gives_back_the_work_in_every_dataset(
    admin, annotator, carol, engine, review_data
) -> None:
    """A revoked annotator gets 401 on DELETE /assignments: their leases hid those variants from everyone else
    for up to a day. While they hold another active token they can release it themselves: it stays theirs."""
    seed_review_data(engine, "rev2", hostile=False)
    share_out(admin, "rev", "rev2")
    held = set(ids(claim(annotator, 5)))
    held2 = set(ids(claim(annotator, 5, name="rev2")))
    (first,) = token_ids(admin, "bob-annotator")
    spare = admin.post("/api/v1/tokens", json={"name": "bob-annotator", "role": "annotator"}).json()
    assert admin.post(f"/api/v1/tokens/{first}/revoke").json() == {"revoked": 1}
    assert annotator.post("/api/v1/datasets/rev/assignments/renew").status_code == 401
    assert leases_of(engine, "bob-annotator") == held | held2  # the spare token still works: still his
    assert not held & set(ids(claim(carol, 50)))
    assert admin.post(f"/api/v1/tokens/{spare['id']}/revoke").json() == {"revoked": 1}
    assert leases_of(engine, "bob-annotator") == set()
    assert held <= set(ids(claim(carol, 50))) and held2 <= set(ids(claim(carol, 50, name="rev2")))


def test_a_revoke_that_leaves_only_expired_tokens_gives_back_the_work(admin, annotator, engine, review_data) -> None:
    from sqlalchemy import update

    from db.models import APIToken, utcnow
    from db.session import session_scope
    from services.tokens import revoke

    share_out(admin, "rev")
    (first,) = token_ids(admin, "bob-annotator")
    admin.post("/api/v1/tokens", json={"name": "bob-annotator", "role": "annotator", "expires_in_days": 1})
    held = set(ids(claim(annotator, 5)))
    with session_scope(engine) as s:  # the second token has run out meanwhile
        s.execute(update(APIToken).where(APIToken.id != first).values(expires_at=utcnow() - timedelta(hours=1)))
        assert revoke(s, first) == 1
    assert held and leases_of(engine, "bob-annotator") == set()
    # Every token of a user at once (`augloop token revoke --user`): the same.
    carol_token = issue_token(engine, "carol2")
    from fastapi.testclient import TestClient

    with TestClient(annotator.app, headers={"Authorization": f"Bearer {carol_token}"}) as c2:
        assert ids(claim(c2, 3))
    with session_scope(engine) as s:
        assert revoke(s, user_name="carol2") == 1
    assert leases_of(engine, "carol2") == set()


def test_a_demoted_admin_gives_back_the_work_where_they_lose_access(admin, app, carol, engine, review_data) -> None:
    """Made an annotator, an admin who is not a member of a dataset's project gets its 404 and can neither renew
    nor release what they hold there; in a project they are a member of, they keep it."""
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from db.models import Dataset
    from db.session import session_scope
    from services.projects import add_member, create

    seed_review_data(engine, "rev2", hostile=False)
    with session_scope(engine) as s:
        other = create(s, "other")
        s.execute(update(Dataset).where(Dataset.name == "rev2").values(project_id=other.id))
    dave_token = issue_token(engine, "dave", role="admin")
    with session_scope(engine) as s:
        add_member(s, "other", "dave", "annotator")
    share_out(admin, "rev", "rev2")
    with TestClient(app, headers={"Authorization": f"Bearer {dave_token}"}) as dave:
        held = set(ids(claim(dave, 5)))
        held2 = set(ids(claim(dave, 5, name="rev2")))
        r = admin.patch("/api/v1/users/dave", json={"role": "annotator"})
        assert r.status_code == 200 and r.json()["role"] == "annotator"
        assert claim(dave, 5).status_code == 404  # rev is no longer his to review
        assert leases_of(engine, "dave", "rev") == set()
        assert leases_of(engine, "dave", "rev2") == held2  # a member there: still his
        assert ids(claim(dave, 5, name="rev2")) == sorted(held2)
    assert held <= set(ids(claim(carol, 50)))


def test_changing_the_filter_gives_back_the_last_batch(admin, annotator, carol, engine, review_data) -> None:
    """Leases under other filters were kept, renewed by every claim and not counted against `size`: one annotator
    stepping through the filters held every pending variant."""
    share_out(admin, "rev")
    for label in MESSAGES:
        last = ids(claim(annotator, 3, filter={"task": "message", "label": label}))
        assert leases_of(engine, "bob-annotator") == set(last)  # only what the batch shows
    assert len(ids(claim(carol, 50))) == 19 - 3  # everything else is there for the others
    # Back to a filter whose variants carol now holds: bob gets what is left, and gives back the last batch.
    assert ids(claim(annotator, 3, filter={"task": "message", "label": "policy"})) == []
    assert leases_of(engine, "bob-annotator") == set()


def test_the_same_filter_page_after_page_keeps_the_batch(admin, annotator, engine, review_data) -> None:
    """What the review UI does: "Next batch" asks again with the same filter and size."""
    share_out(admin, "rev")
    batch = claim(annotator, 5).json()["items"]
    assert [i["id"] for i in claim(annotator, 5).json()["items"]] == [i["id"] for i in batch]
    for item in batch[:2]:
        assert decide(annotator, item["id"], "approve", item["version"]).status_code == 200
    refill = ids(claim(annotator, 5))
    assert len(refill) == 5 and {i["id"] for i in batch[2:]} <= set(refill)
    assert leases_of(engine, "bob-annotator") == set(refill)
    # A smaller size holds fewer: what one annotator holds is bounded by the size they ask for.
    assert ids(claim(annotator, 2)) == refill[:2]
    assert leases_of(engine, "bob-annotator") == set(refill[:2])


def test_the_refusal_names_who_turns_work_sharing_on(annotator, lead, review_data) -> None:
    r = claim(annotator)
    assert r.status_code == 422 and r.json()["field"] == "name"
    assert "lead" in r.json()["detail"] and "PATCH /api/v1/datasets/" in r.json()["detail"]
    assert lead.patch("/api/v1/datasets/rev", json={"distribute_work": True}).status_code == 200  # as it says
    assert len(ids(claim(annotator))) == 5


def test_the_same_rules_through_the_services_on_sqlite_and_postgres(any_engine) -> None:
    """What the tests above check over HTTP, through the services on both databases (the releases' SQL)."""
    from sqlalchemy import select, update

    from db.auth import create_token
    from db.models import Dataset, User
    from db.session import session_scope
    from services import review, review_assignments, tokens
    from services.projects import add_member, create

    seed_review_data(any_engine, hostile=False)
    seed_review_data(any_engine, "rev2", hostile=False)
    with session_scope(any_engine) as s:
        s.execute(update(Dataset).values(distribute_work=True, lease_minutes=1440))
        s.execute(update(Dataset).where(Dataset.name == "rev2").values(project_id=create(s, "other").id))
        create_token(s, "bob", "annotator")
        add_member(s, "default", "bob", "annotator")
        create_token(s, "dave", "admin")

    def batch(user_name: str, size: int, dataset: str = "rev", label: str | None = None) -> list[int]:
        with session_scope(any_engine) as s:
            user = s.scalars(select(User).where(User.name == user_name)).one()
            f = review.queue_filter(task="message" if label else None, label=label)
            page, _, _ = review_assignments.next_batch(s, dataset, user, f, size=size)
            return [item.id for item in page.items]

    for label in MESSAGES:
        last = batch("bob", 2, label=label)
        assert len(last) == 2 and leases_of(any_engine, "bob") == set(last)
    assert batch("bob", 1, label=MESSAGES[-1]) == last[:1] and leases_of(any_engine, "bob") == {last[0]}
    held = set(batch("dave", 3, "rev2")) | set(batch("dave", 3))
    assert len(held) == 6 and leases_of(any_engine, "dave") == held
    with session_scope(any_engine) as s:
        tokens.change_role(s, "dave", "annotator")  # a member of neither project now
    assert leases_of(any_engine, "dave") == set()
    with session_scope(any_engine) as s:
        assert tokens.revoke(s, user_name="bob") == 1
    assert leases_of(any_engine, "bob") == set()


def test_a_holder_whose_last_token_ran_out_holds_nothing(admin, annotator, carol, engine, review_data) -> None:
    """Nothing happens at the moment a token expires, and its holder can no longer renew or release their
    leases: the next claim drops them, as it drops expired leases."""
    from sqlalchemy import update

    from db.models import APIToken, User, utcnow
    from db.session import session_scope

    share_out(admin, "rev")
    held = set(ids(claim(annotator, 5)))
    assert held and not held & set(ids(claim(carol, 50)))
    with session_scope(engine) as s:
        bob = s.query(User).filter_by(name="bob-annotator").one()
        s.execute(update(APIToken).where(APIToken.user_id == bob.id).values(expires_at=utcnow() - timedelta(minutes=1)))
    assert held <= set(ids(claim(carol, 50))), "the expired holder's leases were not handed out"
    assert leases_of(engine, "bob-annotator") == set()

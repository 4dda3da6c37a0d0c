"""Who approved what (issue 12, point 3): an edit needs fresh votes, a new reviews_required re-evaluates every
variant, and with one review required the latest decision wins."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.review_fixtures import carol, issue_token, review_data  # noqa: F401


@pytest.fixture
def dave(app, engine) -> Any:
    with TestClient(app, headers={"Authorization": f"Bearer {issue_token(engine, 'dave')}"}) as c:
        yield c


def _decide(client: TestClient, sample_id: int, decision: str, **extra: Any) -> dict[str, Any]:
    version = client.get(f"/api/v1/samples/{sample_id}").json()["sample"]["version"]
    r = client.post(f"/api/v1/samples/{sample_id}/decision", json={"decision": decision, "version": version, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_an_edit_needs_fresh_votes_from_the_others(admin, annotator, carol, dave, review_data) -> None:
    assert admin.patch(f"/api/v1/datasets/{review_data.dataset}", json={"reviews_required": 3}).status_code == 200
    variant = review_data.variants[review_data.sources[0]][0]
    _decide(annotator, variant, "approve")
    assert _decide(carol, variant, "approve")["review_status"] == "approved"  # 2 of 3: a majority
    edited = _decide(dave, variant, "edit", text="We must protect Social Security for all older Americans.")
    assert edited["review_status"] == "pending", "two approvals of the old text approved a text they never saw"
    queue = annotator.get(f"/api/v1/datasets/{review_data.dataset}/review-queue", params={"unreviewed": False}).json()
    (item,) = [i for i in queue["items"] if i["id"] == variant]
    assert item["votes"]["approve"] == 1 and item["votes"]["mine"] is None, "the old votes still count"
    assert _decide(annotator, variant, "approve")["review_status"] == "approved"  # edit + 1: two who saw Y


def test_raising_reviews_required_re_evaluates_every_variant(admin, annotator, engine, review_data) -> None:
    from db.datasets import get_dataset, training_samples
    from db.session import session_scope

    approved = [vs[0] for vs in review_data.variants.values()][:4]
    rejected = review_data.variants[review_data.sources[0]][1]
    for sample_id in approved:
        _decide(annotator, sample_id, "approve")
    _decide(annotator, rejected, "reject", reason="meaning_changed")

    def trains() -> set[int]:
        with session_scope(engine) as s:
            return {x.id for x in training_samples(s, get_dataset(s, review_data.dataset))}

    assert set(approved) <= trains()
    r = admin.patch(f"/api/v1/datasets/{review_data.dataset}", json={"reviews_required": 3})
    assert r.status_code == 200 and r.json()["reviews_required"] == 3
    assert r.json()["status_changes"] == {"approved→pending": 4, "rejected→pending": 1}
    assert not set(approved) & trains(), "single-vote approvals stayed in training under k = 3"
    statuses = {
        i: annotator.get(f"/api/v1/samples/{i}").json()["sample"]["review_status"] for i in [*approved, rejected]
    }
    assert set(statuses.values()) == {"pending"}
    back = admin.patch(f"/api/v1/datasets/{review_data.dataset}", json={"reviews_required": 1})
    assert back.json()["status_changes"] == {"pending→approved": 4, "pending→rejected": 1}
    same = admin.patch(f"/api/v1/datasets/{review_data.dataset}", json={"guidelines": "Keep the label."})
    assert same.json()["status_changes"] == {}


def test_with_one_review_required_the_latest_decision_wins(annotator, carol, review_data) -> None:
    variant = review_data.variants[review_data.sources[2]][0]
    assert _decide(annotator, variant, "approve")["review_status"] == "approved"
    assert _decide(carol, variant, "reject", reason="label_changed")["review_status"] == "rejected"
    assert _decide(annotator, variant, "approve")["review_status"] == "approved"
    history = annotator.get(f"/api/v1/samples/{variant}").json()["reviews"]
    assert [(h["user"], h["decision"]) for h in history] == [
        ("bob-annotator", "approve"),
        ("carol", "reject"),
        ("bob-annotator", "approve"),
    ], "every decision audited"

"""The review flow's API: undo as an audited reversal, stored reasons on cards, work shared out with leases,
progress per annotator, and the rule for replacing label-model scores."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.review_fixtures import carol, review_data  # noqa: F401
from tests.test_review_api import decide, queue


def undo(client, sample_id: int, version: int):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/samples/{sample_id}/undo", json={"version": version})


def reviews_of(client, sample_id: int) -> list[dict]:  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/samples/{sample_id}").json()["reviews"]


def test_a_decision_answers_with_what_was_stored(annotator, review_data) -> None:
    v1, v2 = review_data.variants[review_data.sources[0]][:2]
    body = decide(annotator, v1, "reject", 1, reason="meaning_changed").json()
    assert body["review_status"] == "rejected" and body["votes"] == {
        "approve": 0,
        "reject": 1,
        "mine": "reject",
        "undoable": True,
    }
    assert body["last_review"]["reason"] == "meaning_changed" and body["last_review"]["user"] == "bob-annotator"
    # A rejection without a chosen reason is stored as such, never as a reason nobody chose.
    assert decide(annotator, v2, "reject", 1, reason="unspecified").json()["last_review"]["reason"] == "unspecified"
    rejected = {i["id"]: i for i in queue(annotator, status="rejected")["items"]}
    assert rejected[v1]["last_review"]["reason"] == "meaning_changed"
    assert rejected[v2]["last_review"]["reason"] == "unspecified"
    assert queue(annotator)["items"][0]["last_review"] is None  # pending, never decided


def test_undo_withdraws_my_vote_with_an_audit_row(annotator, review_data) -> None:
    v = review_data.variants[review_data.sources[0]][0]
    assert decide(annotator, v, "approve", 1).json()["version"] == 2
    r = undo(annotator, v, 2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["review_status"] == "pending" and body["version"] == 3 and body["review_count"] == 0
    assert body["votes"]["mine"] is None and body["last_review"]["decision"] == "undo"
    assert [(x["decision"], x["user"]) for x in reviews_of(annotator, v)] == [
        ("approve", "bob-annotator"),
        ("undo", "bob-annotator"),
    ]
    assert v in {i["id"] for i in queue(annotator)["items"]}  # back in the pending queue
    again = undo(annotator, v, 3)  # nothing left to undo
    assert again.status_code == 409 and again.json()["current"]["review_status"] == "pending"
    assert decide(annotator, v, "reject", 3, reason="other").json()["review_status"] == "rejected"


def test_undo_is_refused_once_someone_else_decided(admin, annotator, carol, review_data) -> None:
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    v = review_data.variants[review_data.sources[1]][0]
    assert decide(annotator, v, "approve", 1).json()["review_status"] == "pending"
    assert decide(carol, v, "approve", 2).json()["review_status"] == "approved"
    refused = undo(annotator, v, 2)
    assert refused.status_code == 409 and "someone else decided" in refused.json()["detail"]
    assert refused.json()["current"]["review_status"] == "approved" and refused.json()["current"]["version"] == 3
    stale = undo(carol, v, 2)  # carol's own, but with a version she no longer holds
    assert stale.status_code == 409 and stale.json()["field"] == "version"
    body = undo(carol, v, 3).json()  # the vote that decided it: the status follows bob's vote alone
    assert body["review_status"] == "pending" and body["votes"] == {
        "approve": 1,
        "reject": 0,
        "mine": None,
        "undoable": False,
    }
    # With k = 2 the queue hides what you voted on; after undoing, carol sees the variant again.
    assert v in {i["id"] for i in queue(carol)["items"]}
    assert v not in {i["id"] for i in queue(annotator)["items"]}
    # Agreement counts standing votes only: bob's approve alone, nothing to compare.
    assert annotator.get("/api/v1/datasets/rev/agreement").json()["overall"]["units"] == 1
    # carol's vote withdrawn, bob's stands alone again: his to take back
    assert undo(annotator, v, 4).status_code == 200


def test_undo_of_an_edit_restores_the_text(annotator, review_data) -> None:
    v = review_data.variants[review_data.sources[2]][0]
    before = annotator.get(f"/api/v1/samples/{v}").json()["sample"]["text"]
    edited = decide(annotator, v, "edit", 1, text="Join us at the rally this Sunday!").json()
    assert edited["text"] == "Join us at the rally this Sunday!"
    body = undo(annotator, v, edited["version"]).json()
    assert body["text"] == before and body["review_status"] == "pending"
    last = reviews_of(annotator, v)[-1]
    assert (last["decision"], last["text_before"], last["text_after"]) == ("undo", edited["text"], before)


def card_of(client, sample_id: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return client.get("/api/v1/review-cards", params={"ids": str(sample_id)}).json()[0]


def test_the_undo_button_is_offered_only_where_an_undo_is_taken(admin, annotator, carol, review_data) -> None:  # type: ignore[no-untyped-def]
    """Shown wherever the card read `mine`, the Undo button offered an undo the API refused (409) as soon as
    someone else had voted since: a common case with k = 1 (bob approves, carol rejects)."""
    v = review_data.variants[review_data.sources[3]][0]
    assert card_of(annotator, v)["votes"]["undoable"] is False  # no vote of his
    assert decide(annotator, v, "approve").status_code == 200
    assert card_of(annotator, v)["votes"]["undoable"] is True
    assert decide(carol, v, "reject", reason="other").status_code == 200
    card = card_of(annotator, v)
    assert card["votes"]["mine"] == "approve" and card["votes"]["undoable"] is False, card["votes"]
    assert undo(annotator, v, card["version"]).status_code == 409
    assert card_of(carol, v)["votes"]["undoable"] is True
    listed = {i["id"]: i for i in queue(annotator, status="rejected", unreviewed=False)["items"]}
    assert listed[v]["votes"]["undoable"] is False  # the queue's cards say the same
    # carol withdraws her vote: bob's is the latest that stands again, and his to take back
    assert undo(carol, v, card["version"]).status_code == 200
    card = card_of(annotator, v)
    assert card["votes"]["undoable"] is True
    assert undo(annotator, v, card["version"]).status_code == 200


def test_review_cards_take_ids_written_in_ascii_digits(annotator, review_data) -> None:  # type: ignore[no-untyped-def]
    """int() read "+5087", "5_087" and full-width or Devanagari digits as 5087: one card at many addresses, where
    an id in a path is refused in those forms."""
    v = review_data.variants[review_data.sources[3]][0]
    both = annotator.get("/api/v1/review-cards", params={"ids": f"{v}, {v}"})
    assert [c["id"] for c in both.json()] == [v]  # spaces around an id are fine, and a repeated id is one card
    wide = "".join(chr(0xFF10 + int(d)) for d in str(v))
    for raw in (f"+{v}", f"{str(v)[:1]}_{str(v)[1:]}", wide, f"{v},,{v}", f"{v}.0", ""):
        r = annotator.get("/api/v1/review-cards", params={"ids": raw})
        assert r.status_code == 422 and r.json()["field"] == "ids", (raw, r.text)


def test_a_vote_an_undone_edit_gave_back_can_be_undone_too(admin, annotator, carol, review_data) -> None:  # type: ignore[no-untyped-def]
    """Undoing one's edit gives back one's vote before it; the next undo withdrew nothing ("no decision to
    undo"), and a vote another member's undone edit gave back was refused for ever ("someone else decided")."""
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    v = review_data.variants[review_data.sources[0]][0]
    decide(annotator, v, "approve")
    edited = decide(annotator, v, "edit", text="We have to guard Social Security for our older people.").json()
    back = undo(annotator, v, edited["version"]).json()
    assert back["votes"]["mine"] == "approve" and back["votes"]["undoable"] is True, back["votes"]
    again = undo(annotator, v, back["version"])
    assert again.status_code == 200, again.text
    assert again.json()["votes"] == {"approve": 0, "reject": 0, "mine": None, "undoable": False}
    assert undo(annotator, v, again.json()["version"]).status_code == 409  # nothing of his stands now

    w = review_data.variants[review_data.sources[1]][0]
    decide(annotator, w, "approve")
    carols = decide(carol, w, "edit", text="Proud to have met the local farmers in Ames today.").json()
    assert card_of(annotator, w)["votes"]["undoable"] is False  # her edit withdrew his vote
    assert undo(annotator, w, carols["version"]).status_code == 409
    restored = undo(carol, w, carols["version"]).json()
    assert restored["votes"]["approve"] == 1 and card_of(annotator, w)["votes"]["undoable"] is True
    mine = undo(annotator, w, restored["version"])
    assert mine.status_code == 200 and mine.json()["votes"]["approve"] == 0, mine.text


def test_u_after_a_reload_finds_the_vote_the_undo_button_would_take_back(admin, annotator, carol, review_data) -> None:  # type: ignore[no-untyped-def]
    """my-latest-decision kept the old rule (the user's latest act, nobody's decision since, withdrawn or not)
    where the card's Undo button follows the votes that stand: U after a reload took back an older vote, or found
    none (a reviewer's find)."""
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})

    def latest() -> int | None:
        return annotator.get("/api/v1/datasets/rev/my-latest-decision").json()["sample_id"]

    older, newer = review_data.variants[review_data.sources[0]][:2]
    decide(annotator, older, "approve")
    decide(annotator, newer, "approve")
    carols = decide(carol, newer, "approve").json()
    assert latest() == older  # carol decided the newer one since
    undo(carol, newer, carols["version"])  # ... and withdrew it
    assert card_of(annotator, newer)["votes"]["undoable"] is True and latest() == newer
    third = review_data.variants[review_data.sources[1]][0]
    decide(annotator, third, "approve")
    edited = decide(annotator, third, "edit", text="We have to guard Social Security for our older people.").json()
    undo(annotator, third, edited["version"])  # his approval before the edit stands again: the newest vote
    assert card_of(annotator, third)["votes"]["undoable"] is True and latest() == third


def test_an_automatic_decision_is_no_ones_vote_when_a_person_undoes(admin, annotator, carol, engine, review_data):  # type: ignore[no-untyped-def]
    """The automatic outcome is never counted as a vote: undoing the only human vote leaves no vote, and the
    rule's own decision again (what it was before that person decided), not a vote of the rule's. Short of k's
    majority, a person's rejection decides and a split waits (services.review_status.status_of)."""
    from db.augmentation import AutomaticDecision, record_automatic_decisions
    from db.auth import automatic_reviewer
    from db.session import session_scope

    auto_approved, auto_rejected, twice = review_data.variants[review_data.sources[3]][:3]
    with session_scope(engine) as s:
        record_automatic_decisions(
            s,
            automatic_reviewer(s).id,
            [
                AutomaticDecision(auto_approved, "approved", note="auto"),
                AutomaticDecision(auto_rejected, "rejected", reason="label_changed", note="auto"),
                AutomaticDecision(twice, "approved", note="auto"),
            ],
        )
    rejected = decide(annotator, auto_approved, "reject", reason="meaning_changed").json()
    assert rejected["review_status"] == "rejected"
    body = undo(annotator, auto_approved, rejected["version"]).json()
    assert (body["review_status"], body["review_count"]) == ("approved", 0)
    approved = decide(annotator, auto_rejected, "approve").json()
    assert approved["review_status"] == "approved"
    body = undo(annotator, auto_rejected, approved["version"]).json()
    assert (body["review_status"], body["review_count"]) == ("rejected", 0)
    assert not {auto_approved, auto_rejected} & {i["id"] for i in queue(annotator)["items"]}
    # With k = 2: one person's rejection decides, a split waits, an undo leaves the other's vote standing.
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    assert decide(annotator, twice, "reject", reason="meaning_changed").json()["review_status"] == "rejected"
    carols = decide(carol, twice, "approve").json()
    assert carols["review_status"] == "pending"
    body = undo(carol, twice, carols["version"]).json()
    assert (body["review_status"], body["review_count"]) == ("rejected", 1)
    # Re-evaluating every reviewed variant agrees with what the undos stored.
    from db.datasets import get_dataset
    from services.review_status import reevaluate

    with session_scope(engine) as s:
        assert reevaluate(s, get_dataset(s, "rev")) == {}


def test_votes_an_edit_withdrew_are_asked_again(admin, annotator, carol, review_data) -> None:  # type: ignore[no-untyped-def]
    """With k = 2, an edit withdraws the votes cast on the old text: those reviewers see the variant again in
    their queue, their bulk selections and their work shares, or a two-person team never settles it."""
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    v, restored = review_data.variants[review_data.sources[4]][:2]

    def carol_may_decide(sample_id: int) -> bool:
        in_queue = sample_id in {i["id"] for i in queue(carol, page_size=200)["items"]}
        seen = {str(sample_id): carol.get(f"/api/v1/samples/{sample_id}").json()["sample"]["version"]}
        bulk = carol.post(  # with the version seen, as the page sends it (a rewritten text is approved seen)
            "/api/v1/datasets/rev/bulk-decisions",
            json={"decision": "approve", "sample_ids": [sample_id], "versions": seen},
        ).json()
        assert in_queue == (bulk["matched"] == 1), bulk
        return in_queue

    decide(carol, v, "approve")
    assert not carol_may_decide(v)
    edited = decide(annotator, v, "edit", text="Vote them all out in November, every last one.").json()
    assert edited["votes"] == {"approve": 1, "reject": 0, "mine": "edit", "undoable": True}
    assert carol_may_decide(v), "carol's vote was withdrawn by the edit, yet she is not asked again"
    assert decide(carol, v, "approve").json()["review_status"] == "approved"
    assert not carol_may_decide(v)
    # An edit its author undoes restores the text and the votes cast on it: nothing to ask again.
    decide(carol, restored, "approve")
    edited = decide(annotator, restored, "edit", text="Something entirely unrelated about taxes.").json()
    assert carol_may_decide(restored)
    r = undo(annotator, restored, edited["version"])
    assert r.status_code == 200, r.text
    assert r.json()["votes"] == {"approve": 1, "reject": 0, "mine": None, "undoable": False}, r.json()
    assert not carol_may_decide(restored)


def test_an_edit_that_changes_nothing_is_an_approval(admin, annotator, carol, review_data) -> None:  # type: ignore[no-untyped-def]
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    v = review_data.variants[review_data.sources[5]][0]
    text = annotator.get(f"/api/v1/samples/{v}").json()["sample"]["text"]
    decide(carol, v, "approve")
    body = decide(annotator, v, "edit", text=text + "  \n").json()
    assert body["review_status"] == "approved", "the unchanged 'edit' withdrew carol's approval"
    assert body["votes"] == {"approve": 2, "reject": 0, "mine": "approve", "undoable": True} and body["text"] == text
    assert reviews_of(annotator, v)[-1]["decision"] == "approve"


def test_undo_input_errors(annotator, review_data) -> None:
    assert undo(annotator, review_data.sources[0], 1).json()["field"] == "sample_id"  # an original
    assert undo(annotator, 999_999, 1).status_code == 404
    assert undo(annotator, review_data.variants[review_data.sources[0]][0], 0).status_code == 422
    # "undo" is not a decision anyone can cast
    assert decide(annotator, review_data.variants[review_data.sources[0]][0], "undo", 1).status_code == 422


def claim(client, size: int = 5, **body):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/datasets/rev/assignments", json={"size": size, **body})


def test_work_is_shared_out_with_leases(admin, annotator, carol, engine, review_data) -> None:
    from sqlalchemy import update

    from db.models import ReviewAssignment, utcnow
    from db.session import session_scope

    assert claim(annotator).json()["field"] == "name"  # the dataset does not share out work yet
    r = admin.patch("/api/v1/datasets/rev", json={"distribute_work": True, "lease_minutes": 10})
    assert r.json()["distribute_work"] and r.json()["lease_minutes"] == 10
    bob = claim(annotator).json()
    bob_ids = [i["id"] for i in bob["items"]]
    assert len(bob_ids) == 5 and bob_ids == sorted(bob_ids) and bob["leased_until"]
    assert claim(annotator).json()["items"] == bob["items"]  # asking again: the same share, renewed
    carol_ids = [i["id"] for i in claim(carol).json()["items"]]
    assert len(carol_ids) == 5 and not set(carol_ids) & set(bob_ids)  # nobody gets someone else's share
    # A filter narrows both what you hold and what you are given.
    attack = claim(carol, filter={"task": "message", "label": "attack"}).json()["items"]
    assert {i["parent_id"] for i in attack} == {review_data.sources[3]}
    # Deciding ends the lease; the next batch tops up with fresh variants.
    for item in bob["items"][:2]:
        assert decide(annotator, item["id"], "approve", item["version"]).status_code == 200
    refill = [i["id"] for i in claim(annotator).json()["items"]]
    assert len(refill) == 5 and set(bob_ids[2:]) <= set(refill) and not set(refill) & set(bob_ids[:2])
    # Bob leaves: once his leases run out (here: pushed into the past), his share goes to others.
    with session_scope(engine) as s:
        s.execute(update(ReviewAssignment).values(leased_until=utcnow() - timedelta(minutes=1)))
    taken = [i["id"] for i in claim(carol, size=50).json()["items"]]
    assert set(refill) <= set(taken)
    assert len(taken) == 19 - 2  # everything still pending
    # Giving work back (signing out) frees it at once.
    assert annotator.delete("/api/v1/datasets/rev/assignments").json() == {"released": 0}
    assert carol.delete("/api/v1/datasets/rev/assignments").json() == {"released": 17}
    assert len(claim(annotator, size=50).json()["items"]) == 17


def test_with_two_reviews_a_variant_goes_to_two_annotators(admin, annotator, carol, review_data) -> None:
    admin.patch("/api/v1/datasets/rev", json={"distribute_work": True, "reviews_required": 2})
    bob = [i["id"] for i in claim(annotator, size=3).json()["items"]]
    assert [i["id"] for i in claim(carol, size=3).json()["items"]] == bob  # each still needs two voters
    third = [i["id"] for i in claim(admin, size=3).json()["items"]]
    assert not set(third) & set(bob)  # two annotators hold them: the third gets others
    first = annotator.get(f"/api/v1/samples/{bob[0]}").json()["sample"]
    decide(annotator, bob[0], "approve", first["version"])
    assert bob[0] not in {i["id"] for i in claim(annotator, size=3).json()["items"]}  # voted: never again
    assert bob[0] in {i["id"] for i in claim(carol, size=3).json()["items"]}
    r = annotator.post("/api/v1/datasets/rev/assignments/renew").json()
    assert r["renewed"] == 3 and r["leased_until"]


def test_the_second_reviewer_of_a_card_both_saw_is_not_refused(admin, annotator, carol, review_data) -> None:
    """With k = 2 and work shared out, two annotators get the same cards in the same order: the second's vote
    was refused every time (409, "changed since you saw it") because the first had voted, though the text and
    its waiting were as they saw them. Another person's vote on a still-pending text is no change to what one
    judged; a decision meanwhile, an edit, an undo, a re-evaluation or one's own vote in another tab still is."""
    admin.patch("/api/v1/datasets/rev", json={"distribute_work": True, "reviews_required": 2})
    shared = claim(annotator, size=6).json()["items"]
    assert [i["id"] for i in claim(carol, size=6).json()["items"]] == [i["id"] for i in shared]
    first, second, third, fourth, fifth, sixth = shared
    assert decide(annotator, first["id"], "approve", first["version"]).json()["review_status"] == "pending"
    both = decide(carol, first["id"], "approve", first["version"])  # the version both saw
    assert both.status_code == 200 and both.json()["review_status"] == "approved", both.text
    assert both.json()["votes"] == {"approve": 2, "reject": 0, "mine": "approve", "undoable": True}
    # a split at k = 2 stays pending; the vote that splits it counts
    decide(annotator, second["id"], "approve", second["version"])
    split = decide(carol, second["id"], "reject", second["version"], reason="other")
    assert split.status_code == 200 and split.json()["review_status"] == "pending"
    # decided since (the third reviewer's vote made the majority): what carol saw is no more
    decide(annotator, second["id"], "approve", second["version"] + 2)
    assert decide(admin, second["id"], "approve").json()["review_status"] == "approved"
    late = decide(carol, second["id"], "approve", second["version"])
    assert late.status_code == 409 and late.json()["field"] == "version"
    # rewritten since: carol judged another text
    decide(annotator, third["id"], "edit", third["version"], text="A rewrite nobody else has read yet, about roads.")
    assert decide(carol, third["id"], "approve", third["version"]).status_code == 409
    # her own vote in another tab: the stale tab's vote is refused, not counted over it
    decide(carol, fourth["id"], "reject", fourth["version"], reason="other")
    assert decide(carol, fourth["id"], "approve", fourth["version"]).status_code == 409
    # the same for a selection approved at once: the card bob voted on counts her vote, the one he rewrote not
    decide(annotator, fifth["id"], "approve", fifth["version"])
    decide(annotator, sixth["id"], "edit", sixth["version"], text="Another rewrite she has not read, on schools.")
    bulk = carol.post(
        "/api/v1/datasets/rev/bulk-decisions",
        json={
            "decision": "approve",
            "sample_ids": [fifth["id"], sixth["id"]],
            "versions": {str(fifth["id"]): fifth["version"], str(sixth["id"]): sixth["version"]},
            "confirm": True,
        },
    ).json()
    assert bulk["applied"] == 1 and bulk["changed"] == [sixth["id"]] and bulk["statuses"] == {"approved": 1}, bulk


def test_a_split_vote_is_handed_out_again_for_the_review_that_decides_it(admin, annotator, carol, review_data) -> None:
    """At an even k a tie stays pending for one more review; under work sharing, where people review what they
    are handed, it was never handed out again (its votes counted as enough)."""
    admin.patch("/api/v1/datasets/rev", json={"distribute_work": True, "reviews_required": 2})
    (first,) = claim(annotator, size=1).json()["items"]
    assert [i["id"] for i in claim(carol, size=1).json()["items"]] == [first["id"]]
    decide(annotator, first["id"], "approve", first["version"])
    version = annotator.get(f"/api/v1/samples/{first['id']}").json()["sample"]["version"]
    assert decide(carol, first["id"], "reject", version, reason="other").json()["review_status"] == "pending"
    handed = [i["id"] for i in claim(admin, size=50).json()["items"]]
    assert first["id"] in handed  # the third review it waits for


def test_a_member_taken_out_of_the_project_gives_back_the_work_they_held(admin, annotator, carol, review_data) -> None:
    """Their leases kept those variants from everyone else until they expired, while they could neither renew
    nor release them any more."""
    admin.patch("/api/v1/datasets/rev", json={"distribute_work": True, "lease_minutes": 1440})
    held = {i["id"] for i in claim(annotator, size=5).json()["items"]}
    assert len(held) == 5
    assert admin.delete("/api/v1/projects/default/members/bob-annotator").status_code == 204
    assert held <= {i["id"] for i in claim(carol, size=50).json()["items"]}


def test_assignment_input_errors(admin, annotator, review_data) -> None:
    admin.patch("/api/v1/datasets/rev", json={"distribute_work": True})
    assert claim(annotator, size=0).status_code == 422
    assert claim(annotator, sort="random").json()["field"] == "sort"
    assert claim(annotator, filter={"task": "nope"}).json()["field"] == "task"
    assert admin.patch("/api/v1/datasets/rev", json={"lease_minutes": 0}).status_code == 422
    assert annotator.post("/api/v1/datasets/nope/assignments", json={}).status_code == 404


def test_progress_per_annotator(admin, annotator, carol, review_data) -> None:
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 3})
    a, b, c = review_data.variants[review_data.sources[0]]
    # a: bob, carol and admin approve; b: bob approves, carol and admin reject; c: bob approves then undoes.
    for client, decision in ((annotator, "approve"), (carol, "approve"), (admin, "approve")):
        decide(client, a, decision, reason=None if decision == "approve" else "other")
    decide(annotator, b, "approve")
    decide(carol, b, "reject", reason="other")
    decide(admin, b, "reject", reason="other")
    v = decide(annotator, c, "approve").json()["version"]
    undo(annotator, c, v)
    body = annotator.get("/api/v1/datasets/rev/annotators").json()
    rows = {r["user"]: r for r in body["annotators"]}
    bob = rows["bob-annotator"]
    assert bob["decisions_today"] == 3 and bob["undone_today"] == 1
    assert bob["active_minutes_today"] > 0 and bob["per_hour"] is None  # seconds of work: no rate yet
    # bob agreed with the others on a, not on b
    assert bob["compared_with_majority"] == 2 and bob["agreement_with_majority"] == 0.5
    assert rows["carol"]["agreement_with_majority"] is None or rows["carol"]["compared_with_majority"] == 1
    assert rows["alice-admin"]["decisions_today"] == 2


def test_active_time_and_majority_rules() -> None:
    from datetime import UTC, datetime

    from services.annotator_stats import active_seconds, majority_agreement, rate_per_hour

    t0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
    minutes = [0, 1, 2, 60, 61]  # two stretches with an hour's break between
    assert active_seconds([t0 + timedelta(minutes=m) for m in minutes]) == 30 + 60 + 60 + 30 + 60
    assert rate_per_hour([t0 + timedelta(minutes=m) for m in minutes]) == round(5 / (240 / 3600), 1)  # 75/h
    assert rate_per_hour([t0, t0 + timedelta(seconds=20)]) is None  # 50 s of work
    votes = {
        1: {10: "approve", 11: "approve", 12: "edit", 13: "reject"},  # 13 alone against the others' keep
        2: {10: "approve", 11: "reject"},  # one against one
        3: {10: "approve", 11: "approve", 13: "reject"},  # 10 and 11 each face a tie among the others
    }
    assert majority_agreement(votes) == {10: (1, 2), 11: (1, 2), 12: (1, 1), 13: (0, 2)}


@pytest.mark.parametrize(
    ("current", "new_f1", "expected"),
    [
        (None, 0.1, True),  # nothing scored yet
        ({"run_id": 1, "val_macro_f1": 0.45}, 0.20, False),  # a weak run never overrides a better one
        ({"run_id": 1, "val_macro_f1": 0.45}, 0.50, True),
        ({"run_id": 1, "val_macro_f1": 0.45}, 0.45, False),
        ({"run_id": 1}, 0.3, True),  # a score of unknown quality gives way to a measured one
        ({"run_id": 1, "val_macro_f1": 0.45}, None, False),
    ],
)
def test_a_run_replaces_scores_only_when_better(current, new_f1, expected) -> None:
    from services.label_model import replaces

    assert replaces(current, new_f1) is expected


def test_scores_record_their_run_and_keep_better_ones(engine, review_data) -> None:
    from db import training_runs as db_runs
    from db.models import Sample
    from db.session import session_scope
    from services.label_model import automatic_rule

    v = review_data.variants[review_data.sources[0]][0]
    with session_scope(engine) as s:
        text = s.get_one(Sample, v).text
    probs = {"bias": {"neutral": 0.9, "partisan": 0.1}, "message": {"policy": 0.2, "attack": 0.8}}

    def score(run_id: int, f1: float, flag: bool, chosen: bool = False) -> int:
        scorer = {"run_id": run_id, "kind": "single", "name": f"run {run_id}", "val_macro_f1": f1, "chosen": chosen}
        with session_scope(engine) as s:
            return db_runs.apply_consistency_scores(
                s,
                run_id,
                [db_runs.ConsistencyScore(v, text, 0.1 if flag else 0.9, flag, probs)],
                scorer=scorer,
                replace_if=None if chosen else automatic_rule(scorer),
            )

    assert score(1, 0.45, False) == 1
    assert score(2, 0.20, True) == 0  # the weak run left the better scores alone
    with session_scope(engine) as s:
        sample = s.get(Sample, v)
        assert sample.label_flag is False and sample.scores["label_model"]["run_id"] == 1
        assert sample.scores["label_model"]["val_macro_f1"] == 0.45 and sample.scores["similarity"] == 0.5
    assert score(3, 0.20, True, chosen=True) == 1  # a person's choice replaces them anyway
    with session_scope(engine) as s:
        label_model = s.get(Sample, v).scores["label_model"]
        assert label_model["run_id"] == 3 and label_model["chosen"] is True
    # a person's choice stands against a better run that finishes later; a run of fewer tasks replaces nothing
    assert score(4, 0.99, False) == 0
    with session_scope(engine) as s:
        s.get_one(Sample, v).scores = {**s.get_one(Sample, v).scores, "label_model": {"run_id": 1, "probs": probs}}
    one_task = {"run_id": 5, "kind": "single", "name": "run 5", "val_macro_f1": 0.99, "chosen": False}
    with session_scope(engine) as s:
        assert (
            db_runs.apply_consistency_scores(
                s,
                5,
                [db_runs.ConsistencyScore(v, text, 0.9, False, {"bias": probs["bias"]})],
                scorer=one_task,
                replace_if=automatic_rule(one_task, ["bias"]),
            )
            == 0
        ), "a bias-only run dropped the message check"
    assert score(6, 0.99, False) == 1  # a better run of the same tasks replaces a score of unknown quality
    # a pin is a setting, taken back by unpinning: its scores give way to a better run as any run's do
    pinned = {"run_id": 7, "val_macro_f1": 0.1, "chosen": True, "pinned": True, "probs": probs}
    assert automatic_rule({"run_id": 8, "val_macro_f1": 0.5})(pinned)
    assert not automatic_rule({"run_id": 8, "val_macro_f1": 0.5})({**pinned, "pinned": False})


@pytest.mark.parametrize("order", ["newest_fails_first", "older_fails_first"])
def test_runs_scoring_at_once_that_end_unfinished_give_back_the_recorded_score(engine, review_data, order) -> None:
    """Seeds scoring at once on several workers: run 2 replaced the recorded run 1's score, run 3 replaced run
    2's, and both ended unfinished. Run 3 kept only run 2's entry, so its withdrawal brought back a score of a
    model never stored, and run 1's was lost. A score now keeps the whole chain; a withdrawal gives back the
    newest score whose run did not end unfinished (recorded, or still running)."""
    from db import training_runs as db_runs
    from db.datasets import get_dataset
    from db.models import Sample, TrainingRun
    from db.session import session_scope

    v = review_data.variants[review_data.sources[0]][0]
    with session_scope(engine) as s:
        text = s.get_one(Sample, v).text
        ds = get_dataset(s, "rev").id
        runs = [TrainingRun(dataset_id=ds, status=status) for status in ("succeeded", "running", "running")]
        s.add_all(runs)
        s.flush()
        r1, r2, r3 = (r.id for r in runs)

    def score(run_id: int, flag: bool, keep: bool) -> None:
        probs = {"bias": {"neutral": 0.9 if flag else 0.1, "partisan": 0.1 if flag else 0.9}}
        with session_scope(engine) as s:
            db_runs.apply_consistency_scores(
                s,
                run_id,
                [db_runs.ConsistencyScore(v, text, 0.2 if flag else 0.8, flag, probs)],
                scorer={"run_id": run_id},
                keep_replaced=keep,
            )

    def end(run_id: int) -> tuple[Any, ...]:
        with session_scope(engine) as s:
            s.get_one(TrainingRun, run_id).status = "failed"
            s.flush()
            db_runs.withdraw_scores(s, [run_id])
        with session_scope(engine) as s:
            row = s.get_one(Sample, v)
            return (row.scores or {}).get("label_model", {}).get("run_id"), row.label_consistency, row.label_flag

    score(r1, False, keep=False)  # recorded: a chosen model's rescoring
    score(r2, True, keep=True)
    score(r3, False, keep=True)
    if order == "newest_fails_first":
        assert end(r3) == (r2, 0.2, True)  # run 2 still runs: its score comes back, with its consistency and flag
        assert end(r2) == (r1, 0.8, False)
    else:
        assert end(r2) == (r3, 0.8, False)  # run 3's score stands above it
        assert end(r3) == (r1, 0.8, False)


def test_the_latest_standing_decision_is_a_few_queries_however_long_the_history(
    annotator, carol, engine, review_data
) -> None:
    """U after a reload read the user's history 200 reviews at a time with a query per variant: 1.1 s for an
    annotator of 4,000 votes that others decided since. A few queries now (the variants others decided since
    are left out in SQL), and the same answer: the newest vote the user has not withdrawn and nobody decided
    since."""
    from sqlalchemy import event, select

    from db.models import Review, User
    from db.session import session_scope
    from services.review_undo import latest_standing_decision
    from tests.review_fixtures import add_variant

    with session_scope(engine) as s:
        me = s.scalar(select(User).where(User.name == "bob-annotator"))
        other = s.scalar(select(User).where(User.name == "carol"))
        source = review_data.sources[0]
        ids = [add_variant(s, source, f"variant number {i} of the first source") for i in range(300)]
        rows = []
        for k, v in enumerate(ids):  # each of my votes decided over by someone else since
            rows += [(v, me.id, "approve"), (v, other.id, "reject")]
            if k == 5:  # the one that stands: my latest act, nobody's since (others' undos are no decision)
                standing = v
                rows[-1] = (v, other.id, "undo")
            if k == 7:  # newer, but withdrawn by my own undo
                rows[-1] = (v, me.id, "undo")
        for sample_id, user_id, decision in rows:
            s.add(
                Review(
                    sample_id=sample_id,
                    user_id=user_id,
                    decision=decision,
                    text_before="x",
                    text_after="x",
                    version_seen=1,
                )
            )
            s.flush()
        me_id = me.id
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    with session_scope(engine) as s:
        user = s.get_one(User, me_id)
        event.listen(engine, "before_cursor_execute", count)
        try:
            found = latest_standing_decision(s, "rev", user)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert found == standing
    # the dataset (and its project), the candidates (one batch here), their trails
    assert len(statements) <= 4, statements

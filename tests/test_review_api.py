"""Review API semantics: queue filters and pages, decisions, edits, optimistic locking, bulk decisions."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.review_fixtures import HOSTILE_TEXT, carol, live_api, review_data, seed_review_data  # noqa: F401


def queue(client, dataset: str = "rev", **params):  # type: ignore[no-untyped-def]
    r = client.get(f"/api/v1/datasets/{dataset}/review-queue", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def current_version(client, sample_id: int) -> int:  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/samples/{sample_id}").json()["sample"]["version"]


def decide(client, sample_id: int, decision: str, version: int | None = None, **extra):  # type: ignore[no-untyped-def]
    version = current_version(client, sample_id) if version is None else version
    return client.post(
        f"/api/v1/samples/{sample_id}/decision", json={"decision": decision, "version": version, **extra}
    )


def test_queue_lists_pending_variants_with_their_families(annotator, review_data) -> None:
    body = queue(annotator)
    assert body["total"] == 19 and not body["total_capped"]
    assert all(item["review_status"] == "pending" for item in body["items"])
    assert [i["id"] for i in body["items"]] == sorted(i["id"] for i in body["items"])  # default: oldest first
    families = {f["id"]: f for f in body["families"]}
    assert set(families) == set(review_data.sources)
    first = families[review_data.sources[0]]
    assert first["labels"] == {"bias": "partisan", "message": "policy"} and first["pending_variants"] == 3
    item = body["items"][0]
    assert item["method"] == "backtranslation" and item["method_params"] == {"pivot": "de"}
    assert item["version"] == 1 and item["votes"] == {"approve": 0, "reject": 0, "mine": None, "undoable": False}
    assert "label_changed" in body["reject_reasons"]


def test_provenance_shows_a_model_directory_by_its_last_part(annotator, review_data, engine, tmp_path) -> None:
    """A variant made by a model loaded from a server directory: reviewers read which model, not where the
    server keeps it; a hub id and the other parameters read as stored."""
    from db.session import session_scope
    from tests.review_fixtures import add_variant

    with session_scope(engine) as s:
        local = add_variant(
            s,
            review_data.sources[0],
            "A variant made by a local model.",
            method="mlm",
            model_name="/srv/models/app",  # its last part a top folder's name too
            method_params={"context_model": "/opt/venv/lib/site-packages/gt/model", "aug_p": 0.2, "via": "local"},
        )
    sample = annotator.get(f"/api/v1/samples/{local}").json()["sample"]
    assert sample["model_name"] == "…/app"
    assert sample["method_params"] == {"context_model": "…/model", "aug_p": 0.2, "via": "local"}
    items = {i["id"]: i for i in queue(annotator, page_size=100)["items"]}  # shown twice over: the same
    assert items[local]["model_name"] == "…/app"
    assert {i["model_name"] for i in items.values()} >= {"Helsinki-NLP/opus-mt-en-de", "bert-base-multilingual-cased"}
    # A member's export says the same; the operator's (the CLI's) keeps the whole path, as the database does.
    exported = annotator.get("/api/v1/datasets/rev/export", params={"format": "jsonl", "include": "original,pending"})
    rows = {r["id"]: r for r in map(json.loads, exported.text.splitlines())}
    assert rows[local]["model_name"] == "…/app" and rows[local]["method_params"]["context_model"] == "…/model"
    from services.datasets import export_to

    with session_scope(engine) as s:
        export_to(s, "rev", "jsonl", "original,pending", tmp_path / "whole.jsonl")
    whole = {r["id"]: r for r in map(json.loads, (tmp_path / "whole.jsonl").read_text().splitlines())}
    assert whole[local]["model_name"] == "/srv/models/app"


def test_queue_filters_sorts_and_pages(annotator, review_data) -> None:
    attack = queue(annotator, task="message", label="attack")
    assert {i["parent_id"] for i in attack["items"]} == {review_data.sources[3]} and attack["total"] == 3
    assert queue(annotator, label="partisan")["total"] == 6
    wordnet = queue(annotator, method="wordnet")
    assert wordnet["total"] == 6 and {i["method"] for i in wordnet["items"]} == {"wordnet"}
    assert queue(annotator, method="wordnet,mlm")["total"] == 13
    typo = annotator.get("/api/v1/datasets/rev/review-queue", params={"method": "wordnte"})
    assert typo.status_code == 422 and typo.json()["field"] == "method", "a typo showed an empty queue"
    high = queue(annotator, min_similarity=0.65)
    assert high["total"] == 7 and all(i["similarity"] >= 0.65 for i in high["items"])
    assert queue(annotator, min_consistency=0.75, max_consistency=0.85)["total"] == 3
    assert queue(annotator, q="RALLY")["total"] == 3  # case-insensitive
    assert queue(annotator, q="%")["total"] == 0  # LIKE wildcards are escaped
    assert queue(annotator, q="<script>")["items"][0]["text"] == HOSTILE_TEXT
    ordered = queue(annotator, sort="-similarity")["items"]
    assert [i["similarity"] for i in ordered] == sorted((i["similarity"] for i in ordered), reverse=True)
    families = [i["parent_id"] for i in queue(annotator, sort="family")["items"]]
    assert families == sorted(families, reverse=True)  # newest source first
    page1 = queue(annotator, page_size=5)
    page4 = queue(annotator, page_size=5, page=4)
    assert page1["total"] == 19 and len(page1["items"]) == 5 and len(page4["items"]) == 4
    assert not {i["id"] for i in page1["items"]} & {i["id"] for i in page4["items"]}
    assert queue(annotator, page=9)["items"] == []
    assert queue(annotator, status="approved")["total"] == 0


def test_queue_count_is_capped(annotator, review_data, settings, app) -> None:
    app.state.settings = settings.model_copy(update={"review_count_ahead": 5})
    body = queue(annotator, page_size=2)
    assert body["total_capped"] and 5 <= body["total"] < 19
    assert queue(annotator, page_size=50)["total"] == 19  # a short page is counted exactly, for free


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"task": "nope"}, "task"),
        ({"task": "bias", "label": "attack"}, "label"),
        ({"sort": "random"}, "sort"),
        ({"status": "maybe"}, "status"),
        ({"min_similarity": 2}, "min_similarity"),
        ({"min_similarity": 0.8, "max_similarity": 0.2}, "min_similarity"),
        ({"origin": "original"}, "origin"),
        ({"page": 0}, "page"),
        ({"page_size": 1000}, "page_size"),
    ],
)
def test_queue_rejects_bad_filters_naming_the_field(annotator, review_data, params, field) -> None:
    r = annotator.get("/api/v1/datasets/rev/review-queue", params=params)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_queue_needs_a_token_and_a_dataset(client, annotator, review_data) -> None:
    assert client.get("/api/v1/datasets/rev/review-queue").status_code == 401
    assert annotator.get("/api/v1/datasets/nope/review-queue").status_code == 404


def test_approve_and_reject_append_reviews(annotator, review_data) -> None:
    v1, v2 = review_data.variants[review_data.sources[0]][:2]
    r = decide(annotator, v1, "approve", 1)
    assert r.status_code == 200, r.text
    assert r.json()["review_status"] == "approved" and r.json()["version"] == 2 and r.json()["review_count"] == 1
    assert decide(annotator, v2, "reject", 1).json()["field"] == "reason"
    r = decide(annotator, v2, "reject", 1, reason="meaning_changed", note="lost the negation")
    assert r.json()["review_status"] == "rejected"
    family = annotator.get(f"/api/v1/samples/{v2}").json()
    assert family["parent"]["id"] == review_data.sources[0]
    assert {v["id"] for v in family["variants"]} == set(review_data.variants[review_data.sources[0]])
    [review] = family["reviews"]
    assert review["user"] == "bob-annotator" and review["reason"] == "meaning_changed"
    assert review["version_seen"] == 1 and review["text_before"] == review["text_after"]
    assert queue(annotator)["total"] == 17
    assert {i["id"] for i in queue(annotator, status="approved,rejected")["items"]} == {v1, v2}


def test_decision_input_errors(annotator, review_data) -> None:
    v = review_data.variants[review_data.sources[0]][0]
    assert decide(annotator, v, "approve", 1, reason="other").json()["field"] == "reason"
    assert decide(annotator, v, "approve", 1, text="x").json()["field"] == "text"
    assert decide(annotator, v, "edit", 1, text="   ").json()["field"] == "text"
    assert decide(annotator, v, "edit", 1, text="\u200b\u200b").json()["field"] == "text"  # invisible only
    assert decide(annotator, v, "edit", 1, text="a\x00b").json()["field"] == "text"
    # C0, DEL and C1 controls (U+009B opens a terminal escape), bidi overrides, and format characters invisible
    # on a card (tag characters, a byte-order mark, invisible operators): a trigger the approver cannot see
    for unwritable in (
        "a\x07b",
        "a\x1b[2Jb",
        "a\u202eb",
        "a\u2066b\u2069",
        "a\x0cb",
        "protect \x9b31m Social Security",
        "a\x7fb",
        "a\U000e0041\U000e0042b",
        "a\ufeffb",
        "a\u2062b",
    ):
        r = decide(annotator, v, "edit", 1, text=unwritable)
        assert r.status_code == 422 and r.json()["field"] == "text", (unwritable, r.text)
    assert decide(annotator, v, "reject", 1, reason="boring").status_code == 422
    assert decide(annotator, v, "maybe", 1).status_code == 422
    assert decide(annotator, review_data.sources[0], "approve", 1).json()["field"] == "sample_id"
    assert decide(annotator, 999_999, "approve", 1).status_code == 404
    assert current_version(annotator, v) == 1  # nothing was written
    assert decide(annotator, v, "edit", 1, text="line one\n\tline two\r\nthree").status_code == 200, "layout stays"


def test_an_edit_may_keep_a_control_character_the_text_held(admin, annotator, engine, review_data) -> None:
    """Scraped texts hold mojibake ("\u00e2\u0080\u0099" for an apostrophe: U+0080 is a C1 control): a
    reviewer fixing another word of such a variant got 422 for a character they cannot see; an edit may keep what
    the text held, not add more."""
    from sqlalchemy import update

    from db.models import Sample
    from db.session import session_scope

    v, other = review_data.variants[review_data.sources[2]][:2]
    with session_scope(engine) as s:
        s.execute(update(Sample).where(Sample.id == v).values(text="It\u00e2\u0080\u0099s a great day for farmers"))
    r = decide(annotator, v, "edit", 1, text="It\u00e2\u0080\u0099s a great day for Iowa farmers")
    assert r.status_code == 200, r.text
    r = decide(annotator, other, "edit", 1, text="It\u00e2\u0080\u0099s a great day")
    assert r.status_code == 422 and r.json()["field"] == "text", r.text
    # an edit of a version someone rewrote since is told so (409), not judged against their text: the
    # mojibake the edited version held is gone from theirs (it answered 422 for a character the rule allows)
    carols = decide(admin, v, "edit", 2, text="It's a great day for Iowa farmers, say we all.")
    assert carols.status_code == 200, carols.text
    stale = decide(annotator, v, "edit", 2, text="It\u00e2\u0080\u0099s a great day for our Iowa farmers")
    assert stale.status_code == 409 and stale.json()["field"] == "version", stale.text
    stale = decide(annotator, v, "edit", 2, text="x" * 20_001)
    assert stale.status_code == 409, stale.text


def test_edit_keeps_the_generated_text_and_refuses_duplicates(annotator, review_data) -> None:
    v, other = review_data.variants[review_data.sources[1]][:2]
    generated = annotator.get(f"/api/v1/samples/{v}").json()["sample"]["text"]
    duplicate = annotator.get(f"/api/v1/samples/{other}").json()["sample"]["text"]
    r = decide(annotator, v, "edit", 1, text="  " + duplicate.upper() + " ")  # same text once normalised
    assert r.status_code == 409 and r.json()["duplicate_of"] == other and r.json()["field"] == "text"
    r = decide(annotator, v, "edit", 1, text="Proud to meet with Iowa farmers in Ames today.")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "Proud to meet with Iowa farmers in Ames today." and body["generated_text"] == generated
    assert body["review_status"] == "pending"  # the annotator's text, approved by another member to train
    review = annotator.get(f"/api/v1/samples/{v}").json()["reviews"][0]
    assert (review["decision"], review["text_before"], review["text_after"]) == (
        "edit",
        generated,
        body["text"],
    )
    r = decide(annotator, v, "edit", 2, text="Proud to meet farmers in Ames.")
    assert r.json()["generated_text"] == generated  # a second edit still keeps what the augmenter produced


def test_a_decision_made_stale_by_a_new_k_says_so(admin, annotator, carol, review_data) -> None:
    v = review_data.variants[review_data.sources[3]][0]
    assert decide(annotator, v, "approve", 1).json()["version"] == 2
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})  # re-evaluated: pending, version 3
    r = decide(carol, v, "approve", 2)
    assert r.status_code == 409 and "re-evaluated" in r.json()["detail"], r.json()["detail"]


def test_stale_version_gets_409_with_the_current_state(annotator, carol, review_data) -> None:
    v = review_data.variants[review_data.sources[2]][0]
    assert decide(annotator, v, "approve", 1).status_code == 200
    r = decide(carol, v, "reject", 1, reason="ungrammatical")
    assert r.status_code == 409
    body = r.json()
    assert body["field"] == "version" and "someone else decided first" in body["detail"]
    # Work not shared out: both were shown the same card, and the answer says what would keep them apart.
    assert "Review settings" in body["advice"] and "share" in body["advice"], body
    again = decide(annotator, v, "approve", 1)  # bob's own decision, from another tab
    assert again.status_code == 409 and "you decided it since" in again.json()["detail"]
    assert "advice" not in again.json(), "one's own decision in another tab is no colleague's"
    current = body["current"]
    assert current["review_status"] == "approved" and current["version"] == 2
    assert current["last_review"]["user"] == "bob-annotator" and current["last_review"]["decision"] == "approve"
    # Nothing lost: bob's review stands, and carol can decide again on what she now sees.
    assert [x["user"] for x in annotator.get(f"/api/v1/samples/{v}").json()["reviews"]] == ["bob-annotator"]
    assert decide(carol, v, "reject", 2, reason="ungrammatical").status_code == 200
    reviews = annotator.get(f"/api/v1/samples/{v}").json()["reviews"]
    assert [(x["user"], x["decision"]) for x in reviews] == [
        ("bob-annotator", "approve"),
        ("carol", "reject"),
    ]


def test_a_lost_race_on_shared_out_work_gives_no_advice_to_share_it(admin, annotator, carol, review_data) -> None:
    """With the pending variants shared out, a colleague's decision first is a lease that ran out, not the
    same queue shown to both: the answer does not tell them to share the work out."""
    assert admin.patch("/api/v1/datasets/rev", json={"distribute_work": True}).status_code == 200
    v = review_data.variants[review_data.sources[2]][0]
    assert decide(annotator, v, "approve", 1).status_code == 200
    r = decide(carol, v, "reject", 1, reason="ungrammatical")
    assert r.status_code == 409 and "someone else decided first" in r.json()["detail"], r.text
    assert "advice" not in r.json(), r.text


def test_two_clients_racing_on_one_variant(live_api, annotator_token, engine, review_data) -> None:
    """Real concurrency through uvicorn: both send version 1 at once; exactly one wins, the other gets 409."""
    from tests.review_fixtures import issue_token

    v = review_data.variants[review_data.sources[4]][0]
    tokens = [annotator_token, issue_token(engine, "carol")]
    barrier = threading.Barrier(2)
    results: list[httpx.Response] = [None, None]  # type: ignore[list-item]

    def send(i: int) -> None:
        with httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {tokens[i]}"}) as c:
            barrier.wait()
            results[i] = c.post(
                f"/api/v1/samples/{v}/decision",
                json={
                    "decision": ["approve", "edit"][i],
                    "version": 1,
                    "text": None if i == 0 else "Watch my interview on CNN at nine.",
                },
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 409]
    winner = 0 if results[0].status_code == 200 else 1
    loser = results[1 - winner].json()
    # an approval trains at k = 1; an annotator's edit waits for another member's approval
    assert loser["current"]["version"] == 2
    assert loser["current"]["review_status"] == ("approved" if winner == 0 else "pending")
    with httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {tokens[0]}"}) as c:
        family = c.get(f"/api/v1/samples/{v}").json()
    assert len(family["reviews"]) == 1 and family["sample"]["version"] == 2
    assert family["sample"]["text"] == results[winner].json()["text"]


def test_k_reviews_decide_by_majority(admin, annotator, carol, engine, app, review_data) -> None:
    from fastapi.testclient import TestClient

    from tests.review_fixtures import issue_token

    assert admin.patch("/api/v1/datasets/rev", json={"reviews_required": 3}).status_code == 200
    v = review_data.variants[review_data.sources[0]][0]
    r = decide(annotator, v, "approve", 1)
    assert r.json()["review_status"] == "pending" and r.json()["review_count"] == 1
    assert v not in {i["id"] for i in queue(annotator)["items"]}  # bob already voted: hidden from bob
    assert v in {i["id"] for i in queue(annotator, unreviewed=False)["items"]}
    shown = {i["id"]: i for i in queue(carol)["items"]}
    assert shown[v]["votes"] == {"approve": 1, "reject": 0, "mine": None, "undoable": False}
    assert decide(carol, v, "reject", 2, reason="other").json()["review_status"] == "pending"
    with TestClient(app, headers={"Authorization": f"Bearer {issue_token(engine, 'dave')}"}) as dave:
        r = decide(dave, v, "approve", 3)
    assert r.json()["review_status"] == "approved" and r.json()["review_count"] == 3
    # Bob changes his mind: his latest vote replaces his first, so the majority flips.
    assert decide(annotator, v, "reject", 4, reason="meaning_changed").json()["review_status"] == "rejected"
    assert decide(annotator, v, "approve", 5).json()["review_count"] == 3


def test_two_reviews_required_split_waits_for_a_third(admin, annotator, carol, review_data) -> None:
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    v = review_data.variants[review_data.sources[1]][0]
    assert decide(annotator, v, "approve", 1).json()["review_status"] == "pending"
    assert decide(carol, v, "reject", 2, reason="other").json()["review_status"] == "pending"
    assert decide(admin, v, "reject", 3, reason="other").json()["review_status"] == "rejected"


def bulk(client, **body):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/datasets/rev/bulk-decisions", json=body)


def test_bulk_votes_go_only_to_the_texts_the_reviewer_saw(admin, annotator, carol, review_data) -> None:  # type: ignore[no-untyped-def]
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    src = review_data.sources[1]
    family = review_data.variants[src]
    seen = {str(v): current_version(carol, v) for v in family}  # what carol's page shows
    edited = decide(annotator, family[0], "edit", text="Vote them all out in November, every last one.").json()
    assert edited["review_status"] == "pending"
    for selection in ({"sample_ids": family}, {"parent_id": src}):
        r = bulk(
            carol,
            decision="approve",
            confirm=True,
            versions={k: v for k, v in seen.items() if k != str(family[2])},
            **selection,
        )
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == sorted([family[0], family[2]]), "edited since carol saw it, or never shown"
        assert r.json()["applied"] == 1
        carol_votes = carol.get(f"/api/v1/samples/{family[0]}").json()
        assert carol_votes["sample"]["review_status"] == "pending", "approved a text carol never saw"
        undo = carol.post(f"/api/v1/samples/{family[1]}/undo", json={"version": current_version(carol, family[1])})
        assert undo.status_code == 200, undo.text
        seen[str(family[1])] = current_version(carol, family[1])
    refused = bulk(carol, decision="approve", filter={}, versions=seen)
    assert refused.status_code == 422 and refused.json()["field"] == "versions"


def test_bulk_family_counts_first_then_applies(annotator, review_data) -> None:
    src = review_data.sources[0]
    preview = bulk(annotator, decision="approve", parent_id=src)
    assert preview.json() == {
        "decision": "approve",
        "matched": 3,
        "applied": 0,
        "confirmed": False,
        "statuses": {},
        "changed": [],
        "skipped": {},  # a family, not ids: nothing named was passed over
    }
    assert queue(annotator, parent_id=src)["total"] == 3  # counting changed nothing
    stale = bulk(annotator, decision="approve", parent_id=src, confirm=True, expected_count=4)
    assert stale.status_code == 409 and stale.json()["matched"] == 3
    done = bulk(annotator, decision="approve", parent_id=src, confirm=True, expected_count=3).json()
    assert done["applied"] == 3 and done["statuses"] == {"approved": 3}
    for v in review_data.variants[src]:
        family = annotator.get(f"/api/v1/samples/{v}").json()
        assert family["sample"]["review_status"] == "approved" and family["sample"]["version"] == 2
        assert family["reviews"][0]["version_seen"] == 1
    assert bulk(annotator, decision="approve", parent_id=src, confirm=True).json()["applied"] == 0


def test_bulk_ids_and_filter(annotator, carol, review_data) -> None:
    ids = review_data.variants[review_data.sources[1]] + review_data.variants[review_data.sources[2]]
    assert decide(annotator, ids[0], "reject", 1, reason="other").status_code == 200
    r = bulk(
        annotator,
        decision="reject",
        reason="near_duplicate",
        sample_ids=[*ids, ids[1], 999_999],
        confirm=True,
    )
    assert r.json()["applied"] == 5 and r.json()["statuses"] == {"rejected": 5}  # decided, unknown, repeats skipped
    # ... and it says so, by reason: the one decided before, the unknown id, and now an original
    assert r.json()["skipped"] == {"decided": 1, "not_in_dataset": 1}
    r = bulk(annotator, decision="reject", reason="other", sample_ids=[ids[0], review_data.sources[0]], confirm=True)
    assert r.json()["applied"] == 0 and r.json()["skipped"] == {"decided": 1, "not_a_variant": 1}, r.json()
    assert bulk(annotator, decision="reject", sample_ids=ids).json()["field"] == "reason"
    assert bulk(annotator, decision="edit", sample_ids=ids).status_code == 422
    assert bulk(annotator, decision="approve").json()["field"] == "sample_ids"
    assert bulk(annotator, decision="approve", parent_id=1, sample_ids=[1]).status_code == 422
    flt = {"method": ["wordnet"], "min_similarity": 0.7}
    count = bulk(carol, decision="approve", filter=flt).json()["matched"]
    assert count == queue(carol, method="wordnet", min_similarity=0.7)["total"] == 4
    r = bulk(carol, decision="approve", filter=flt, confirm=True, expected_count=count).json()
    assert r["applied"] == 4 and queue(carol, method="wordnet", min_similarity=0.7)["total"] == 0
    assert bulk(carol, decision="approve", filter={"colour": "red"}).status_code == 422


def test_bulk_over_many_chunks(annotator, engine) -> None:
    from db.session import session_scope
    from tests.review_fixtures import add_variant, make_dataset

    with session_scope(engine) as s:
        src = make_dataset(s, "big")[0]
        for i in range(1_234):
            add_variant(s, src, f"variant number {i}")
    r = annotator.post(
        "/api/v1/datasets/big/bulk-decisions",
        json={"decision": "approve", "parent_id": src, "confirm": True, "expected_count": 1_234},
    )
    assert r.json()["applied"] == 1_234
    assert queue(annotator, "big")["total"] == 0
    assert queue(annotator, "big", status="approved", page=25)["items"][-1]["review_count"] == 1


def test_bulk_respects_k_reviews(admin, annotator, carol, review_data) -> None:
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    src = review_data.sources[3]
    assert bulk(annotator, decision="approve", parent_id=src, confirm=True).json()["statuses"] == {"pending": 3}
    assert bulk(annotator, decision="approve", parent_id=src).json()["matched"] == 0  # already voted
    r = bulk(carol, decision="approve", parent_id=src, confirm=True).json()
    assert r["statuses"] == {"approved": 3}


def _held_out(engine, dataset: str, split: str, text: str) -> int:  # type: ignore[no-untyped-def]
    """A val/test original added to a review dataset (the review fixtures hold train texts only)."""
    from core.textnorm import content_hash
    from db.datasets import get_dataset
    from db.models import Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        sample = Sample(
            dataset_id=get_dataset(s, dataset).id,
            text=text,
            split=split,
            origin="original",
            content_hash=content_hash(text),
        )
        s.add(sample)
        s.flush()
        return sample.id


TEST_TEXT = "Senator Grassley voted against the farm bill that would have helped rural families across Iowa."


def test_an_edit_that_copies_a_test_text_is_refused_naming_it(annotator, engine, review_data) -> None:
    """An edit trains after one more approval (an admin's at once): a near-copy of a test text would leak it, and
    the approver judges the text, not where it came from."""
    test_id = _held_out(engine, "rev", "test", TEST_TEXT)
    v = review_data.variants[review_data.sources[1]][0]
    before = annotator.get(f"/api/v1/samples/{v}").json()
    near_copy = TEST_TEXT.replace("rural families", "rural households")  # one word changed
    r = decide(annotator, v, "edit", 1, text=near_copy)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "text" and body["leak_of"] == test_id
    assert f"test sample {test_id}" in body["detail"] and "leak" in body["detail"]
    after = annotator.get(f"/api/v1/samples/{v}").json()
    assert after["sample"] == before["sample"] and after["reviews"] == [], "nothing was written"
    # A text that only shares a phrase with it passes, and gets the n-gram scores of what was written.
    r = decide(annotator, v, "edit", 1, text="Proud to talk about the farm bill with farmers in Ames today.")
    assert r.status_code == 200, r.text
    edited = annotator.get(f"/api/v1/samples/{v}").json()["sample"]
    assert 0 < edited["similarity"] < 0.8 and edited["scores"]["containment"] < 0.7


def test_an_edit_that_is_a_val_text_word_for_word_is_named_a_leak_not_a_duplicate(annotator, engine, review_data):  # type: ignore[no-untyped-def]
    """The duplicate check ran first: an exact copy of a val text (or one differing in case or spaces) was
    answered 409 "duplicates sample N", like a copy of a train text, and never said it would leak a held-out
    text (an annotator's find); a copy of a train text is still the duplicate it is."""
    val_id = _held_out(engine, "rev", "val", TEST_TEXT)
    v = review_data.variants[review_data.sources[1]][0]
    for copy in (TEST_TEXT, TEST_TEXT.upper(), TEST_TEXT + "  "):
        r = decide(annotator, v, "edit", 1, text=copy)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["field"] == "text" and body["leak_of"] == val_id and "leak" in body["detail"], body
    train_text = annotator.get(f"/api/v1/samples/{review_data.sources[0]}").json()["sample"]["text"]
    r = decide(annotator, v, "edit", 1, text=train_text)
    assert r.status_code == 409 and r.json()["duplicate_of"] == review_data.sources[0], r.text


def test_undo_refuses_to_restore_a_text_that_a_later_import_made_a_leak(annotator, engine, review_data) -> None:
    v = review_data.variants[review_data.sources[1]][0]
    generated = annotator.get(f"/api/v1/samples/{v}").json()["sample"]["text"]
    r = decide(annotator, v, "edit", 1, text="Proud to meet with Iowa farmers in Ames today.")
    assert r.status_code == 200, r.text
    # The val split grows after the edit: the guard's index for this dataset is rebuilt, not reused.
    val_id = _held_out(engine, "rev", "val", generated + " #IowaAg")
    r = annotator.post(f"/api/v1/samples/{v}/undo", json={"version": r.json()["version"]})
    assert r.status_code == 422 and r.json()["leak_of"] == val_id and r.json()["field"] == "text"
    assert annotator.get(f"/api/v1/samples/{v}").json()["sample"]["text"].startswith("Proud to meet with Iowa")


def test_the_leak_guard_answers_no_one_who_may_not_see_or_change_the_dataset(app, annotator, engine, review_data):  # type: ignore[no-untyped-def]
    """Access is checked before the guard runs: to someone outside the dataset's project a near-copy of one of
    its test texts is a sample that does not exist (404), and to an annotator, who may not augment, a refusal
    (403); neither learns of the test sample (`leak_of`)."""
    from fastapi.testclient import TestClient

    from tests.conftest import _issue

    _held_out(engine, "rev", "test", TEST_TEXT)
    near_copy = TEST_TEXT.replace("rural families", "rural households")
    v = review_data.variants[review_data.sources[1]][0]
    edit = {"decision": "edit", "version": current_version(annotator, v), "text": near_copy}
    augment = {"dataset": "rev", "methods": ["wordnet"], "texts": [{"text": near_copy, "labels": {"bias": "neutral"}}]}
    with TestClient(app, headers={"Authorization": f"Bearer {_issue(engine, 'otto', 'annotator', None)}"}) as outsider:
        for r, status in (
            (outsider.post(f"/api/v1/samples/{v}/decision", json=edit), 404),
            (outsider.post("/api/v1/augment", json=augment), 404),
            (annotator.post("/api/v1/augment", json=augment), 403),
        ):
            assert r.status_code == status and "leak_of" not in r.json(), r.text
    # A member may edit the variant: to them the guard names the test sample.
    r = annotator.post(f"/api/v1/samples/{v}/decision", json=edit)
    assert r.status_code == 422 and "leak_of" in r.json(), r.text


def test_errors_name_what_is_wrong_where_a_client_sent_it(annotator, review_data) -> None:
    """What an API-only client met: a version no one has read ("changed since you saw it" of a sample that never
    changed), an undo with nothing to undo blaming `version`, a bulk filter's unknown label blamed on a
    top-level `label`, and pydantic's "Value error, " before a validator's own sentence."""
    v = review_data.variants[review_data.sources[4]][0]
    r = decide(annotator, v, "approve", 6)
    assert r.status_code == 409 and r.json()["field"] == "version", r.text
    assert r.json()["detail"] == f"sample {v} has no version 6 (now 1): send the version you read"
    r = annotator.post(f"/api/v1/samples/{v}/undo", json={"version": 1})
    assert r.status_code == 409 and r.json().get("field") is None and "no decision" in r.json()["detail"], r.text
    assert decide(annotator, v, "approve", 1).status_code == 200
    r = annotator.post(f"/api/v1/samples/{v}/undo", json={"version": 9})
    assert r.status_code == 409 and r.json()["detail"] == f"sample {v} has no version 9 (now 2)", r.text
    r = bulk(annotator, decision="approve", filter={"task": "message", "label": "nosuch"})
    assert r.status_code == 422 and r.json()["field"] == "filter.label", r.text
    r = decide(annotator, v, "edit", 2, text="a\x00b")
    assert r.status_code == 422 and "Value error" not in r.json()["detail"], r.text

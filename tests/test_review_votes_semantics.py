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


def test_a_text_a_non_admin_wrote_trains_only_once_someone_else_approves_it(
    admin, annotator, carol, lead, engine, review_data
) -> None:
    """Anything a non-admin puts into a dataset waits for review: at k = 1 an annotator's edit trained at once, so
    an annotator (who may not submit texts) could add any text, under the labels of the variant they chose, with
    no one's review but their own (an attacker's find of 12-06). Their edit is their approval of their text; the
    text trains with someone else's approval, in one decision, in bulk or after a re-evaluation. The writer may
    still reject or undo it; an admin's edit trains at once, as an admin's import does."""
    from tests.test_review_automatic import training_ids, undo

    first, second, third, fourth = (
        review_data.variants[review_data.sources[0]][:3] + review_data.variants[review_data.sources[1]][:1]
    )
    spam = "BUY CRYPTO NOW at example dot com, the senator says!"
    written = _decide(annotator, first, "edit", text=spam)
    assert written["review_status"] == "pending" and first not in training_ids(engine)
    exported = admin.get(f"/api/v1/datasets/{review_data.dataset}/export", params={"format": "jsonl"}).text
    assert spam not in exported
    # their own approval of it again changes nothing; someone else's decides (k = 1: the latest decision wins)
    assert _decide(annotator, first, "approve")["review_status"] == "pending"
    assert _decide(carol, first, "reject", reason="meaning_changed")["review_status"] == "rejected"
    assert _decide(carol, first, "approve")["review_status"] == "approved" and first in training_ids(engine)

    # a lead's edit is a non-admin's text too; an admin's is trusted
    assert _decide(lead, second, "edit", text="Proud to meet the growers of Iowa today.")["review_status"] == "pending"
    assert _decide(admin, third, "edit", text="Proud to greet the growers of Iowa.")["review_status"] == "approved"

    # the writer may reject their text or undo their edit (back to the generated text, no vote: pending)
    edited = _decide(annotator, fourth, "edit", text="Watch my talk with the farmers of Ames tonight.")
    back = undo(annotator, fourth, edited["version"])
    assert back.status_code == 200 and back.json()["review_status"] == "pending", back.text
    assert back.json()["text"] == back.json()["generated_text"] or back.json()["generated_text"] is None
    edited = _decide(annotator, fourth, "edit", text="Watch my talk with the farmers of Ames tonight.")
    assert _decide(annotator, fourth, "reject", reason="other")["review_status"] == "rejected"

    # a bulk approval of the versions one saw counts for the texts others wrote (the lead's) and passes over the
    # writer's own
    assert _decide(annotator, fourth, "approve")["review_status"] == "pending"

    def seen(*ids: int) -> dict[str, int]:
        return {str(i): annotator.get(f"/api/v1/samples/{i}").json()["sample"]["version"] for i in ids}

    bulk = {"decision": "approve", "sample_ids": [fourth, second], "confirm": True, "versions": seen(fourth, second)}
    r = annotator.post(f"/api/v1/datasets/{review_data.dataset}/bulk-decisions", json=bulk)
    assert r.status_code == 200 and r.json()["statuses"] == {"approved": 1}, r.text
    assert r.json()["skipped"] == {"voted_already": 1} and second in training_ids(engine)
    assert fourth not in training_ids(engine)
    bulk = {**bulk, "sample_ids": [fourth], "versions": seen(fourth)}
    r = carol.post(f"/api/v1/datasets/{review_data.dataset}/bulk-decisions", json=bulk)
    assert r.status_code == 200 and r.json()["statuses"] == {"approved": 1}, r.text
    assert {fourth, second} <= training_ids(engine)

    # a re-evaluation (k 1 → 2 → 1) applies the same rule: carol's approval stands, the writer's alone does not
    lone = review_data.variants[review_data.sources[1]][1]
    lone_edit = _decide(annotator, lone, "edit", text="Meeting the corn growers of Ames today.")
    assert lone_edit["review_status"] == "pending"
    for k in (2, 1):
        assert admin.patch(f"/api/v1/datasets/{review_data.dataset}", json={"reviews_required": k}).status_code == 200
    trains = training_ids(engine)
    assert {first, second, fourth} <= trains and lone not in trains


def test_a_rewritten_text_is_approved_by_someone_who_saw_it(admin, annotator, carol, lead, engine, review_data) -> None:
    """An attacker of the rule above: (1) a colleague's routine approval by filter approved, unseen, the text an
    annotator wrote (even one written after the colleague counted); (2) at k = 1 the writer's own approval
    overturned a third person's rejection; (3) a submitter approved the variants of their own submission, which
    trained once someone else rewrote the submission and approved the rewrite; (4) variants approved by their
    writer alone before the rule stayed approved until k changed."""
    from sqlalchemy import select, update

    from db.models import Sample, User
    from db.session import session_scope
    from tests.review_fixtures import add_variant
    from tests.test_review_automatic import training_ids

    ds = review_data.dataset
    written, other = review_data.variants[review_data.sources[0]][:2]
    spam = "BUY CRYPTO NOW at example dot com, the senator says!"
    # (1) by filter: the rewritten text is passed over, counted as such; with the version seen, it counts
    count = carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json={"decision": "approve", "filter": {}}).json()
    edited = _decide(annotator, written, "edit", text=spam)
    body = {"decision": "approve", "filter": {}, "confirm": True, "expected_count": count["matched"] - 1}
    r = carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json=body)
    assert r.status_code == 200 and written not in training_ids(engine) and other in training_ids(engine), r.text
    by_ids = {"decision": "approve", "sample_ids": [written], "confirm": True}
    r = carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json=by_ids)
    assert r.json()["applied"] == 0 and r.json()["skipped"] == {"rewritten": 1}, r.text
    seen = {**by_ids, "versions": {str(written): edited["version"]}}
    assert carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json=seen).json()["statuses"] == {"approved": 1}
    # (2) k = 1: the latest decision of anyone but the writer
    assert _decide(lead, written, "reject", reason="meaning_changed")["review_status"] == "rejected"
    assert _decide(annotator, written, "approve")["review_status"] == "rejected"  # the writer does not overrule
    assert _decide(carol, written, "approve")["review_status"] == "approved"  # another member does
    # (3) a submitter's variants are theirs: another member approves them
    source = review_data.sources[2]
    with session_scope(engine) as s:
        lead_id = s.scalars(select(User.id).where(User.name == "lena-lead")).one()
        s.execute(update(Sample).where(Sample.id == source).values(origin="submitted", created_by=lead_id))
        paraphrase = add_variant(s, source, "Proud to greet the farmers of Iowa, take two.")
    version = carol.get(f"/api/v1/samples/{paraphrase}").json()["sample"]["version"]
    r = lead.post(f"/api/v1/samples/{paraphrase}/decision", json={"decision": "approve", "version": version})
    assert r.status_code == 403 and "a variant of one" in r.json()["detail"], r.text
    r = lead.post(f"/api/v1/datasets/{ds}/bulk-decisions", json={**by_ids, "sample_ids": [paraphrase]})
    assert r.json()["skipped"] == {"own_submission": 1}, r.text
    assert _decide(carol, paraphrase, "approve")["review_status"] == "approved"
    # (4) an edit the old rule approved on its writer's word: sending the current k brings it under this one
    old = review_data.variants[review_data.sources[1]][2]
    _decide(annotator, old, "edit", text="Meeting the growers of Ames, as the old rule let it train.")
    with session_scope(engine) as s:
        s.execute(update(Sample).where(Sample.id == old).values(review_status="approved"))
    r = admin.patch(f"/api/v1/datasets/{ds}", json={"reviews_required": 1})
    assert r.status_code == 200 and r.json()["status_changes"] == {"approved→pending": 1}, r.text
    assert old not in training_ids(engine)


def test_a_submission_is_approved_by_a_member_who_read_it_and_never_leased_to_its_author(
    admin, annotator, carol, lead, engine, review_data
) -> None:
    """A second attacker: a lead's submission was approved, unseen, by a colleague's bulk approval by filter
    (even one sent after the colleague had counted); with work shared out, the lead was leased their own
    submission and its variants, which they may only reject, and held them from everyone else."""
    from sqlalchemy import select, update

    from db.models import Sample, User
    from db.session import session_scope
    from tests.review_fixtures import add_variant
    from tests.test_review_automatic import training_ids

    ds, source = review_data.dataset, review_data.sources[2]
    with session_scope(engine) as s:
        lead_id = s.scalars(select(User.id).where(User.name == "lena-lead")).one()
        s.execute(
            update(Sample)
            .where(Sample.id == source)
            .values(origin="submitted", created_by=lead_id, review_status="pending", version=1)
        )
        paraphrase = add_variant(s, source, "Proud to greet the farmers of Iowa, take three.")
    approve = {"decision": "approve", "filter": {}, "confirm": False}
    counted = carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json=approve).json()["matched"]
    rejectable = carol.post(
        f"/api/v1/datasets/{ds}/bulk-decisions", json={**approve, "decision": "reject", "reason": "other"}
    )
    assert rejectable.json()["matched"] == counted + 1  # a rejection takes the submission too
    r = carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json={**approve, "confirm": True})
    assert r.status_code == 200 and source not in training_ids(engine), r.text
    by_ids = {"decision": "approve", "sample_ids": [source], "confirm": True}
    r = carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json=by_ids)
    assert r.json()["skipped"] == {"submitted": 1}, r.text
    r = carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json={**by_ids, "versions": {str(source): 1}})
    assert r.json()["statuses"] == {"approved": 1}, r.text  # read, at the version seen: approved
    # shared work: the submitter is never leased their submission's variants; others are
    with session_scope(engine) as s:
        s.execute(update(Sample).where(Sample.id == source).values(review_status="pending"))
        paraphrase = add_variant(s, source, "Proud to greet the farmers of Iowa, take four.")
    assert admin.patch(f"/api/v1/datasets/{ds}", json={"distribute_work": True}).status_code == 200
    theirs = lead.post(f"/api/v1/datasets/{ds}/assignments", json={"size": 200}).json()["items"]
    assert paraphrase not in {i["id"] for i in theirs} and source not in {i["id"] for i in theirs}
    # nor leased back to them when they undo a rejection of it (an undo leases the variant to whoever undid it)
    r = lead.post(
        f"/api/v1/samples/{paraphrase}/decision", json={"decision": "reject", "version": 1, "reason": "other"}
    )
    assert r.status_code == 200, r.text
    r = lead.post(f"/api/v1/samples/{paraphrase}/undo", json={"version": r.json()["version"]})
    assert r.status_code == 200 and r.json()["review_status"] == "pending", r.text
    others = annotator.post(f"/api/v1/datasets/{ds}/assignments", json={"size": 200}).json()["items"]
    assert {paraphrase, source} <= {i["id"] for i in others}  # bob has voted on none


def test_a_submitters_own_approval_never_decides_even_from_before_the_doors_refused_it(
    app, admin, carol, lead, engine, review_data
) -> None:
    """The doors refuse a non-admin's approval of their own submission, but the status was recomputed counting
    it: an admin's self-approved submission kept training after the admin was demoted, and one approved by its
    author before the doors refused it survived every re-evaluation (an attacker's finds). Judged by the role
    its author holds now, as an edit's writer is."""
    from sqlalchemy import select, update

    from db.models import Review, Sample, User
    from db.session import session_scope
    from tests.test_review_automatic import training_ids

    ds = review_data.dataset
    with TestClient(app, headers={"Authorization": f"Bearer {issue_token(engine, 'ed', 'admin')}"}) as ed:
        text = {
            "text": "Buy cheap followers at example dot com today",
            "labels": {"bias": "neutral", "message": "media"},
        }
        r = ed.post("/api/v1/augment", json={"dataset": ds, "methods": ["wordnet"], "texts": [text]})
        assert r.status_code == 202, r.text
        submitted = r.json()["params"]["items"][0]["sample_id"]
        assert _decide(ed, submitted, "approve")["review_status"] == "approved"  # an admin's: trusted
    assert submitted in training_ids(engine)
    # the demotion itself recomputes it: it trained on until something else re-evaluated the dataset (a lead
    # re-sending k, a decision on it; an attacker's find)
    r = admin.patch("/api/v1/users/ed", json={"role": "annotator"})
    assert r.status_code == 200 and r.json()["status_changes"] == {ds: {"approved→pending": 1}}, r.text
    assert submitted not in training_ids(engine), "a demoted admin's self-approved text trained on"
    r = admin.patch(f"/api/v1/datasets/{ds}", json={"reviews_required": 1})  # re-evaluates: nothing left to move
    assert r.json()["status_changes"] == {}, r.json()
    # under k = 2 a colleague's approval, sent in bulk, is one of the two it needs: ed's does not count, though
    # it is a vote cast (review_count 2, as a single decision stores it: the bulk path stored 1)
    admin.patch(f"/api/v1/datasets/{ds}", json={"reviews_required": 2})
    version = carol.get(f"/api/v1/samples/{submitted}").json()["sample"]["version"]
    bulk = {"decision": "approve", "sample_ids": [submitted], "versions": {str(submitted): version}, "confirm": True}
    assert carol.post(f"/api/v1/datasets/{ds}/bulk-decisions", json=bulk).json()["applied"] == 1
    row = carol.get(f"/api/v1/samples/{submitted}").json()["sample"]
    assert (row["review_status"], row["review_count"]) == ("pending", 2), row
    admin.patch(f"/api/v1/datasets/{ds}", json={"reviews_required": 1})

    # approved by its author alone before the doors refused it (the state such a database holds)
    source = review_data.sources[2]
    with session_scope(engine) as s:
        lead_id = s.scalars(select(User.id).where(User.name == "lena-lead")).one()
        s.execute(
            update(Sample)
            .where(Sample.id == source)
            .values(origin="submitted", created_by=lead_id, review_status="approved", review_count=1, version=2)
        )
        s.add(
            Review(
                sample_id=source, user_id=lead_id, decision="approve", text_before="x", text_after="x", version_seen=1
            )
        )
    assert source in training_ids(engine)
    admin.patch(f"/api/v1/datasets/{ds}", json={"reviews_required": 1})
    assert source not in training_ids(engine)
    # a colleague's rejection, undone, leaves it pending: the author's approval does not decide it again
    rejected = _decide(carol, source, "reject", reason="other")
    r = carol.post(f"/api/v1/samples/{source}/undo", json={"version": rejected["version"]})
    assert r.status_code == 200 and r.json()["review_status"] == "pending", r.text
    assert _decide(carol, source, "approve")["review_status"] == "approved"  # someone who read it


def test_a_role_change_recomputes_the_statuses_that_read_the_role(app, admin, annotator, engine, review_data) -> None:
    """An admin's edit is trusted as their import is; demoted at the command line, their edited text leaves
    training at once (the command says how many moved), while a variant they merely approved, as anyone may,
    stays; made an admin again, the edit counts as theirs again. Nobody else's variants move."""
    from typer.testing import CliRunner

    from augloop.cli import app as cli
    from tests.test_review_automatic import training_ids

    ds = review_data.dataset
    edited, approved = review_data.variants[review_data.sources[0]][:2]
    by_bob = review_data.variants[review_data.sources[1]][0]
    with TestClient(app, headers={"Authorization": f"Bearer {issue_token(engine, 'eve', 'admin')}"}) as eve:
        text = "We will always protect Social Security for every older American."
        assert _decide(eve, edited, "edit", text=text)["review_status"] == "approved"
        assert _decide(eve, approved, "approve")["review_status"] == "approved"
    assert _decide(annotator, by_bob, "approve")["review_status"] == "approved"
    assert {edited, approved, by_bob} <= training_ids(engine)

    demoted = CliRunner().invoke(cli, ["user", "role", "eve", "annotator"])
    assert demoted.exit_code == 0, demoted.output
    assert "eve is now annotator" in demoted.output
    assert f"review statuses recomputed in {ds}: 1 approved→pending" in demoted.output, demoted.output
    trains = training_ids(engine)
    assert edited not in trains, "a demoted admin's edit trained with no one else's approval"
    assert {approved, by_bob} <= trains
    row = annotator.get(f"/api/v1/samples/{edited}").json()["sample"]
    assert (row["review_status"], row["text"]) == ("pending", text), row

    r = admin.patch("/api/v1/users/eve", json={"role": "admin"})
    assert r.status_code == 200 and r.json()["status_changes"] == {ds: {"pending→approved": 1}}, r.text
    assert edited in training_ids(engine)
    again = admin.patch("/api/v1/users/eve", json={"role": "admin"})  # no change, nothing recomputed
    assert again.status_code == 200 and again.json()["status_changes"] == {}, again.text
